"""`chatvla2 lint`'s options (export/lint.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class LintConfig:
    bundle: str = field(metadata={"positional": True, "help": "a bundle directory written by `chatvla2 export`"})
