"""One way to get a model for a command: a checkpoint, or a named preset with seeded weights.

An untrained preset gets small values in the action head's AdaLN-Zero layers: exactly zero, the
action chunk would ignore the observation and the reasoning, and every parity check of its graph
would pass trivially. Export, the demo, the reference timing and the tests build models this way,
so a preset's bundle and its PyTorch reference have the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from chatvla2.contract.config import get_config
from chatvla2.models.vla import ChatVLA2


def load_model(config: str | None = None, checkpoint: str | Path | None = None, seed: int = 0) -> ChatVLA2:
    """`checkpoint` if given (loaded, no initialisation), else the preset `config` (default
    "tiny") initialised from `seed`. In eval mode."""
    if checkpoint:
        from chatvla2.models.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint).eval()
    torch.manual_seed(seed)
    model = ChatVLA2(get_config(config or "tiny"))
    model.action_head.perturb_zero_init_(generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()
