"""`chatvla2 demo`'s options (evaluation/demo.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.command_config import check_integer
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.evaluation.eval_config import MODES, TORCH_BACKEND
from chatvla2.sim.tasks.env import TASKS
from chatvla2.sim.tasks.splits import SPLITS

BOTH = "both"


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    checkpoint: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "the model (default: the shipped checkpoints/chatvla2-demo)"}
    )
    task: str = field(default="math_game", metadata={"help": "math_game or toy_placement (default %(default)s)"})
    split: str = field(default=BOTH, metadata={"help": f"{BOTH}, in_domain or open_world (default %(default)s)"})
    episodes: int = field(default=3, metadata={"help": "episodes per split (default %(default)s)"})
    seed: int = field(default=0, metadata={"help": "first episode seed (default %(default)s)"})
    plan: str = field(
        default="auto",
        metadata={
            "metavar": "PLAN",
            "help": "auto: without TensorRT the cpu target's auto plan (per engine the first of int8, fp32 within its parity budget), else fp32; "
            "cpu or cpu:PLAN (cpu target); or a TensorRT plan: fp32, fp16, int8, ... or one per engine "
            "(default %(default)s)",
        },
    )
    cpu_isa: str | None = field(
        default=None,
        metadata={
            "metavar": "CLASS",
            "help": "a cpu plan: the class of CPU the bundle is for (export/cpu_target.py's CPU_ISAS, or native: this "
            "machine's; default generic)",
        },
    )
    backend: str = field(default="auto", metadata={"help": "auto, onnxruntime or tensorrt (default %(default)s)"})
    mode: str = field(
        default="driver", metadata={"help": "driver (simulated arms on ptys through the drivers, real time) or fast (default %(default)s)"}
    )
    query_every: int = field(default=20, metadata={"metavar": "K", "help": "query the policy every K control steps (default %(default)s)"})
    gif: str = field(
        default="demo_output/demo.gif", metadata={"metavar": "FILE", "help": "where the episode GIF goes (default %(default)s)"}
    )
    json_out: str = field(
        default="demo_output/demo.json",
        metadata={
            "metavar": "FILE",
            "help": "where the record goes: the settings, the bundle, every episode's queries and reasoning, as one "
            "JSON line (default %(default)s)",
        },
    )
    cache: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "exported bundles' cache (default $CHATVLA2_CACHE or ~/.cache/chatvla2-edge)"}
    )
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime intra-op threads"})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UnknownChoice(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if self.split != BOTH and self.split not in SPLITS:
            raise UnknownChoice(f"unknown split {self.split!r}; splits: {BOTH}, {', '.join(SPLITS)}")
        check_integer("--episodes", self.episodes, 1)
        check_integer("--seed", self.seed, 0)
        check_integer("--query-every", self.query_every, 1)
        if self.mode not in MODES:
            raise UnknownChoice(f"unknown mode {self.mode!r}; modes: {', '.join(MODES)}")
        if self.backend == TORCH_BACKEND:
            raise InvalidInput(
                "--backend torch: the demo runs the exported bundle (auto, onnxruntime or tensorrt); "
                "`chatvla2 eval --checkpoint` runs the PyTorch reference"
            )
        if not str(self.gif).lower().endswith(".gif"):
            raise InvalidInput(f"--gif {self.gif}: write a .gif file")
        if self.threads is not None:
            check_integer("--threads", self.threads, 1)

    @property
    def splits(self) -> list[str]:
        return list(SPLITS) if self.split == BOTH else [self.split]
