"""`chatvla2 calibrate sweep`: every plan exported, timed and measured against the fp32 reference.

    chatvla2 calibrate sweep (--config NAME | --checkpoint DIR) --plans fp32,fp16,int8,int4,fp8 --out DIR
        [--calibration SOURCE|FILE] [--held-out SOURCE|FILE] [--runs 50] [--warmup 5]
        [--task math_game --episodes 10 --splits in_domain,open_world] [--targets orin,thor,h100]

Plans: calibration/plans.py (precisions per engine, DDIM steps, token cap, reasoning cadence).
Observations: `--calibration` sets the quantization scales, `--held-out` measures accuracy; each is
a capture file (`chatvla2 calibrate capture`) or a source captured here; the two must not share an
observation, and both must come from this model (its weights' sha256), else a one-line error.

For each plan, on this machine's ONNX Runtime (CPU here):
- engine level, for each engine: latency (median, p99 over `--runs` after `--warmup`, on the first
  held-out call's inputs), the PyTorch eager module's latency on the same inputs (measured once,
  the reference row), and accuracy over every held-out call against the fp32 reference outputs:
  the worst cosine, relative and max abs error, and whether export's parity budget
  (export/thresholds.py) holds;
- policy level, over the held-out observations with the reference's diffusion noise: reasoning
  token agreement (the common prefix over the longer reasoning; 1 = the same text), the first
  divergent token, the action chunk's error after unnormalisation (joints in degrees, grippers in
  mm: the worst entry; also over the observations whose reasoning came out the same, the engines'
  numeric error alone), the token agreement and that error against export/thresholds.py's policy
  budget; the step's latency (median,
  p99 over `--runs`; with a cadence of N, the mean step over N queries: one reasons, N-1 reuse);
- task level with `--task` (a trained checkpoint): `chatvla2 eval`'s scores and success per split
  (fast mode), the PyTorch reference's too, and the success drop in percentage points;
- the lower-bound latency on each `--targets` device (calibration/predict.py, from the graphs).
A plan whose export cannot be made is recorded with the reason; a plan that misses a budget is
measured all the same and marked: `select` rejects it. The budgets judge precision: a plan with
fewer DDIM steps or a token cap changes the policy on purpose, so its action head is not held to
the engine budget (compared with the model's own steps) nor the plan to the policy budget; the
user's budget in `select` judges it.

Output in DIR: `report.md` (tables), `report.json`, `pareto.png`; `results/NAME.json` per plan as it
finishes and `bundles/` (the exports): an interrupted sweep run again resumes where it stopped.
Accuracy measured here holds on TensorRT (the same graphs); CPU latency does not (report.md says so).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from chatvla2.calibration.capture import (
    capture,
    engine_calls,
    load_capture,
    model_fingerprint,
    policy_cases,
    quantization_inputs,
    write_capture,
)
from chatvla2.calibration.observations import check_disjoint
from chatvla2.calibration.plans import Plan, parse_plans
from chatvla2.calibration.sweep_config import SweepConfig
from chatvla2.contract.embodiment import DIM, GRIPPER_INDICES
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.evaluation.timing import latency_stats, time_runs

ENGINES = ("vision", "prefill", "decode", "action_head")
RESULTS = "results"
REFERENCE = "_reference"


# --- the sweep ------------------------------------------------------------------------------------


def sweep(config: SweepConfig, log=print) -> dict[str, Any]:
    from chatvla2.models.loading import load_model

    plans = parse_plans(config.plans)  # the options checked themselves (sweep_config.py); the checkpoint:
    if config.checkpoint and not Path(config.checkpoint).is_dir():
        raise MissingFile(f"checkpoint directory not found: {config.checkpoint}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).mkdir(exist_ok=True)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    model = load_model(config.preset, config.checkpoint, seed=config.seed)
    fingerprint = model_fingerprint(model)
    calibration = _capture(model, config.calibration, out / "captures" / "calibration.npz", fingerprint, config, log)
    held_out = _capture(model, config.held_out, out / "captures" / "held_out.npz", fingerprint, config, log)
    check_disjoint([o["id"] for o in calibration[0]["observations"]], [o["id"] for o in held_out[0]["observations"]])

    reference = _cached(out, REFERENCE, {"model_sha256": fingerprint, "task": config.task_key},
                        lambda: _reference(model, held_out, config, log), log)
    results = []
    for plan in _progress(plans, config):
        key = {"plan": plan.to_dict(), "model_sha256": fingerprint, "task": config.task_key, "runs": config.runs}
        results.append(_cached(out, _file_name(plan.name), key,
                               lambda plan=plan: _measure_plan(model, plan, calibration, held_out, reference, config, out, log), log))
    report = {"model": model.cfg.name, "model_source": config.checkpoint or f"preset {config.preset} seed {config.seed}",
              "model_sha256": fingerprint, "machine": _machine(), "calibration": calibration[0]["source"],
              "held_out": held_out[0]["source"], "held_out_observations": len(held_out[0]["observations"]),
              "runs": config.runs, "reference": reference, "plans": results}
    from chatvla2.calibration.sweep_report import write_report

    write_report(report, out)
    return report


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=+" else "_" for c in name)


def _progress(plans: list[Plan], config):
    if config.quiet:
        return plans
    from tqdm import tqdm

    return tqdm(plans, desc="sweep", unit="plan")


def _cached(out: Path, name: str, key: dict, compute, log) -> dict:
    """A finished result from an earlier run of the same settings, or computed now and saved."""
    path = out / RESULTS / f"{name}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                log(f"{name}: done in an earlier run (resumed)")
                return saved["result"]
        except (json.JSONDecodeError, KeyError):
            pass  # half-written or foreign: measure again
    result = compute()
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"key": key, "result": result}, indent=1))
    partial.replace(path)
    return result


def _machine() -> dict:
    import os
    import platform

    import onnxruntime

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__}


def _capture(model, given: str, default_path: Path, fingerprint: str, config, log) -> tuple[dict, Any]:
    """(meta, data) of a capture file, or of `given` as a source captured into `default_path`."""
    path = Path(given)
    if given.endswith(".npz"):
        meta, data = load_capture(path)
    else:
        meta = None
        if default_path.is_file():
            meta, data = load_capture(default_path)
            same = (meta["source"], meta["model_sha256"], meta["min_reasoning_tokens"]) == (given, fingerprint, config.min_tokens)
            meta = meta if same else None
        if meta is None:
            log(f"capturing {given}")
            default_path.parent.mkdir(parents=True, exist_ok=True)
            write_capture(default_path, capture(model, given, min_tokens=config.min_tokens, max_tokens=config.max_tokens,
                                                seed=config.seed, progress=not config.quiet))
            meta, data = load_capture(default_path)
    if meta["model_sha256"] != fingerprint:
        raise InvalidInput(f"{given}: captured from another model ({meta['model']}, weights {meta['model_sha256'][:12]}), "
                         f"not this one ({model.cfg.name}, {fingerprint[:12]})")
    return meta, data


# --- the reference ---------------------------------------------------------------------------------


def _reference(model, held_out, config, log) -> dict:
    """The PyTorch eager modules' latency per engine and the policy step's, on the held-out inputs;
    the task scores of the PyTorch policy with --task."""
    from chatvla2.export.torch_engine import torch_policy

    meta, data = held_out
    policy = torch_policy(model)
    _apply_reasoning_limits(policy, meta, None)
    engines = {}
    for name in ENGINES:
        inputs, _ = engine_calls(data, meta, name)[0]
        engines[name] = {"latency": _time(lambda: policy.engines[name].run(inputs), config.warmup, config.runs)}
    cases = policy_cases(data, meta)
    step = _policy_latency(policy, cases, 1, config)
    result = {"engines": engines, "policy": {"latency": step}}
    if config.task:
        log("task level: the PyTorch reference")
        result["task"] = _task_level(policy, f"PyTorch {model.cfg.name}", Plan("reference", {}), config)
    return result


# --- one plan --------------------------------------------------------------------------------------


def _measure_plan(model, plan: Plan, calibration, held_out, reference, config, out: Path, log) -> dict:
    from chatvla2.runtime.policy import Policy

    result: dict[str, Any] = {"plan": plan.to_dict(), "name": plan.name}
    bundle = out / "bundles" / plan.export_key
    try:
        manifest = _export(model, plan, calibration, bundle, out, log)
    except (ValueError, RuntimeError, OSError) as exc:  # an export that cannot be made: say why, go on
        log(f"{plan.name}: export failed: {exc}")
        return {**result, "status": f"export failed: {exc}", "ok": False}
    from chatvla2.export.precision import plan_targets

    result.update(bundle=str(bundle), targets=plan_targets(plan.precisions),
                  export={name: {k: e.get(k) for k in ("precision", "parity", "low_precision_weight_fraction", "kept_fp32",
                                                       "weight_bytes_by_dtype")}
                          for name, e in manifest["engines"].items()})
    meta, data = held_out
    cases = policy_cases(data, meta)
    policy = Policy.from_bundle(bundle, backend="onnxruntime", threads=config.threads)
    try:
        _apply_reasoning_limits(policy, meta, plan.tokens)
        result["engines"] = _engine_level(policy, plan, held_out, config, model.cfg.scheduler.inference_steps)
        result["policy"] = _policy_accuracy(policy, cases, plan)
        result["policy"]["latency"] = _policy_latency(policy, cases, plan.every, config)
        if config.task:
            log(f"{plan.name}: task level")
            result["task"] = _task_level(policy, f"bundle {plan.name}", plan, config)
            result["task"]["success_drop_pp"] = _success_drop(reference["task"], result["task"])
    finally:
        policy.close()
    tokens = int(np.median([len(c["reasoning_ids"]) for c in cases]))
    result["predicted"] = _predicted(bundle, plan, config, max(1, min(tokens, plan.tokens or tokens)))
    misses = _budget_misses(result)
    result.update(ok=not misses, status="within budgets" if not misses else "misses: " + "; ".join(misses))
    log(f"{plan.name}: {result['status']}; step p50 {result['policy']['latency']['p50_ms']:.1f} ms")
    return result


@contextmanager
def _ddim_steps(model, steps: int | None):
    """The model with `steps` DDIM inference steps for the duration (the action head re-exported)."""
    if steps is None or steps == model.cfg.scheduler.inference_steps:
        yield model
        return
    from chatvla2.models.ddim import DDIMScheduler

    saved_cfg, saved_scheduler = model.cfg, model.action_head.scheduler
    model.cfg = replace(saved_cfg, scheduler=replace(saved_cfg.scheduler, inference_steps=steps))
    model.action_head.scheduler = DDIMScheduler(model.cfg.scheduler)
    try:
        yield model
    finally:
        model.cfg, model.action_head.scheduler = saved_cfg, saved_scheduler


def _export(model, plan: Plan, calibration, bundle: Path, out: Path, log) -> dict:
    from chatvla2.contract.bundle import BundleError, load_manifest
    from chatvla2.export.bundle import export_bundle

    if bundle.is_dir():
        try:
            return load_manifest(bundle, verify_hashes=True, runtime=True)
        except BundleError:
            pass  # half-made or damaged: export again
    log(f"{plan.name}: exporting {plan.export_key}")
    started = time.perf_counter()
    with _ddim_steps(model, plan.steps):
        manifest = export_bundle(model, bundle, plan.precisions, calibration=quantization_inputs(calibration[1]),
                                 log=lambda line: None, trace_cache=out / "trace_cache", replace=bundle.exists(),
                                 enforce_budgets=False)
    log(f"{plan.name}: exported in {time.perf_counter() - started:.0f} s")
    return manifest


def _apply_reasoning_limits(policy, meta: dict, cap: int | None) -> None:
    policy.min_reasoning_tokens = int(meta["min_reasoning_tokens"])
    policy.max_reasoning_tokens = int(meta["max_reasoning_tokens"]) if cap is None else min(cap, int(meta["max_reasoning_tokens"]))


def _time(run, warmup: int, runs: int) -> dict:
    return latency_stats(time_runs(run, warmup, runs))


def _engine_level(policy, plan: Plan, held_out, config, reference_steps: int) -> dict:
    from chatvla2.export.parity import compare
    from chatvla2.export.thresholds import budget_for

    meta, data = held_out
    engines = {}
    for name in ENGINES:
        engine = policy.engines[name]
        calls = engine_calls(data, meta, name)
        worst = None
        for inputs, reference in calls:
            feed = {k: np.ascontiguousarray(v.astype(engine.spec.input(k).dtype, copy=False)) for k, v in inputs.items()}
            outputs = engine.run(feed)
            figures = compare(reference, {k: np.asarray(outputs[k], np.float32) for k in reference})
            if worst is None or figures.cosine < worst.cosine:
                worst = figures
        first = {k: np.ascontiguousarray(v.astype(engine.spec.input(k).dtype, copy=False)) for k, v in calls[0][0].items()}
        precision = plan.precisions[name]
        budget = budget_for(precision, name)
        within = worst.cosine >= budget.cosine_min and worst.relative_error <= budget.relative_error_max
        if name == "action_head" and plan.steps and plan.steps != reference_steps:
            within = None  # fewer DDIM steps than the reference: a change of method, not a precision error
        engines[name] = {
            "precision": precision, "calls": len(calls), **worst.to_dict(),
            "budget": {"cosine_min": budget.cosine_min, "relative_error_max": budget.relative_error_max},
            "within_budget": within,
            "latency": _time(lambda: engine.run(first), config.warmup, config.runs),
        }
    return engines


def action_errors(actions: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(worst joint error in degrees, worst gripper error in mm) of an unnormalised chunk."""
    error = np.abs(np.asarray(actions, np.float64) - np.asarray(reference, np.float64))
    grippers = list(GRIPPER_INDICES) if error.shape[-1] == DIM else []  # the 14-D layout's gripper widths
    joints = [d for d in range(error.shape[-1]) if d not in grippers]
    joint_deg = float(np.degrees(error[..., joints]).max(initial=0.0))
    gripper_mm = float((error[..., grippers] * 1000).max(initial=0.0)) if grippers else 0.0
    return joint_deg, gripper_mm


