"""Shared fixtures. Tests run on the CPU with the tiny preset unless they say otherwise."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
