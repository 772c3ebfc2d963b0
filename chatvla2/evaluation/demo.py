"""`chatvla2 demo`: the shipped model, exported, driving simulated ARX arms through the runtime and
the drivers, on both of the paper's tasks (the math matching game and toy placement).

    chatvla2 demo [--checkpoint DIR] [--task both|math_game|toy_placement] [--split both|in_domain|open_world]
                  [--episodes N] [--seed S] [--plan PLAN] [--backend auto|onnxruntime|tensorrt]
                  [--mode driver|fast] [--loop async|sync] [--chunk-mode auto|switch|ensemble|rtc]
                  [--latency-ms MS] [--gif FILE] [--json-out FILE] [--cache DIR]

1. Export: the checkpoint (default: the shipped one, `checkpoints/chatvla2-demo`) becomes an ONNX
   bundle at the plan, checked by export's parity tests, and is cached under
   CACHE/bundles/<plan>[-<cpu class>]-<sha256 of the checkpoint's files>: only the first run
   exports, and a changed checkpoint, plan or CPU class exports again. CACHE: --cache, else
   $CHATVLA2_CACHE, else $XDG_CACHE_HOME/chatvla2-edge (~/.cache/chatvla2-edge). The default plan,
   `auto`, is the cpu target's where TensorRT is not installed (a rule, `export.cpu_target.AUTO_RULE`:
   each engine the first of int8, fp32 within its parity budget, for the `generic` CPU class, so the
   same plan on every machine; ONNX Runtime's MoE, dynamic int8), else fp32 for TensorRT.
   `cpu` / `cpu:PLAN` name a cpu-target plan, anything else a TensorRT one (fp32, int8, ...).
2. Run: for each task and split, N episodes (seeds S .. S+N-1) through the runtime's `Policy` on the
   bundle's engines, the actions going through the ARX drivers to two simulated arms behind
   pseudo-terminals, in real time at 50 Hz (`--mode driver`, `evaluation.task_eval.evaluate`: the
   same episodes `chatvla2 eval` runs). By default (`--loop async`) as on a robot: the runtime's
   `ControlLoop` sends an action every 20 ms while its inference thread computes the next chunk,
   joined by real-time chunking where the bundle's head was trained for it (`--chunk-mode auto`),
   else by switching. Each episode prints its reasoning, the picks, the outcome and per-stage
   latency as it ends.
3. At the end, what a person reads: the paper-style table of every split run, the ChatVLA-2
   paper's row beside each, and where the GIF of the first task's first episode (the camera view with the
   reasoning in force written under it) and the record are. The record (`--json-out`, default
   demo_output/demo.json: the settings, the bundle, every query's reasoning; tens of kB) is one
   JSON line in that file, not on the terminal.

It lives in evaluation/ because it is the task evaluation with an export in front of it:
evaluation is the layer that may use export, sim and the runtime together.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

from chatvla2.contract.errors import MissingFile
from chatvla2.evaluation.demo_config import DemoConfig
from chatvla2.evaluation.episode_gif import EpisodeGif
from chatvla2.evaluation.eval_config import EvalConfig
from chatvla2.evaluation.task_eval import evaluate, format_episode, format_run_line, format_table, load_policy, write_record

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CHECKPOINT = REPO / "checkpoints" / "chatvla2-demo"


def cache_root(given: str | None) -> Path:
    if given:
        return Path(given)
    if os.environ.get("CHATVLA2_CACHE"):
        return Path(os.environ["CHATVLA2_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chatvla2-edge"


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """sha256 over the checkpoint's model files (names and bytes; not its logs or notes) and the
    export and model code, so any change to the model or to how it is exported exports anew."""
    from chatvla2.models.checkpoint import CHECKPOINT_FILES

    digest = hashlib.sha256()
    # The export's and the models' code too: an upgraded exporter (another graph form) exports anew.
    package = Path(__file__).resolve().parents[1]
    for source in sorted([*(package / "export").glob("*.py"), *(package / "models").glob("*.py")]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for name in CHECKPOINT_FILES:
        path = checkpoint / name
        if not path.is_file():
            raise MissingFile(f"{checkpoint}: no {name} (not a checkpoint directory)")
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_plan(plan_text: str) -> tuple[str, dict]:
    """(target, plan) of the demo's `--plan`: `auto`, `cpu`, `cpu:PLAN` or a TensorRT plan."""
    import importlib.util

    from chatvla2.export.cpu_target import parse_cpu_plan
    from chatvla2.export.precision import parse_plan

    if plan_text == "auto":
        plan_text = "fp32" if importlib.util.find_spec("tensorrt") is not None else "cpu"
    if plan_text == "cpu" or plan_text.startswith("cpu:"):
        return "cpu", parse_cpu_plan(plan_text.partition(":")[2] or "auto")
    return "tensorrt", parse_plan(plan_text)


