"""Runtime fixtures: the tiny model in PyTorch (the same weights as the session's tiny bundle,
`tests/conftest.py`) and a policy on that bundle."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    from chatvla2.models.loading import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def policy(tiny_bundle):
    from chatvla2.runtime.policy import Policy

    return Policy.from_bundle(tiny_bundle, backend="onnxruntime")
