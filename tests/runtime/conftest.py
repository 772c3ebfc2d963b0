"""Runtime fixtures: one tiny fp32 bundle per session, written by the real `chatvla2 export`
(set CHATVLA2_TINY_BUNDLE to reuse an existing one), and the same model in PyTorch."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    existing = os.environ.get("CHATVLA2_TINY_BUNDLE")
    if existing:
        return Path(existing)
    out = tmp_path_factory.mktemp("runtime-bundles") / "tiny"
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "export", "--config", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_model():
    from export.cli import _load_model

    return _load_model(argparse.Namespace(checkpoint=None, config="tiny", seed=0)).eval()


@pytest.fixture(scope="session")
def policy(tiny_bundle):
    from runtime.policy import Policy

    return Policy.from_bundle(tiny_bundle, backend="onnxruntime")
