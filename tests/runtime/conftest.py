"""Runtime fixtures: the tiny model in PyTorch (the same weights as the session's tiny bundle,
`tests/conftest.py`) and a policy on that bundle."""

from __future__ import annotations

import argparse
import pytest


@pytest.fixture(scope="session")
def tiny_model():
    from export.cli import _load_model

    return _load_model(argparse.Namespace(checkpoint=None, config="tiny", seed=0)).eval()


@pytest.fixture(scope="session")
def policy(tiny_bundle):
    from runtime.policy import Policy

    return Policy.from_bundle(tiny_bundle, backend="onnxruntime")
