"""`chatvla2 eval`: a policy on the paper's simulated tasks, scored as the paper scores them.

    chatvla2 eval --task math_game|toy_placement --split in_domain|open_world --episodes N [--seed S]
                  (--checkpoint DIR | --config NAME | --bundle DIR) [--backend auto|onnxruntime|tensorrt|torch]
                  [--mode fast|driver] [--query-every K] [--max-steps T] [--json-out FILE]

The policy: `--checkpoint` / `--config` run the PyTorch model (`models.loading.load_model`, a
preset with seed 0 as `chatvla2 export` builds it) through `export.torch_engine.torch_policy`, the
same `runtime.policy.Policy` code on the PyTorch backend ("torch"); `--bundle` runs an exported
bundle through `Policy.from_bundle` (`--backend auto|onnxruntime|tensorrt`). So the PyTorch
reference and each exported plan are evaluated by one loop and can be compared side by side.

The episodes: episode i is the split's episode of seed S + i (`sim.tasks.env.TaskEnv.reset`), so
any S gives fresh episodes and the same S the same ones. The environment renders at the model's
image size (`cfg.vision.image_height` x `image_width`); a model with several camera views gets the
top camera replicated into each. `--mode fast` moves the arms kinematically (`KinematicBackend`,
faster than real time); `--mode driver` through the real drivers to two simulated arms on ptys
(`sim.tasks.driver_backend.DriverBackend`, 50 Hz in real time: slower, and the schedule skips the
ticks an inference takes, counted as overruns in the JSON's `driver_timing`).

The control loop, as DexVLA's evaluation runs it (docs/reference/model.md: a query every 16-25 control steps,
the action queue flushed at each query): at step 0 and then every K steps (`--query-every`,
default 20) the policy is queried with the current observation (images, instruction, state; the
diffusion noise seeded from (episode seed, query index), so a run is repeatable and the backends
see the same noise), and the chunk's first K actions are executed with `env.step`; the episode
ends when the environment terminates (success, or a wrong card picked) or truncates (its max
steps: 750 = 15 s, or `--max-steps`). `--reason-every N` writes fresh reasoning at every N-th query
only and reuses the last one in between (the runtime's `reuse`: vision, prefill and action head
run, decoding is skipped), the cadence calibration trades for latency. Every query's reasoning is kept. In driver mode an arm fault
during an episode (drivers/faults.py: the driver has already damped the arm; on a loaded 2-core
machine a starved simulator can miss the 200 ms feedback timeout) ends that episode as "arm fault",
not a success, counted in the summary's `arm_faults`; the next reset restarts the arms
(DriverBackend), and a second fault there ends the evaluation with the error.

The scores, the paper's (docs/reference/model.md "How the paper scores"; `sim/tasks/scoring.py` parses):
- math_game: OCR score out of 4 and math reasoning score out of 2, **read from the reasoning the
  policy writes at the first query of the episode** (step 0, before anything moves: the paper
  scores the reasoning the model writes when it starts the task), and success (the right cards
  picked);
- toy_placement: object recognition (0/1) and spatial affordance (0/1), likewise from the first
  query's reasoning, and success (the object at rest in the instructed region).
The table gives the averages over the episodes and successes/N, with the paper's ChatVLA-2 row for
the split beside it.

Output: a header, one block per episode (the expert's reasoning for the first observation, the
policy's first reasoning, the scores, the picks, the outcome, per-stage latency medians), then what
a person reads last: the paper-style table and where the record went. The record, one JSON line
`{"task_eval": ...}` with the settings, the summary, the per-stage latency over every query
(p50/p99 ms) and every episode's record (every query's reasoning: tens of kB), goes to the file
`--json-out` names (evaluation/eval_config.py's default), not to the terminal.

Bad input (an unknown task, split, backend or mode; episodes < 1; not exactly one of --checkpoint,
--config, --bundle: `EvalConfig` refuses it; a model whose actions or state are not 14-D; K
outside 1..chunk) is a one-line user error (contract/errors.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chatvla2.contract.bundle import bundle_model_config, load_manifest
from chatvla2.contract.config import ModelConfig, get_config
from chatvla2.contract.embodiment import ACTION_DIM, CONTROL_HZ, STATE_DIM
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.stage_timer import STAGES
from chatvla2.drivers.faults import ArmFault
from chatvla2.evaluation.eval_config import EvalConfig
from chatvla2.evaluation.rates import format_rate, wilson_interval
from chatvla2.evaluation.timing import latency_stats
from chatvla2.sim.tasks.env import TaskEnv

MATH, TOY = "math_game", "toy_placement"

# The paper's ChatVLA-2 figures (docs/reference/model.md, "How the paper scores"): averages and successes/N.
PAPER = {
    (MATH, "in_domain"): {"ocr": 4.0, "math": 2.0, "successes": 11, "episodes": 13},
    (MATH, "open_world"): {"ocr": 3.58, "math": 1.73, "successes": 43, "episodes": 52},
    (TOY, "in_domain"): {"object_recognition": 1.0, "spatial_affordance": 0.99, "successes": 61, "episodes": 67},
    (TOY, "open_world"): {"object_recognition": 0.94, "spatial_affordance": 0.88, "successes": 127, "episodes": 156},
}
# The scores each task reports, with their maxima.
SCORES = {MATH: (("ocr", 4), ("math", 2)), TOY: (("object_recognition", 1), ("spatial_affordance", 1))}
SCORE_LABELS = {"ocr": "OCR (/4)", "math": "math reasoning (/2)", "object_recognition": "object recognition",
                "spatial_affordance": "spatial affordance"}


def model_config(config: EvalConfig) -> ModelConfig:
    """The model's configuration, read without loading weights (a bundle's manifest, unhashed)."""
    if config.bundle:
        return bundle_model_config(config.bundle, load_manifest(config.bundle, verify_hashes=False))
    if config.checkpoint:
        from chatvla2.models.checkpoint import read_checkpoint_config

        return read_checkpoint_config(config.checkpoint)
    return get_config(config.preset)


def check_model(cfg: ModelConfig, config: EvalConfig) -> None:
    head = cfg.action_head
    where = config.bundle or config.checkpoint or f"the preset {config.preset!r}"
    if head.action_dim != ACTION_DIM or head.state_dim != STATE_DIM:
        raise InvalidInput(f"{where}: the model has {head.action_dim}-D actions and {head.state_dim}-D state; "
                         f"the tasks need {ACTION_DIM} (two arms x 6 joints + gripper)")
    if config.query_every > head.chunk_size:
        raise InvalidInput(f"--query-every {config.query_every} is longer than the model's action chunk ({head.chunk_size})")


def load_policy(config: EvalConfig):
    """(policy, its name for the table). torch and models/ are imported only for the PyTorch path."""
    if config.bundle:
        from chatvla2.runtime.policy import Policy

        policy = Policy.from_bundle(config.bundle, backend=config.backend, engines_dir=config.engines, threads=config.threads)
        manifest = load_manifest(config.bundle, verify_hashes=False)
        plan = manifest.get("plan") or {}
        values = set(plan.values())
        precision = values.pop() if len(values) == 1 else ",".join(f"{k}={v}" for k, v in sorted(plan.items())) or "?"
        return policy, f"bundle {Path(config.bundle).name} ({policy.config.name}, {precision})"
    from chatvla2.export.torch_engine import torch_policy
    from chatvla2.models.loading import load_model

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    model = load_model(config.preset, config.checkpoint, seed=0)
    name = f"PyTorch {model.cfg.name}" + (f" ({config.checkpoint})" if config.checkpoint else "")
    return torch_policy(model), name


# --- the episodes ------------------------------------------------------------------------------------


def query_seed(episode_seed: int, query: int) -> int:
    """The diffusion noise's seed for one query (numpy's generator, in `Policy.infer`)."""
    return int(np.random.SeedSequence([episode_seed, query]).generate_state(1)[0])


# Called with (episode seed, control step, the camera frame, the reasoning in force) at the reset and
# after every control step: what a recorder (the demo's GIF) sees.
StepHook = Callable[[int, int, np.ndarray, str], None]


def run_episode(env: TaskEnv, policy, seed: int, query_every: int, on_step: StepHook | None = None,
                reason_every: int = 1) -> dict[str, Any]:
    """One episode (module docstring): query every `query_every` steps, execute that many actions;
    fresh reasoning at every `reason_every`-th query, the last reasoning reused in between."""
    started = time.perf_counter()
    observation, info = env.reset(seed=seed)
    expected = info["reasoning"]
    views = policy.num_views
    queries: list[dict[str, Any]] = []
    first_scores = None
    terminated = truncated = False
    fault: str | None = None
    result = None
    while not (terminated or truncated):
        step = info["step"]
        feed = {"images": [observation["images"][0]] * views, "instruction": observation["instruction"],
                "state": observation["state"], "seed": query_seed(seed, len(queries))}
        if result is not None and len(queries) % reason_every:
            result = policy.infer(feed, reuse=result)  # the last reasoning reused: no decoding
        else:
            result = policy.infer(feed)
        if first_scores is None:
            first_scores = env.score_reasoning(result["reasoning"])
        queries.append({"step": step, "reasoning": result["reasoning"], "tokens": int(result["tokens"]),
                        "timings": {k: float(v) for k, v in result["timings"].items()}})
        if on_step is not None and step == 0:
            on_step(seed, 0, observation["images"][0], result["reasoning"])
        try:
            for action in result["action_chunk"][:query_every]:
                observation, _, terminated, truncated, info = env.step(action)
                if on_step is not None:
                    on_step(seed, int(info["step"]), observation["images"][0], result["reasoning"])
                if terminated or truncated:
                    break
        except ArmFault as exc:  # the driver has damped the arm; the next reset restarts it
            fault = f"{type(exc).__name__}: {exc}"
            break
    if fault is not None:
        outcome = "arm fault"
    else:
        outcome = "success" if info["success"] else "wrong pick" if info["failed"] else "truncated"
    scores = {name: first_scores[name] for name, _ in SCORES[env.task]}
    return {
        "seed": seed,
        "instruction": observation["instruction"],
        "expected": expected,
        "reasoning": queries[0]["reasoning"],
        "scores": scores,
        "parsed": bool(first_scores["parsed"]),
        "form": first_scores["form"],
        "success": fault is None and bool(info["success"]),
        "outcome": outcome,
        "arm_fault": fault,
        "picked": list(info["picked"]),
        "steps": int(info["step"]),
        "queries": [{k: q[k] for k in ("step", "reasoning", "tokens")} for q in queries],
        "latency_ms": _stage_medians([q["timings"] for q in queries]),
        "wall_s": round(time.perf_counter() - started, 3),
        "_timings": [q["timings"] for q in queries],
    }


def _async_episode(env: TaskEnv, policy, seed: int, config: EvalConfig, on_step: StepHook | None = None) -> dict[str, Any]:
    """One episode through the runtime's ControlLoop (evaluation/async_episode.py), as run_episode's
    record plus the loop's figures and the smoothness at the chunk joins."""
    from chatvla2.evaluation.async_episode import LatencyInjection, run_async_episode
    from chatvla2.runtime.loop import LoopConfig

    # the episode's own end stops the loop; the duration is a backstop a second past max_steps
    loop = LoopConfig(duration_s=config.max_steps / CONTROL_HZ + 1.0, chunk_mode=config.chunk_mode)
    record = run_async_episode(env, policy, seed, loop, LatencyInjection.parse(config.latency_ms), query_seed, on_step)
    first = env.score_reasoning(record["reasoning"])
    record.pop("actions")
    return {
        **record,
        "scores": {name: first[name] for name, _ in SCORES[env.task]},
        "parsed": bool(first["parsed"]),
        "form": first["form"],
        "latency_ms": _stage_medians(record["_timings"]) if record["_timings"] else {},
    }


