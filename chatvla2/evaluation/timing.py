"""Latency statistics as every table of this project reports them: median and p99, in ms; and the
timing loop behind them."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_runs(run: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of `run`, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def latency_stats(seconds) -> dict:
    """Seconds -> {p50_ms, p99_ms}; an empty list is an error (nothing was timed)."""
    a = np.asarray(seconds, dtype=float)
    if a.size == 0:
        raise ValueError("no timings to summarise (runs must be >= 1)")
    return {"p50_ms": round(float(np.median(a)) * 1000, 3), "p99_ms": round(float(np.percentile(a, 99)) * 1000, 3)}
