"""`chatvla2 eval`'s options (evaluation/task_eval.py runs it); the demo and the calibration sweep
build one to run their episodes."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.runtime.engine import BACKENDS
from chatvla2.runtime.loop import CHUNK_MODES
from chatvla2.sim.tasks.env import MAX_STEPS, TASKS
from chatvla2.sim.tasks.splits import SPLITS, check_split

TORCH_BACKEND = "torch"
EVAL_BACKENDS = (*BACKENDS, TORCH_BACKEND)
MODES = ("fast", "driver")
LOOPS = ("sync", "async")
POLICY = "the policy (exactly one)"


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Names are checked here (one line each), not by argparse choices, so the command line and a
    config built in code are refused the same way."""

    task: str = option(f"the task: {', '.join(TASKS)}")
    split: str = option(f"the split: {', '.join(SPLITS)}")
    episodes: int = option("how many episodes (seeds S .. S+N-1)")
    seed: int = option("the first episode's seed (default %(default)s); episode i uses seed S + i", 0)
    checkpoint: str | None = option("a checkpoint: the PyTorch model", None, metavar="DIR", group=POLICY)
    preset: str | None = option(
        "a named preset (seed 0, as export builds it): the PyTorch model", None, metavar="NAME", flag="--config", group=POLICY
    )
    bundle: str | None = option("an exported bundle: the runtime's engines", None, metavar="DIR", group=POLICY)
    backend: str = option(
        f"{', '.join(EVAL_BACKENDS)} (default %(default)s; a checkpoint or preset runs on {TORCH_BACKEND}, "
        "a bundle on auto, onnxruntime or tensorrt)",
        "auto",
    )
    mode: str = option(
        "fast (kinematic arms) or driver (simulated arms on ptys through the drivers, real time) (default %(default)s)", "fast"
    )
    query_every: int = option(
        "query the policy every K control steps, executing the chunk's first K actions (default %(default)s)", 20, metavar="K"
    )
    reason_every: int = option(
        "fresh reasoning at every N-th query, the last reasoning reused in between (default %(default)s)", 1, metavar="N"
    )
    loop: str = option(
        "sync: the world waits for each query (repeatable; the calibration sweep's); async: the runtime's ControlLoop "
        "in real time, the arms moving while the policy thinks (default %(default)s)",
        "sync",
    )
    chunk_mode: str = option(
        f"async: how a new chunk joins the plan, {', '.join(CHUNK_MODES)} (runtime/loop.py; default %(default)s)", "switch"
    )
    latency_ms: str | None = option(
        "async: extra latency per inference, fixed (300) or uniform (200-400), as a slower chip would add", None, metavar="MS"
    )
    max_steps: int = option(
        "end an episode (truncated) after T control steps (default %(default)s = 15 s at 50 Hz)", MAX_STEPS, metavar="T"
    )
    engines: str | None = option("prebuilt TensorRT engines (default BUNDLE/engines)", None, metavar="DIR")
    threads: int | None = option("ONNX Runtime intra-op threads", None)
    json_out: str = option(
        "where the record goes: the settings, the summary, per-stage latency and every episode's queries "
        "and reasoning, as one JSON line (default %(default)s)",
        "eval_output/eval.json",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        """Everything that needs no model; the first problem as one line."""
        if self.task not in TASKS:
            raise UnknownChoice(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        check_split(self.split)
        check_integer("--episodes", self.episodes, 1)
        check_integer("--seed", self.seed, 0)
        check_integer("--query-every", self.query_every, 1)
        check_integer("--reason-every", self.reason_every, 1)
        check_integer("--max-steps", self.max_steps, 1)
        if self.mode not in MODES:
            raise UnknownChoice(f"unknown mode {self.mode!r}; modes: {', '.join(MODES)}")
        if self.loop not in LOOPS:
            raise UnknownChoice(f"unknown loop {self.loop!r}; loops: {', '.join(LOOPS)}")
        if self.chunk_mode not in CHUNK_MODES:
            raise UnknownChoice(f"unknown chunk mode {self.chunk_mode!r}; chunk modes: {', '.join(CHUNK_MODES)}")
        if self.loop == "sync" and (self.chunk_mode != "switch" or self.latency_ms is not None):
            raise InvalidInput("--chunk-mode and --latency-ms apply to --loop async (a synchronous query has no latency to hide)")
        if self.loop == "async":
            from chatvla2.evaluation.async_episode import LatencyInjection

            LatencyInjection.parse(self.latency_ms)  # a malformed value: one line before any work
        if self.backend not in EVAL_BACKENDS:
            raise UnknownChoice(f"unknown backend {self.backend!r}; backends: {', '.join(EVAL_BACKENDS)}")
        given = [flag for flag, value in (("--checkpoint", self.checkpoint), ("--config", self.preset), ("--bundle", self.bundle)) if value]
        if len(given) != 1:
            raise InvalidInput(f"give exactly one of --checkpoint, --config, --bundle (got {' and '.join(given) or 'none'})")
        if self.bundle and self.backend == TORCH_BACKEND:
            raise InvalidInput(f"--backend {TORCH_BACKEND} runs --checkpoint or --config; a bundle runs on auto, onnxruntime or tensorrt")
        if not self.bundle and self.backend not in ("auto", TORCH_BACKEND):
            raise InvalidInput(f"--backend {self.backend} runs a --bundle; --checkpoint/--config run on {TORCH_BACKEND}")
        if self.threads is not None:
            check_integer("--threads", self.threads, 1)
