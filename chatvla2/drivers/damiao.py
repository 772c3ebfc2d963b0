"""Damiao MIT-mode frame codec (DM-J4310, DM-J4340): command, special frames, feedback.

Layouts from docs/reference/arx.md ("Damiao MIT-mode frames"). The value ranges are not fixed
here: they come from the motor profile (`DamiaoRanges`), since ARX flashes other ranges than
Damiao's defaults. Pure functions of bytes; both the driver and the simulated arm use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from chatvla2.drivers.fixed_point import float_to_uint, uint_to_float

FRAME_LENGTH = 8
# Damiao motors answer on master id 0 with their own id in the low nibble of byte 0 (docs/reference/arx.md).
FEEDBACK_CAN_ID = 0x000
PARAMETER_CAN_ID = 0x7FF

_SPECIAL_PREFIX = b"\xff" * 7
ENABLE_CODE = 0xFC
DISABLE_CODE = 0xFD
SET_ZERO_CODE = 0xFE
CLEAR_ERROR_CODE = 0xFB


class DamiaoState(IntEnum):
    """The feedback's error/state nibble (docs/reference/arx.md)."""

    DISABLED = 0x0
    ENABLED = 0x1
    OVER_VOLTAGE = 0x8
    UNDER_VOLTAGE = 0x9
    OVER_CURRENT = 0xA
    MOSFET_OVER_TEMPERATURE = 0xB
    COIL_OVER_TEMPERATURE = 0xC
    COMMUNICATION_LOST = 0xD
    OVERLOAD = 0xE

    @property
    def is_error(self) -> bool:
        return self >= 0x8


@dataclass(frozen=True)
class DamiaoRanges:
    """Value ranges flashed into a motor: position +-p_max rad, velocity +-v_max rad/s,
    torque +-t_max (in the frame's torque unit), kp 0..kp_max, kd 0..kd_max."""

    p_max: float
    v_max: float
    t_max: float
    kp_max: float = 500.0
    kd_max: float = 5.0


@dataclass(frozen=True)
class DamiaoCommand:
    position: float
    velocity: float
    kp: float
    kd: float
    torque: float


@dataclass(frozen=True)
class DamiaoFeedback:
    motor_id: int  # low nibble only (the frame carries 4 bits of the id)
    state: int  # raw nibble; see DamiaoState
    position: float
    velocity: float
    torque: float
    mosfet_temperature_c: int
    rotor_temperature_c: int


def encode_command(r: DamiaoRanges, position: float, velocity: float, kp: float, kd: float, torque: float) -> bytes:
    """MIT command: p 16 bit, v 12, kp 12, kd 12, t 12; every value clamped to its range."""
    p = float_to_uint(position, -r.p_max, r.p_max, 16)
    v = float_to_uint(velocity, -r.v_max, r.v_max, 12)
    kp_u = float_to_uint(kp, 0.0, r.kp_max, 12)
    kd_u = float_to_uint(kd, 0.0, r.kd_max, 12)
    t = float_to_uint(torque, -r.t_max, r.t_max, 12)
    return bytes(
        (
            p >> 8,
            p & 0xFF,
            v >> 4,
            ((v & 0xF) << 4) | (kp_u >> 8),
            kp_u & 0xFF,
            kd_u >> 4,
            ((kd_u & 0xF) << 4) | (t >> 8),
            t & 0xFF,
        )
    )


def decode_command(r: DamiaoRanges, data: bytes) -> DamiaoCommand:
    """Inverse of :func:`encode_command` (the simulated motor's side)."""
    _check_length(data, "command")
    p = (data[0] << 8) | data[1]
    v = (data[2] << 4) | (data[3] >> 4)
    kp_u = ((data[3] & 0xF) << 8) | data[4]
    kd_u = (data[5] << 4) | (data[6] >> 4)
    t = ((data[6] & 0xF) << 8) | data[7]
    return DamiaoCommand(
        position=uint_to_float(p, -r.p_max, r.p_max, 16),
        velocity=uint_to_float(v, -r.v_max, r.v_max, 12),
        kp=uint_to_float(kp_u, 0.0, r.kp_max, 12),
        kd=uint_to_float(kd_u, 0.0, r.kd_max, 12),
        torque=uint_to_float(t, -r.t_max, r.t_max, 12),
    )


def special_frame(code: int) -> bytes:
    """``FF FF FF FF FF FF FF code``: FC enable, FD disable, FE set zero, FB clear error."""
    return _SPECIAL_PREFIX + bytes((code,))


ENABLE = special_frame(ENABLE_CODE)
DISABLE = special_frame(DISABLE_CODE)
SET_ZERO = special_frame(SET_ZERO_CODE)
CLEAR_ERROR = special_frame(CLEAR_ERROR_CODE)


def special_code(data: bytes) -> int | None:
    """The special-frame code (FB..FE) if ``data`` is one, else None (a regular command)."""
    if len(data) == FRAME_LENGTH and data[:7] == _SPECIAL_PREFIX and data[7] in (
        ENABLE_CODE,
        DISABLE_CODE,
        SET_ZERO_CODE,
        CLEAR_ERROR_CODE,
    ):
        return data[7]
    return None


def encode_feedback(
    r: DamiaoRanges,
    motor_id: int,
    state: int,
    position: float,
    velocity: float,
    torque: float,
    mosfet_temperature_c: int,
    rotor_temperature_c: int,
) -> bytes:
    """Feedback frame (the simulated motor's side): d0 = state << 4 | id & 0xF."""
    p = float_to_uint(position, -r.p_max, r.p_max, 16)
    v = float_to_uint(velocity, -r.v_max, r.v_max, 12)
    t = float_to_uint(torque, -r.t_max, r.t_max, 12)
    return bytes(
        (
            ((state & 0xF) << 4) | (motor_id & 0xF),
            p >> 8,
            p & 0xFF,
            v >> 4,
            ((v & 0xF) << 4) | (t >> 8),
            t & 0xFF,
            _byte(mosfet_temperature_c),
            _byte(rotor_temperature_c),
        )
    )


def decode_feedback(r: DamiaoRanges, data: bytes) -> DamiaoFeedback:
    """Feedback: position d1..d2, velocity d3 + d4[7:4], torque d4[3:0] + d5, temps d6, d7."""
    _check_length(data, "feedback")
    p = (data[1] << 8) | data[2]
    v = (data[3] << 4) | (data[4] >> 4)
    t = ((data[4] & 0xF) << 8) | data[5]
    return DamiaoFeedback(
        motor_id=data[0] & 0xF,
        state=data[0] >> 4,
        position=uint_to_float(p, -r.p_max, r.p_max, 16),
        velocity=uint_to_float(v, -r.v_max, r.v_max, 12),
        torque=uint_to_float(t, -r.t_max, r.t_max, 12),
        mosfet_temperature_c=data[6],
        rotor_temperature_c=data[7],
    )


def _byte(x: float) -> int:
    return int(min(max(round(x), 0), 255))


def _check_length(data: bytes, what: str) -> None:
    if len(data) != FRAME_LENGTH:
        raise ValueError(f"Damiao {what} frame must be {FRAME_LENGTH} bytes, got {len(data)}: {bytes(data).hex()}")
