"""`chatvla2 bench`'s options (calibration/bench.py runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from chatvla2.contract.command_config import option
from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.backend_options import BackendOptions


@dataclass(frozen=True, kw_only=True)
class BenchConfig(BackendOptions):
    bundles: tuple[str, ...] = option("bundle directories (or --bundle, repeatable)", (), metavar="BUNDLE", positional=True)
    bundle_options: tuple[str, ...] = option("a bundle, as an option", (), metavar="DIR", flag="--bundle")
    runs: int = option("timed inferences per bundle (after warm-up)", 10)
    warmup: int = option("untimed inferences first (default %(default)s)", 2)
    reference: bool = option("also time the PyTorch eager reference (needs torch; built like `chatvla2 export --config NAME`)", False)
    preset: str | None = option("the reference's preset (default: the bundle's model_config name)", None, metavar="NAME", flag="--config")
    checkpoint: str | None = option("the reference's checkpoint instead of a preset", None, metavar="DIR")
    tokens: int = option(
        "reasoning length of the whole-step figure (stages + N decode tokens); default 32, a sentence like the paper's", 32, metavar="N"
    )
    bandwidth: float | None = option("memory bandwidth for the roofline (default: measured BLAS GEMV)", None, metavar="GB_S")
    json_out: str | None = option("also write the JSON line to FILE", None, metavar="FILE")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bundle_paths:
            raise InvalidInput("no bundle given: chatvla2 bench --bundle DIR [--bundle DIR ...]")
        for flag, value in (("--runs", self.runs), ("--tokens", self.tokens)):
            if value < 1:
                raise InvalidInput(f"{flag} must be >= 1, got {value}")
        if self.warmup < 0:
            raise InvalidInput(f"--warmup must be >= 0, got {self.warmup}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise InvalidInput(f"--bandwidth must be a positive number of GB/s, got {self.bandwidth}")

    @property
    def bundle_paths(self) -> list[Path]:
        return [Path(b) for b in (*self.bundles, *self.bundle_options)]
