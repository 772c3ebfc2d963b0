"""Whole-policy plans as `chatvla2 calibrate sweep --plans` takes them: a precision per engine, and
the policy's knobs that trade accuracy for latency.

    fp32,fp16,int8,int4,fp8                       whole-model precisions by name
    mixed:vision=int8,prefill=fp16,decode=int8,action_head=fp16
                                                  a named per-engine plan (export's form)
    int8+steps=5+tokens=64+every=4                knobs after '+': DDIM steps of the action head
                                                  (re-exported), the reasoning token cap, and the
                                                  cadence (fresh reasoning every N-th query, the
                                                  last one's reused in between)

Items are separated by ',' (or ';'); the `engine=precision` items after a `NAME:` belong to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from chatvla2.contract.errors import InvalidInput

KNOBS = ("steps", "tokens", "every")


@dataclass(frozen=True)
class Plan:
    name: str
    precisions: dict  # engine -> precision
    steps: int | None = None  # DDIM inference steps; None: the model's
    tokens: int | None = None  # reasoning token cap; None: the model's
    every: int = 1  # fresh reasoning every N-th query

    @property
    def export_key(self) -> str:
        """What the exported bundle depends on (the precisions and the DDIM steps)."""
        precisions = "_".join(f"{e}-{p}" for e, p in sorted(self.precisions.items()))
        return precisions + (f"_steps{self.steps}" if self.steps else "")

    def to_dict(self) -> dict:
        return asdict(self)


def _knobs(text: str, where: str) -> tuple[str, dict]:
    head, *parts = text.split("+")
    knobs: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in KNOBS or not sep:
            raise InvalidInput(f"plan {where!r}: unknown setting {part!r}; settings: {', '.join(k + '=N' for k in KNOBS)}")
        try:
            knobs[key] = int(value)
        except ValueError:
            raise InvalidInput(f"plan {where!r}: {key} must be an integer, got {value!r}") from None
        if knobs[key] < 1:
            raise InvalidInput(f"plan {where!r}: {key} must be >= 1, got {knobs[key]}")
    return head.strip(), knobs


def parse_plans(text: str) -> list[Plan]:
    from chatvla2.export.precision import parse_plan

    plans: list[Plan] = []
    named: list | None = None  # [name, engine items, knobs] of the per-engine plan being read

    def close_named() -> None:
        nonlocal named
        if named is not None:
            name, items, knobs = named
            if not items:
                raise InvalidInput(f"plan {name!r}: give engine=precision items after '{name}:'")
            plans.append(Plan(name, parse_plan(",".join(items)), **knobs))
            named = None

    for raw in text.replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        if ":" in item:
            close_named()
            name, _, first = item.partition(":")
            first, knobs = _knobs(first, item)
            named = [name.strip(), [first] if first else [], knobs]
        elif "=" in item.split("+")[0]:
            if named is None:
                raise InvalidInput(f"plan item {item!r}: an engine=precision item needs a NAME: before it")
            engine_item, knobs = _knobs(item, item)
            named[1].append(engine_item)
            named[2].update(knobs)
        else:
            close_named()
            precision, knobs = _knobs(item, item)
            suffix = "".join(f"+{k}={v}" for k, v in knobs.items())
            plans.append(Plan(precision + suffix, parse_plan(precision), **knobs))
    close_named()
    if not plans:
        raise InvalidInput("--plans: no plan given")
    names = [p.name for p in plans]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"--plans: {', '.join(duplicates)} given twice")
    return plans
