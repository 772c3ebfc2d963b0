"""`chatvla2 demo`'s options (evaluation/demo.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.evaluation.eval_config import LOOPS, MODES, TORCH_BACKEND
from chatvla2.runtime.loop import CHUNK_MODES
from chatvla2.sim.tasks.env import TASKS
from chatvla2.sim.tasks.splits import SPLITS

BOTH = "both"
AUTO_CHUNK_MODE = "auto"


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    checkpoint: str | None = option("the model (default: the shipped checkpoints/chatvla2-demo)", None, metavar="DIR")
    task: str = option(f"{BOTH}, math_game or toy_placement (default %(default)s)", BOTH)
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
    loop: str = option(
        "async: the runtime's ControlLoop, the arms moving while the policy thinks (as on a robot); "
        "sync: the world waits for each query (default %(default)s)",
        "async",
    )
    chunk_mode: str = option(
        f"async: how a new chunk joins the plan, {AUTO_CHUNK_MODE} (rtc where the bundle's head continues a committed "
        f"prefix, else switch) or one of {', '.join(CHUNK_MODES)} (default %(default)s)",
        AUTO_CHUNK_MODE,
    )
    latency_ms: str | None = option(
        "async: extra latency per inference, fixed (300) or uniform (200-400), as a slower chip would add", None, metavar="MS"
    )
    query_every: int = option("sync: query the policy every K control steps (default %(default)s)", 20, metavar="K")
    gif: str = option("where the episode GIF goes (default %(default)s)", "demo_output/demo.gif", metavar="FILE")
    json_out: str = option(
        "where the record goes: the settings, the bundle, every episode's queries and reasoning, as one JSON line (default %(default)s)",
        "demo_output/demo.json",
        metavar="FILE",
    )
    cache: str | None = option("exported bundles' cache (default $CHATVLA2_CACHE or ~/.cache/chatvla2-edge)", None, metavar="DIR")
    threads: int | None = option("ONNX Runtime intra-op threads", None)

    def __post_init__(self) -> None:
        if self.task != BOTH and self.task not in TASKS:
            raise UnknownChoice(f"unknown task {self.task!r}; tasks: {BOTH}, {', '.join(TASKS)}")
        if self.loop not in LOOPS:
            raise UnknownChoice(f"unknown loop {self.loop!r}; loops: {', '.join(LOOPS)}")
        if self.chunk_mode != AUTO_CHUNK_MODE and self.chunk_mode not in CHUNK_MODES:
            raise UnknownChoice(f"unknown chunk mode {self.chunk_mode!r}; chunk modes: {AUTO_CHUNK_MODE}, {', '.join(CHUNK_MODES)}")
        if self.loop == "sync" and (self.chunk_mode != AUTO_CHUNK_MODE or self.latency_ms is not None):
            raise InvalidInput("--chunk-mode and --latency-ms apply to --loop async (a synchronous query has no latency to hide)")
        if self.latency_ms is not None:
            from chatvla2.evaluation.async_episode import LatencyInjection

            LatencyInjection.parse(self.latency_ms)
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

    @property
    def tasks(self) -> list[str]:
        return list(TASKS) if self.task == BOTH else [self.task]

    def resolved_chunk_mode(self, max_prefix: int) -> str:
        """The chunk mode for a policy whose head continues prefixes of up to `max_prefix` steps."""
        if self.chunk_mode != AUTO_CHUNK_MODE:
            return self.chunk_mode
        return "rtc" if max_prefix > 0 else "switch"
