"""`chatvla2 info`'s options (models/info.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.config import PRESETS
from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class InfoConfig:
    preset: str | None = field(
        default=None,
        metadata={"flag": "--config", "metavar": "NAME", "exclusive": "model", "help": f"a named preset: {', '.join(PRESETS)}"},
    )
    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR", "exclusive": "model", "help": "a checkpoint directory"})

    def __post_init__(self) -> None:
        if self.preset and self.checkpoint:
            raise InvalidInput("give --config NAME or --checkpoint DIR, not both")
