"""Per engine of one or more bundles: file size, ONNX Runtime CPU latency and the parity figures
measured at export. Prints a Markdown table, then one JSON line.

    python benchmarks/export_table.py BUNDLE [BUNDLE ...] [--runs 20] [--threads 2]

Latency: the median (and p90) of `--runs` runs after 3 warm-up runs, on the input shapes the
robot sees (the manifest's "opt" profile for dynamic inputs), one engine at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from chatvla2.calibration.predict import engine_feed  # inputs at the robot's shapes, shared with predict
from chatvla2.contract.bundle import load_manifest
from chatvla2.evaluation.timing import time_runs
from chatvla2.runtime.onnxruntime_session import create_session


def time_session(session, feed: dict, runs: int) -> tuple[float, float]:
    """Median and p90 of `runs` runs in milliseconds, after 3 warm-up runs."""
    samples = time_runs(lambda: session.run(None, feed), 3, runs)
    return float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    for bundle in args.bundles:
        manifest = load_manifest(bundle)
        for name, engine in manifest["engines"].items():
            files = [engine["file"], *engine.get("data_files", [])]
            size = sum((bundle / f).stat().st_size for f in files)
            session = create_session(bundle / engine["file"], threads=args.threads)
            median, p90 = time_session(session, engine_feed(engine, rng), args.runs)
            rows.append({
                "bundle": bundle.name, "engine": name, "precision": engine["precision"],
                "moe": manifest["moe_implementation"].get(name, "-"), "size_mb": size / 1e6,
                "latency_ms": median, "latency_p90_ms": p90,
                "cosine": engine["parity"]["cosine"], "relative_error": engine["parity"]["relative_error"],
                "low_precision_weights": engine["low_precision_weight_fraction"],
            })
    print("| bundle | engine | precision | MoE | size MB | ORT CPU ms (median / p90) | cosine | rel. error | low-precision weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bundle']} | {r['engine']} | {r['precision']} | {r['moe']} | {r['size_mb']:.1f} | "
              f"{r['latency_ms']:.2f} / {r['latency_p90_ms']:.2f} | {r['cosine']:.6f} | {r['relative_error']:.2e} | "
              f"{r['low_precision_weights']:.0%} |")
    print(json.dumps({"rows": rows, "runs": args.runs, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
