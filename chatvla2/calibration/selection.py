"""`chatvla2 calibrate select`: the fastest plan of a sweep within an accuracy budget that the target
can run.

    chatvla2 calibrate select REPORT --budget "action_deg<=0.5,token_agreement>=0.99,success_drop<=2"
        --target orin|thor|h100|cpu [--bundle DIR]

REPORT: a sweep's directory or its report.json. The budget's metrics (any of them, `<=` or `>=`):
action_deg (worst joint error, degrees), gripper_mm, token_agreement (mean), token_agreement_min,
first_divergence (the earliest divergent token; a plan whose reasoning never diverges passes),
cosine (the worst engine's), success_drop (percentage points against the PyTorch reference: the
sweep must have measured the task level). A plan that missed export's or the policy's own budget
(the sweep's verdict) is never chosen, whatever the user's budget says.

Latency: on `cpu`, the step measured here; on orin, thor and h100, the predicted lower bound
(calibration/predict.py). Precisions each target runs: export/precision.py (no fp8 on Orin).
Prints the choice in a few lines (the gain, the cost, the next-best plan), then one JSON line.
`--bundle DIR` records the choice in that bundle's manifest (its engines must be the plan's
precisions; the sweep's own bundle for the plan is named otherwise); `chatvla2 run` follows it.
A budget no plan meets is an error naming the closest plans and what each misses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chatvla2.calibration.selection_config import SELECT_TARGETS, SelectConfig
from chatvla2.calibration.sweep_report import predicted_step_ms, step_ms
from chatvla2.calibration.targets import TARGETS
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.names import UnknownChoice

# The devices predict knows, each with its architecture as export/precision.py's TARGETS name it
# (SELECT_TARGETS adds this machine's CPU, which runs every graph: ONNX Runtime).
ARCHITECTURE = {name: target.arch for name, target in TARGETS.items()}
METRICS = {
    "action_deg": "worst joint error, degrees",
    "gripper_mm": "worst gripper error, mm",
    "token_agreement": "mean reasoning token agreement",
    "token_agreement_min": "worst observation's token agreement",
    "first_divergence": "earliest divergent reasoning token",
    "cosine": "worst engine cosine",
    "success_drop": "task success lost, percentage points",
}
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_budget(text: str) -> list[tuple[str, str, float]]:
    conditions = []
    for item in text.split(","):
        if not item.strip():
            continue
        match = _CONDITION.match(item)
        if not match:
            raise InvalidInput(f"--budget: cannot read {item.strip()!r}; write METRIC<=VALUE or METRIC>=VALUE")
        metric, op, value = match.groups()
        if metric not in METRICS:
            raise UnknownChoice(f"--budget: unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
        conditions.append((metric, op, float(value)))
    if not conditions:
        raise InvalidInput("--budget: no condition given")
    return conditions


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise MissingFile(f"no sweep report at {path} (run `chatvla2 calibrate sweep` first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not a sweep report ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("plans"), list) or "reference" not in report:
        raise InvalidInput(f"{path}: not a sweep report (no plans / reference)")
    return report


def metric(plan: dict, name: str) -> float | None:
    """A plan's figure for a budget metric (None: not measured)."""
    policy = plan.get("policy", {})
    if name == "cosine":
        return min(e["cosine"] for e in plan["engines"].values())
    if name == "success_drop":
        return plan.get("task", {}).get("success_drop_pp")
    if name == "first_divergence":
        value = policy.get("first_divergence_min")
        return float("inf") if value is None else float(value)  # never diverged
    return policy.get(name)


def latency(plan: dict, target: str) -> float | None:
    return step_ms(plan) if target == "cpu" else predicted_step_ms(plan, target)


def runs_on(plan: dict, target: str) -> bool:
    return target == "cpu" or ARCHITECTURE[target] in plan.get("targets", [])


def misses(plan: dict, conditions) -> list[str]:
    """What `plan` misses of the budget: its own verdict first, then each condition."""
    found = [] if plan.get("ok") else [plan.get("status", "not measured")]
    for name, op, bound in conditions:
        value = metric(plan, name) if "policy" in plan else None
        if value is None:
            found.append(f"{name} not measured")
        elif (op == "<=" and value > bound) or (op == ">=" and value < bound):
            found.append(f"{name} {value:.4g} (budget {op} {bound:g})")
    return found


def distance(plan: dict, conditions) -> tuple[int, float]:
    """How far a plan is from the budget: (how many things it misses, the summed relative excess)."""
    excess = 0.0
    for name, op, bound in conditions:
        value = metric(plan, name) if "policy" in plan else None
        if value is None or value == float("inf"):
            continue
        over = value - bound if op == "<=" else bound - value
        excess += max(over, 0.0) / max(abs(bound), 1e-9)
    return len(misses(plan, conditions)), excess


