"""Export one model at several precisions (and both MoE forms), tracing each graph once.

    python benchmarks/export_sweep.py --config small --out DIR [--precisions 'fp32;fp16;int8;int4;fp8'] [--moe-forms]

Writes DIR/<precision> bundles (and DIR/moe-gather, DIR/moe-dense at fp32 with --moe-forms),
then run benchmarks/export_table.py on them for docs/benchmarks.md's table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from chatvla2.export.bundle import export_bundle
from chatvla2.export.precision import parse_plan
from chatvla2.models.loading import load_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precisions", default="fp32;fp16;int8;int4;fp8", help="plans separated by ';', each optionally NAME:PLAN")
    parser.add_argument("--moe-forms", action="store_true", help="also fp32 bundles with MoE gather and dense everywhere")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model(args.config, seed=args.seed)
    cache = args.out / ".trace-cache"
    jobs = []
    for item in filter(None, args.precisions.split(";")):
        name, _, plan = item.rpartition(":")  # "int8-plan:vision=int8,..." names the bundle
        jobs.append((name or plan.replace("=", "-").replace(",", "_"), parse_plan(plan), "auto"))
    if args.moe_forms:
        jobs += [(f"moe-{form}", parse_plan("fp32"), form) for form in ("gather", "dense")]
    failures: list[str] = []
    for name, plan, moe in jobs:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            export_bundle(model, args.out / name, plan, moe=moe, seed=args.seed, trace_cache=cache)
        except ValueError as exc:  # a missed parity budget or a lint error: record it, go on
            failures.append(f"{name}: {exc}")
            print(f"== {name} FAILED: {exc}", flush=True)
            continue
        print(f"== {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    for failure in failures:
        print(f"failed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