def _stage_medians(timings: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.median([t[k] for t in timings])) * 1000, 3) for k in timings[0]}


def evaluate(config: EvalConfig, on_episode: Callable[[dict[str, Any]], None] | None = None,
             on_step: StepHook | None = None, policy=None) -> dict[str, Any]:
    """Run the episodes (the config checked itself); the JSON record (printing nothing). `on_episode` sees each
    episode's record as it finishes, `on_step` every control step (StepHook). `policy`: an already
    loaded (policy, name) to use instead of loading one from the arguments (closed by the caller)."""
    split = config.split
    cfg = model_config(config) if policy is None else policy[0].config
    check_model(cfg, config)
    owned = policy is None
    policy, name = load_policy(config) if owned else policy
    height, width = cfg.vision.image_height, cfg.vision.image_width
    backend = None
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        if config.mode == "driver":
            from chatvla2.sim.tasks.driver_backend import DriverBackend

            backend = DriverBackend(paced=config.loop == "sync")  # async: the runtime's loop keeps the schedule
        env = TaskEnv(config.task, split, height, width, backend=backend, max_steps=config.max_steps)
        for i in range(config.episodes):
            if config.loop == "async":
                records.append(_async_episode(env, policy, config.seed + i, config, on_step))
            else:
                records.append(run_episode(env, policy, config.seed + i, config.query_every, on_step, config.reason_every))
            if on_episode is not None:
                on_episode(records[-1])
    finally:
        if backend is not None:
            backend.close()
        if owned:
            policy.close()
    timings = [t for r in records for t in r.pop("_timings")]
    successes = sum(r["success"] for r in records)
    summary = {name: round(float(np.mean([r["scores"][name] for r in records])), 4) for name, _ in SCORES[config.task]}
    summary.update(successes=successes, episodes=len(records), success_rate=round(successes / len(records), 4),
                   success_interval_95=[round(v, 4) for v in wilson_interval(successes, len(records))],
                   parsed=sum(r["parsed"] for r in records), arm_faults=sum(r["arm_fault"] is not None for r in records))
    if config.loop == "async":
        summary["join_smoothness"] = _join_summary(records)
        summary["starved"] = sum(r["outcome"] == "starved" for r in records)
        summary["steps_held"] = sum(r["loop"]["steps_held"] for r in records)
    result = {
        "task": config.task, "split": split, "seed": config.seed, "episodes": config.episodes, "mode": config.mode,
        "loop": config.loop, "chunk_mode": config.chunk_mode if config.loop == "async" else None, "latency_ms": config.latency_ms,
        "query_every": config.query_every, "reason_every": config.reason_every, "max_steps": config.max_steps,
        "policy": name, "model": cfg.name, "backend": policy.backend,
        "providers": sorted(set(policy.providers.values())),
        "image": [height, width], "views": cfg.vision.num_views,
        "summary": summary,
        "paper": PAPER[(config.task, split)],
        "latency": {k: latency_stats([t[k] for t in timings]) for k in timings[0]},
        "queries": len(timings),
        "wall_s": round(time.perf_counter() - started, 3),
        "episode_records": records,
    }
    if backend is not None:
        result["driver_timing"] = backend.timing_total.summary()
        result["driver_restarts"] = list(backend.restarts)
    return result


