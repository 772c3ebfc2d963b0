"""`chatvla2 lint`'s options (export/lint.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option


@dataclass(frozen=True, kw_only=True)
class LintConfig:
    bundle: str = option("a bundle directory written by `chatvla2 export`", positional=True)
