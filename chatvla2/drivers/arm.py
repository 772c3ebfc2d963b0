"""`ARXArm`: one ARX arm in the style of lerobot's robots (connect, get_observation, send_action,
damping, disconnect; a context manager).

Action (7): joint positions 1..6 (rad) and the gripper width (m). `send_action` returns the action
actually set as the target after clipping; the 500 Hz controller steps towards it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from chatvla2.drivers.controller import DAMPING, ArmController, ControllerConfig
from chatvla2.drivers.damiao import DamiaoState
from chatvla2.drivers.faults import ArmFault, StartupRefused, fault_from_damiao_state, fault_from_ec_error, named
from chatvla2.drivers.motor_frames import JOINT_NAMES, MotorFrames, MotorReading
from chatvla2.drivers.profiles import ArmProfile, get_profile
from chatvla2.drivers.safety import Interventions, SafetyLimits
from chatvla2.drivers.shutdown import ShutdownReport
from chatvla2.drivers.slcan_link import AdapterRejected, LinkDisconnected, LinkError, SlcanLink

DISABLE_REPLY_TIMEOUT_S = 0.1  # per attempt, for every motor to answer the disable


class ArmNotConnected(ConnectionError):
    """The arm is not connected (call connect() first)."""


class ArmDamped(ArmFault):
    """The arm is damping: send_action is refused until resume()."""


@dataclass(frozen=True)
class ArmConfig:
    port: str  # serial device / pyserial URL (interface "slcan"), or a python-can channel
    profile: str = "x5"
    interface: str = "slcan"
    controller: ControllerConfig = field(default_factory=ControllerConfig)  # rate, watchdog timeouts
    disconnect_damping_s: float = 2.0  # docs/reference/arx.md: on shutdown, damping for 2 s, then stop
    connect_timeout_s: float = 0.3  # per attempt, waiting for every motor's first reply
    connect_attempts: int = 3  # also the attempts at getting every motor to confirm the disable
    settle_s: float = 0.0  # python-can's sleep_after_open
    velocity_scale: float = 1.0  # < 1 moves slower than the profile's velocity limits
    name: str = ""  # "left" / "right": in front of every fault and error message (BimanualARX sets it)
    # Every write to the adapter must be taken by the OS within this, else the link is stalled (a
    # fault; the arm damps). Closing the link gives up on a hung adapter after close_timeout_s.
    write_timeout_s: float = 0.05
    close_timeout_s: float = 0.2

    @property
    def feedback_timeout_s(self) -> float:
        """No reply from a motor for this long -> CommunicationLost -> damping (see ControllerConfig;
        default DEFAULT_FEEDBACK_TIMEOUT_S = 50 ms)."""
        return self.controller.feedback_timeout_s

    def with_feedback_timeout(self, seconds: float) -> ArmConfig:
        """This configuration with another feedback timeout (checked by ControllerConfig)."""
        return replace(self, controller=replace(self.controller, feedback_timeout_s=seconds))


def query_motors(link: SlcanLink, frames: MotorFrames, requests: list[tuple[int, bytes]], timeout_s: float,
                 counts: Interventions | None = None) -> dict[int, MotorReading]:
    """Send `requests`, return the replies heard within `timeout_s`, by motor index. Frames that
    arrived before the requests were sent (e.g. the controller's last cycle) are discarded first, so
    they are not taken for answers."""
    link.drain()
    link.send_many(requests)
    wanted = {frames.ids.index(can_id) for can_id, _ in requests if can_id in frames.ids}
    return read_replies(link, frames, wanted, timeout_s, counts)


def read_replies(link: SlcanLink, frames: MotorFrames, wanted: set[int], timeout_s: float,
                 counts: Interventions | None = None, accept=None) -> dict[int, MotorReading]:
    """The replies of the motors (indices) in `wanted` heard within `timeout_s`, by motor index. With
    `accept`, a reply it rejects (e.g. a late answer to an earlier command) is skipped and that
    motor's wait goes on."""
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
        if reading is not None and (accept is None or accept(reading)):
            got[reading.index] = reading
    return got


def damping_requests(frames: MotorFrames, limits: SafetyLimits, positions: np.ndarray | None = None) -> list[tuple[int, bytes]]:
    """kp = 0, raised kd: adds no energy; a disabled Damiao motor stays disabled."""
    p = np.zeros(len(frames.ids)) if positions is None else positions
    return [frames.command(i, float(p[i]), 0.0, 0.0, float(limits.damping_kd[i]), 0.0) for i in range(len(frames.ids))]


def _disabled(reading: MotorReading) -> bool:
    """A reply that confirms the disable: a Damiao motor no longer enabled (disabled, or stopped by
    an error of its own); any EC reply (EC motors have no disable: the zero command leaves them limp)."""
    return reading.family != "damiao" or reading.error_code != DamiaoState.ENABLED


class ARXArm:
    def __init__(self, config: ArmConfig) -> None:
        self.config = config
        self.profile: ArmProfile = get_profile(config.profile)
        self.frames = MotorFrames(self.profile)
        self.limits = SafetyLimits(self.profile, velocity_scale=config.velocity_scale)
        self.counts = Interventions()
        self.link = SlcanLink(config.port, interface=config.interface, settle_s=config.settle_s,
                              write_timeout_s=config.write_timeout_s, close_timeout_s=config.close_timeout_s)
        self.controller: ArmController | None = None
        self.last_shutdown: ShutdownReport | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @name.setter
    def name(self, value: str) -> None:
        self.config = replace(self.config, name=value)

    @property
    def label(self) -> str:
        """"left arm on /dev/ttyACM0" (or "arm on ..." unnamed): how messages name this arm."""
        return f"{self.config.name + ' ' if self.config.name else ''}arm on {self.config.port}"

    # -- life cycle ------------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.controller is not None

    def connect(self) -> ARXArm:
        """Open the link, enable every motor, read them all and start the controller; refuse to start
        on missing feedback, all-zero positions or a motor error (the motors are then disabled again
        and the link closed)."""
        if self.controller is not None:
            return self
        readings = self.enable_and_read()
        try:
            initial = [readings[i] for i in range(len(self.frames.ids))]
            self.controller = ArmController(self.link, self.frames, self.limits, initial, self.config.controller,
                                            self.counts, name=self.config.name)
            self.controller.start()
        except BaseException:
            self.controller = None
            try:
                self._disable_all()
            finally:
                self.link.close()
            raise
        return self

    def read_motors(self, timeout_s: float = 0.3) -> dict[int, MotorReading]:
        """Read every motor without enabling any: each gets a damping command (kp = 0), which adds no
        energy. Opens the link if needed; only before connect() (the controller owns the bus)."""
        if self.controller is not None:
            raise RuntimeError("read_motors() is for a disconnected arm; use get_observation()")
        try:
            self.link.open()
            return query_motors(self.link, self.frames, damping_requests(self.frames, self.limits), timeout_s, self.counts)
        except BaseException as exc:
            self.link.close()
            raise named(exc, self.config.name)

    def enable_and_read(self) -> dict[int, MotorReading]:
        """Open the link, enable the Damiao motors and read every motor, with connect()'s start-up
        checks: on missing feedback, all-zero positions or a motor error raise StartupRefused (with
        `.readings`, and `.shutdown`, the report of the disable), every motor disabled again and the
        link closed. On success the motors stay enabled (limp until commanded) and the link open.
        Only before connect()."""
        if self.controller is not None:
            raise RuntimeError("enable_and_read() is for a disconnected arm; the controller owns the bus")
        readings: dict[int, MotorReading] = {}
        try:
            self.link.open()
            readings = self._enable_and_read()
            self._check_startup(readings)
        except BaseException as exc:
            try:
                exc.shutdown = self._disable_all()  # what became of the disable: for the caller's message
            finally:
                self.link.close()
            if isinstance(exc, StartupRefused):
                exc.readings = readings
            raise named(exc, self.config.name)
        return readings

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
            raise StartupRefused(f"refusing to start: no feedback from {', '.join(missing)} on {self.config.port}{hint}")
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

    def _disable_all(self, report: ShutdownReport | None = None) -> ShutdownReport:
        """Disable the Damiao motors, set the EC motors limp, and have each confirm (a Damiao reply no
        longer "enabled", any EC reply), resending to the silent ones up to connect_attempts times.
        Bounded (write deadlines, reply timeouts) and never raises: the report says what happened."""
        report = report or ShutdownReport(self.label, connected=self.link.is_open)
        if not self.link.is_open:
            if report.connected:
                report.problem = report.problem or "the link is closed: the disable was not sent"
            return report
        n = len(self.frames.ids)
        requests = [self.frames.disable(i) or self.frames.command(i, 0.0, 0.0, 0.0, 0.0, 0.0) for i in range(n)]
        pending = set(range(n))
        try:
            for _ in range(max(1, self.config.connect_attempts)):
                self.link.drain(quiet_s=0.01, max_s=0.1)  # late answers to earlier commands are no confirmation
                rejections = self.link.stats.adapter_rejections
                self.link.send_many([requests[i] for i in sorted(pending)])
                if report.disable_sent_at is None:
                    report.disable_sent_at = time.monotonic()
                # a Damiao motor still "enabled" answers an earlier command (a stall's backlog): wait on
                got = read_replies(self.link, self.frames, set(pending), DISABLE_REPLY_TIMEOUT_S, self.counts,
                                   accept=_disabled)
                if self.link.stats.adapter_rejections > rejections:
                    # the adapter refused frames (a full queue): an EC reply may answer an older command,
                    # and EC replies carry no state, so only the Damiao ones count this time
                    got = {i: r for i, r in got.items() if r.family == "damiao"}
                pending -= got.keys()
                if not pending:
                    break
        except LinkError as exc:
            what = "link lost" if isinstance(exc, LinkDisconnected) else "adapter stalled"
            sent = "sent but not confirmed" if report.disable_sent_at is not None else "not sent"
            report.problem = f"the disable was {sent} ({what}: {exc})"
        report.confirmed = tuple(self.frames.ids[i] for i in range(n) if i not in pending)
        report.unconfirmed = tuple(self.frames.ids[i] for i in sorted(pending))
        if pending and report.problem is None:
            names = ", ".join(f"{JOINT_NAMES[i]} (motor {self.frames.ids[i]})" for i in sorted(pending))
            report.problem = f"no confirmation of the disable from {names}"
        return report

    def disconnect(self) -> ShutdownReport:
        """Damping for `disconnect_damping_s` (from the arm's first answer to a damping command), then
        the disable (every motor must confirm it), then close the link. Bounded (every write has a
        deadline, a hung adapter is given up on) and never raises; the returned report (also
        `last_shutdown`) says whether the arm was left disabled, and when each step went out."""
        controller, self.controller = self.controller, None
        report = ShutdownReport(self.label, connected=controller is not None or self.link.is_open)
        try:
            if controller is not None and controller.running:
                controller.damp()
                # damping lasts disconnect_damping_s from the arm's first answer to a damping command
                # (on a loaded machine the controller thread may send it well after this call; a
                # stalled adapter may deliver it late, or never: then only the 0.5 s wait counts)
                since = controller.wait_damping_sent(0.5)
                end = (since or time.monotonic()) + self.config.disconnect_damping_s
                while controller.running and time.monotonic() < end:
                    time.sleep(0.01)
        finally:
            try:
                if controller is not None:
                    controller.stop()
                    report.damping_sent_at = controller.damping_since
                if controller is not None and controller.link_lost:
                    report.problem = f"the disable was not sent: {controller.link_lost}"
                elif report.connected:
                    self._disable_all(report)
            finally:
                self.link.close()
                self.last_shutdown = report
        return report

    def __enter__(self) -> ARXArm:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- robot interface ---------------------------------------------------------------------------------
    def _require(self) -> ArmController:
        if self.controller is None:
            raise ArmNotConnected(f"{self.label} is not connected (call connect() first)")
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
            raise named(ArmDamped(f"{self.label} is damping; call resume() before sending actions"), self.name)
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
