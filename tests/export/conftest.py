"""Export fixtures: the tiny model built exactly as `chatvla2 export --config tiny` builds it,
one fp32 bundle written through the real command, and a shared trace cache so that the
precision tests trace each graph once."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from export.cli import _load_model


def tiny_model():
    return _load_model(argparse.Namespace(checkpoint=None, config="tiny", seed=0))


@pytest.fixture(scope="session")
def trace_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trace-cache")


@pytest.fixture(scope="session")
def fp32_bundle(tmp_path_factory):
    """`chatvla2 export --config tiny --out BUNDLE` in a subprocess: the path a user runs."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-fp32"
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "export", "--config", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out