def cached_bundle(checkpoint: Path, plan_text: str, cache: Path, log=print, cpu_isa: str | None = None) -> tuple[Path, bool]:
    """(bundle directory, whether it was exported now): the cached export of `checkpoint` at the plan
    (a cpu plan: for the CPU class `cpu_isa`, default `generic`; export.cpu_target.CPU_ISAS)."""
    from chatvla2.contract.bundle import BundleError, load_manifest
    from chatvla2.export.cpu_target import resolve_cpu_isa

    target, plan = resolve_plan(plan_text)  # an unknown plan fails before anything is loaded
    cpu_isa = resolve_cpu_isa(cpu_isa) if target == "cpu" else None
    shown = {e: "|".join(p) if isinstance(p, tuple) else p for e, p in plan.items()}
    key = "_".join(f"{engine}-{precision}" for engine, precision in sorted(plan.items()) if isinstance(precision, str))
    if any(isinstance(p, tuple) for p in plan.values()):
        key = "auto"  # the cpu target's candidates: resolved by the export, recorded in its manifest
    elif len(set(plan.values())) == 1:
        key = next(iter(plan.values()))
    key = f"cpu-{key}-{cpu_isa}" if target == "cpu" else key  # the CPU class sets the int8 graphs
    bundle = cache / "bundles" / f"{key}-{checkpoint_fingerprint(checkpoint)[:16]}"
    if bundle.is_dir():
        try:
            load_manifest(bundle, verify_hashes=True, runtime=True)
            return bundle, False
        except BundleError as exc:  # damaged since it was written: export again
            log(f"cached bundle {bundle} is not usable ({exc}); exporting again")
    from chatvla2.export.bundle import export_bundle
    from chatvla2.models.loading import load_model

    model = load_model(None, str(checkpoint), seed=0)
    log(f"exporting {checkpoint} ({model.cfg.name}) for {target} at plan {shown} to {bundle} (once; later runs reuse it)")
    export_bundle(model, bundle, plan, log=lambda line: None, replace=bundle.exists(), target=target,
                  cpu_isa=cpu_isa)
    return bundle, True


def main(config: DemoConfig) -> int:
    checkpoint = Path(config.checkpoint) if config.checkpoint else SHIPPED_CHECKPOINT
    if not checkpoint.is_dir():
        raise MissingFile(f"checkpoint directory not found: {checkpoint}")
    started = time.perf_counter()
    bundle, exported = cached_bundle(checkpoint, config.plan, cache_root(config.cache), cpu_isa=config.cpu_isa)
    export_s = time.perf_counter() - started
    from chatvla2.contract.bundle import export_target, load_manifest

    manifest = load_manifest(bundle, verify_hashes=False)
    resolved = manifest["plan"]
    rule = f" ({manifest['plan_rule']}; for {manifest['cpu_isa']} CPUs)" if "plan_rule" in manifest else ""
    print(f"bundle: {bundle} ({'exported now' if exported else 'cached'}, {export_s:.1f} s): "
          f"{export_target(manifest)} target, plan {resolved}{rule}", flush=True)

    gif = EpisodeGif()
    gif_episode = (config.tasks[0], config.splits[0], config.seed)
    where = ("simulated ARX arms on pseudo-terminals through the drivers, real time" if config.mode == "driver"
             else "kinematic arms (fast mode, no drivers)")
    results = []
    episodes = EvalConfig(task=config.tasks[0], split=config.splits[0], bundle=str(bundle), backend=config.backend,
                          mode=config.mode, loop=config.loop, latency_ms=config.latency_ms,
                          query_every=config.query_every, episodes=config.episodes, seed=config.seed,
                          threads=config.threads)
    policy = load_policy(episodes)
    try:
        if config.loop == "async":
            chunk_mode = config.resolved_chunk_mode(int(getattr(policy[0], "max_prefix", 0) or 0))
            episodes = replace(episodes, chunk_mode=chunk_mode)
            where += f", the runtime's loop ({chunk_mode}): the arms move while the policy thinks"
        for task in config.tasks:
            for split in config.splits:
                print(f"\n== {task} {split}: {config.episodes} episode(s) from seed {config.seed}, {where} ==", flush=True)

                def record(seed: int, step: int, image, reasoning: str, task=task, split=split) -> None:
                    if (task, split, seed) == gif_episode:
                        gif.add(step, image, reasoning, caption=f"{task} {split} seed {seed}")

                result = evaluate(replace(episodes, task=task, split=split),
                                  on_episode=lambda r, task=task: print(format_episode(r, task), flush=True),
                                  on_step=record, policy=policy)
                results.append(result)
    finally:
        policy[0].close()
    gif_path = gif.save(config.gif).resolve()
    record_path = write_record(config.json_out, {"demo": {
        "checkpoint": str(checkpoint), "bundle": str(bundle), "exported": exported, "export_s": round(export_s, 2),
        "plan": config.plan, "resolved_plan": resolved, "gif": str(gif_path), "results": results}})
    # What a person reads, last: the table, then where the GIF and the record are.
    print("\nscores read from each episode's first query (the reasoning written at the start of the task)")
    print("\n\n".join(format_table(*(r for r in results if r["task"] == task)) for task in config.tasks))
    for r in results:
        if (line := format_run_line(r)) is not None:
            print(f"{r['task']} {r['split']}: {line}")
    print(f"record (JSON, every episode and query): {record_path.resolve()}")
    print(f"GIF of {' '.join(map(str, gif_episode[:2]))} seed {gif_episode[2]} ({len(gif.frames)} frames): {gif_path}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s", flush=True)
    return 0