def _join_summary(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """The largest velocity jump and acceleration at any chunk join over the episodes."""
    out = {}
    for key in ("velocity_jump", "acceleration"):
        values = [r["join_smoothness"][key] for r in records if r["join_smoothness"][key] is not None]
        out[key] = round(max(values), 4) if values else None
    out["joins"] = sum(r["join_smoothness"]["joins"] for r in records)
    return out


# --- output ------------------------------------------------------------------------------------------


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """The machine-readable record as one JSON line in `path` (its folder made): the terminal keeps
    what a person reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n")
    return path


def _text(text: str, limit: int = 160) -> str:
    """The text as a JSON string (newlines and all visible), cut at `limit` characters."""
    return json.dumps(text) if len(text) <= limit else json.dumps(text[:limit]) + f"... ({len(text)} characters)"


def format_episode(r: dict[str, Any], task: str) -> str:
    scores = ", ".join(f"{SCORE_LABELS[name]} {r['scores'][name]}/{top}" for name, top in SCORES[task])
    distinct = len({q["reasoning"] for q in r["queries"]})
    stages = " ".join(f"{k} {r['latency_ms'][k]:.2f}" for k in (*STAGES, "total") if k in r["latency_ms"])
    tokens = int(np.median([q["tokens"] for q in r["queries"]]))
    return "\n".join([
        f"episode seed {r['seed']}: {r['instruction']}",
        f"  expected : {_text(r['expected'])}",
        f"  reasoning: {_text(r['reasoning'])} (first query; {len(r['queries'])} queries, {distinct} distinct)",
        f"  scores   : {scores} (parsed: {'form ' + str(r['form']) if r['parsed'] else 'no'})",
        f"  picks    : {', '.join(r['picked']) or '-'}; {'SUCCESS' if r['success'] else 'failed'} ({r['outcome']}, "
        f"{r['steps']} steps, {r['wall_s']:.2f} s)" + (f"\n  fault    : {r['arm_fault']}" if r["arm_fault"] else ""),
        f"  latency  : p50 ms {stages} ({tokens} reasoning tokens)",
    ])


def format_run_line(result: dict[str, Any]) -> str | None:
    """How the arms were driven: the drivers' ticks (driver mode) and, asynchronously, what the loop
    held while the policy thought; None for a synchronous fast run."""
    parts = []
    if "driver_timing" in result:
        t = result["driver_timing"]
        parts.append(f"driver: {t['ticks']} ticks at {t['ticks_per_s']}/s")
        if result["loop"] == "sync":  # the world waited for each query: the drivers' schedule skipped ticks
            parts.append(f"{t['overruns']} skipped during inference, lateness p99 {t['lateness_p99_ms']} ms")
    if result["loop"] == "async":
        s = result["summary"]
        parts.append(f"loop ({result['chunk_mode']}): {s['steps_held']} steps held waiting for a chunk, "
                     f"{s['starved']} episode(s) starved")
    if not parts:
        return None
    return ", ".join(parts) + f", {result['summary']['arm_faults']} arm fault(s)"


def format_table(*results: dict[str, Any]) -> str:
    """The paper-style table: for each result (one task), its row and the paper's row for its split."""
    task = results[0]["task"]
    names = [name for name, _ in SCORES[task]]
    header = ["policy", "backend", "split", *(SCORE_LABELS[n] for n in names), "success [95% interval]", "step p50 ms"]
    rows = [header, ["---"] * len(header)]
    for result in results:
        s, p = result["summary"], result["paper"]
        rows.append([result["policy"], result["backend"], result["split"], *(f"{s[n]:.2f}" for n in names),
                     format_rate(s["successes"], s["episodes"]), f"{result['latency']['total']['p50_ms']:.1f}"])
        rows.append(["paper: ChatVLA-2", "-", result["split"], *(f"{p[n]:.2f}" for n in names),
                     f"{p['successes']}/{p['episodes']}", "-"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(config: EvalConfig) -> int:
    cfg = model_config(config)  # bad input (the config checked itself) before anything prints
    check_model(cfg, config)
    views = f" (the top camera in each of {cfg.vision.num_views} views)" if cfg.vision.num_views > 1 else ""
    print(f"eval {config.task} {config.split}: {config.episodes} episode(s) from seed {config.seed}, a query every "
          f"{config.query_every} steps, {config.mode} mode, images {cfg.vision.image_width}x{cfg.vision.image_height}{views}",
          flush=True)
    result = evaluate(config, on_episode=lambda record: print(format_episode(record, config.task), flush=True))
    print(f"policy: {result['policy']} [{result['backend']}: {', '.join(result['providers'])}]; "
          f"{result['queries']} queries in {result['wall_s']:.1f} s")
    print("scores read from each episode's first query (the reasoning written at the start of the task)")
    print(format_table(result))
    if (line := format_run_line(result)) is not None:
        print(line)
    record = write_record(config.json_out, {"task_eval": result})
    print(f"record (JSON, every episode and query): {record.resolve()}", flush=True)
    return 0