def select(report: dict, conditions, target: str) -> dict[str, Any]:
    """{"chosen", "next_best", "excluded" (faster plans the budget ruled out), "latency_source"}."""
    if target not in SELECT_TARGETS:
        raise UnknownChoice(f"unknown target {target!r}; targets: {', '.join(SELECT_TARGETS)}")
    if any(name == "success_drop" for name, _, _ in conditions) and "task" not in report["reference"]:
        raise InvalidInput("--budget success_drop: the sweep measured no task level (sweep with --task and a trained --checkpoint)")
    runnable = [p for p in report["plans"] if "policy" in p and runs_on(p, target)]
    if not runnable:
        raise InvalidInput(f"no plan of the sweep runs on {target}")
    timed = [p for p in runnable if latency(p, target) is not None]
    if not timed:
        raise InvalidInput(f"the sweep has no latency for {target} (predicted bounds missing: sweep with --targets {target})")
    timed.sort(key=lambda p: latency(p, target))
    passing = [p for p in timed if not misses(p, conditions)]
    if not passing:
        closest = sorted(timed, key=lambda p: distance(p, conditions))[:3]
        listed = "; ".join(f"{p['name']}: " + ", ".join(misses(p, conditions)) for p in closest)
        raise InvalidInput(f"no plan that runs on {target} meets the budget; closest: {listed}")
    chosen = passing[0]
    faster = [p for p in timed if latency(p, target) < latency(chosen, target)]
    return {"chosen": chosen, "next_best": passing[1] if len(passing) > 1 else None,
            "excluded": [(p, misses(p, conditions)) for p in faster],
            "not_runnable": [p["name"] for p in report["plans"] if "policy" in p and not runs_on(p, target)],
            "latency_source": "measured here (ONNX Runtime CPU)" if target == "cpu" else f"predicted lower bound on {target}"}


def explain(report: dict, choice: dict, target: str, conditions) -> list[str]:
    chosen = choice["chosen"]
    ms = latency(chosen, target)
    lines = [f"chosen for {target}: {chosen['name']} ({_precisions(chosen)}), step {_ms(ms)} ({choice['latency_source']})"]
    fp32 = next((p for p in report["plans"] if "policy" in p and set(p["plan"]["precisions"].values()) == {"fp32"}
                 and not p["plan"].get("steps") and not p["plan"].get("tokens") and p["plan"].get("every", 1) == 1), None)
    if fp32 is not None and latency(fp32, target) and fp32 is not chosen:
        lines.append(f"  gains: {latency(fp32, target) / ms:.2f}x faster than fp32 ({_ms(latency(fp32, target))})")
    costs = ", ".join(f"{name} {metric(chosen, name):.4g}" for name, _, _ in conditions)
    lines.append(f"  costs: {costs} (budget {', '.join(f'{n}{o}{v:g}' for n, o, v in conditions)})")
    if choice["next_best"] is not None:
        nb = choice["next_best"]
        lines.append(f"  next best: {nb['name']} at {_ms(latency(nb, target))}")
    for plan, why in choice["excluded"][:3]:
        lines.append(f"  faster but excluded: {plan['name']} ({_ms(latency(plan, target))}): {'; '.join(why)}")
    if choice["not_runnable"]:
        lines.append(f"  cannot run on {target}: {', '.join(choice['not_runnable'])}")
    return lines


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def _precisions(plan: dict) -> str:
    values = plan["plan"]["precisions"]
    return next(iter(values.values())) if len(set(values.values())) == 1 else ",".join(f"{e}={p}" for e, p in values.items())


def deployment_record(choice: dict, target: str, conditions, report_path: str) -> dict[str, Any]:
    chosen = choice["chosen"]
    plan = chosen["plan"]
    return {
        "target": target, "name": chosen["name"], "plan": dict(plan["precisions"]),
        "ddim_steps": plan.get("steps"), "max_reasoning_tokens": plan.get("tokens"), "reason_every": plan.get("every", 1),
        "latency_ms": round(latency(chosen, target), 3), "latency_source": choice["latency_source"],
        "budget": {f"{n}{o}": v for n, o, v in conditions},
        "metrics": {name: metric(chosen, name) for name in METRICS if metric(chosen, name) is not None
                    and metric(chosen, name) != float("inf")},
        "sweep_bundle": chosen.get("bundle"), "report": report_path,
    }


def record_in_bundle(bundle: str | Path, record: dict) -> None:
    from chatvla2.contract.bundle import bundle_model_config, load_manifest, write_deployment

    manifest = load_manifest(bundle, verify_hashes=True)
    exported = {name: entry.get("precision") for name, entry in manifest["engines"].items()}
    steps = bundle_model_config(bundle, manifest).scheduler.inference_steps
    wanted_steps = record["ddim_steps"] or steps
    if exported != record["plan"] or steps != wanted_steps:
        raise InvalidInput(f"{bundle}: its engines are {exported} with {steps} DDIM steps, the chosen plan is {record['plan']} "
                         f"with {wanted_steps}; use the sweep's bundle {record['sweep_bundle']} or export at that plan")
    write_deployment(bundle, record)


def main(config: SelectConfig) -> int:
    conditions = parse_budget(config.budget)  # checked by SelectConfig, as the target
    report = load_report(config.report)
    choice = select(report, conditions, config.target)
    for line in explain(report, choice, config.target, conditions):
        print(line)
    record = deployment_record(choice, config.target, conditions, str(Path(config.report).resolve()))
    if config.bundle:
        record_in_bundle(config.bundle, record)
        print(f"recorded in {Path(config.bundle) / 'manifest.json'} (chatvla2 run follows it)")
    print(json.dumps(record))
    return 0
