"""The simulated arm, byte for byte through pyserial on its pty."""

from __future__ import annotations

import time

import pytest
import serial

from chatvla2.drivers import damiao
from chatvla2.drivers import ec_a4310 as ec
from chatvla2.drivers.profiles import X5
from chatvla2.sim.arm_sim import SimulatedArm


def read_until_quiet(port: serial.Serial, quiet_s: float = 0.1, limit_s: float = 2.0) -> bytes:
    out = b""
    end = time.monotonic() + limit_s
    last = time.monotonic()
    while time.monotonic() < end:
        chunk = port.read(port.in_waiting or 1)
        if chunk:
            out += chunk
            last = time.monotonic()
        elif time.monotonic() - last > quiet_s:
            break
    return out


@pytest.fixture
def port(sim_arm):
    with serial.Serial(sim_arm.device_path, timeout=0.02) as p:
        yield p


def test_open_and_enable_bytes(port):
    port.write(b"S8\rO\r")
    assert read_until_quiet(port) == b"\r\r"
    port.write(b"t0058FFFFFFFFFFFFFFFC\r")  # enable motor 5 (Damiao)
    reply = read_until_quiet(port)
    assert reply[:1] == b"\r"  # the adapter's acknowledgement
    line = reply[1:]
    assert line.startswith(b"t0008") and line.endswith(b"\r") and len(line) == 22
    fb = damiao.decode_feedback(X5.motors[3].ranges, bytes.fromhex(line[5:21].decode()))
    assert (fb.motor_id, fb.state) == (5, damiao.DamiaoState.ENABLED)
    assert fb.position == pytest.approx(-0.1, abs=1e-3)  # the sim's rest pose


def test_ec_motor_answers_on_its_own_id(port):
    port.write(b"O\r")
    read_until_quiet(port)
    frame = ec.encode_command(X5.motors[0].ranges, 0, 1.0, 0, 0, 0).hex().upper().encode()
    port.write(b"t0028" + frame + b"\r")
    reply = read_until_quiet(port)
    assert reply[1:6] == b"t0028" and reply[6:8] == b"20"  # type 1, no error


def test_rejections_and_silence(port):
    port.write(b"t0058FFFFFFFFFFFFFFFC\r")  # channel not open yet
    assert read_until_quiet(port) == b"\x07"
    port.write(b"O\rQ\rt0058FFFF\rt0038FFFFFFFFFFFFFFFC\r")  # unknown cmd, short frame, nobody at id 3
    assert read_until_quiet(port) == b"\r\x07\x07\r"
    port.write(b"V\rN\rF\rC\r")
    assert read_until_quiet(port) == b"V1013\rNA123\rF00\r\r"


def answers(stream: bytes) -> list[bytes]:
    """The adapter's answer to each frame, in order: b"\\r" (queued) or BEL; reply lines left out."""
    out = []
    for part in stream.replace(b"\x07", b"\x07\r").split(b"\r")[:-1]:
        if part in (b"", b"\x07"):
            out.append(part or b"\r")
        else:
            assert part.startswith(b"t0008") and len(part) == 21, part
    return out


def test_one_reply_per_command_and_bus_pacing(sim_arm, port, monkeypatch):
    port.write(b"O\r")
    read_until_quiet(port)
    n = 14  # one arm's cycle: 14 x 250 us = 3.5 ms of bus, well inside the adapter's 64-frame queue
    t0 = time.monotonic()
    port.write(b"t0068FFFFFFFFFFFFFFFC\r" * n)
    reply = read_until_quiet(port, quiet_s=0.2)
    assert reply.count(b"t0008") == n and reply.count(b"\r") == 2 * n
    assert time.monotonic() - t0 >= n * 2 * 125e-6 * 0.95  # 1 Mbit/s: 125 bit times per frame

    # More than the adapter's 64-frame TX queue at once: it puts one on the bus, queues 64 and
    # answers BEL while the queue is full (CANable 2.0 firmware: can_tx refuses). The 100 frames
    # reach the adapter in one or more chunks (the pty hands them over 2 KiB at a time, later under
    # load), and each command + reply that leaves the bus meanwhile (250 us) frees a slot; so record
    # when the simulated adapter takes each frame.
    arrivals: list[float] = []
    command = sim_arm._command

    def timed(line: bytes, now: float) -> None:
        if line[:1] == b"t":
            arrivals.append(now)
        command(line, now)

    monkeypatch.setattr(sim_arm, "_command", timed)
    port.write(b"t0068FFFFFFFFFFFFFFFC\r" * 100)
    reply = read_until_quiet(port, quiet_s=0.3)
    got = answers(reply)
    accepted, refused = got.count(b"\r"), got.count(b"\x07")
    # every frame answered exactly once; every queued one answered by its motor
    assert len(arrivals) == 100 and len(got) == 100 and reply.count(b"t0008") == accepted
    assert sim_arm.tx_overflows == refused
    # an empty queue takes 1 + 64 frames before it can refuse one, however late they arrive
    assert got[:65] == [b"\r"] * 65
    # a full queue refuses every frame until time frees a slot: in a chunk, no frame queued after a BEL
    chunks = [[a for a, at in zip(got, arrivals) if at == t] for t in sorted(set(arrivals))]
    assert all(chunk == sorted(chunk, reverse=True) for chunk in chunks)  # b"\r" (0x0d) > BEL (0x07)
    # never more than 64 queued: 65 + one per 250 us of bus that passed while the frames arrived
    # (in one chunk, the usual case on an idle machine: exactly 65 queued, 35 BEL)
    slots_freed = int((arrivals[-1] - arrivals[0] + 1e-9) / (2 * 125e-6))
    assert accepted <= 65 + slots_freed, (accepted, len(chunks), arrivals[-1] - arrivals[0])


