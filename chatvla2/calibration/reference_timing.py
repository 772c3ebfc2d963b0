"""The PyTorch eager reference's per-stage timings for `chatvla2 bench --reference`.

The reference is the same `Policy` code as the runtime, on the PyTorch backend
(`export.torch_engine`): the exported modules run eagerly, so the comparison is engine against
engine. The model is built as `chatvla2 export` builds it (`models.loading.load_model`: a preset
with seed 0, or a checkpoint), so a preset's bundle and its reference have the same weights and
reason the same.
"""

from __future__ import annotations

import numpy as np

from chatvla2.calibration.bench_config import BenchConfig
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.evaluation.timing import latency_stats
from chatvla2.export.torch_engine import torch_policy
from chatvla2.models.loading import load_model
from chatvla2.runtime.camera import StaticCamera

MOE_FORMS = ("gather", "dense")


def time_reference(model_name: str, config: BenchConfig) -> dict:
    import torch

    model = load_model(config.preset or model_name, config.checkpoint, seed=0)
    if config.threads:
        torch.set_num_threads(config.threads)
    observation = {"images": StaticCamera(model.cfg.vision.num_views).read(), "instruction": INSTRUCTION,
                   "state": np.zeros(model.cfg.action_head.state_dim, np.float32), "seed": 0}
    # Eager PyTorch at its best per stage: the `gather` MoE form copies each token's experts (fast
    # for one decode token, slow for a 164-token prefill), `dense` runs all experts (the reverse).
    # Both are timed; each stage takes the faster form, as a hand-tuned eager deployment would.
    by_form = {}
    for form in MOE_FORMS:
        policy = torch_policy(model, prefill_moe=form, decode_moe=form)
        policy.warmup(observation, config.warmup)
        runs = [policy.infer(observation) for _ in range(config.runs)]
        by_form[form] = {"tokens": runs[0]["tokens"], "stages": {
            key: latency_stats([r["timings"][key] for r in runs]) for key in runs[0]["timings"]}}
    stages, chosen = {}, {}
    for key in by_form["gather"]["stages"]:
        form = min(by_form, key=lambda f: by_form[f]["stages"][key]["p50_ms"])
        stages[key], chosen[key] = by_form[form]["stages"][key], form
    stages["total"] = {"p50_ms": round(sum(stages[k]["p50_ms"] for k in stages if k not in ("total", "decode_per_token")), 3),
                       "p99_ms": None}
    return {"engine": f"torch {torch.__version__} eager ({torch.get_num_threads()} threads)", "config": model.cfg.name,
            "tokens": by_form["gather"]["tokens"], "stages": stages, "moe_form_per_stage": chosen, "by_form": by_form}
