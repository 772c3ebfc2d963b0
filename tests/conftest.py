"""Shared fixtures. Tests run on the CPU with the tiny preset unless they say otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from chatvla2.sim.arm_sim import SimulatedArm


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole suite. The models here are small, where a second thread buys
    little, and on a machine whose other core is busy (a training run, CI's neighbours) torch's
    threads wait on each other: a tiny training step went from 0.2 s to 4 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """`chatvla2 export --config tiny --out BUNDLE` (fp32) in a subprocess, once per session: the
    path a user runs. Tests treat it as read-only (copy it to tamper with it). Set
    CHATVLA2_TINY_BUNDLE to reuse an existing bundle."""
    existing = os.environ.get("CHATVLA2_TINY_BUNDLE")
    if existing:
        return Path(existing)
    # `make test` runs two pytest-xdist workers; they share one bundle, exported by whichever asks
    # first, in the temporary folder above both workers' own (pytest's documented xdist recipe).
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / "tiny-fp32-bundle"
    with FileLock(str(shared / "tiny-fp32-bundle.lock")):
        if not (out / "manifest.json").is_file():
            result = subprocess.run(
                [sys.executable, "-m", "chatvla2", "export", "--config", "tiny", "--out", str(out)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def trace_cache(tmp_path_factory):
    """One trace cache for every export of the session (`export_bundle(trace_cache=...)`): the
    traced fp32 graphs of the same weights and code are reused, so each test pays only for what it
    checks (quantization, parity, the bundle). Tests that must trace afresh leave it out."""
    return tmp_path_factory.mktemp("trace-cache")


@pytest.fixture
def no_threads_left_behind():
    """Fails a test that leaves Python threads running (autouse in tests/drivers and tests/sim)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0  # slack for a loaded 2-core machine
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            return
        time.sleep(0.02)
    pytest.fail(f"threads left running: {[t.name for t in extra]}")


@pytest.fixture
def sim_arm():
    """A simulated X5 arm behind a real pty."""
    with SimulatedArm("x5", seed=1) as sim:
        yield sim
