"""Latency statistics as every table of this project reports them: median and p99, in ms."""

from __future__ import annotations

import numpy as np


def latency_stats(seconds) -> dict:
    """Seconds -> {p50_ms, p99_ms}; an empty list is an error (nothing was timed)."""
    a = np.asarray(seconds, dtype=float)
    if a.size == 0:
        raise ValueError("no timings to summarise (runs must be >= 1)")
    return {"p50_ms": round(float(np.median(a)) * 1000, 3), "p99_ms": round(float(np.percentile(a, 99)) * 1000, 3)}
