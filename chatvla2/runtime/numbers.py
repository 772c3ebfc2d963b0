"""What counts as a number in a setting: Python's bool is an int, and NaN passes every `<` test,
so a plain comparison lets `True` or `nan` through into a loop, a timeout or the JSON summary."""

from __future__ import annotations

import math
import numbers


def is_finite_number(value) -> bool:
    """An int or a float (numpy's too), not a bool, not NaN or an infinity."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