def token_agreement(ids: list[int], reference: list[int]) -> tuple[float, int | None]:
    """(common prefix / the longer reasoning, the first position that differs or None)."""
    prefix = 0
    for a, b in zip(ids, reference):
        if a != b:
            break
        prefix += 1
    longest = max(len(ids), len(reference))
    if prefix == longest:
        return 1.0, None
    return prefix / longest, prefix


def _policy_accuracy(policy, cases: list[dict], plan: Plan) -> dict:
    agreements, divergences, joints, grippers, same, joints_same = [], [], [], [], 0, []
    for case in cases:
        result = policy.infer({"images": case["images"], "instruction": case["instruction"], "state": case["state"],
                               "noise": case["noise"]})
        agreement, first = token_agreement(list(result["reasoning_ids"]), case["reasoning_ids"])
        agreements.append(agreement)
        same += first is None
        if first is not None:
            divergences.append(first)
        joint_deg, gripper_mm = action_errors(result["action_chunk"], case["actions"])
        joints.append(joint_deg)
        grippers.append(gripper_mm)
        if first is None:
            joints_same.append(joint_deg)
    return {
        "observations": len(cases), "token_agreement": round(float(np.mean(agreements)), 6),
        "token_agreement_min": round(float(np.min(agreements)), 6), "reasoning_identical": same,
        "first_divergence_min": min(divergences) if divergences else None,
        "first_divergence_median": float(np.median(divergences)) if divergences else None,
        "action_deg": round(max(joints), 6), "action_deg_median": round(float(np.median(joints)), 6),
        # where the reasoning came out the same: the numeric error of the engines alone (a divergent
        # reasoning conditions the head on another r, and moves the actions for that reason)
        "action_deg_same_reasoning": round(max(joints_same), 6) if joints_same else None,
        "gripper_mm": round(max(grippers), 6),
    }


