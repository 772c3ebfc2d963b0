"""One table from several `chatvla2 eval` records (`chatvla2 eval ... --json-out FILE`: files whose last line is
`{"task_eval": ...}`):
a row per (policy, split) with how many first reasonings parse as the paper's template, the
paper's ChatVLA-2 row per split, then one JSON line.

    .venv/bin/python benchmarks/eval_table.py runs/demo/eval/*.json [--names main=ChatVLA-2 ...]

`--names FILE_STEM_PREFIX=LABEL` relabels the rows of files whose name starts with the prefix (the
policy column otherwise shows the checkpoint or bundle path).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatvla2.evaluation.rates import format_rate

SCORES = {"math_game": (("ocr", "OCR /4"), ("math", "math /2")),
          "toy_placement": (("object_recognition", "object recognition"), ("spatial_affordance", "spatial affordance"))}


def load(path: Path) -> dict:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty")
    record = json.loads(lines[-1])
    if "task_eval" not in record:
        raise ValueError(f"{path}: the last line is not a task_eval JSON line")
    return record["task_eval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--names", nargs="*", default=[], metavar="PREFIX=LABEL")
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.names)
    results = []
    for path in args.files:
        r = load(path)
        label = next((v for k, v in labels.items() if path.name.startswith(k)), r["policy"])
        results.append((label, r))
    task = results[0][1]["task"]
    header = ["policy", "backend", "split", *(name for _, name in SCORES[task]), "template parses", "success", "rate [95% interval]",
              "query p50 ms"]
    rows = [header, ["---"] * len(header)]
    summary = []
    for split in ("in_domain", "open_world"):
        chosen = [(label, r) for label, r in results if r["split"] == split]
        for label, r in chosen:
            s = r["summary"]
            rows.append([label, r["backend"], split, *(f"{s[key]:.2f}" for key, _ in SCORES[task]),
                         f"{s['parsed']}/{s['episodes']}", f"{s['successes']}/{s['episodes']}", format_rate(s["successes"], s["episodes"]),
                         f"{r['latency']['total']['p50_ms']:.0f}"])
            summary.append({"policy": label, "backend": r["backend"], "split": split, **s,
                            "query_p50_ms": r["latency"]["total"]["p50_ms"]})
        if chosen:
            p = chosen[0][1]["paper"]
            rows.append(["paper: ChatVLA-2", "-", split, *(f"{p[key]:.2f}" for key, _ in SCORES[task]), "-",
                         f"{p['successes']}/{p['episodes']}", f"{100 * p['successes'] / p['episodes']:.0f}%", "-"])
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    print(json.dumps({"eval_table": summary}))


if __name__ == "__main__":
    main()
