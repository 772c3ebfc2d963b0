"""`chatvla2 build`'s options (export/tensorrt_build.py runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    bundle: str = field(metadata={"positional": True, "help": "a bundle directory written by `chatvla2 export`"})
    out: str = field(metadata={"metavar": "ENGINES", "help": "the engines directory to write"})
    workspace: float = field(default=4.0, metadata={"metavar": "GB", "help": "TensorRT workspace limit"})
    timing_cache: str | None = field(default=None, metadata={"metavar": "FILE", "help": "TensorRT timing cache, reused across builds"})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.workspace) and self.workspace > 0):
            raise InvalidInput(f"--workspace must be positive, got {self.workspace}")