def _policy_latency(policy, cases: list[dict], every: int, config) -> dict:
    """The step over the held-out observations, cycled for `--runs` after `--warmup`. With a cadence
    of N: the mean over N queries (one full, N-1 reusing the reasoning)."""
    def observation(i):
        c = cases[i % len(cases)]
        return {"images": c["images"], "instruction": c["instruction"], "state": c["state"], "noise": c["noise"]}

    for i in range(config.warmup):
        policy.infer(observation(i))
    full, reused = [], []
    for i in range(config.runs):
        result = policy.infer(observation(i))
        full.append(result["timings"]["total"])
        if every > 1:
            reused.append(policy.infer(observation(i), reuse=result)["timings"]["total"])
    stats = latency_stats(full)
    if every > 1:
        reuse = latency_stats(reused)
        stats = {"p50_ms": round((stats["p50_ms"] + (every - 1) * reuse["p50_ms"]) / every, 3),
                 "p99_ms": stats["p99_ms"],  # the worst step still writes a whole reasoning
                 "full_p50_ms": stats["p50_ms"], "reuse_p50_ms": reuse["p50_ms"]}
    return stats


def _task_level(policy, name: str, plan: Plan, config) -> dict:
    from chatvla2.evaluation.eval_config import EvalConfig
    from chatvla2.evaluation.task_eval import evaluate

    splits = {}
    for split in config.split_list:
        # the model's source names what is measured; `policy` is what runs
        episodes = EvalConfig(task=config.task, split=split, episodes=config.episodes, seed=config.episode_seed,
                              mode="fast", reason_every=plan.every, preset=config.preset, checkpoint=config.checkpoint)
        record = evaluate(episodes, policy=(policy, name))
        splits[split] = {"summary": record["summary"], "paper": record["paper"]}
    return {"splits": splits}


