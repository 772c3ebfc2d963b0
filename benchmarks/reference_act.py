"""Wall-clock time of the PyTorch reference `ChatVLA2.act` (eager, CPU), per stage.

    python benchmarks/reference_act.py [--config tiny] [--runs 20] [--warmup 3] [--threads 2]

The model is built as `chatvla2 export` builds it (`models.loading.load_model`: the preset with
seed 0), the observation is the sample scene (`contract.scene.sample_observation`) and the noise
is drawn with seed 0. The first call (cold: lazy initialisation, allocator warm-up) is reported on
its own, then the median and p90 of `--runs` calls after `--warmup` more. Prints a table, then one
JSON line. (This replaces the "act on tiny in under two seconds" assertion that used to sit in
tests/models/test_vla.py: a timing is a figure to record per machine, not a pass/fail test.)
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from chatvla2.contract.scene import sample_observation
from chatvla2.models.loading import load_model

STAGES = ("preprocess", "vision", "prefill", "decode", "decode_per_token", "action_head", "total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="a named preset: tiny, small or paper")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.config)
    frames, instruction, state = sample_observation(model.cfg.vision.num_views)

    start = time.perf_counter()
    first = model.act(frames, instruction, state, seed=0)
    first_call_ms = (time.perf_counter() - start) * 1e3
    for _ in range(args.warmup):
        model.act(frames, instruction, state, seed=0)
    runs = [model.act(frames, instruction, state, seed=0) for _ in range(args.runs)]

    stages = {}
    for key in STAGES:
        samples = np.asarray([r.timings[key] for r in runs]) * 1e3
        stages[key] = {"median_ms": round(float(np.median(samples)), 3), "p90_ms": round(float(np.percentile(samples, 90)), 3)}

    print(f"ChatVLA2.act, preset {args.config}: torch {torch.__version__} eager, {torch.get_num_threads()} threads, "
          f"{len(first.reasoning_ids)} reasoning tokens, {args.runs} runs after {args.warmup} warm-up")
    print("| stage | median ms | p90 ms |")
    print("|---|---|---|")
    for key, figures in stages.items():
        print(f"| {key} | {figures['median_ms']:.2f} | {figures['p90_ms']:.2f} |")
    print(f"| first call (cold) | {first_call_ms:.2f} | |")
    print(json.dumps({
        "config": args.config, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "runs": args.runs, "warmup": args.warmup,
        "tokens": len(first.reasoning_ids), "first_call_ms": round(first_call_ms, 3), "stages": stages,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
