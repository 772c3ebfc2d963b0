"""The two evaluation settings of the paper, as named splits.

docs/reference/model.md, "How the paper scores": ChatVLA-2 is evaluated "in domain" (what the robot data shows)
and "open world" (what it never shows: unseen numbers, operators, objects, fonts, backgrounds).
Every generator here takes one of these names; each task file lists what its splits contain, and
the two lists never share an operand, an operator outside addition, an object, a font or a
background (tests/sim/tasks/test_splits.py checks it over many seeds).
"""

from __future__ import annotations

from chatvla2.contract.names import unknown_name

IN_DOMAIN = "in_domain"
OPEN_WORLD = "open_world"
SPLITS = (IN_DOMAIN, OPEN_WORLD)


def check_split(split: str) -> str:
    """`split` if it is one of SPLITS, else a ValueError that suggests the closest name."""
    if split in SPLITS:
        return split
    raise unknown_name(split, SPLITS, "split", "splits")
