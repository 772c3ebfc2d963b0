"""A simulated ARX arm behind a pseudo-terminal that answers SLCAN byte for byte like the hardware.

The simulated adapter speaks Lawicel SLCAN on the pty's master side (`O`, `C`, `S0`..`S8`, `V`, `N`,
`F`, `Z0/Z1`, `t`/`T` frames; `\\r` for success, BEL for failure). Behind it sit the arm's motors on
a simulated 1 Mbit/s CAN bus: Damiao motors answer on id 0 with their id in the low nibble of byte 0,
EC-A4310 motors on their own id, one reply per command frame. The bus is paced: each frame occupies
`FRAME_BITS` bit times, so one arm's 7 command + 7 reply frames cannot exceed ~570 cycles/s.

A client opens `device_path` with pyserial (or python-can's slcan interface) like a USB adapter.
For tests, the simulator keeps what it saw: each motor's `mode_log` (when it entered position /
damping / limp / disabled) and `hold_log` (stretches of one unchanged position target: a hold),
`command_log` (every line that was not a data frame: O, C, S8, an empty
line, garbage) and `rejected_lines` (every line answered BEL), all on `time.monotonic()`, the clock
the driver uses too.
"""

from __future__ import annotations

import heapq
import os
import random
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field

from chatvla2.drivers import damiao
from chatvla2.drivers import ec_a4310 as ec
from chatvla2.drivers.profiles import ArmProfile, MotorModel, get_profile
from chatvla2.sim.dynamics import MotorDynamics
from chatvla2.sim.faults import FaultPlan, parse_faults

FRAME_BITS = 125  # 8-byte standard frame: 111 bits + typical stuffing (docs/reference/arx.md: 111..135)
# The adapter's transmit queue, counted in frames as firmware does: CANable 2.0's slcan firmware
# (normaldotcom/canable2-fw, can.c) buffers TXQUEUE_LEN = 64 frames and refuses the next one
# (can_tx -> HAL_ERROR -> BEL) while full. A frame is queued from its arrival until it starts on
# the bus; each command's reply takes the slot after it, so 64 queued commands are ~16 ms of bus.
# (An earlier version refused frames waiting > 4 ms, i.e. ~16 commands: four times stricter than the
# firmware.) `C` (close) empties the queue on that firmware: frames not yet sent are lost.
TX_QUEUE_FRAMES = 64
_BEL = b"\x07"
_OK = b"\r"
_HEX = frozenset(b"0123456789abcdefABCDEF")

# Plausible joint inertias (kg*m^2) for joints 1..6 and the gripper: the sim's choice.
_INERTIA = (0.05, 0.05, 0.03, 0.01, 0.01, 0.005, 0.002)
_REST_POSE = (0.05, 0.25, 0.31, -0.1, 0.15, 0.05, 0.5)  # not all zero: a real arm at rest
# The shortest stretch of one position target the hold log records: 50 frames of a 500 Hz controller.
HOLD_MIN_S = 0.1


@dataclass
class SimMotor:
    motor_id: int
    model: MotorModel
    dynamics: MotorDynamics
    enabled: bool = False  # Damiao: FC / FD; EC: always answers, "enabled" once commanded
    state: int = damiao.DamiaoState.DISABLED
    command: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)  # p, v, kp, kd, t(N*m)
    last_update: float = field(default_factory=time.monotonic)
    ec_feedback_type: int = 1
    mode_log: list[tuple[float, str]] = field(default_factory=list)  # (time, mode) on every change
    # (start, end) of every stretch of at least HOLD_MIN_S in position mode with the same target:
    # what an arm sees of a controller holding (the last target sent again), or of a still plan
    hold_log: list[tuple[float, float]] = field(default_factory=list)
    commands_received: int = 0
    _target: float | None = None  # the position target in force (None: not in position mode)
    _target_since: float = 0.0

    @property
    def mode(self) -> str:
        return self.mode_log[-1][1] if self.mode_log else "disabled"

    def log_mode(self, now: float) -> None:
        if self.model.family == "damiao" and not self.enabled:
            mode = "disabled"
        else:
            _, _, kp, kd, _ = self.command
            mode = "position" if kp > 0 else "damping" if kd > 0 else "limp"
        target = self.command[0] if mode == "position" else None
        if target != self._target:
            self.close_hold(now)
            self._target, self._target_since = target, now
        if mode != self.mode or not self.mode_log:
            self.mode_log.append((now, mode))

    def close_hold(self, now: float) -> None:
        """End the current stretch of one target: logged if it lasted HOLD_MIN_S or more."""
        if self._target is not None and now - self._target_since >= HOLD_MIN_S:
            self.hold_log.append((self._target_since, now))
        self._target_since = now


