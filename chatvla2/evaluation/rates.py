"""A success rate with its 95% interval, as every evaluation table prints it (issue 22: 50 episodes
are about +-8 points at 85%, so a figure without its interval says little).

The Wilson score interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal
approximation for small n and rates near 0 or 1): for k successes of n and z = 1.96,
centre = (p + z^2/2n) / (1 + z^2/n), half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the rate successes / trials; (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: int, trials: int) -> str:
    """ "42/50 84% [71-92]": the count, the rate and its 95% interval in points."""
    low, high = wilson_interval(successes, trials)
    rate = 100 * successes / trials if trials else 0.0
    return f"{successes}/{trials} {rate:.0f}% [{100 * low:.0f}-{100 * high:.0f}]"
