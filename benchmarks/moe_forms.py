"""ONNX Runtime CPU latency of the prefill and decode graphs in both MoE forms (fp32).

    python benchmarks/moe_forms.py --config small [--runs 20] [--threads 2]

Prints a table, then one JSON line. The prompt is the robot's (the math-game instruction and the
preset's camera views); the decode step runs at the position after it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from export_table import time_session  # benchmarks/export_table.py: this script's directory is on sys.path

from chatvla2.export.calibration_data import record_engine_inputs
from chatvla2.export.onnx_export import engine_specs, save_onnx, trace_to_onnx
from chatvla2.models.loading import load_model
from chatvla2.runtime.onnxruntime_session import create_session


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.config)
    inputs = record_engine_inputs(model, samples=1, seed=7, decode_steps=1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for form in ("gather", "dense"):
            model.set_moe_implementation(form)
            for spec in engine_specs(model):
                if spec.name not in ("prefill", "decode"):
                    continue
                path = Path(scratch) / f"{spec.name}-{form}.onnx"
                save_onnx(trace_to_onnx(spec), path)
                session = create_session(path, threads=args.threads)
                median, p90 = time_session(session, inputs[spec.name], args.runs)
                rows.append({"engine": spec.name, "moe": form, "median_ms": median, "p90_ms": p90,
                             "size_mb": path.stat().st_size / 1e6,
                             "tokens": int(inputs[spec.name][spec.input_names[0]].shape[1])})
    print("| engine | MoE form | tokens | ORT CPU ms (median / p90) | graph MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['moe']} | {r['tokens']} | {r['median_ms']:.2f} / {r['p90_ms']:.2f} | {r['size_mb']:.0f} |")
    print(json.dumps({"config": args.config, "threads": args.threads, "runs": args.runs, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
