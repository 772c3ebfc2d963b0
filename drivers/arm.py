"""`ARXArm`: one ARX arm in the style of lerobot's robots (connect, get_observation, send_action,
damping, disconnect; a context manager).

Action (7): joint positions 1..6 (rad) and the gripper width (m). `send_action` returns the action
actually set as the target after clipping; the 500 Hz controller steps towards it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from drivers.controller import DAMPING, ArmController, ControllerConfig
from drivers.faults import ArmFault, StartupRefused, fault_from_damiao_state, fault_from_ec_error
from drivers.motor_frames import JOINT_NAMES, MotorFrames, MotorReading
from drivers.profiles import ArmProfile, get_profile
from drivers.safety import Interventions, SafetyLimits
from drivers.slcan_link import AdapterRejected, LinkError, SlcanLink


class ArmNotConnected(ConnectionError):
    """The arm is not connected (call connect() first)."""


class ArmDamped(ArmFault):
    """The arm is damping: send_action is refused until resume()."""


@dataclass(frozen=True)
class ArmConfig:
    port: str  # serial device / pyserial URL (interface "slcan"), or a python-can channel
    profile: str = "x5"
    interface: str = "slcan"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    disconnect_damping_s: float = 2.0  # arx.md: on shutdown, damping for 2 s, then stop
    connect_timeout_s: float = 0.3  # per attempt, waiting for every motor's first reply
    connect_attempts: int = 3
    settle_s: float = 0.0  # python-can's sleep_after_open
    velocity_scale: float = 1.0  # < 1 moves slower than the profile's velocity limits


def query_motors(link: SlcanLink, frames: MotorFrames, requests: list[tuple[int, bytes]], timeout_s: float,
                 counts: Interventions | None = None) -> dict[int, MotorReading]:
    """Send `requests`, return the replies heard within `timeout_s`, by motor index. Frames that
    arrived before the requests were sent (e.g. the controller's last cycle) are discarded first, so
    they are not taken for answers."""
    link.drain()
    link.send_many(requests)
    wanted = {frames.ids.index(can_id) for can_id, _ in requests if can_id in frames.ids}
    got: dict[int, MotorReading] = {}
    deadline = time.monotonic() + timeout_s
    while wanted - got.keys():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            frame = link.receive(left)
        except AdapterRejected:
            if counts:
                counts.adapter_rejections += 1
            continue
        if frame is None:
            break
        try:
            reading = frames.read(*frame)
        except ValueError:
            if counts:
                counts.bad_replies += 1
            continue
        if reading is not None:
            got[reading.index] = reading
    return got


def damping_requests(frames: MotorFrames, limits: SafetyLimits, positions: np.ndarray | None = None) -> list[tuple[int, bytes]]:
    """kp = 0, raised kd: adds no energy; a disabled Damiao motor stays disabled."""
    p = np.zeros(len(frames.ids)) if positions is None else positions
    return [frames.command(i, float(p[i]), 0.0, 0.0, float(limits.damping_kd[i]), 0.0) for i in range(len(frames.ids))]


class ARXArm:
    def __init__(self, config: ArmConfig) -> None:
        self.config = config
        self.profile: ArmProfile = get_profile(config.profile)
        self.frames = MotorFrames(self.profile)
        self.limits = SafetyLimits(self.profile, velocity_scale=config.velocity_scale)
        self.counts = Interventions()
        self.link = SlcanLink(config.port, interface=config.interface, settle_s=config.settle_s)
        self.controller: ArmController | None = None

    # -- life cycle ------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.controller is not None

    def connect(self) -> "ARXArm":
        """Open the link, enable every motor, read them all; refuse to start on missing feedback,
        all-zero positions or a motor error (the motors are then disabled again)."""
        if self.controller is not None:
            return self
        self.link.open()
        try:
            readings = self._enable_and_read()
            self._check_startup(readings)
        except BaseException:
            self._disable_all()
            self.link.close()
            raise
        initial = [readings[i] for i in range(len(self.frames.ids))]
        self.controller = ArmController(self.link, self.frames, self.limits, initial, self.config.controller, self.counts)
        self.controller.start()
        return self

    def read_motors(self, timeout_s: float = 0.3) -> dict[int, MotorReading]:
        """Read every motor without enabling any: each gets a damping command (kp = 0), which adds no
        energy. Opens the link if needed; only before connect() (the controller owns the bus)."""
        if self.controller is not None:
            raise RuntimeError("read_motors() is for a disconnected arm; use get_observation()")
        self.link.open()
        return query_motors(self.link, self.frames, damping_requests(self.frames, self.limits), timeout_s, self.counts)

    def enable_and_read(self) -> dict[int, MotorReading]:
        """Enable the Damiao motors and read every motor (the link must be open)."""
        return self._enable_and_read()

    def _enable_and_read(self) -> dict[int, MotorReading]:
        n = len(self.frames.ids)
        requests = []
        for i in range(n):  # Damiao: the enable frame is answered with feedback; EC: a damping command
            requests.append(self.frames.enable(i) or damping_requests(self.frames, self.limits)[i])
        readings: dict[int, MotorReading] = {}
        for _ in range(self.config.connect_attempts):
            todo = [r for r in requests if self.frames.ids.index(r[0]) not in readings]
            readings.update(query_motors(self.link, self.frames, todo, self.config.connect_timeout_s, self.counts))
            if len(readings) == n:
                break
        return readings

    def _check_startup(self, readings: dict[int, MotorReading]) -> None:
        missing = [f"{JOINT_NAMES[i]} (motor {self.frames.ids[i]})" for i in range(len(self.frames.ids)) if i not in readings]
        if missing:
            hint = ""
            if self.link.stats.frames_received == 0:
                hint = " - nothing answered at all: is the arm powered and the right port given?"
            raise StartupRefused(f"no feedback from {', '.join(missing)} on {self.config.port}{hint}")
        for r in readings.values():
            name = JOINT_NAMES[r.index]
            fault = (fault_from_damiao_state if r.family == "damiao" else fault_from_ec_error)(r.motor_id, name, r.error_code)
            if fault is not None:
                raise StartupRefused(f"refusing to start: {fault}", r.motor_id)
        resolution = 2 * 12.5 / 65535  # one position LSB
        if all(abs(r.position) <= resolution for r in readings.values()):
            raise StartupRefused("refusing to start: every motor position reads 0 (no real feedback?)")
        for r in readings.values():
            fault = self.limits.check_reading(r, [0] * len(self.frames.ids))
            if fault is not None:
                raise StartupRefused(f"refusing to start: {fault}", r.motor_id)

    def _disable_all(self) -> None:
        """Disable Damiao motors, set EC motors limp; best effort (the link may be gone)."""
        if not self.link.is_open:
            return
        n = len(self.frames.ids)
        requests = [self.frames.disable(i) or self.frames.command(i, 0.0, 0.0, 0.0, 0.0, 0.0) for i in range(n)]
        try:
            query_motors(self.link, self.frames, requests, 0.1)
        except LinkError:
            pass

    def disconnect(self) -> None:
        """Damping for `disconnect_damping_s`, then disable, then close the link. Never raises for a
        link that is already gone."""
        controller, self.controller = self.controller, None
        if controller is None:
            self.link.close()
            return
        try:
            if controller.running:
                controller.damp()
                # damping lasts disconnect_damping_s from the first damping command actually sent
                # (on a loaded machine the controller thread may send it well after this call)
                since = controller.wait_damping_sent(0.5)
                end = (since or time.monotonic()) + self.config.disconnect_damping_s
                while controller.running and time.monotonic() < end:
                    time.sleep(0.01)
        finally:
            controller.stop()
            if not controller.link_lost:
                self._disable_all()
            self.link.close()

    def __enter__(self) -> "ARXArm":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- robot interface ---------------------------------------------------------------------------------
    def _require(self) -> ArmController:
        if self.controller is None:
            raise ArmNotConnected(f"arm on {self.config.port} is not connected (call connect() first)")
        return self.controller

    def get_observation(self) -> dict:
        s = self._require().snapshot()
        g = self.profile.gripper
        fault = s["fault"]
        return {
            "joint_positions": s["position"][:6],
            "joint_velocities": s["velocity"][:6],
            "joint_torques": s["torque"][:6],
            "gripper_width": float(g.angle_to_width(s["position"][6])),
            "gripper_velocity": float(g.angle_to_width(s["velocity"][6])),
            "gripper_torque": float(s["torque"][6]),
            "temperatures": s["temperature"],
            "motor_states": s["states"],
            "mode": s["mode"],
            "holding": s["holding"],
            "fault": None if fault is None else str(fault),
        }

    def send_action(self, action) -> np.ndarray:
        """Set the target (6 joint positions in rad, gripper width in m); returns it after clipping.
        Raises the latched fault after a fault, ArmDamped while damping."""
        controller = self._require()
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"an ARX action has 7 values (6 joints + gripper width), got shape {np.shape(action)}")
        if controller.fault is not None:
            raise controller.fault
        if controller.mode == DAMPING:
            raise ArmDamped(f"arm on {self.config.port} is damping; call resume() before sending actions")
        g = self.profile.gripper
        motor = np.concatenate([a[:6], [g.width_to_angle(a[6])]]) if np.isfinite(a[6]) else a.copy()
        clipped = self.limits.clip_target(motor, self.counts)
        controller.set_target(clipped)
        return np.concatenate([clipped[:6], [g.angle_to_width(clipped[6])]])

    def damping(self) -> None:
        """Damp every motor (kp = 0, raised kd) until resume() or disconnect()."""
        self._require().damp()

    def resume(self) -> None:
        self._require().resume()

    @property
    def fault(self) -> ArmFault | None:
        return None if self.controller is None else self.controller.fault

    @property
    def interventions(self) -> dict[str, int]:
        return self.counts.as_dict()
