from __future__ import annotations

import pytest
import torch

from models.config import get_config
from models.vla import ChatVLA2


@pytest.fixture
def tiny_config():
    return get_config("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    """The tiny model with every weight non-trivial (the action head's AdaLN-Zero layers perturbed)."""
    torch.manual_seed(0)
    model = ChatVLA2(tiny_config).eval()
    model.action_head.perturb_zero_init_(std=0.02, generator=torch.Generator().manual_seed(1))
    return model
