"""What the control loop checks on every action before the robot gets it (numpy only).

`ActionSafety.filter(action)` -> (safe action, list of what it changed):
- non-finite values: the whole action is refused and the last safe action is held;
- each value clamped to [low, high] (joint limits in rad, gripper width in m);
- each value's change from the last action sent limited to `max_step` (per control step, i.e.
  max velocity x dt), so a new chunk that starts far from the current command (a jump between
  chunks, a bad inference) is approached at bounded speed instead of commanded at once.
The first action is limited relative to the measured state given to `reset`. Every intervention
is counted (`counts`). The drivers clip again below this (position limits, 500 Hz step limits,
stiff-command refusals): this layer is the policy-side one, in joint units, at the policy rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from chatvla2.contract.embodiment import ARMS
from chatvla2.drivers.profiles import get_profile

# Per-step change limits at the control rate: 1.5 rad/s per joint, 0.1 m/s for the gripper (project choice,
# well below the X5's motor limits; raise with --max-joint-speed).
DEFAULT_JOINT_SPEED = 1.5
DEFAULT_GRIPPER_SPEED = 0.1


@dataclass
class SafetyCounts:
    clamped_to_limits: int = 0  # actions with at least one value outside [low, high]
    rate_limited: int = 0  # actions with at least one value changed faster than max_step
    refused_non_finite: int = 0  # actions with NaN/inf (held the last action instead)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ActionSafety:
    low: np.ndarray
    high: np.ndarray
    max_step: np.ndarray
    counts: SafetyCounts = field(default_factory=SafetyCounts)
    last: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.low, self.high, self.max_step = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (self.low, self.high, self.max_step))
        if not self.low.shape == self.high.shape == self.max_step.shape:
            raise ValueError("safety: low, high and max_step must have the same length")
        if np.any(self.low > self.high) or np.any(self.max_step <= 0):
            raise ValueError("safety: need low <= high and max_step > 0")

    @classmethod
    def bimanual_arx(cls, rate_hz: float, joint_speed: float = DEFAULT_JOINT_SPEED, gripper_speed: float = DEFAULT_GRIPPER_SPEED,
                     profile: str = "x5") -> ActionSafety:
        """Two arms of `profile`: its joint limits and gripper width (drivers/profiles.py), per-step
        change limits from the speeds at `rate_hz`."""
        arm = get_profile(profile)
        dt = 1.0 / rate_hz
        step = [joint_speed * dt] * arm.num_joints + [gripper_speed * dt]
        arms = len(ARMS)  # the 14-D layout: contract/embodiment.py
        return cls(np.tile(arm.action_low, arms), np.tile(arm.action_high, arms), np.tile(step, arms))

    def reset(self, measured: np.ndarray) -> None:
        """Start from the measured state (clamped into the limits)."""
        self.last = np.clip(np.asarray(measured, dtype=np.float64).reshape(-1), self.low, self.high)

    def filter(self, action) -> tuple[np.ndarray, list[str]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.low.shape:
            raise ValueError(f"safety: action has {a.size} values, expected {self.low.size}")
        changed: list[str] = []
        if not np.all(np.isfinite(a)):
            self.counts.refused_non_finite += 1
            if self.last is None:
                raise ValueError("safety: non-finite action and no previous action to hold")
            return self.last.copy(), ["non_finite"]
        clamped = np.clip(a, self.low, self.high)
        if np.any(clamped != a):
            self.counts.clamped_to_limits += 1
            changed.append("limits")
        if self.last is not None:
            limited = np.clip(clamped, self.last - self.max_step, self.last + self.max_step)
            if np.any(limited != clamped):
                self.counts.rate_limited += 1
                changed.append("rate")
            clamped = limited
        self.last = clamped
        return clamped.copy(), changed
