"""A bundle's whole policy against the PyTorch reference on held-out observations (the policy level).

    python benchmarks/policy_accuracy.py BUNDLE [BUNDLE ...] (--checkpoint DIR | --config NAME) [--held-out SOURCE]

For every held-out observation (default: the calibration sweep's, 8 in-domain + 8 open-world
math-game scenes), the same diffusion noise into `ChatVLA2.act` (fp32 PyTorch) and into the
bundle's `Policy`: reasoning token agreement (common prefix / the longer reasoning) and the action
chunk's worst joint error in degrees (over all observations, and over those whose reasoning came
out identical), judged against `export.thresholds.POLICY_BUDGETS` for the plan's loosest precision.
A table, then one JSON line. (`chatvla2 calibrate sweep` measures TensorRT plans this way; this
script takes any bundle, the cpu target's included.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from chatvla2.calibration.observations import observations
from chatvla2.calibration.sweep import action_errors, token_agreement
from chatvla2.calibration.sweep_config import DEFAULT_HELD_OUT
from chatvla2.contract.bundle import load_manifest
from chatvla2.export.thresholds import policy_budget_for
from chatvla2.models.loading import load_model
from chatvla2.runtime.policy import Policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--config")
    parser.add_argument("--held-out", default=DEFAULT_HELD_OUT)
    args = parser.parse_args()
    model = load_model(args.config, args.checkpoint)
    cases = observations(args.held_out, model.cfg)
    rng = np.random.default_rng(0)
    head = model.cfg.action_head
    noises = [rng.standard_normal((head.chunk_size, head.action_dim)).astype(np.float32) for _ in cases]
    references = [model.act(c.data["images"], c.data["instruction"], c.data["state"], noise=torch.from_numpy(n))
                  for c, n in zip(cases, noises)]
    rows = []
    print(f"{'bundle':<48}{'plan':<44}{'tokens agree':>13}{'identical':>10}{'deg (all)':>11}{'deg (same)':>11}  budget")
    for bundle in args.bundles:
        manifest = load_manifest(bundle, verify_hashes=True)
        policy = Policy.from_bundle(bundle, backend="onnxruntime")
        agreements, degrees, same_degrees = [], [], []
        for case, noise, reference in zip(cases, noises, references):
            got = policy.infer({**case.data, "noise": noise})
            agreement, first = token_agreement(list(got["reasoning_ids"]), reference.reasoning_ids)
            joint_deg, _ = action_errors(got["action_chunk"], reference.actions)
            agreements.append(agreement)
            degrees.append(joint_deg)
            if first is None:
                same_degrees.append(joint_deg)
        budget = policy_budget_for(manifest["plan"].values())
        same = max(same_degrees) if same_degrees else None
        within = float(np.mean(agreements)) >= budget.token_agreement_min and (same is None or same <= budget.action_deg_max)
        row = {"bundle": str(bundle), "target": manifest.get("target", "tensorrt"), "plan": manifest["plan"],
               "observations": len(cases), "token_agreement": round(float(np.mean(agreements)), 4),
               "reasoning_identical": len(same_degrees), "action_deg": round(max(degrees), 3),
               "action_deg_same_reasoning": None if same is None else round(same, 3),
               "budget": {"token_agreement_min": budget.token_agreement_min, "action_deg_max": budget.action_deg_max},
               "within_budget": within}
        rows.append(row)
        plan = ",".join(f"{k}={v}" for k, v in sorted(manifest["plan"].items()))
        same_text = "-" if same is None else f"{same:.3f}"
        print(f"{Path(bundle).name:<48}{plan:<44}{row['token_agreement']:>13.3f}{row['reasoning_identical']:>6}/{len(cases):<3}"
              f"{row['action_deg']:>11.3f}{same_text:>11}  {'within' if within else 'OUTSIDE'} (>= {budget.token_agreement_min}, <= {budget.action_deg_max} deg)")
    print(json.dumps({"held_out": args.held_out, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
