"""The sweep's report: `report.json` (everything), `report.md` (the tables) and `pareto.png`
(latency against error, one point per engine and precision and one per whole plan, the frontier
drawn; task success on a third panel when it was measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CPU_CAVEAT = ("Accuracy measured here holds on a TensorRT target (the same ONNX graphs, the same Q/DQ scales); "
              "CPU latency does not: ONNX Runtime's CPU kernels emulate fp8 and run fp16 and int8 Q/DQ slower than fp32, "
              "where TensorRT runs them natively. For a Jetson, read the predicted lower bounds (calibration/predict.py).")


def predicted_step_ms(plan: dict, target: str) -> float | None:
    """The plan's predicted lower-bound step on `target` (ms), if predicted."""
    entry = (plan.get("predicted") or {}).get("targets", {}).get(target)
    return None if entry is None else entry.get("step_ms")


def step_ms(plan: dict) -> float | None:
    return plan.get("policy", {}).get("latency", {}).get("p50_ms")


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """The points no other point beats on both latency and error (lower is better), by latency."""
    front, best = [], float("inf")
    for x, y, label in sorted(points, key=lambda p: (p[0], p[1])):
        if y < best:
            front.append((x, y, label))
            best = y
    return front


def write_report(report: dict, out: Path) -> None:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "pareto.png")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _knobs(plan: dict) -> str:
    p = plan["plan"]
    return " ".join(f"{k}={p[k]}" for k in ("steps", "tokens") if p.get(k)) + (f" every={p['every']}" if p.get("every", 1) > 1 else "") or "-"


def _precisions(plan: dict) -> str:
    values = plan["plan"]["precisions"]
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{e[:4]}={p}" for e, p in values.items())


def markdown(report: dict) -> str:
    ref = report["reference"]
    plans = report["plans"]
    targets = sorted({t for p in plans for t in (p.get("predicted") or {}).get("targets", {})})
    lines = [
        f"# Calibration sweep: {report['model']} ({report['model_source']})",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, ONNX Runtime {report['machine']['onnxruntime']} "
        f"(CPU). Held-out: {report['held_out_observations']} observations of `{report['held_out']}`; quantization "
        f"scales from `{report['calibration']}` (disjoint). Latency: median / p99 over {report['runs']} runs.",
        "",
        CPU_CAVEAT,
        "",
        "## Whole plans",
        "",
    ]
    header = ["plan", "precision", "knobs", "CPU step ms p50 / p99", "vs PyTorch", *(f"{t} bound ms" for t in targets),
              "token agreement", "first divergence", "action err deg", "gripper err mm"]
    task = "task" in ref
    if task:
        header += [f"success {split}" for split in ref["task"]["splits"]] + ["success drop pp"]
    header.append("verdict")
    rows = [header, ["---"] * len(header)]
    ref_step = ref["policy"]["latency"]["p50_ms"]
    reference_row = ["PyTorch eager (reference)", "fp32", "-", f"{ref_step:.1f} / {ref['policy']['latency']['p99_ms']:.1f}", "1.00x",
                     *("-" for _ in targets), "1", "-", "0", "0"]
    if task:
        reference_row += [_success(ref["task"], s) for s in ref["task"]["splits"]] + ["0"]
    rows.append(reference_row + ["reference"])
    for p in plans:
        if "policy" not in p:
            rows.append([p["name"], _precisions(p), _knobs(p), *(["-"] * (len(header) - 4)), p["status"]])
            continue
        pol, lat = p["policy"], p["policy"]["latency"]
        row = [p["name"], _precisions(p), _knobs(p), f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f}",
               f"{ref_step / lat['p50_ms']:.2f}x", *(_fmt(predicted_step_ms(p, t), 4) for t in targets),
               _fmt(pol["token_agreement"]), _fmt(pol["first_divergence_min"]), _fmt(pol["action_deg"]), _fmt(pol["gripper_mm"])]
        if task:
            row += [_success(p["task"], s) for s in ref["task"]["splits"]] + [_fmt(p["task"]["success_drop_pp"])]
        row.append("ok" if p["ok"] else p["status"])
        rows.append(row)
    lines += _table(rows)
    lines += ["", "## Engines", "",
              "Worst held-out call against the fp32 PyTorch module; the budget is export/thresholds.py's.", ""]
    rows = [["plan", "engine", "precision", "CPU ms p50 / p99", "PyTorch eager ms p50", "cosine", "rel. error", "max abs",
             "within budget"]]
    rows.append(["---"] * len(rows[0]))
    for p in plans:
        for name, e in p.get("engines", {}).items():
            rows.append([p["name"], name, e["precision"], f"{e['latency']['p50_ms']:.2f} / {e['latency']['p99_ms']:.2f}",
                         f"{ref['engines'][name]['latency']['p50_ms']:.2f}", f"{e['cosine']:.6f}", f"{e['relative_error']:.2e}",
                         f"{e['max_abs']:.3g}", {True: "yes", False: "NO", None: "n/a (fewer DDIM steps)"}[e["within_budget"]]])
    lines += _table(rows)
    lines += ["", "`pareto.png`: latency against error; the frontier joins the plans no other plan beats on both.", ""]
    return "\n".join(lines)


