"""Faults the simulated arm can inject, parsed from `--faults` (comma-separated `key=value`).

    drop=P          drop each reply frame with probability P
    corrupt=P       corrupt one byte of each reply line with probability P
    latency=S       delay every reply by S seconds
    silent=ID[@T]   motor ID stops answering (T seconds after the bus opens; default at once)
    overcurrent=ID[@T]  motor ID reports over-current (Damiao: error nibble A, then it disables
                    itself; EC: its current reads at the top of the range)
    overtemp=ID[@T]     motor ID reports over-temperature (Damiao: nibble C, coil 120 C, disables
                    itself; EC: 100 C)
    unplug=T        the cable is pulled T seconds after the bus opens: the pty is closed
    hang=T          the adapter freezes for good T seconds after the bus opens: it stops reading the
                    pty (what the driver writes piles up in the OS until its writes block) and
                    sends nothing more, but the device stays there (no EIO, unlike unplug)
    stall=T:D       the adapter freezes from T for D seconds, then recovers: it reads what piled up
                    meanwhile (a half-written line included) and answers again; may repeat

A key may repeat (`silent=4,silent=5`). Times count from the adapter's `O` (open) command
(`SimulatedArm.inject` counts from its call instead).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from chatvla2.contract.errors import InvalidInput

_RATE_KEYS = ("drop", "corrupt")
_MOTOR_KEYS = ("silent", "overcurrent", "overtemp")
KEYS = _RATE_KEYS + ("latency",) + _MOTOR_KEYS + ("unplug", "hang", "stall")


class FaultSpecError(InvalidInput):
    pass


@dataclass
class FaultPlan:
    drop: float = 0.0
    corrupt: float = 0.0
    latency: float = 0.0
    silent: dict[int, float] = field(default_factory=dict)  # motor id -> onset (s)
    overcurrent: dict[int, float] = field(default_factory=dict)
    overtemp: dict[int, float] = field(default_factory=dict)
    unplug: float | None = None
    hang: float | None = None  # onset (s) of a freeze that never ends
    stall: list[tuple[float, float]] = field(default_factory=list)  # (onset, duration) in seconds

    @property
    def empty(self) -> bool:
        return self == FaultPlan()


def parse_faults(spec: str) -> FaultPlan:
    """`"drop=0.01,silent=4@1.5,unplug=10"` -> FaultPlan; a clear FaultSpecError otherwise."""
    plan = FaultPlan()
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise FaultSpecError(f"unknown fault '{key}'{hint}; known: {', '.join(KEYS)}")
        if not sep or not value.strip():
            raise FaultSpecError(f"fault '{key}' needs a value, e.g. {key}={_EXAMPLE[key]}")
        value = value.strip()
        try:
            if key in _RATE_KEYS:
                p = float(value)
                if not 0.0 <= p <= 1.0:
                    raise ValueError
                setattr(plan, key, p)
            elif key == "latency":
                s = float(value)
                if not 0.0 <= s <= 10.0:
                    raise ValueError
                plan.latency = s
            elif key in ("unplug", "hang"):
                s = float(value)
                if s < 0:
                    raise ValueError
                setattr(plan, key, s)
            elif key == "stall":
                onset, sep, duration = value.partition(":")
                at, length = float(onset), float(duration)
                if not sep or at < 0 or length <= 0:
                    raise ValueError
                plan.stall.append((at, length))
            else:
                motor, _, onset = value.partition("@")
                motor_id, at = int(motor, 0), float(onset) if onset else 0.0
                if not 0 < motor_id <= 0x7FF or at < 0:
                    raise ValueError
                getattr(plan, key)[motor_id] = at
        except ValueError:
            raise FaultSpecError(f"bad value '{value}' for fault '{key}', expected e.g. {key}={_EXAMPLE[key]}") from None
    return plan


_EXAMPLE = {
    "drop": "0.01",
    "corrupt": "0.001",
    "latency": "0.002",
    "silent": "4 or 4@1.5",
    "overcurrent": "2 or 2@1.5",
    "overtemp": "5 or 5@1.5",
    "unplug": "10",
    "hang": "2",
    "stall": "2:1 (from 2 s, for 1 s)",
}
