"""`chatvla2 demo`'s options (evaluation/demo.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.evaluation.eval_config import MODES, TORCH_BACKEND
from chatvla2.sim.tasks.env import TASKS
from chatvla2.sim.tasks.splits import SPLITS

BOTH = "both"


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    checkpoint: str | None = option("the model (default: the shipped checkpoints/chatvla2-demo)", None, metavar="DIR")
    task: str = option("math_game or toy_placement (default %(default)s)", "math_game")
    split: str = option(f"{BOTH}, in_domain or open_world (default %(default)s)", BOTH)
    episodes: int = option("episodes per split (default %(default)s)", 3)
    seed: int = option("first episode seed (default %(default)s)", 0)
    plan: str = option(
        "auto: without TensorRT the cpu target's auto plan (per engine the first of int8, fp32 within its parity budget), else fp32; "
        "cpu or cpu:PLAN (cpu target); or a TensorRT plan: fp32, fp16, int8, ... or one per engine "
        "(default %(default)s)",
        "auto",
        metavar="PLAN",
    )
    cpu_isa: str | None = option(
        "a cpu plan: the class of CPU the bundle is for (export/cpu_target.py's CPU_ISAS, or native: this machine's; default generic)",
        None,
        metavar="CLASS",
    )
    backend: str = option("auto, onnxruntime or tensorrt (default %(default)s)", "auto")
    mode: str = option("driver (simulated arms on ptys through the drivers, real time) or fast (default %(default)s)", "driver")
    query_every: int = option("query the policy every K control steps (default %(default)s)", 20, metavar="K")
    gif: str = option("where the episode GIF goes (default %(default)s)", "demo_output/demo.gif", metavar="FILE")
    json_out: str = option(
        "where the record goes: the settings, the bundle, every episode's queries and reasoning, as one JSON line (default %(default)s)",
        "demo_output/demo.json",
        metavar="FILE",
    )
    cache: str | None = option("exported bundles' cache (default $CHATVLA2_CACHE or ~/.cache/chatvla2-edge)", None, metavar="DIR")
    threads: int | None = option("ONNX Runtime intra-op threads", None)

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
