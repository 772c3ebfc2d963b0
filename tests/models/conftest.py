from __future__ import annotations

import pytest

from chatvla2.contract.config import get_config
from chatvla2.models.loading import load_model


@pytest.fixture
def tiny_config():
    return get_config("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    """The tiny model as every command and every test folder builds it (`models.loading.load_model`:
    seed 0, the action head's AdaLN-Zero layers perturbed so every weight is non-trivial), in eval
    mode: the same weights as tests/runtime's `tiny_model` and the session's tiny bundle. A fresh
    one per test, because tests here train it, freeze it and run backward on it."""
    return load_model(tiny_config.name)