def _success_drop(reference: dict, measured: dict) -> float:
    """Percentage points of success lost against the reference, over all the splits' episodes."""
    def rate(task):
        s = [v["summary"] for v in task["splits"].values()]
        return 100.0 * sum(x["successes"] for x in s) / sum(x["episodes"] for x in s)

    return round(rate(reference) - rate(measured), 3)


def _predicted(bundle: Path, plan: Plan, config, tokens: int) -> dict:
    """The lower-bound step on each target (calibration/predict.py) at the reference's median
    reasoning length on the held-out observations (capped by the plan); with a cadence of N, the
    mean over N queries."""
    from chatvla2.calibration.predict import predict_bundle

    predicted = predict_bundle(bundle, config.target_list, tokens=tokens)
    targets = {}
    for target, step in predicted["step_ms"].items():
        every, reuse = step["every"], step["reuse"]
        mean = None if every is None else round((every + (plan.every - 1) * reuse) / plan.every, 3)
        targets[target] = {"step_ms": mean, "every_ms": every, "reuse_ms": reuse}
    return {"tokens": tokens, "targets": targets,
            "engines": {name: {t: b["ms"] for t, b in e["bounds"].items()} for name, e in predicted["engines"].items()}}


def _budget_misses(result: dict) -> list[str]:
    from chatvla2.export.thresholds import policy_budget_for

    misses = [f"{name} cosine {e['cosine']:.4f} < {e['budget']['cosine_min']}" for name, e in result["engines"].items()
              if e["within_budget"] is False]
    p = result["policy"]
    if result["plan"]["steps"] or result["plan"]["tokens"]:
        return misses  # fewer steps or a shorter reasoning change the policy on purpose: the user's budget judges
    precisions = set(result["plan"]["precisions"].values())
    budget = policy_budget_for(precisions)
    same = p["action_deg_same_reasoning"]
    if same is not None and same > budget.action_deg_max:
        misses.append(f"action error {same:.3g} deg (same reasoning) > {budget.action_deg_max}")
    if p["token_agreement"] < budget.token_agreement_min:
        misses.append(f"token agreement {p['token_agreement']:.3f} < {budget.token_agreement_min}")
    return misses


def main(config: SweepConfig) -> int:
    report = sweep(config, log=_log(config))
    out = Path(config.out)
    print((out / "report.md").read_text())
    print(json.dumps({"sweep": {"out": str(out), "report": str(out / "report.json"), "pareto": str(out / "pareto.png"),
                                "plans": {p["name"]: {k: p.get(k) for k in ("ok", "status")} for p in report["plans"]}}}))
    return 0


def _log(config):
    if config.quiet:
        return lambda line: None
    from tqdm import tqdm

    return lambda line: tqdm.write(line)

