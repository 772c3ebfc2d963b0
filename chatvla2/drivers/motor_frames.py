"""One arm's motor frames: routes each motor to its codec (Damiao or EC-A4310) by profile, converts
torque (N*m) to and from the frame's unit with the motor's torque constant, and reads replies.

Motor space: index 0..5 are joints 1..6, index 6 the gripper motor (angle in rad).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.drivers import damiao
from chatvla2.drivers import ec_a4310 as ec
from chatvla2.drivers.profiles import ARM_DIMS, ArmProfile

JOINT_NAMES = ARM_DIMS  # motor index -> name: joints 1..6, then the gripper (profiles.py)


@dataclass(frozen=True)
class MotorReading:
    index: int
    motor_id: int
    position: float  # rad
    velocity: float | None  # rad/s (EC type-2 replies carry none)
    torque: float  # N*m
    temperature_c: float
    state: str  # "enabled", "disabled", "ok" (EC) or an error name
    error_code: int  # Damiao state nibble or EC error bits; 0 or 1 = healthy
    family: str

    @property
    def has_error(self) -> bool:
        return self.error_code >= 0x8 if self.family == "damiao" else self.error_code != 0


class MotorFrames:
    """Frame builder/reader for one arm profile."""

    def __init__(self, profile: ArmProfile) -> None:
        self.profile = profile
        self.ids = profile.motor_ids
        self.models = profile.motors
        self._index_by_id = {motor_id: i for i, motor_id in enumerate(self.ids)}
        self._damiao_index_by_nibble = {
            motor_id & 0xF: i for i, (motor_id, m) in enumerate(zip(self.ids, self.models)) if m.family == "damiao"
        }

    def command(self, index: int, position: float, velocity: float, kp: float, kd: float, torque: float) -> tuple[int, bytes]:
        model = self.models[index]
        frame_torque = torque / model.torque_constant  # docs/reference/arx.md: the command carries torque / Kt
        if model.family == "damiao":
            return self.ids[index], damiao.encode_command(model.ranges, position, velocity, kp, kd, frame_torque)
        return self.ids[index], ec.encode_command(model.ranges, kp, kd, position, velocity, frame_torque)

    def enable(self, index: int) -> tuple[int, bytes] | None:
        """Damiao enable frame; EC motors have none (None)."""
        return (self.ids[index], damiao.ENABLE) if self.models[index].family == "damiao" else None

    def disable(self, index: int) -> tuple[int, bytes] | None:
        return (self.ids[index], damiao.DISABLE) if self.models[index].family == "damiao" else None

    def read(self, can_id: int, data: bytes) -> MotorReading | None:
        """A reply -> MotorReading; None if it is not one of this arm's motors. Raises ValueError on a
        malformed reply."""
        if can_id == damiao.FEEDBACK_CAN_ID:
            if len(data) != 8:
                raise ValueError(f"Damiao feedback with {len(data)} bytes")
            index = self._damiao_index_by_nibble.get(data[0] & 0xF)
            if index is None:
                return None
            model = self.models[index]
            fb = damiao.decode_feedback(model.ranges, data)
            try:
                state = damiao.DamiaoState(fb.state).name.lower().replace("_", "-")
            except ValueError:
                state = f"code-{fb.state:#x}"
            return MotorReading(
                index, self.ids[index], fb.position, fb.velocity, fb.torque * model.torque_constant,
                float(fb.rotor_temperature_c), state, fb.state, "damiao",
            )
        index = self._index_by_id.get(can_id)
        if index is None or self.models[index].family != "ec":
            return None
        model = self.models[index]
        fb = ec.decode_feedback(model.ranges, can_id, data)
        return MotorReading(
            index, can_id, fb.position, fb.velocity, fb.current * model.torque_constant, fb.temperature_c,
            "ok" if fb.error == 0 else f"error-{fb.error:#x}", fb.error, "ec",
        )
