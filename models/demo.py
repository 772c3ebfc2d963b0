"""`chatvla2 demo`: the reference inference of a model on a sample observation.

For now the tiny preset with untrained weights: its reasoning text is noise, but every stage
(vision, prefill, greedy decoding with the KV cache, reasoning-conditioned denoising) runs for real.
"""

from __future__ import annotations

import argparse

from contract.scene import sample_observation
from models.loading import load_model


def main(args: argparse.Namespace) -> int:
    model = load_model(args.config, args.checkpoint, seed=0)
    if args.checkpoint:
        source = f"checkpoint {args.checkpoint}"
    else:
        source = f"preset {args.config or 'tiny'}, untrained weights (seed 0)"
    cfg = model.cfg
    frames, instruction, state = sample_observation(cfg.vision.num_views, cfg.action_head.state_dim)
    instruction = args.prompt or instruction
    model.act(frames, instruction, state, seed=args.seed)  # warm-up: first calls pay for allocation
    out = model.act(frames, instruction, state, seed=args.seed)
    print(f"model        : ChatVLA-2 {source}")
    print(f"observation  : {len(frames)} camera view(s) {frames[0].shape}, state {state.shape}")
    print(f"instruction  : {instruction}")
    print(f"reasoning    : {out.reasoning!r}")
    print(f"tokens       : {len(out.reasoning_ids)} reasoning tokens")
    print(f"action chunk : shape {out.actions.shape}, range [{out.actions.min():.3f}, {out.actions.max():.3f}]")
    print(f"first action : {[round(float(a), 3) for a in out.actions[0]]}")
    print("timings (ms) : " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in out.timings.items()))
    return 0
