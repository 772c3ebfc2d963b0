"""An import plan: for every tensor of our checkpoint, where its values come from.

A `Fill` reads zero or more source tensors and makes one of ours. One with no source is
initialised here, and says how in its `note` (the router of an upcycled MoE, a head that has no
source). `check_plan` refuses a plan that leaves any of our tensors unfilled or any source tensor
unread, naming the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chatvla2.models.hf_weights import SourceError

Loader = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class Fill:
    target: str  # our state_dict name
    make: Callable[[Loader], torch.Tensor]  # reads its sources through the loader
    sources: tuple[str, ...] = ()  # source tensor names, in the origin's (Hub) layout
    origin: str = ""  # which source directory: "qwen2vl", "head"; "" for initialised here
    note: str = ""  # how a tensor with no source (or a derived one) is made


def copy(name: str) -> Callable[[Loader], torch.Tensor]:
    return lambda load: load(name)


def check_plan(
    fills: list[Fill],
    expected: dict[str, tuple[int, ...]],
    sources: dict[str, set[str]],
    accounted: dict[str, dict[str, str]],
) -> None:
    """`expected`: our tensors' shapes; `sources`: each origin's tensor names; `accounted`: source
    tensors deliberately not read, with the reason (e.g. a tied output head)."""
    targets = [f.target for f in fills]
    duplicated = sorted({t for t in targets if targets.count(t) > 1})
    if duplicated:
        raise SourceError(f"import plan fills {duplicated[0]!r} twice")
    unfilled = [name for name in expected if name not in set(targets)]
    if unfilled:
        raise SourceError(f"no source fills our tensor {unfilled[0]!r} ({len(unfilled)} unfilled)")
    unknown = [t for t in targets if t not in expected]
    if unknown:
        raise SourceError(f"import plan fills {unknown[0]!r}, which the model does not have")
    for fill in fills:
        for name in fill.sources:
            if name not in sources.get(fill.origin, ()):
                raise SourceError(f"no {fill.origin} tensor {name!r} to fill our {fill.target!r}")
    for origin, names in sources.items():
        read = {s for f in fills if f.origin == origin for s in f.sources} | set(accounted.get(origin, {}))
        unmapped = [name for name in names if name not in read]
        if unmapped:
            raise SourceError(f"{origin} tensor {unmapped[0]!r} maps onto nothing of ours ({len(unmapped)} unmapped)")
