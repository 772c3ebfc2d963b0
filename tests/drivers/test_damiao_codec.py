"""Damiao MIT codec: byte vectors worked out by hand from docs/reference/arx.md's layout, and round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatvla2.drivers import damiao
from chatvla2.drivers.damiao import DamiaoRanges, DamiaoState
from chatvla2.drivers.fixed_point import step
from chatvla2.drivers.profiles import DM_J4310

ARX = DM_J4310.ranges  # as flashed on ARX arms: +-12.5 rad, +-45 rad/s, +-18, kp 0..500, kd 0..5


def test_command_zero_vector():
    # p 0 -> round(32767.5) = 0x8000; v 0 -> 0x800; kp 0, kd 0; t 0 -> 0x800
    assert damiao.encode_command(ARX, 0.0, 0.0, 0.0, 0.0, 0.0).hex() == "8000800000000800"


def test_command_mixed_vector():
    # p 1.0 -> 13.5/25*65535 = 35388.9 -> 0x8A3D; v -1 -> 44/90*4095 = 2002 -> 0x7D2;
    # kp 80 -> 655.2 -> 0x28F; kd 2 -> 1638 -> 0x666; t 0.5 -> 2104.375 -> 0x838
    # d3 = v[3:0]<<4 | kp[11:8] = 0x22; d6 = kd[3:0]<<4 | t[11:8] = 0x68
    assert damiao.encode_command(ARX, 1.0, -1.0, 80.0, 2.0, 0.5).hex() == "8a3d7d228f666838"


def test_command_range_edges_and_beyond():
    assert damiao.encode_command(ARX, 12.5, 45, 500, 5, 18).hex() == "ff" * 8
    assert damiao.encode_command(ARX, -12.5, -45, 0, 0, -18).hex() == "00" * 8
    # beyond the range: clamped to the edge, never wrapped
    assert damiao.encode_command(ARX, 1e9, 1e9, 1e9, 1e9, 1e9).hex() == "ff" * 8
    assert damiao.encode_command(ARX, -1e9, -1e9, -5, -5, -1e9).hex() == "00" * 8


def test_ranges_come_from_the_profile():
    other = DamiaoRanges(p_max=12.5, v_max=30.0, t_max=10.0)  # Damiao's own J4310 defaults
    a = damiao.encode_command(ARX, 0.0, 20.0, 0.0, 0.0, 5.0)
    b = damiao.encode_command(other, 0.0, 20.0, 0.0, 0.0, 5.0)
    assert a != b
    assert damiao.decode_command(other, b).velocity == pytest.approx(20.0, abs=step(-30, 30, 12))


def test_nan_never_becomes_an_extreme():
    data = damiao.encode_command(ARX, math.nan, math.nan, 0, 0, math.nan)
    cmd = damiao.decode_command(ARX, data)
    assert abs(cmd.position) < 1e-3 and abs(cmd.velocity) < 0.02 and abs(cmd.torque) < 0.01


def test_special_frames():
    assert damiao.ENABLE.hex() == "fffffffffffffffc"
    assert damiao.DISABLE.hex() == "fffffffffffffffd"
    assert damiao.SET_ZERO.hex() == "fffffffffffffffe"
    assert damiao.CLEAR_ERROR.hex() == "fffffffffffffffb"
    assert damiao.special_code(damiao.ENABLE) == 0xFC
    assert damiao.special_code(bytes.fromhex("ff" * 8)) is None  # a max-value command, not special


def test_feedback_vector():
    # d0 = state 1 << 4 | id 5; p 0x8000; v 0x800 (d3 = 0x80, d4 high nibble 0); t 0x800; 35 C, 37 C
    data = bytes.fromhex("1580008008002325")
    fb = damiao.decode_feedback(ARX, data)
    assert (fb.motor_id, fb.state) == (5, DamiaoState.ENABLED)
    assert fb.position == pytest.approx(0.0, abs=step(-12.5, 12.5, 16))
    assert fb.velocity == pytest.approx(0.0, abs=step(-45, 45, 12))
    assert fb.torque == pytest.approx(0.0, abs=step(-18, 18, 12))
    assert (fb.mosfet_temperature_c, fb.rotor_temperature_c) == (35, 37)
    assert damiao.encode_feedback(ARX, 5, 1, 0.0, 0.0, 0.0, 35, 37) == data


def test_feedback_error_nibble():
    fb = damiao.decode_feedback(ARX, bytes.fromhex("a4800080080023ff"))
    assert fb.motor_id == 4 and fb.state == DamiaoState.OVER_CURRENT and DamiaoState(fb.state).is_error
    assert fb.rotor_temperature_c == 255


@pytest.mark.parametrize("length", [0, 7, 9])
def test_wrong_length_is_a_value_error(length):
    with pytest.raises(ValueError, match="8 bytes"):
        damiao.decode_feedback(ARX, bytes(length))


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@settings(max_examples=300, deadline=None)
@given(p=finite, v=finite, kp=finite, kd=finite, t=finite)
def test_command_round_trip(p, v, kp, kd, t):
    data = damiao.encode_command(ARX, p, v, kp, kd, t)
    assert len(data) == 8
    cmd = damiao.decode_command(ARX, data)
    clamp = lambda x, lo, hi: min(max(x, lo), hi)  # noqa: E731
    assert cmd.position == pytest.approx(clamp(p, -12.5, 12.5), abs=step(-12.5, 12.5, 16) / 2 + 1e-9)
    assert cmd.velocity == pytest.approx(clamp(v, -45, 45), abs=step(-45, 45, 12) / 2 + 1e-9)
    assert cmd.kp == pytest.approx(clamp(kp, 0, 500), abs=step(0, 500, 12) / 2 + 1e-9)
    assert cmd.kd == pytest.approx(clamp(kd, 0, 5), abs=step(0, 5, 12) / 2 + 1e-9)
    assert cmd.torque == pytest.approx(clamp(t, -18, 18), abs=step(-18, 18, 12) / 2 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    motor_id=st.integers(0, 15),
    state=st.integers(0, 15),
    p=finite,
    v=finite,
    t=finite,
    tm=st.integers(-50, 300),
    tr=st.integers(-50, 300),
)
def test_feedback_round_trip(motor_id, state, p, v, t, tm, tr):
    fb = damiao.decode_feedback(ARX, damiao.encode_feedback(ARX, motor_id, state, p, v, t, tm, tr))
    assert (fb.motor_id, fb.state) == (motor_id, state)
    assert fb.position == pytest.approx(min(max(p, -12.5), 12.5), abs=step(-12.5, 12.5, 16) / 2 + 1e-9)
    assert fb.velocity == pytest.approx(min(max(v, -45), 45), abs=step(-45, 45, 12) / 2 + 1e-9)
    assert fb.torque == pytest.approx(min(max(t, -18), 18), abs=step(-18, 18, 12) / 2 + 1e-9)
    assert fb.mosfet_temperature_c == min(max(tm, 0), 255)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=8, max_size=8))
def test_any_eight_bytes_decode_inside_the_ranges(data):
    fb = damiao.decode_feedback(ARX, data)
    assert -12.5 <= fb.position <= 12.5 and -45 <= fb.velocity <= 45 and -18 <= fb.torque <= 18
    # and re-encoding reproduces the bytes exactly (the codec is a bijection on 8-byte frames)
    again = damiao.encode_feedback(
        ARX, fb.motor_id, fb.state, fb.position, fb.velocity, fb.torque, fb.mosfet_temperature_c, fb.rotor_temperature_c
    )
    assert again == data
