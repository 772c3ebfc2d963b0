"""Learning curves: the training log (train_log.jsonl) drawn as one PNG, redrawn as the run goes.

The log holds one JSON record per line: a training step's losses ({"step", "lm_loss",
"action_loss", ...}) or, every so often, an evaluation on held-out scenes ({"step", "eval":
{metric: value}}, training/held_out.py's keys, written by `write_eval_record`). The picture puts
side by side what the model fits (the losses) and what it can do on scenes it never saw (the reads
of each split, the toy scores, the action error, stage-0 question answering), so one glance says
which skill is being learned and whether the loss going down means anything yet.

Drawn with matplotlib's Agg canvas directly (no pyplot: no global figure state, no display), and
written atomically: a viewer refreshing the file never sees half a PNG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import numpy as np

LOSSES = ("lm_loss", "action_loss", "reading_loss", "text_arithmetic_loss")
MATH_CURVES = ("read_board", "read_cards", "arithmetic", "chosen_card")
TOY_CURVES = ("object_recognition", "spatial_affordance")
ACTION_CURVES = ("action/l1", "action/l1_teacher_forced")
SPLIT_STYLES = {"in_domain": "-", "open_world": "--"}
SMOOTHING = 0.9  # the losses' exponential moving average: per-step losses of small batches are noisy


def write_eval_record(log_file: str | Path | IO[str], step: int, metrics: dict) -> dict:
    """Append {"step": step, "eval": metrics} as one line to the log (a path, or the trainer's open file)."""
    record = {"step": int(step), "eval": {str(k): float(v) for k, v in metrics.items()}}
    line = json.dumps(record) + "\n"
    if hasattr(log_file, "write"):
        log_file.write(line)
        log_file.flush()
    else:
        with Path(log_file).open("a") as f:
            f.write(line)
    return record


def read_log(log_path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, eval records) of a JSONL log; blank or cut-off lines (a run being written) are skipped."""
    train, evals = [], []
    for line in Path(log_path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        (evals if isinstance(record.get("eval"), dict) else train).append(record)
    return train, evals


def smooth(values, weight: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average, bias-corrected so the first points are not pulled towards 0."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1.0 - weight) * value
        out.append(average / (1.0 - weight**i))
    return np.array(out)


def _series(evals: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r["eval"][key]) for r in evals if key in r["eval"]]
    return [s for s, _ in points], [v for _, v in points]


def _split_panel(ax, evals, task: str, names, title: str) -> None:
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    for split, style in SPLIT_STYLES.items():
        for name in names:
            steps, values = _series(evals, f"{task}/{split}/{name}")
            if steps:
                ax.plot(steps, values, style, color=colours[name], marker=".", label=f"{name} ({split})")
    ax.set(title=title, xlabel="step", ylabel="rate", ylim=(-0.05, 1.05))


def plot_curves(log_path: str | Path, out_png: str | Path) -> Path:
    """Draw the log's curves into `out_png` (module docstring); panels without data are left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, evals = read_log(log_path)
    keys = {key for r in evals for key in r["eval"]}
    panels = []
    if any(loss in r for r in train for loss in LOSSES):
        panels.append("losses")
    if any(key.startswith("math/") for key in keys):
        panels.append("math")
    if any(key.startswith("toy/") for key in keys):
        panels.append("toy")
    if keys & set(ACTION_CURVES):
        panels.append("action")
    reading = sorted(key for key in keys if key.startswith("reading/") and key.endswith("/exact"))
    probe = [(r["step"], r["reading_probe_accuracy"]) for r in train if isinstance(r.get("reading_probe_accuracy"), (int, float))]
    if reading or probe:
        panels.append("reading")
    columns = 2 if len(panels) > 1 else 1
    rows = max(1, -(-len(panels) // columns))
    figure = Figure(figsize=(6.4 * columns, 4.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        if panel == "losses":
            for i, loss in enumerate(LOSSES):
                points = [(r["step"], r[loss]) for r in train if isinstance(r.get(loss), (int, float))]
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, color=f"C{i}", alpha=0.25, linewidth=0.8)
                    ax.plot(steps, smooth(values), color=f"C{i}", label=f"{loss} (smoothed)")
            ax.set(title="training losses", xlabel="step", ylabel="loss", yscale="log")
        elif panel == "math":
            _split_panel(ax, evals, "math", MATH_CURVES, "math game, held out: exact reads (solid in-domain, dashed open-world)")
        elif panel == "toy":
            _split_panel(ax, evals, "toy", TOY_CURVES, "toy placement, held out (solid in-domain, dashed open-world)")
        elif panel == "action":
            for key in ACTION_CURVES:
                steps, values = _series(evals, key)
                if steps:
                    ax.plot(steps, values, marker=".", label=key.split("/", 1)[1])
            ax.set(title="action chunk L1 vs the expert (normalised, held-out in-domain frames)", xlabel="step", ylabel="L1")
        else:
            for i, key in enumerate(reading):
                steps, values = _series(evals, key)
                ax.plot(steps, values, marker=".", color=f"C{i}", label=key.split("/")[1])
                steps, values = _series(evals, key.replace("/exact", "/chars"))
                if steps:  # character similarity: rises before exact reads do
                    ax.plot(steps, values, color=f"C{i}", linestyle="--", alpha=0.6)
            if probe:  # the auxiliary reading probe (training/reading_probe.py), on the training batches
                steps, values = zip(*probe)
                ax.plot(steps, smooth(values), color="black", linestyle=":", label="probe: symbols named per cell (train, smoothed)")
            ax.set(
                title="reading, held out: exact answers (solid), character similarity (dashed); the probe",
                xlabel="step",
                ylabel="rate",
                ylim=(-0.05, 1.05),
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no records yet", ha="center", va="center")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    partial = out_png.with_name(out_png.name + ".partial")
    figure.savefig(partial, format="png", dpi=100)
    os.replace(partial, out_png)
    return out_png
