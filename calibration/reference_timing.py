"""The PyTorch eager reference's per-stage timings for `chatvla2 bench --reference`.

Outside runtime/ on purpose: it imports torch and models/, which the robot never needs. The model
is built the way `chatvla2 export` builds it (`export.cli._load_model`: a preset with seed 0, or a
checkpoint), so a preset's bundle and its reference have the same weights and reason the same.
"""

from __future__ import annotations

import argparse

import numpy as np


def time_reference(manifest: dict, args: argparse.Namespace) -> dict:
    import torch

    from export.cli import _load_model
    from runtime.cli import latency_stats
    from models.sample_observation import INSTRUCTION

    config = getattr(args, "config", None) or manifest["model_config"]["name"]
    model = _load_model(argparse.Namespace(checkpoint=getattr(args, "checkpoint", None), config=config, seed=0)).eval()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    from runtime.robots import StaticCamera  # the same frames the runtime bench uses

    frames = StaticCamera(model.cfg.vision.num_views).read()
    state = np.zeros(model.cfg.action_head.state_dim, np.float32)
    # Eager PyTorch at its best per stage: the `gather` MoE form copies each token's experts (fast
    # for one decode token, slow for a 164-token prefill), `dense` runs all experts (the reverse).
    # Both are timed; each stage takes the faster form, as a hand-tuned eager deployment would.
    by_form = {}
    for form in ("gather", "dense"):
        model.set_moe_implementation(form)
        with torch.inference_mode():
            for _ in range(args.warmup):
                model.act(frames, INSTRUCTION, state, seed=0)
            runs = [model.act(frames, INSTRUCTION, state, seed=0) for _ in range(args.runs)]
        by_form[form] = {"tokens": len(runs[0].reasoning_ids), "stages": {
            key: latency_stats([r.timings[key] for r in runs]) for key in runs[0].timings}}
    stages, chosen = {}, {}
    for key in by_form["gather"]["stages"]:
        form = min(by_form, key=lambda f: by_form[f]["stages"][key]["p50_ms"])
        stages[key], chosen[key] = by_form[form]["stages"][key], form
    stages["total"] = {"p50_ms": round(sum(stages[k]["p50_ms"] for k in stages if k not in ("total", "decode_per_token")), 3),
                       "p99_ms": None}
    return {"engine": f"torch {torch.__version__} eager ({torch.get_num_threads()} threads)", "config": config,
            "tokens": by_form["gather"]["tokens"], "stages": stages, "moe_form_per_stage": chosen, "by_form": by_form}

