"""`chatvla2 train`: the two-stage recipe on datasets written by `chatvla2 sim generate`.

    chatvla2 train --config demo --stage 1 --data data/math --data data/toys --out runs/stage1
    chatvla2 train --stage 2 --init runs/stage1 --data data/math --data data/toys --out runs/stage2
    chatvla2 train ... --out runs/stage1 --resume        # continue an interrupted run exactly

The front door (chatvla2/cli.py) adds the arguments with `add_train_arguments(parser)` and calls
`main(args)`; `python -m chatvla2.training.cli ...` runs it without the front door. Errors a user can cause
are ValueError / OSError with one line naming what is wrong.
"""

from __future__ import annotations

import argparse
import sys

from chatvla2.training.config import DEFAULT_LR, TrainConfig, default


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from chatvla2.contract.config import PRESETS

    parser.add_argument("--config", metavar="NAME",
                        help=f"model preset of a new model: {', '.join(PRESETS)} (with --init: the checkpoint's)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=default("stage"),
                        help="1: co-train everything on image-text + robot data (1:3); 2: the action head only, VLM frozen")
    parser.add_argument("--data", metavar="DIR", action="append", default=None, required=True,
                        help="a dataset directory (chatvla2 sim generate); repeat for several")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output directory: checkpoint/, training_state.pt, train_log.jsonl")
    parser.add_argument("--init", metavar="CHECKPOINT", default=default("init"),
                        help="start from this checkpoint (stage 2: the stage-1 model; a training --out works too)")
    parser.add_argument("--steps", type=int, default=default("steps"), help="optimizer steps of the run (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=default("batch_size"), help="samples per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=default("lr"),
                        help=f"peak learning rate (default: stage 1 {DEFAULT_LR[1]:g}, stage 2 {DEFAULT_LR[2]:g})")
    parser.add_argument("--seed", type=int, default=default("seed"), help="seed of weights, sampling and noise (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--save-every", type=int, default=default("save_every"), help="steps between checkpoints (default %(default)s)")
    parser.add_argument("--stop-after", type=int, default=default("stop_after"), metavar="N",
                        help="stop (saving a resumable state) after N steps of this invocation")
    parser.add_argument("--device", default=default("device"), help="auto (cuda when present), cpu, cuda, cuda:N")
    parser.add_argument("--frame-stride", type=int, default=default("frame_stride"),
                        help="train on every Nth frame of each episode (default %(default)s)")
    parser.add_argument("--reason-start-layer", type=int, default=default("reason_start_layer"), metavar="N",
                        help="head blocks >= N take the reasoning r, earlier ones o (the head's depth: the "
                             "o-only ablation); default: the model's")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(config=args.config, stage=args.stage, data=list(args.data or []), out=args.out, init=args.init,
                       steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, resume=args.resume,
                       save_every=args.save_every, stop_after=args.stop_after, device=args.device,
                       frame_stride=args.frame_stride, reason_start_layer=args.reason_start_layer,
                       progress=args.progress)


def main(args: argparse.Namespace) -> int:
    from chatvla2.training.trainer import train

    train(config_from_args(args))
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatvla2.training.cli", description="Train ChatVLA-2 (two stages).")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except (ValueError, LookupError, OSError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
