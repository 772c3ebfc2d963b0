"""`chatvla2 build`'s options (export/tensorrt_build.py runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    bundle: str = option("a bundle directory written by `chatvla2 export`", positional=True)
    out: str = option("the engines directory to write", metavar="ENGINES")
    workspace: float = option("TensorRT workspace limit", 4.0, metavar="GB")
    timing_cache: str | None = option("TensorRT timing cache, reused across builds", None, metavar="FILE")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.workspace) and self.workspace > 0):
            raise InvalidInput(f"--workspace must be positive, got {self.workspace}")
