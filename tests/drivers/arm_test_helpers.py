"""Helpers shared by the driver tests that run an arm against the simulated one."""

from __future__ import annotations

import os
import time

from chatvla2.drivers.controller import ControllerConfig

# A controller fast enough for short tests on a loaded 2-core machine.
FAST = ControllerConfig(rate_hz=250.0, target_timeout_s=0.3, feedback_timeout_s=0.1)


def wait_for(predicate, timeout_s: float, what: str = "condition") -> float:
    """Seconds until `predicate()` holds; fails the test after `timeout_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout_s} s")


def bound(case: str, **seconds: float) -> None:
    """A measured bound, printed as a `BOUND` line (`pytest -s`) for the stop-path table (docs/runtime-and-safety.md)."""
    print(f"\nBOUND {case}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items()))


def fds_on(path: str) -> int:
    """How many of this process's descriptors are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return count
