"""`chatvla2 bench`'s options (calibration/bench.py runs it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.backend_options import BackendOptions


@dataclass(frozen=True, kw_only=True)
class BenchConfig(BackendOptions):
    bundles: tuple[str, ...] = field(
        default=(), metadata={"positional": True, "metavar": "BUNDLE", "help": "bundle directories (or --bundle, repeatable)"}
    )
    bundle_options: tuple[str, ...] = field(default=(), metadata={"flag": "--bundle", "metavar": "DIR", "help": "a bundle, as an option"})
    runs: int = field(default=10, metadata={"help": "timed inferences per bundle (after warm-up)"})
    warmup: int = field(default=2, metadata={"help": "untimed inferences first (default %(default)s)"})
    reference: bool = field(
        default=False, metadata={"help": "also time the PyTorch eager reference (needs torch; built like `chatvla2 export --config NAME`)"}
    )
    preset: str | None = field(
        default=None,
        metadata={"flag": "--config", "metavar": "NAME", "help": "the reference's preset (default: the bundle's model_config name)"},
    )
    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR", "help": "the reference's checkpoint instead of a preset"})
    tokens: int = field(
        default=32,
        metadata={
            "metavar": "N",
            "help": "reasoning length of the whole-step figure (stages + N decode tokens); default 32, a sentence like the paper's",
        },
    )
    bandwidth: float | None = field(
        default=None, metadata={"metavar": "GB_S", "help": "memory bandwidth for the roofline (default: measured BLAS GEMV)"}
    )
    json_out: str | None = field(default=None, metadata={"metavar": "FILE", "help": "also write the JSON line to FILE"})

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
