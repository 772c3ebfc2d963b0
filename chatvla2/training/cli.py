"""`chatvla2 train`: the two-stage recipe on datasets written by `chatvla2 sim generate`.

    chatvla2 train --config demo --stage 1 --data data/math --data data/toys --out runs/stage1
    chatvla2 train --stage 2 --init runs/stage1 --data data/math --data data/toys --out runs/stage2
    chatvla2 train ... --out runs/stage1 --resume        # continue an interrupted run exactly

The options are `TrainConfig`'s (training/config.py); the front door (chatvla2/cli.py) builds one
and calls `main(config)`; `python -m chatvla2.training.cli ...` runs it without the front door.
Errors a user can cause (contract/errors.py) are one line naming what is wrong.
"""

from __future__ import annotations

import sys

from chatvla2.contract.command_config import parse_config
from chatvla2.contract.errors import USER_ERRORS
from chatvla2.training.config import TrainConfig


def main(config: TrainConfig) -> int:
    from chatvla2.training.trainer import train

    train(config)
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(TrainConfig, sys.argv[1:] if argv is None else argv, prog="python -m chatvla2.training.cli")
        return main(config)
    except USER_ERRORS as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
