"""`chatvla2 calibrate predict`'s options (calibration/predict.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.calibration.predict import CONTROL_HZ, DEFAULT_QUERY_EVERY, DEFAULT_RUNS, DEFAULT_TOKENS
from chatvla2.calibration.targets import TARGETS, parse_targets
from chatvla2.contract.errors import InvalidInput


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    bundle: str | None = field(
        default=None, metadata={"positional": True, "metavar": "BUNDLE", "help": "a bundle directory (or --config NAME)"}
    )
    preset: str | None = field(
        default=None, metadata={"flag": "--config", "metavar": "NAME", "help": "predict a preset from its configuration alone (e.g. paper)"}
    )
    precision: str = field(
        default="fp16",
        metadata={"metavar": "PLAN", "help": "with --config: the precision plan, as `chatvla2 export --precision` takes it (default fp16)"},
    )
    target: tuple[str, ...] = field(
        default=(), metadata={"metavar": "NAME", "help": f"repeatable or a comma list of {', '.join(TARGETS)} (default: all)"}
    )
    tokens: int = field(default=DEFAULT_TOKENS, metadata={"metavar": "N", "help": f"reasoning tokens per step (default {DEFAULT_TOKENS})"})
    query_every: int = field(
        default=DEFAULT_QUERY_EVERY,
        metadata={"metavar": "K", "help": f"control steps executed per query at {CONTROL_HZ:g} Hz (default {DEFAULT_QUERY_EVERY})"},
    )
    ddim_steps: int | None = field(
        default=None, metadata={"metavar": "N", "help": "with --config: the action head's denoising steps (default: the config's)"}
    )
    prompt_length: int | None = field(
        default=None, metadata={"metavar": "N", "help": "with --config: the prefill's tokens (default: the export's opt length)"}
    )
    runs: int = field(default=DEFAULT_RUNS, metadata={"help": f"timed runs per engine here (default {DEFAULT_RUNS})"})
    no_measure: bool = field(default=False, metadata={"help": "do not time the engines on this machine"})
    threads: int | None = field(default=None, metadata={"metavar": "N", "help": "ONNX Runtime intra-op threads (default: its own)"})

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
