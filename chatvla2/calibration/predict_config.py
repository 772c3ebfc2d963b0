"""`chatvla2 calibrate predict`'s options (calibration/predict.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.calibration.predict import CONTROL_HZ, DEFAULT_QUERY_EVERY, DEFAULT_RUNS, DEFAULT_TOKENS
from chatvla2.calibration.targets import TARGETS, parse_targets
from chatvla2.contract.command_config import option
from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    bundle: str | None = option("a bundle directory (or --config NAME)", None, metavar="BUNDLE", positional=True)
    preset: str | None = option("predict a preset from its configuration alone (e.g. paper)", None, metavar="NAME", flag="--config")
    precision: str = option(
        "with --config: the precision plan, as `chatvla2 export --precision` takes it (default fp16)", "fp16", metavar="PLAN"
    )
    target: tuple[str, ...] = option(f"repeatable or a comma list of {', '.join(TARGETS)} (default: all)", (), metavar="NAME")
    tokens: int = option(f"reasoning tokens per step (default {DEFAULT_TOKENS})", DEFAULT_TOKENS, metavar="N")
    query_every: int = option(
        f"control steps executed per query at {CONTROL_HZ:g} Hz (default {DEFAULT_QUERY_EVERY})", DEFAULT_QUERY_EVERY, metavar="K"
    )
    ddim_steps: int | None = option("with --config: the action head's denoising steps (default: the config's)", None, metavar="N")
    prompt_length: int | None = option("with --config: the prefill's tokens (default: the export's opt length)", None, metavar="N")
    runs: int = option(f"timed runs per engine here (default {DEFAULT_RUNS})", DEFAULT_RUNS)
    no_measure: bool = option("do not time the engines on this machine", False)
    threads: int | None = option("ONNX Runtime intra-op threads (default: its own)", None, metavar="N")

    def __post_init__(self) -> None:
        if bool(self.bundle) == bool(self.preset):
            raise InvalidInput("give a BUNDLE or --config NAME (one of them): chatvla2 calibrate predict BUNDLE | --config paper")
        parse_targets(self.targets)
        if self.runs < 1:
            raise InvalidInput(f"--runs must be >= 1, got {self.runs}")
        if self.threads is not None and self.threads < 1:
            raise InvalidInput(f"--threads must be >= 1, got {self.threads}")
        for flag, value in (("--ddim-steps", self.ddim_steps), ("--prompt-length", self.prompt_length)):
            if value is not None:
                if self.bundle:
                    raise InvalidInput(f"{flag} applies to --config only (a bundle's graphs fix it)")
                if value < 1:
                    raise InvalidInput(f"{flag} must be >= 1, got {value}")

    @property
    def targets(self) -> list[str] | None:
        """--target as parse_targets takes it (None: every target)."""
        return list(self.target) or None
