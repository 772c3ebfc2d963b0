"""`chatvla2 calibrate sweep`'s options (calibration/sweep.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.calibration.capture_config import check_reasoning_tokens
from chatvla2.calibration.plans import parse_plans
from chatvla2.calibration.targets import parse_targets
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice

DEFAULT_PLANS = "fp32,fp16,int8,int4,fp8"
DEFAULT_CALIBRATION = "sim:math_game:in_domain:5000-5011+sim:math_game:open_world:5000-5011"
DEFAULT_HELD_OUT = "sim:math_game:in_domain:0-7+sim:math_game:open_world:0-7"


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    preset: str | None = field(
        default=None,
        metadata={"flag": "--config", "metavar": "NAME", "exclusive": "model", "help": "a preset, initialised from --seed (untrained)"},
    )
    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR", "exclusive": "model", "help": "a trained checkpoint"})
    plans: str = field(default=DEFAULT_PLANS, metadata={"help": "plans (calibration/plans.py; default %(default)s)"})
    out: str = field(metadata={"metavar": "DIR", "help": "the report directory (resumed if it exists)"})
    calibration: str = field(
        default=DEFAULT_CALIBRATION,
        metadata={"metavar": "SOURCE|FILE", "help": "observations that set the quantization scales (default %(default)s)"},
    )
    held_out: str = field(
        default=DEFAULT_HELD_OUT, metadata={"metavar": "SOURCE|FILE", "help": "observations accuracy is measured on (default %(default)s)"}
    )
    runs: int = field(default=50, metadata={"help": "timed runs per engine and per policy (default %(default)s)"})
    warmup: int = field(default=5, metadata={"help": "untimed runs first (default %(default)s)"})
    task: str | None = field(default=None, metadata={"help": "also measure the paper's task scores (math_game, toy_placement)"})
    episodes: int = field(default=10, metadata={"help": "episodes per split at the task level (default %(default)s)"})
    splits: str = field(default="in_domain,open_world", metadata={"help": "the task level's splits (default %(default)s)"})
    episode_seed: int = field(default=0, metadata={"help": "the task level's first episode seed"})
    targets: str = field(default="orin,thor,h100", metadata={"help": "devices to predict a lower bound for"})
    min_tokens: int = field(default=0, metadata={"help": "no end of reasoning before N tokens (untrained presets)"})
    max_tokens: int | None = field(default=None, metadata={"help": "the reference's reasoning cap (default: the model's)"})
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime and torch threads"})
    seed: int = field(default=0, metadata={"help": "the preset's initialisation and the diffusion noise"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

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