def test_drop_and_latency_faults():
    with SimulatedArm("x5", faults="latency=0.1") as sim, serial.Serial(sim.device_path, timeout=0.01) as p:
        p.write(b"O\r")
        read_until_quiet(p)
        t0 = time.monotonic()
        p.write(b"t0058FFFFFFFFFFFFFFFC\r")
        got = b""
        while b"t000" not in got and time.monotonic() - t0 < 2:
            got += p.read(64)
        assert time.monotonic() - t0 >= 0.1
        sim.inject("drop=1.0")
        p.write(b"t0058FFFFFFFFFFFFFFFC\r")
        assert b"t000" not in read_until_quiet(p, quiet_s=0.3)


def test_unplug_closes_the_pty(sim_arm, port):
    sim_arm.unplug()
    assert sim_arm.unplugged.is_set()
    with pytest.raises(serial.SerialException):
        for _ in range(50):
            port.read(1)


def test_a_stalled_adapter_reads_nothing_then_what_piled_up(sim_arm, port):
    port.write(b"O\r")
    read_until_quiet(port)
    t0 = time.monotonic()
    sim_arm.inject("stall=0:0.5")
    time.sleep(0.05)
    port.write(b"t0058FFFFFFFFFFFFFFFC\r")
    assert read_until_quiet(port, quiet_s=0.2, limit_s=0.3) == b""  # frozen: no ack, no reply
    assert sim_arm.motors[5].commands_received == 0
    time.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
    reply = read_until_quiet(port, quiet_s=0.2, limit_s=2.0)  # thawed: the frame that waited is answered
    assert reply.startswith(b"\r") and reply.count(b"t0008") == 1
    assert sim_arm.motors[5].enabled and sim_arm.frozen_s >= 0.4


def test_a_hung_adapter_stops_reading_for_good(sim_arm):
    with serial.Serial(sim_arm.device_path, timeout=0.02, write_timeout=0.05) as p:
        p.write(b"O\r")
        read_until_quiet(p)
        sim_arm.inject("hang=0")
        time.sleep(0.05)
        with pytest.raises(serial.SerialTimeoutException):  # the OS buffer fills: writes block
            for _ in range(10_000):
                p.write(b"t0058FFFFFFFFFFFFFFFC\r" * 7)
        assert sim_arm.motors[5].commands_received == 0 and read_until_quiet(p, limit_s=0.3) == b""
    assert sim_arm.command_log[-1][1] == b"O"  # nothing read after the hang


def test_the_hold_log_records_one_unchanged_target_for_at_least_its_minimum():
    """A motor's hold log: stretches of one position target lasting HOLD_MIN_S or more (a controller
    holding), not a moving target, not damping; the mode log beside it."""
    from chatvla2.sim.arm_sim import HOLD_MIN_S

    sim = SimulatedArm("x5")
    motor = next(m for m in sim.motors.values() if m.model.family == "damiao")
    motor.enabled = True
    t = 100.0
    for step in range(20):  # moving: a new target every 2 ms
        motor.command = (0.01 * step, 0.0, 30.0, 1.0, 0.0)
        motor.log_mode(t)
        t += 0.002
    hold_start = t - 0.002  # the last target was first sent then
    for _ in range(100):  # the same target for 0.2 s: a hold
        motor.log_mode(t)
        t += 0.002
    motor.command = (0.19, 0.0, 0.0, 1.0, 0.0)  # damping: the hold ends
    motor.log_mode(t)
    damped_at = t
    motor.command = (0.3, 0.0, 30.0, 1.0, 0.0)  # a short stretch: not a hold
    motor.log_mode(t + 0.01)
    motor.command = (0.31, 0.0, 30.0, 1.0, 0.0)
    motor.log_mode(t + 0.01 + HOLD_MIN_S / 2)
    assert motor.hold_log == [(pytest.approx(hold_start), pytest.approx(damped_at))]
    assert [mode for _, mode in motor.mode_log] == ["position", "damping", "position"]
    record = sim.mode_record()
    assert record["clock"] == "monotonic" and record["motors"][str(motor.motor_id)]["holds"][0][0] == pytest.approx(hold_start)
