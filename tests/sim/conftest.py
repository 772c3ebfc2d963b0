"""Shared fixtures: a simulated arm on a real pty, and a check that no test leaves threads behind."""

from __future__ import annotations

import threading
import time

import pytest

from sim.arm_sim import SimulatedArm


@pytest.fixture(autouse=True)
def no_threads_left_behind():
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
    with SimulatedArm("x5", seed=1) as sim:
        yield sim
