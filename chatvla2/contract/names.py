"""Looking a name up in a table of choices: an unknown name is one ValueError that suggests the
closest choice and lists them all (model presets, calibration targets, task splits)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from chatvla2.contract.errors import UnknownName


class UnknownChoice(UnknownName, ValueError):
    """A name that is not one of the choices; also a ValueError, as it always was."""


def unknown_name(name: object, choices: Iterable[str], what: str, plural: str) -> UnknownChoice:
    """"unknown WHAT 'x' (did you mean 'y'?); PLURAL: a, b" for `name` not among `choices`."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.0)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownChoice(f"unknown {what} {name!r}{hint}; {plural}: {', '.join(choices)}")
