"""Safety: clipping and refusals from docs/reference/arx.md's safety list, each intervention counted.

- targets clipped to the position limits (gripper: 0 .. width), NaN/inf refused;
- each cycle's step clipped to velocity_max x dt (this is also the interpolation towards the target);
- feed-forward torque clipped to the torque limit;
- a stiff (kp > 1) command more than `stiff_error_max_rad` from the measured state is refused: the
  command is pulled back to within that distance of the state;
- emergencies (damping until disconnect): over-current for 20 consecutive cycles, a position far
  outside the limits, an absurd torque reading, over-temperature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from chatvla2.drivers.faults import AbsurdReading, ArmFault, OverCurrent, OverTemperature, PositionOutOfRange
from chatvla2.drivers.motor_frames import JOINT_NAMES, MotorReading
from chatvla2.drivers.profiles import ArmProfile


@dataclass
class Interventions:
    """How often each safety rule acted (counts, never reset while connected)."""

    targets_clipped: int = 0  # send_action values outside the limits
    steps_limited: int = 0  # cycles where a motor's step was cut to velocity_max x dt
    torques_clipped: int = 0
    stiff_refused: int = 0  # stiff commands pulled back towards the measured state
    target_timeouts: int = 0  # watchdog: no new target in time -> hold
    feedback_missed: int = 0  # motors whose reply to this cycle's command did not arrive within the cycle
    replies_late: int = 0  # replies that answered an earlier cycle's command (applied, but a cycle old)
    replies_lost: int = 0  # replies owed for longer than reply_lost_s (dropped, or the frame was refused)
    replies_unexpected: int = 0  # replies with no command owed (e.g. answers to requests before start)
    adapter_rejections: int = 0  # BEL replies from the adapter
    write_timeouts: int = 0  # cycles whose frames the adapter did not take within the write deadline
    bad_replies: int = 0  # replies that failed to decode
    faults: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SafetyLimits:
    """Motor-space (7: six joints + gripper motor angle) limits derived from a profile."""

    def __init__(
        self,
        profile: ArmProfile,
        *,
        stiff_error_max_rad: float = 0.2,  # docs/reference/arx.md
        overcurrent_cycles: int = 20,  # docs/reference/arx.md
        position_margin_rad: float = 0.5,  # project choice: "far outside the limits"
        velocity_scale: float = 1.0,
    ) -> None:
        g = profile.gripper
        self.profile = profile
        self.position_min = np.array(profile.position_min + (0.0,))
        self.position_max = np.array(profile.position_max + (g.open_readout_rad,))
        if g.open_readout_rad < 0:  # newer arms read negative when open
            self.position_min[-1], self.position_max[-1] = g.open_readout_rad, 0.0
        self.velocity_max = np.array(profile.velocity_max + (g.angle_speed_max,)) * velocity_scale
        self.torque_max = np.array(profile.torque_max + (g.torque_max,))
        self.kp = np.array(profile.kp + (g.kp,))
        self.kd = np.array(profile.kd + (g.kd,))
        self.damping_kd = np.array(profile.damping_kd + (g.damping_kd,))
        frame_limits = np.array([m.frame_torque_limit for m in profile.motors])
        # over-current: above the limit we command, or pinned at the top of the frame's range
        self.overcurrent_torque = np.minimum(1.1 * self.torque_max, 0.97 * frame_limits)
        self.absurd_torque = 3.0 * self.torque_max
        self.temperature_max_c = profile.temperature_max_c
        self.stiff_error_max_rad = stiff_error_max_rad
        self.overcurrent_cycles = overcurrent_cycles
        self.position_margin_rad = position_margin_rad

    def clip_target(self, target: np.ndarray, counts: Interventions) -> np.ndarray:
        if not np.all(np.isfinite(target)):
            raise ValueError(f"action has non-finite values: {target.tolist()}")
        clipped = np.clip(target, self.position_min, self.position_max)
        counts.targets_clipped += int(np.count_nonzero(clipped != target))
        return clipped

    def step_towards(self, command: np.ndarray, target: np.ndarray, dt: float, counts: Interventions) -> np.ndarray:
        max_step = self.velocity_max * dt
        delta = target - command
        step = np.clip(delta, -max_step, max_step)
        if np.any(step != delta):
            counts.steps_limited += 1
        return command + step

    def refuse_stiff(self, command: np.ndarray, measured: np.ndarray, counts: Interventions) -> np.ndarray:
        err = command - measured
        far = (np.abs(err) > self.stiff_error_max_rad) & (self.kp > 1.0)
        if np.any(far):
            counts.stiff_refused += int(np.count_nonzero(far))
            command = np.where(far, measured + np.clip(err, -self.stiff_error_max_rad, self.stiff_error_max_rad), command)
        return command

    def clip_torque(self, torque: np.ndarray, counts: Interventions) -> np.ndarray:
        clipped = np.clip(torque, -self.torque_max, self.torque_max)
        counts.torques_clipped += int(np.count_nonzero(clipped != torque))
        return clipped

    def check_reading(self, r: MotorReading, overcurrent_streak: list[int]) -> ArmFault | None:
        """Emergencies from one reply (the motor's own error codes are handled by the caller)."""
        i, name = r.index, JOINT_NAMES[r.index]
        if abs(r.torque) > self.absurd_torque[i]:
            return AbsurdReading(f"{name} (motor {r.motor_id}) reads an absurd torque {r.torque:.1f} N*m", r.motor_id)
        if abs(r.torque) > self.overcurrent_torque[i]:
            overcurrent_streak[i] += 1
            if overcurrent_streak[i] >= self.overcurrent_cycles:
                return OverCurrent(
                    f"{name} (motor {r.motor_id}) over current for {overcurrent_streak[i]} consecutive cycles "
                    f"({r.torque:.1f} N*m > {self.overcurrent_torque[i]:.1f})",
                    r.motor_id,
                )
        else:
            overcurrent_streak[i] = 0
        lo, hi = self.position_min[i] - self.position_margin_rad, self.position_max[i] + self.position_margin_rad
        if not lo <= r.position <= hi:
            return PositionOutOfRange(
                f"{name} (motor {r.motor_id}) at {r.position:.3f} rad, far outside [{self.position_min[i]:.2f}, "
                f"{self.position_max[i]:.2f}]",
                r.motor_id,
            )
        if r.temperature_c > self.temperature_max_c:
            return OverTemperature(
                f"{name} (motor {r.motor_id}) at {r.temperature_c:.0f} C, above {self.temperature_max_c:.0f} C", r.motor_id
            )
        return None
