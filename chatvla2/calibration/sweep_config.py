"""`chatvla2 calibrate sweep`'s options (calibration/sweep.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.calibration.capture_config import check_reasoning_tokens
from chatvla2.calibration.plans import parse_plans
from chatvla2.calibration.targets import parse_targets
from chatvla2.contract.command_config import option
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice

DEFAULT_PLANS = "fp32,fp16,int8,int4,fp8"
DEFAULT_CALIBRATION = "sim:math_game:in_domain:5000-5011+sim:math_game:open_world:5000-5011"
DEFAULT_HELD_OUT = "sim:math_game:in_domain:0-7+sim:math_game:open_world:0-7"


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    preset: str | None = option("a preset, initialised from --seed (untrained)", None, metavar="NAME", flag="--config", exclusive="model")
    checkpoint: str | None = option("a trained checkpoint", None, metavar="DIR", exclusive="model")
    plans: str = option("plans (calibration/plans.py; default %(default)s)", DEFAULT_PLANS)
    out: str = option("the report directory (resumed if it exists)", metavar="DIR")
    calibration: str = option(
        "observations that set the quantization scales (default %(default)s)", DEFAULT_CALIBRATION, metavar="SOURCE|FILE"
    )
    held_out: str = option("observations accuracy is measured on (default %(default)s)", DEFAULT_HELD_OUT, metavar="SOURCE|FILE")
    runs: int = option("timed runs per engine and per policy (default %(default)s)", 50)
    warmup: int = option("untimed runs first (default %(default)s)", 5)
    task: str | None = option("also measure the paper's task scores (math_game, toy_placement)", None)
    episodes: int = option("episodes per split at the task level (default %(default)s)", 10)
    splits: str = option("the task level's splits (default %(default)s)", "in_domain,open_world")
    episode_seed: int = option("the task level's first episode seed", 0)
    targets: str = option("devices to predict a lower bound for", "orin,thor,h100")
    min_tokens: int = option("no end of reasoning before N tokens (untrained presets)", 0)
    max_tokens: int | None = option("the reference's reasoning cap (default: the model's)", None)
    threads: int | None = option("ONNX Runtime and torch threads", None)
    seed: int = option("the preset's initialisation and the diffusion noise", 0)
    quiet: bool = option("no progress bar", False)

    def __post_init__(self) -> None:
        if bool(self.preset) == bool(self.checkpoint):
            raise InvalidInput("give --config NAME or --checkpoint DIR (one of them)")
        parse_plans(self.plans)
        for flag, value in (("--runs", self.runs), ("--episodes", self.episodes)):
            if value < 1:
                raise InvalidInput(f"{flag} must be >= 1, got {value}")
        if self.warmup < 0:
            raise InvalidInput(f"--warmup must be >= 0, got {self.warmup}")
        check_reasoning_tokens(1, self.min_tokens, self.max_tokens)
        if self.threads is not None and self.threads < 1:
            raise InvalidInput(f"--threads must be >= 1, got {self.threads}")
        if self.task:
            from chatvla2.sim.tasks.env import TASKS  # gymnasium: only for a task level
            from chatvla2.sim.tasks.splits import check_split

            if self.task not in TASKS:
                raise UnknownChoice(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
            for split in self.split_list:
                check_split(split)
        parse_targets(self.target_list)

    @property
    def split_list(self) -> list[str]:
        return _items(self.splits)

    @property
    def target_list(self) -> list[str]:
        return _items(self.targets)

    @property
    def task_key(self) -> dict | None:
        """What a cached result's task level must match (None: no task level)."""
        if not self.task:
            return None
        return {"task": self.task, "splits": self.split_list, "episodes": self.episodes, "seed": self.episode_seed}
