"""Linear float <-> unsigned-int mapping used by the Damiao MIT and EC-A4310 frames.

docs/reference/arx.md: ``x -> round((x - min) / (max - min) * (2^bits - 1))``, clamped to the range first.
"""

from __future__ import annotations


def float_to_uint(x: float, lo: float, hi: float, bits: int) -> int:
    """Clamp ``x`` to [lo, hi] and map it onto 0 .. 2^bits - 1 (NaN maps to the middle)."""
    if not hi > lo:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if x != x:  # NaN: never let it reach a motor as an extreme value
        x = (lo + hi) / 2.0
    x = min(max(x, lo), hi)
    top = (1 << bits) - 1
    return int(round((x - lo) / (hi - lo) * top))


def uint_to_float(u: int, lo: float, hi: float, bits: int) -> float:
    """Inverse of :func:`float_to_uint` (exact at 0 and 2^bits - 1)."""
    top = (1 << bits) - 1
    return lo + (u & top) * (hi - lo) / top


def step(lo: float, hi: float, bits: int) -> float:
    """One least-significant bit, in the value's unit: the best round-trip accuracy is half this."""
    return (hi - lo) / ((1 << bits) - 1)
