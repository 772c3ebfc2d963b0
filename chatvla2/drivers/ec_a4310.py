"""EC-A4310 ("RV" protocol) frame codec: command, feedback types 1 and 2, setup frames.

Layouts from docs/reference/arx.md ("EC-A4310 frames"). Value ranges come from the motor profile
(`EcRanges`). The EC motor answers on its own CAN id; the torque field is a current (A).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chatvla2.drivers.fixed_point import float_to_uint, uint_to_float

FRAME_LENGTH = 8
SETUP_CAN_ID = 0x7FF
SETUP_AUTO_FEEDBACK = 0x01
SETUP_REQUEST_RESPONSE = 0x02
SETUP_SET_ZERO = 0x03


@dataclass(frozen=True)
class EcRanges:
    """position +-p_max rad, velocity +-v_max rad/s, current +-i_max A, kp 0..kp_max (12 bit),
    kd 0..kd_max (9 bit)."""

    p_max: float
    v_max: float
    i_max: float
    kp_max: float = 500.0
    kd_max: float = 5.0


@dataclass(frozen=True)
class EcCommand:
    kp: float
    kd: float
    position: float
    velocity: float
    current: float


@dataclass(frozen=True)
class EcFeedback:
    motor_id: int  # the CAN id the reply came on
    message_type: int  # 1 or 2
    error: int  # d0[4:0]
    position: float
    velocity: float | None  # type 2 carries no velocity
    current: float
    temperature_c: float


def encode_command(r: EcRanges, kp: float, kd: float, position: float, velocity: float, current: float) -> bytes:
    """d0 = 000|kp[11:7], d1 = kp[6:0]<<1|kd[8], d2 = kd[7:0], d3..d4 = p, d5 = v[11:4],
    d6 = v[3:0]<<4|i[11:8], d7 = i[7:0]."""
    kp_u = float_to_uint(kp, 0.0, r.kp_max, 12)
    kd_u = float_to_uint(kd, 0.0, r.kd_max, 9)
    p = float_to_uint(position, -r.p_max, r.p_max, 16)
    v = float_to_uint(velocity, -r.v_max, r.v_max, 12)
    i = float_to_uint(current, -r.i_max, r.i_max, 12)
    return bytes(
        (
            kp_u >> 7,
            ((kp_u & 0x7F) << 1) | (kd_u >> 8),
            kd_u & 0xFF,
            p >> 8,
            p & 0xFF,
            v >> 4,
            ((v & 0xF) << 4) | (i >> 8),
            i & 0xFF,
        )
    )


def decode_command(r: EcRanges, data: bytes) -> EcCommand:
    """Inverse of :func:`encode_command` (the simulated motor's side)."""
    _check_length(data, "command")
    if data[0] >> 5:
        raise ValueError(f"EC command must start with three zero bits, got {bytes(data).hex()}")
    kp_u = ((data[0] & 0x1F) << 7) | (data[1] >> 1)
    kd_u = ((data[1] & 0x1) << 8) | data[2]
    p = (data[3] << 8) | data[4]
    v = (data[5] << 4) | (data[6] >> 4)
    i = ((data[6] & 0xF) << 8) | data[7]
    return EcCommand(
        kp=uint_to_float(kp_u, 0.0, r.kp_max, 12),
        kd=uint_to_float(kd_u, 0.0, r.kd_max, 9),
        position=uint_to_float(p, -r.p_max, r.p_max, 16),
        velocity=uint_to_float(v, -r.v_max, r.v_max, 12),
        current=uint_to_float(i, -r.i_max, r.i_max, 12),
    )


def encode_feedback_type1(
    r: EcRanges, error: int, position: float, velocity: float, current: float, temperature_c: float
) -> bytes:
    """Type 1: d0 = 1<<5 | error, p 16 bit (d1..d2), v 12 bit (d3, d4[7:4]), i 12 bit (d4[3:0], d5),
    d6 = temperature * 2 + 50, d7 = 0 (docs/reference/arx.md gives the field order and the temperature formula)."""
    p = float_to_uint(position, -r.p_max, r.p_max, 16)
    v = float_to_uint(velocity, -r.v_max, r.v_max, 12)
    i = float_to_uint(current, -r.i_max, r.i_max, 12)
    raw_temperature = int(min(max(round(temperature_c * 2 + 50), 0), 255))
    return bytes(
        (
            (1 << 5) | (error & 0x1F),
            p >> 8,
            p & 0xFF,
            v >> 4,
            ((v & 0xF) << 4) | (i >> 8),
            i & 0xFF,
            raw_temperature,
            0,
        )
    )


def encode_feedback_type2(r: EcRanges, error: int, position: float, current: float, temperature_c: float) -> bytes:
    """Type 2: d0 = 2<<5 | error, big-endian float32 position d1..d4, int16 current*100 d5..d6,
    d7 = temperature (C)."""
    centiamps = int(min(max(round(current * 100), -32768), 32767))
    temperature = int(min(max(round(temperature_c), 0), 255))
    return bytes(((2 << 5) | (error & 0x1F),)) + struct.pack(">fhB", position, centiamps, temperature)


def decode_feedback(r: EcRanges, motor_id: int, data: bytes) -> EcFeedback:
    """Reply: d0[7:5] = message type (1 or 2), d0[4:0] = error."""
    _check_length(data, "feedback")
    message_type, error = data[0] >> 5, data[0] & 0x1F
    if message_type == 1:
        p = (data[1] << 8) | data[2]
        v = (data[3] << 4) | (data[4] >> 4)
        i = ((data[4] & 0xF) << 8) | data[5]
        return EcFeedback(
            motor_id=motor_id,
            message_type=1,
            error=error,
            position=uint_to_float(p, -r.p_max, r.p_max, 16),
            velocity=uint_to_float(v, -r.v_max, r.v_max, 12),
            current=uint_to_float(i, -r.i_max, r.i_max, 12),
            temperature_c=(data[6] - 50) / 2,
        )
    if message_type == 2:
        position, centiamps, temperature = struct.unpack(">fhB", bytes(data[1:8]))
        if position != position:
            raise ValueError(f"EC type-2 feedback from motor {motor_id} carries a NaN position")
        return EcFeedback(
            motor_id=motor_id,
            message_type=2,
            error=error,
            position=position,
            velocity=None,
            current=centiamps / 100.0,
            temperature_c=float(temperature),
        )
    raise ValueError(f"EC feedback from motor {motor_id} has unknown message type {message_type}: {bytes(data).hex()}")


def setup_frame(motor_id: int, command: int) -> bytes:
    """Setup on id 0x7FF: [id_hi, id_lo, 0x00, cmd]; cmd 01 auto-feedback, 02 request/response,
    03 set zero."""
    if command not in (SETUP_AUTO_FEEDBACK, SETUP_REQUEST_RESPONSE, SETUP_SET_ZERO):
        raise ValueError(f"unknown EC setup command {command:#04x}")
    return bytes(((motor_id >> 8) & 0xFF, motor_id & 0xFF, 0x00, command))


def decode_setup(data: bytes) -> tuple[int, int] | None:
    """(motor id, command) if ``data`` is an EC setup frame, else None."""
    if len(data) == 4 and data[2] == 0x00 and data[3] in (SETUP_AUTO_FEEDBACK, SETUP_REQUEST_RESPONSE, SETUP_SET_ZERO):
        return (data[0] << 8) | data[1], data[3]
    return None


def _check_length(data: bytes, what: str) -> None:
    if len(data) != FRAME_LENGTH:
        raise ValueError(f"EC-A4310 {what} frame must be {FRAME_LENGTH} bytes, got {len(data)}: {bytes(data).hex()}")
