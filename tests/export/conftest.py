"""Export fixtures: the session's fp32 bundle (the shared trace cache is tests/conftest.py's).
The tests build the tiny model as `chatvla2 export --config tiny` does, with
`models.loading.load_model("tiny")` (a fresh one per export: exporting switches its MoE form)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fp32_bundle(tiny_bundle):
    """The session's tiny fp32 bundle, written by `chatvla2 export` (tests/conftest.py)."""
    return tiny_bundle
