"""The SLCAN link: through a real pty (to the simulated arm, or to raw bytes we write), and the
reader fed hostile bytes."""

from __future__ import annotations

import os
import time
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatvla2.drivers import damiao
from chatvla2.drivers.slcan_link import AdapterRejected, LinkDisconnected, LinkError, SlcanLink, SlcanReader

VALID = b"t0008158000800800232" + b"5\r"  # Damiao feedback of motor 5 on id 0


def test_enable_round_trip_through_the_sim(sim_arm):
    with SlcanLink(sim_arm.device_path) as link:
        link.send(5, damiao.ENABLE)
        can_id, data = link.receive(1.0)
        assert can_id == 0 and data[0] == 0x15  # state 1 (enabled) << 4 | id 5
        assert link.stats.frames_sent == 1 and link.stats.acks >= 4  # C, S8, O and the frame's ack


@pytest.mark.parametrize("ack", ["z", "none"])
def test_other_acknowledgement_styles(ack):
    from chatvla2.sim.arm_sim import SimulatedArm

    with SimulatedArm("x5", ack=ack) as sim, SlcanLink(sim.device_path) as link:
        link.send(6, damiao.ENABLE)
        assert link.receive(1.0)[1][0] == 0x16


def test_timestamps_are_accepted(sim_arm):
    sim_arm.timestamps = True  # as after `Z1`: 4 hex digits of ms before the CR
    with SlcanLink(sim_arm.device_path) as link:
        link.send(7, damiao.ENABLE)
        can_id, data = link.receive(1.0)
        assert (can_id, len(data), data[0]) == (0, 8, 0x17)


def raw_pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def test_bel_garbage_and_partial_lines_over_a_pty():
    master, slave, path = raw_pty()
    try:
        with SlcanLink(path, open_reply_timeout_s=0.05) as link:
            os.write(master, b"\x07" + b"\xff\xfegarbage\r" + b"t00")  # BEL, garbage, half a frame
            with pytest.raises(AdapterRejected):
                link.receive(1.0)
            assert link.receive(0.05) is None  # the half frame waits for its end
            os.write(master, b"08158000800800232")
            os.write(master, b"5\r")
            assert link.receive(1.0) == (0, bytes.fromhex("1580008008002325"))
            assert link.stats.garbage_lines == 1
    finally:
        os.close(master)
        os.close(slave)


def test_unplugged_pty_is_a_typed_disconnect(sim_arm):
    link = SlcanLink(sim_arm.device_path).open()
    try:
        sim_arm.unplug()
        t0 = time.monotonic()
        with pytest.raises(LinkDisconnected):
            for _ in range(100):
                link.receive(0.05)
        assert time.monotonic() - t0 < 2.0  # detected on the first read after the pty closed
        with pytest.raises(LinkDisconnected):
            link.send(5, damiao.ENABLE)
    finally:
        link.close()
        link.close()  # idempotent, and never raises on a dead device


def test_missing_port_names_the_port():
    with pytest.raises(LinkError, match="/dev/does-not-exist"):
        SlcanLink("/dev/does-not-exist").open()


def test_receive_on_closed_link_is_typed():
    with pytest.raises(LinkDisconnected, match="not open"):
        SlcanLink("/dev/null").receive(0.01)


# -- the reader alone -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), split=st.integers(0, 400))
def test_valid_frame_after_random_garbage_is_read(garbage, split):
    reader = SlcanReader()
    stream = garbage + VALID
    reader.feed(stream[:split])  # arbitrary chunk boundaries: partial lines
    reader.feed(stream[split:])
    assert reader.frames and reader.frames[-1] == (0, bytes.fromhex("1580008008002325"))
    assert reader.rejections == garbage.count(b"\x07")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_and_frames_are_well_formed(data):
    reader = SlcanReader()
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
    for can_id, payload in reader.frames:
        assert 0 <= can_id <= 0x1FFFFFFF and len(payload) <= 8


def test_garbage_between_frames_keeps_both_frames():
    reader = SlcanReader()
    reader.feed(VALID + b"\x00\x81zz\r" + b"\x07" + b"junk" + VALID)
    assert len(reader.frames) == 2
    assert reader.rejections == 1 and reader.stats.garbage_lines == 1
