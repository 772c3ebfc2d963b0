"""`chatvla2 info`'s options (models/info.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.contract.config import PRESETS
from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class InfoConfig:
    preset: str | None = option(f"a named preset: {', '.join(PRESETS)}", None, metavar="NAME", flag="--config", exclusive="model")
    checkpoint: str | None = option("a checkpoint directory", None, metavar="DIR", exclusive="model")

    def __post_init__(self) -> None:
        if self.preset and self.checkpoint:
            raise InvalidInput("give --config NAME or --checkpoint DIR, not both")
