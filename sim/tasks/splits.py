"""The two evaluation settings of the paper, as named splits.

model.md, "How the paper scores": ChatVLA-2 is evaluated "in domain" (what the robot data shows)
and "open world" (what it never shows: unseen numbers, operators, objects, fonts, backgrounds).
Every generator here takes one of these names; each task file lists what its splits contain, and
the two lists never share an operand, an operator outside addition, an object, a font or a
background (tests/sim/tasks/test_splits.py checks it over many seeds).
"""

from __future__ import annotations

import difflib

IN_DOMAIN = "in_domain"
OPEN_WORLD = "open_world"
SPLITS = (IN_DOMAIN, OPEN_WORLD)


def check_split(split: str) -> str:
    """`split` if it is one of SPLITS, else a ValueError that suggests the closest name."""
    if split in SPLITS:
        return split
    close = difflib.get_close_matches(str(split), SPLITS, n=1, cutoff=0.0)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown split {split!r}{hint}; splits: {', '.join(SPLITS)}")