class SimulatedArm:
    """One simulated arm on one pty. `start()` it, hand `device_path` to the driver, `stop()` it."""

    def __init__(
        self,
        profile: str | ArmProfile = "x5",
        faults: str | FaultPlan = "",
        seed: int = 0,
        *,
        bus_bitrate: float | None = 1_000_000,
        ack: str = "cr",
        initial_positions: tuple[float, ...] | None = None,
    ) -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.plan = parse_faults(faults) if isinstance(faults, str) else faults
        if ack not in ("cr", "z", "none"):
            raise ValueError(f"ack must be 'cr', 'z' or 'none', not '{ack}'")
        self.ack = ack
        self.frame_time = None if not bus_bitrate else FRAME_BITS / bus_bitrate
        self._rng = random.Random(seed)
        pose = initial_positions if initial_positions is not None else _REST_POSE
        self.motors: dict[int, SimMotor] = {}
        for i, (motor_id, model) in enumerate(zip(self.profile.motor_ids, self.profile.motors)):
            limit = self.profile.torque_max[i] if i < self.profile.num_joints else self.profile.gripper.torque_max
            dyn = MotorDynamics(inertia=_INERTIA[i], torque_limit=limit, position=pose[i])
            self.motors[motor_id] = SimMotor(motor_id, model, dyn)
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self.device_path = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.unplugged = threading.Event()
        self.channel_open = False
        self.timestamps = False
        self._opened_at: float | None = None
        self._fault_at: dict[str, dict[int, float]] = {"silent": {}, "overcurrent": {}, "overtemp": {}}
        self._unplug_at: float | None = None
        self._hang_at: float | None = None
        self._stalls: list[tuple[float, float]] = []  # (start, end) of each freeze that ends
        self.frozen_s = 0.0  # how long the adapter has been frozen (hang/stall), for tests
        self.command_log: deque[tuple[float, bytes]] = deque(maxlen=10_000)
        self.rejected_lines: deque[tuple[float, bytes]] = deque(maxlen=10_000)
        self._outbox: list[tuple[float, int, bytes]] = []  # (due, seq, bytes) heap
        self._seq = 0
        self._bus_free_at = 0.0
        self._tx_queue: deque[float] = deque()  # bus start times of queued frames not yet sent
        self.frames_in = 0
        self.replies_out = 0
        self.rejected = 0
        self.tx_overflows = 0

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> SimulatedArm:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass unmodified (no echo, no CR translation) until pyserial opens it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.device_path = os.ttyname(slave)
        self._thread = threading.Thread(target=self._serve, name=f"sim-arm {self.device_path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_fds()

    def mode_record(self) -> dict:
        """What each motor saw, on time.monotonic() (the same clock in every process of a machine):
        its mode changes and its holds (a hold still going ends now). For after stop()."""
        now = time.monotonic()
        motors = {}
        for motor_id, motor in self.motors.items():
            motor.close_hold(now)
            motors[str(motor_id)] = {
                "modes": [[round(t, 6), mode] for t, mode in motor.mode_log],
                "holds": [[round(a, 6), round(b, 6)] for a, b in motor.hold_log],
            }
        return {"profile": self.profile.name, "clock": "monotonic", "written": round(now, 6), "motors": motors}

    def unplug(self) -> None:
        """Pull the cable: close the pty. The client sees EIO / end of file.

        While the server runs, it closes the descriptors itself (never under its own feet: a closed
        descriptor number can be reused at once by another open in this process)."""
        if self._thread is not None and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._unplug_at = time.monotonic()
            self.unplugged.wait(1.0)
            return
        self._close_fds()
        self.unplugged.set()

    def _close_fds(self) -> None:
        with self._lock:
            for name in ("_master", "_slave"):
                fd = getattr(self, name)
                if fd is not None:
                    setattr(self, name, None)
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def __enter__(self) -> SimulatedArm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------------
    def inject(self, spec: str | FaultPlan) -> None:
        """Add faults now; onset times in `spec` count from this call (e.g. `"silent=5"`)."""
        plan = parse_faults(spec) if isinstance(spec, str) else spec
        self._arm_faults(plan, time.monotonic())

    def _arm_faults(self, plan: FaultPlan, t0: float) -> None:
        with self._lock:
            for rate in ("drop", "corrupt", "latency"):
                value = getattr(plan, rate)
                if value:
                    setattr(self.plan, rate, value)
            for kind in self._fault_at:
                for motor_id, onset in getattr(plan, kind).items():
                    self._fault_at[kind][motor_id] = t0 + onset
            if plan.unplug is not None:
                self._unplug_at = t0 + plan.unplug
            if plan.hang is not None:
                self._hang_at = t0 + plan.hang
            self._stalls += [(t0 + at, t0 + at + length) for at, length in plan.stall]

    def _frozen_until(self, now: float) -> float | None:
        """While the adapter is frozen (hang / stall): when it thaws (inf: never); else None."""
        if self._hang_at is not None and now >= self._hang_at:
            return float("inf")
        ends = [end for start, end in self._stalls if start <= now < end]
        return max(ends) if ends else None

    def _active(self, kind: str, motor_id: int, now: float) -> bool:
        at = self._fault_at[kind].get(motor_id)
        return at is not None and now >= at

    # -- the server --------------------------------------------------------------------------------
    def _serve(self) -> None:
        pending = bytearray()
        while not self._stop.is_set():
            master = self._master
            if master is None:
                return
            now = time.monotonic()
            if self._unplug_at is not None and now >= self._unplug_at:
                self.unplug()
                return
            thaw = self._frozen_until(now)
            if thaw is not None:
                # frozen firmware: reads nothing (the driver's bytes pile up in the pty), sends nothing
                pause = min(0.02, thaw - now)
                if self._unplug_at is not None:
                    pause = min(pause, max(0.0, self._unplug_at - now))
                self._stop.wait(pause)
                self.frozen_s += time.monotonic() - now
                continue
            timeout = 0.02
            if self._outbox:
                timeout = min(timeout, max(0.0, self._outbox[0][0] - now))
            if self._unplug_at is not None:
                timeout = min(timeout, max(0.0, self._unplug_at - now))
            try:
                ready, _, _ = select.select([master], [], [], timeout)
                if ready:
                    chunk = os.read(master, 65536)
                    pending += chunk
            except (OSError, ValueError):  # closed under us (unplug / stop)
                return
            if pending:
                now = time.monotonic()
                start = 0
                for i, b in enumerate(pending):
                    if b == 0x0D:
                        self._command(bytes(pending[start:i]), now)
                        start = i + 1
                del pending[:start]
                if len(pending) > 256:  # no CR for too long: an adapter would reject it
                    self._reject(now, bytes(pending))
                    pending.clear()
            self._flush(time.monotonic())

    def _queue(self, due: float, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._outbox, (due, self._seq, data))

    def _flush(self, now: float) -> None:
        out = bytearray()
        while self._outbox and self._outbox[0][0] <= now:
            out += heapq.heappop(self._outbox)[2]
        if out and self._master is not None:
            try:
                os.write(self._master, out)
            except BlockingIOError:
                pass  # nobody reads: the adapter's buffer overflows and the bytes are lost
            except OSError:
                pass

    def _reply_ok(self, now: float, text: bytes = b"") -> None:
        self._queue(now, text + _OK)

    def _reject(self, now: float, line: bytes) -> None:
        self.rejected += 1
        self.rejected_lines.append((now, line))
        self._queue(now, _BEL)

    def _command(self, line: bytes, now: float) -> None:
        c = line[:1]
        if c not in (b"t", b"T"):
            self.command_log.append((now, line))
        if not line:
            return  # python-can sends an empty line while setting the bitrate: no reply
        if c == b"O" or c == b"L":
            if len(line) != 1 or self.channel_open:
                return self._reject(now, line)
            self.channel_open = True
            if self._opened_at is None:
                self._opened_at = now
                self._arm_faults(self.plan, now)
            return self._reply_ok(now)
        if c == b"C":
            self.channel_open = False
            return self._reply_ok(now)
        if c == b"S":
            if self.channel_open or len(line) != 2 or line[1:2] not in b"012345678":
                return self._reject(now, line)
            return self._reply_ok(now)
        if c == b"Z":
            if line[1:] not in (b"0", b"1"):
                return self._reject(now, line)
            self.timestamps = line[1:] == b"1"
            return self._reply_ok(now)
        if c == b"V":
            return self._reply_ok(now, b"V1013")
        if c == b"N":
            return self._reply_ok(now, b"NA123")
        if c == b"F":
            return self._reply_ok(now, b"F00")
        if c in (b"t", b"T"):
            frame = _parse(line)
            if frame is None or not self.channel_open:
                return self._reject(now, line)
            if self.frame_time is not None:
                queue = self._tx_queue
                while queue and queue[0] <= now:
                    queue.popleft()
                if len(queue) >= TX_QUEUE_FRAMES:
                    self.tx_overflows += 1
                    return self._reject(now, line)
            if self.ack == "cr":
                self._reply_ok(now)
            elif self.ack == "z":
                self._reply_ok(now, b"z" if c == b"t" else b"Z")
            self.frames_in += 1
            self._on_frame(frame[0], frame[1], now)
            return
        return self._reject(now, line)

    # -- the motors --------------------------------------------------------------------------------
    def _on_frame(self, can_id: int, data: bytes, now: float) -> None:
        # the command frame occupies the bus; the reply follows it
        due = now
        if self.frame_time is not None:
            start = max(now, self._bus_free_at)
            if start > now:
                self._tx_queue.append(start)
            due = start + 2 * self.frame_time
            self._bus_free_at = due
        if can_id == ec.SETUP_CAN_ID:
            setup = ec.decode_setup(data)
            if setup is not None and setup[0] in self.motors and self.motors[setup[0]].model.family == "ec":
                motor = self.motors[setup[0]]
                if setup[1] == ec.SETUP_SET_ZERO:
                    motor.dynamics.position = 0.0
            return  # parameter / setup frames: no reply in this simulation
        motor = self.motors.get(can_id)
        if motor is None or len(data) != 8 or self._active("silent", can_id, now):
            return  # nobody on the bus answers that id (or the motor went silent)
        with self._lock:
            reply = self._motor_frame(motor, data, now)
        if reply is None:
            return
        if self.plan.drop and self._rng.random() < self.plan.drop:
            return
        reply_id, reply_data = reply
        text = bytearray(f"t{reply_id:03X}8{reply_data.hex().upper()}".encode())
        if self.timestamps:
            text += f"{int(now * 1000) % 0xEA60:04X}".encode()
        text += _OK
        if self.plan.corrupt and self._rng.random() < self.plan.corrupt:
            text[self._rng.randrange(len(text))] = self._rng.randrange(256)
        self.replies_out += 1
        self._queue(due + self.plan.latency, bytes(text))

    def _motor_frame(self, motor: SimMotor, data: bytes, now: float) -> tuple[int, bytes] | None:
        dyn = motor.dynamics
        p, v, kp, kd, t = motor.command
        active = motor.enabled and motor.state < 0x8
        dyn.step(now - motor.last_update, kp, kd, p, v, t, active)
        motor.last_update = now
        motor.commands_received += 1
        model = motor.model
        if model.family == "damiao":
            code = damiao.special_code(data)
            if code == damiao.ENABLE_CODE:
                motor.enabled = True
            elif code == damiao.DISABLE_CODE:
                motor.enabled = False
            elif code == damiao.SET_ZERO_CODE:
                dyn.position = 0.0
            elif code == damiao.CLEAR_ERROR_CODE:
                if motor.state >= 0x8:
                    motor.state = damiao.DamiaoState.DISABLED
                    motor.enabled = False
            else:
                cmd = damiao.decode_command(model.ranges, data)
                kt = model.torque_constant
                motor.command = (cmd.position, cmd.velocity, cmd.kp, cmd.kd, cmd.torque * kt)
            if self._active("overcurrent", motor.motor_id, now):
                motor.state, motor.enabled = damiao.DamiaoState.OVER_CURRENT, False
            elif self._active("overtemp", motor.motor_id, now):
                motor.state, motor.enabled = damiao.DamiaoState.COIL_OVER_TEMPERATURE, False
                dyn.temperature_c = max(dyn.temperature_c, 120.0)
            elif motor.state < 0x8:
                motor.state = damiao.DamiaoState.ENABLED if motor.enabled else damiao.DamiaoState.DISABLED
            motor.log_mode(now)
            torque = dyn.applied_torque if motor.enabled else 0.0
            body = damiao.encode_feedback(
                model.ranges,
                motor.motor_id,
                motor.state,
                dyn.position,
                dyn.velocity,
                torque / model.torque_constant,
                round(dyn.temperature_c - 2),
                round(dyn.temperature_c),
            )
            return damiao.FEEDBACK_CAN_ID, body
        # EC-A4310: every command frame is answered on the motor's own id
        try:
            cmd = ec.decode_command(model.ranges, data)
        except ValueError:
            return None
        motor.enabled = True
        motor.command = (cmd.position, cmd.velocity, cmd.kp, cmd.kd, cmd.current * model.torque_constant)
        motor.log_mode(now)
        current = dyn.applied_torque / model.torque_constant
        temperature = dyn.temperature_c
        if self._active("overcurrent", motor.motor_id, now):
            current = model.ranges.i_max
        if self._active("overtemp", motor.motor_id, now):
            temperature = 100.0
        if motor.ec_feedback_type == 2:
            body = ec.encode_feedback_type2(model.ranges, 0, dyn.position, current, temperature)
        else:
            body = ec.encode_feedback_type1(model.ranges, 0, dyn.position, dyn.velocity, current, temperature)
        return motor.motor_id, body


def _parse(line: bytes) -> tuple[int, bytes] | None:
    id_len = 3 if line[:1] == b"t" else 8
    head = 1 + id_len
    if len(line) < head + 1 or not 0x30 <= line[head] <= 0x38:
        return None
    dlc = line[head] - 0x30
    body = line[head + 1 :]
    if len(body) != 2 * dlc or not all(ch in _HEX for ch in line[1:head] + body):
        return None
    can_id = int(line[1:head], 16)
    if id_len == 3 and can_id > 0x7FF:
        return None
    return can_id, bytes.fromhex(body.decode())
