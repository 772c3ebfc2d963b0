"""EC-A4310 codec: byte vectors worked out by hand from docs/reference/arx.md's layout, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatvla2.drivers import ec_a4310 as ec
from chatvla2.drivers.fixed_point import step
from chatvla2.drivers.profiles import EC_A4310

R = EC_A4310.ranges  # +-12.5 rad, +-18 rad/s, +-30 A, kp 0..500 (12 bit), kd 0..5 (9 bit)


def test_command_vector():
    # kp 80 -> 655 = 0x28F: kp[11:7] = 5, kp[6:0] = 0x0F; kd 2 -> 2/5*511 = 204.4 -> 0xCC, kd[8] = 0
    # p 1.0 -> 0x8A3D; v -1 -> 17/36*4095 = 1933.75 -> 0x78E; i 0.5 -> 30.5/60*4095 -> 2082 = 0x822
    assert ec.encode_command(R, 80.0, 2.0, 1.0, -1.0, 0.5).hex() == "051ecc8a3d78e822"


def test_command_edges():
    # kp 500 -> 0xFFF: d0 = 0x1F (top three bits stay 0), d1 = 0x7F<<1 | kd[8]
    assert ec.encode_command(R, 500, 5, 12.5, 18, 30).hex() == "1fffffffffffffff"
    assert ec.encode_command(R, 1e9, 1e9, 1e9, 1e9, 1e9).hex() == "1fffffffffffffff"
    assert ec.encode_command(R, -1, -1, -1e9, -1e9, -1e9).hex() == "0000000000000000"
    assert ec.encode_command(R, 0, 5, 0, 0, 0)[1] & 1 == 1  # kd bit 8 lands in d1 bit 0


def test_feedback_type1_vector():
    # d0 = type 1 << 5 | error 0; p 0x8000, v 0x800, i 0x800; d6 = 25 C * 2 + 50 = 100
    data = bytes.fromhex("2080008008006400")
    fb = ec.decode_feedback(R, 2, data)
    assert (fb.motor_id, fb.message_type, fb.error) == (2, 1, 0)
    assert fb.temperature_c == 25.0
    assert fb.position == pytest.approx(0, abs=step(-12.5, 12.5, 16))
    assert ec.encode_feedback_type1(R, 0, 0.0, 0.0, 0.0, 25.0) == data


def test_feedback_type2_vector():
    # d0 = 2 << 5 | error 3; float32 BE 1.5 = 3FC00000; current -1.25 -> -125 = FF83; 40 C
    data = bytes.fromhex("433fc00000ff8328")
    fb = ec.decode_feedback(R, 1, data)
    assert (fb.message_type, fb.error, fb.position, fb.current, fb.temperature_c) == (2, 3, 1.5, -1.25, 40.0)
    assert fb.velocity is None
    assert ec.encode_feedback_type2(R, 3, 1.5, -1.25, 40) == data


def test_bad_feedback_is_a_value_error():
    with pytest.raises(ValueError, match="message type"):
        ec.decode_feedback(R, 1, bytes.fromhex("6000000000000000"))
    with pytest.raises(ValueError, match="NaN"):
        ec.decode_feedback(R, 1, bytes.fromhex("407fc00000000000"))
    with pytest.raises(ValueError, match="8 bytes"):
        ec.decode_feedback(R, 1, b"\x20\x00")
    with pytest.raises(ValueError, match="three zero bits"):
        ec.decode_command(R, bytes.fromhex("e000000000000000"))


def test_setup_frames():
    assert ec.setup_frame(2, ec.SETUP_REQUEST_RESPONSE).hex() == "00020002"
    assert ec.setup_frame(0x104, ec.SETUP_SET_ZERO).hex() == "01040003"
    assert ec.decode_setup(bytes.fromhex("00040001")) == (4, 1)
    assert ec.decode_setup(bytes.fromhex("00040009")) is None
    with pytest.raises(ValueError):
        ec.setup_frame(1, 9)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


def clamp(x, lo, hi):
    return min(max(x, lo), hi)


@settings(max_examples=300, deadline=None)
@given(kp=finite, kd=finite, p=finite, v=finite, i=finite)
def test_command_round_trip(kp, kd, p, v, i):
    cmd = ec.decode_command(R, ec.encode_command(R, kp, kd, p, v, i))
    assert cmd.kp == pytest.approx(clamp(kp, 0, 500), abs=step(0, 500, 12) / 2 + 1e-9)
    assert cmd.kd == pytest.approx(clamp(kd, 0, 5), abs=step(0, 5, 9) / 2 + 1e-9)
    assert cmd.position == pytest.approx(clamp(p, -12.5, 12.5), abs=step(-12.5, 12.5, 16) / 2 + 1e-9)
    assert cmd.velocity == pytest.approx(clamp(v, -18, 18), abs=step(-18, 18, 12) / 2 + 1e-9)
    assert cmd.current == pytest.approx(clamp(i, -30, 30), abs=step(-30, 30, 12) / 2 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(err=st.integers(0, 31), p=finite, v=finite, i=finite, temp=st.floats(-25, 102))
def test_feedback_type1_round_trip(err, p, v, i, temp):
    fb = ec.decode_feedback(R, 7, ec.encode_feedback_type1(R, err, p, v, i, temp))
    assert fb.error == err and fb.message_type == 1
    assert fb.position == pytest.approx(clamp(p, -12.5, 12.5), abs=step(-12.5, 12.5, 16) / 2 + 1e-9)
    assert fb.velocity == pytest.approx(clamp(v, -18, 18), abs=step(-18, 18, 12) / 2 + 1e-9)
    assert fb.current == pytest.approx(clamp(i, -30, 30), abs=step(-30, 30, 12) / 2 + 1e-9)
    assert fb.temperature_c == pytest.approx(temp, abs=0.25 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(err=st.integers(0, 31), p=st.floats(-100, 100, width=32), i=st.floats(-327, 327), temp=st.integers(0, 255))
def test_feedback_type2_round_trip(err, p, i, temp):
    fb = ec.decode_feedback(R, 1, ec.encode_feedback_type2(R, err, p, i, temp))
    assert fb.error == err and fb.position == p and fb.temperature_c == temp
    assert fb.current == pytest.approx(i, abs=0.005 + 1e-9)
