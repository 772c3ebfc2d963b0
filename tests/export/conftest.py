"""Export fixtures: the tiny model built exactly as `chatvla2 export --config tiny` builds it,
the session's fp32 bundle, and a shared trace cache so that the precision tests trace each graph
once."""

from __future__ import annotations

import argparse
import pytest

from export.cli import _load_model


def tiny_model():
    return _load_model(argparse.Namespace(checkpoint=None, config="tiny", seed=0))


@pytest.fixture(scope="session")
def trace_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trace-cache")


@pytest.fixture(scope="session")
def fp32_bundle(tiny_bundle):
    """The session's tiny fp32 bundle, written by `chatvla2 export` (tests/conftest.py)."""
    return tiny_bundle
