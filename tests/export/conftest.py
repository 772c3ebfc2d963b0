"""Export fixtures: the session's fp32 bundle and a shared trace cache so that the precision tests
trace each graph once. The tests build the tiny model as `chatvla2 export --config tiny` does,
with `models.loading.load_model("tiny")` (a fresh one per export: exporting switches its MoE
form)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trace_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trace-cache")


@pytest.fixture(scope="session")
def fp32_bundle(tiny_bundle):
    """The session's tiny fp32 bundle, written by `chatvla2 export` (tests/conftest.py)."""
    return tiny_bundle
