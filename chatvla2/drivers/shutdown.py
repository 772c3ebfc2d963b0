"""`ShutdownReport`: what `ARXArm.disconnect()` did to leave the arm safe, and when.

Times are `time.monotonic()` (one clock for every process on the machine, so a test can compare them
with a simulator's log). `safe` is False when the disable was not sent, or a motor did not confirm
it: the caller must say so (the CLI exits non-zero), never report success.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ShutdownReport:
    arm: str  # "left arm on /dev/ttyACM0"
    connected: bool = False  # False: nothing was open, so nothing had to be disabled
    damping_sent_at: float | None = None  # the arm first answered a damping command (None: never)
    disable_sent_at: float | None = None  # disable frames first written (None: never)
    confirmed: tuple[int, ...] = ()  # motor ids that answered the disable as disabled / limp
    unconfirmed: tuple[int, ...] = ()  # motor ids that did not
    problem: str | None = None  # why the arm may not be safe

    @property
    def safe(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if not self.connected:
            return f"{self.arm}: nothing was enabled"
        if not self.safe:
            total = len(self.confirmed) + len(self.unconfirmed)
            counted = f" ({len(self.confirmed)} of {total} motors confirmed)" if self.confirmed else ""
            return f"{self.arm}: NOT safely disabled{counted}: {self.problem}"
        damped = "damped, then " if self.damping_sent_at is not None else ""
        return f"{self.arm}: {damped}disabled (all {len(self.confirmed)} motors confirmed)"