def _success(task: dict, split: str) -> str:
    """successes/episodes and the paper's reasoning scores (the first query's), e.g. "0/10 (ocr 2, math 0)"."""
    s = task["splits"][split]["summary"]
    scores = ", ".join(f"{k} {v:g}" for k, v in s.items()
                       if k not in ("successes", "episodes", "success_rate", "parsed", "arm_faults"))
    return f"{s['successes']}/{s['episodes']} ({scores})"


def _table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a robot or CI
    import matplotlib.pyplot as plt

    plans = [p for p in report["plans"] if "policy" in p]
    task = "task" in report["reference"]
    panels = 3 if task else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4))
    engines_axis, plans_axis = axes[0], axes[1]
    markers = {"vision": "o", "prefill": "s", "decode": "^", "action_head": "D"}
    for name, marker in markers.items():
        points = [(p["engines"][name]["latency"]["p50_ms"], max(1 - p["engines"][name]["cosine"], 1e-9),
                   p["engines"][name]["precision"]) for p in plans if name in p.get("engines", {})]
        if not points:
            continue
        engines_axis.scatter([x for x, _, _ in points], [y for _, y, _ in points], marker=marker, label=name)
        for x, y, precision in points:
            engines_axis.annotate(precision, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(points)
        engines_axis.plot([x for x, _, _ in front], [y for _, y, _ in front], linewidth=0.8, alpha=0.6)
    engines_axis.set(xscale="log", yscale="log", xlabel="engine latency here, ms (median)", ylabel="1 - cosine (worst held-out call)",
                     title="engines")
    engines_axis.legend(fontsize=7)

    points = [(step_ms(p), max(p["policy"]["action_deg"], 1e-6), p["name"]) for p in plans]
    plans_axis.scatter([x for x, _, _ in points], [y for _, y, _ in points],
                       c=["tab:green" if p["ok"] else "tab:red" for p in plans])
    for x, y, name in points:
        plans_axis.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    plans_axis.plot([x for x, _, _ in front], [y for _, y, _ in front], color="black", linewidth=1, label="frontier")
    plans_axis.axvline(report["reference"]["policy"]["latency"]["p50_ms"], color="grey", linestyle=":", label="PyTorch eager")
    plans_axis.set(yscale="log", xlabel="policy step here, ms (median)", ylabel="action error, degrees (worst)",
                   title="whole plans (green: within budgets)")
    plans_axis.legend(fontsize=7)

    if task:
        axis = axes[2]
        rates = []
        for p in plans:
            s = [v["summary"] for v in p["task"]["splits"].values()]
            rates.append((step_ms(p), 100.0 * sum(x["successes"] for x in s) / sum(x["episodes"] for x in s), p["name"]))
        axis.scatter([x for x, _, _ in rates], [y for _, y, _ in rates])
        for x, y, name in rates:
            axis.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ref = [v["summary"] for v in report["reference"]["task"]["splits"].values()]
        axis.axhline(100.0 * sum(x["successes"] for x in ref) / sum(x["episodes"] for x in ref), color="grey", linestyle=":",
                     label="PyTorch reference")
        axis.set(xlabel="policy step here, ms (median)", ylabel="task success, % of episodes", title="task level", ylim=(-5, 105))
        axis.legend(fontsize=7)
    figure.suptitle(f"{report['model']}: accuracy against latency (CPU latency; accuracy carries to TensorRT)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
