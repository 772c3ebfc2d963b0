"""The driver mode: the arms of a `TaskEnv` are two simulated ARX X5 arms, each a `chatvla2 sim-arm`
process behind its own pty, driven through the real drivers (`ARXArm` -> SLCAN -> pty) at the
control rate (50 Hz), in real time.

    from chatvla2.sim.tasks.driver_backend import DriverBackend
    with DriverBackend() as backend:                       # starts both simulators, connects (~0.6 s)
        env = TaskEnv("math_game", "in_domain", backend=backend)
        observation, info = env.reset(seed=0)             # moves the arms to the start state
        for action in env.expert_actions():
            observation, reward, terminated, truncated, info = env.step(action)   # one 50 Hz tick
        backend.timing.summary()                           # ticks/s, late ticks, lateness (this episode)
    # close(): damping (the driver's 2 s), disable, then the simulators stop

One backend serves any number of environments and episodes, one at a time (the arms are shared).

`apply(targets, finger_stops)` (the `ArmBackend` contract, backend.py) sends the 14-D targets
through `BimanualRobot.send_action` (runtime/robots.py), waits for the next tick of an absolute
schedule t0 + k / rate and returns the measured state (`BimanualRobot.get_state`: the joints and
gripper widths the motors reported). t0 is the episode's first `apply` (not the end of `reset`:
the environment renders its first observation in between, slowly the first time). A tick whose
state is read more than `late_slack_s` (10 % of a period) after its time is late; one read more
than a whole period late skips the ticks whose time has passed (counted as `overruns`, not made up
in a burst). `timing` holds this episode's numbers, `timing_total` every finished episode's.

`paced=False` is for a caller that keeps the schedule itself (the runtime's `ControlLoop`, whose
execution thread sends an action every 1/rate s: evaluation/async_episode.py): `apply` sends and
returns the state last measured without waiting, as a robot's driver does; `timing` then counts the
ticks and their rate only (the loop's own telemetry has the lateness).

What the kinematic backend gives, and how this one gives the same:
- Rate limits, joint limits: the targets are clipped to the X5's limits (like the kinematic mode);
  the driver's 500 Hz controller then steps its command towards them at the velocity limits and
  keeps a stiff command within 0.2 rad of the measured state (drivers/safety.py). The arm itself is
  the simulator's PD-tracked motor (sim/dynamics.py), so the measured state lags the targets: about
  one to two ticks, the kinematic mode none (test_driver_backend.py measures it).
- Finger stops: the simulated gripper has no prop between its fingers and would close to 0. Where a
  prop stops the fingers (`finger_stops`, and the fingers were at least that wide at the last
  tick: the kinematic rule), the gripper is commanded no narrower than the stop minus `squeeze_m`
  (a position-controlled gripper commanded shut presses into what it holds: the fingers cross the
  prop's width at speed instead of creeping onto it), and the reported width is never below the
  stop: the width a real gripper would measure, resting on the prop. While a prop is held the
  environment clamps the width it reports anyway (env.py).
- `reset(state)`: the simulator starts its arms at its own rest pose (sim/arm_sim.py; `chatvla2
  sim-arm` has no option to start elsewhere), so `reset` moves the arms there through the drivers:
  a minimum-jerk path in joint space peaking at half the velocity limits (the expert's speed; at
  least 0.2 s), sent at the control rate, then the target held until the measured state is within
  `SETTLE_JOINT_RAD` / `SETTLE_GRIPPER_M` of it and still (or `ArmsNotSettled` after
  `settle_timeout_s`). It returns the measured state: the same as `state` to within those
  tolerances (the motors' friction against the PD gains), not exactly. From the end of a math
  game (an arm up with its card) that takes ~1.6 s; after toy placement (the expert returns the
  arm) ~0.2 s; the first one, from the simulator's rest pose, ~0.4 s.

The measured state is returned as measured: a joint commanded to a limit may read a few mrad
beyond it (the simulated PD overshoots), so it is not clipped into the observation space.

Faults: an arm fault (drivers/faults.py) is the driver's: the arm damps and `apply` raises it (the
episode ends with the exception). On a shared 2-core machine another process can starve a
simulator past the 200 ms feedback timeout (CommunicationLost); the next `reset` therefore
restarts the arms (disconnect: damping, disable, simulators stopped; then `connect()` again) when
one has faulted, once, and records why in `restarts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chatvla2.contract.embodiment import ARMS, CONTROL_HZ, DIM, GRIPPER_INDICES, JOINTS_PER_ARM
from chatvla2.drivers.faults import ArmFault
from chatvla2.sim.tasks.backend import HIGH, LOW, STEP_MAX

VELOCITY_MAX = STEP_MAX * CONTROL_HZ  # joints rad/s, gripper m/s, both arms (the X5's limits)

SQUEEZE_M = 0.002  # how far inside a prop's width the gripper is commanded when closing on it
RESET_SPEED_SHARE = 0.5  # reset moves at this share of the joint and gripper velocity limits (the expert's)
RESET_MIN_S = 0.2
MIN_JERK_PEAK = 1.875  # peak / mean speed of a minimum-jerk profile
# Settled: within these of the reset target (the simulated motors' Coulomb friction against the
# PD gains leaves up to 0.05 N*m / kp 20 = 2.5 mrad on joint 6, 0.2 mm on the gripper) and moving
# less than a tenth of them per tick.
SETTLE_JOINT_RAD = 0.005
SETTLE_GRIPPER_M = 0.0005
SETTLE_TOLERANCE = np.array(([SETTLE_JOINT_RAD] * JOINTS_PER_ARM + [SETTLE_GRIPPER_M]) * len(ARMS))
SETTLE_TIMEOUT_S = 3.0


class ArmsNotSettled(RuntimeError):
    """`reset` could not bring the arms to the start state in time."""


@dataclass
class TickTiming:
    """The control schedule's record: ticks stepped, late ones, lateness of each (s)."""

    rate_hz: float
    late_slack_s: float
    ticks: int = 0
    late: int = 0  # states read more than late_slack_s after their tick's time
    overruns: int = 0  # ticks skipped: their time had passed when a late tick was read
    elapsed_s: float = 0.0  # from the schedule's start to the last tick's read
    lateness_s: list[float] = field(default_factory=list)

    def add(self, other: TickTiming) -> None:
        self.ticks += other.ticks
        self.late += other.late
        self.overruns += other.overruns
        self.elapsed_s += other.elapsed_s
        self.lateness_s.extend(other.lateness_s)

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict:
        lateness = np.asarray(self.lateness_s) * 1000 if self.lateness_s else np.zeros(1)
        return {
            "ticks": self.ticks,
            "ticks_per_s": round(self.ticks_per_s, 2),
            "rate_hz": self.rate_hz,
            "late": self.late,
            "overruns": self.overruns,
            "lateness_p50_ms": round(float(np.percentile(lateness, 50)), 3),
            "lateness_p99_ms": round(float(np.percentile(lateness, 99)), 3),
            "lateness_max_ms": round(float(lateness.max()), 3),
        }


def open_sim_arms(profile: str = "x5", faults: dict[str, str] | None = None):
    """Two simulated arms (processes on ptys), connected through the drivers: sim/robot.py's
    `open_sim_robot` (its 200 ms feedback timeout: a 2-core machine misses 100 ms now and then).
    Its `disconnect()` damps, disables and then stops the processes."""
    from chatvla2.sim.robot import open_sim_robot

    return open_sim_robot(profile, faults)


class DriverBackend:
    """`ArmBackend` on two ARX arms through the drivers, at `rate_hz` in real time (module docstring).

    connect: returns a connected `runtime.robots.BimanualRobot` (get_state, send_action,
    disconnect) to drive; by default two simulated arms of `profile`, with the simulator `faults`
    (sim/faults.py), are started (`open_sim_arms`). The backend owns what it returns: `close()`
    disconnects it, and `reset` calls `connect` again after an arm fault (module docstring).
    """

    def __init__(self, profile: str = "x5", faults: dict[str, str] | None = None, *,
                 connect: Callable[[], object] | None = None, rate_hz: float = CONTROL_HZ,
                 late_slack_s: float | None = None, squeeze_m: float = SQUEEZE_M,
                 settle_timeout_s: float = SETTLE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, paced: bool = True):
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz!r}")
        self.rate_hz = float(rate_hz)
        self.period = 1.0 / self.rate_hz
        self.late_slack_s = 0.1 * self.period if late_slack_s is None else float(late_slack_s)
        self.squeeze_m = float(squeeze_m)
        self.settle_timeout_s = float(settle_timeout_s)
        self.clock, self.sleep = clock, sleep
        self.paced = bool(paced)
        self.connect = connect or (lambda: open_sim_arms(profile, faults))
        self.timing = TickTiming(self.rate_hz, self.late_slack_s)
        self.timing_total = TickTiming(self.rate_hz, self.late_slack_s)
        self.episodes = 0
        self.restarts: list[str] = []  # the arm faults `reset` restarted the arms after
        self._t0: float | None = None
        self._k = 0
        self.robot = None
        self.robot = self.connect()
        try:
            self.state = self._read()
        except BaseException:
            self.close()
            raise

    # --- ArmBackend ------------------------------------------------------------------------------------
    def reset(self, state: np.ndarray) -> np.ndarray:
        """Move both arms to `state` through the drivers and wait until they are there and still;
        returns the measured state. Starts a new episode's schedule and timing. An arm fault (latched
        before or during the move) restarts the arms once: disconnect, `connect()`, move again."""
        target = np.clip(np.asarray(state, dtype=float).reshape(DIM), LOW, HIGH)
        self._finish_episode()
        try:
            return self._reset(target)
        except ArmFault as fault:
            self.restarts.append(str(fault))
            robot, self.robot = self._require(), None
            try:
                robot.disconnect()  # damping, disable, the simulators stopped
            finally:
                self.robot = self.connect()
            return self._reset(target)

    def _reset(self, target: np.ndarray) -> np.ndarray:
        self._start_schedule()
        current = self._read()
        for row in _min_jerk_path(current, target, RESET_SPEED_SHARE * VELOCITY_MAX, RESET_MIN_S, self.rate_hz):
            self._send(row)
            self._wait_tick(count=False)
        previous = self._read()
        give_up = self.clock() + self.settle_timeout_s
        while True:
            self._send(target)
            self._wait_tick(count=False)
            measured = self._read()
            if np.all(np.abs(measured - target) <= SETTLE_TOLERANCE) and \
                    np.all(np.abs(measured - previous) <= 0.1 * SETTLE_TOLERANCE):
                break
            if self.clock() > give_up:
                worst = int(np.argmax(np.abs(measured - target) / SETTLE_TOLERANCE))
                raise ArmsNotSettled(
                    f"the arms did not settle at the start state within {self.settle_timeout_s:g} s: "
                    f"state[{worst}] reads {measured[worst]:.4f}, target {target[worst]:.4f}")
            previous = measured
        self.state = measured
        self._t0 = None  # the episode's schedule starts at its first apply (module docstring)
        self.timing = TickTiming(self.rate_hz, self.late_slack_s)
        self.episodes += 1
        return measured.copy()

    def apply(self, targets: np.ndarray, finger_stops: np.ndarray) -> np.ndarray:
        """Send one tick's targets, wait for the next tick (unless not `paced`), return the measured state."""
        command = np.clip(np.asarray(targets, dtype=float).reshape(DIM), LOW, HIGH)
        stops = np.asarray(finger_stops, dtype=float).reshape(len(ARMS))
        stopped = [bool(stops[arm] > 0 and self.state[g] >= stops[arm]) for arm, g in enumerate(GRIPPER_INDICES)]
        for arm, g in enumerate(GRIPPER_INDICES):
            if stopped[arm]:  # the prop is between the fingers: they press into it, no further
                command[g] = max(command[g], stops[arm] - self.squeeze_m)
        if self._t0 is None:
            self._start_schedule()
        self._send(command)
        if self.paced:
            self._wait_tick(count=True)
        else:  # the caller keeps the schedule: count the tick, wait for nothing
            self.timing.ticks += 1
            self.timing.elapsed_s = self.clock() - self._t0
        state = self._read()
        for arm, g in enumerate(GRIPPER_INDICES):
            if stopped[arm]:  # and measure no narrower than the prop
                state[g] = max(state[g], stops[arm])
        self.state = state
        return state.copy()

    # --- life cycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Damping, disable, close the links, stop the simulators (the robot's disconnect). Idempotent."""
        robot, self.robot = self.robot, None
        self._finish_episode()
        if robot is not None:
            robot.disconnect()

    def __enter__(self) -> DriverBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------------------
    def _require(self):
        if self.robot is None:
            raise RuntimeError("the driver backend is closed")
        return self.robot

    def _read(self) -> np.ndarray:
        return np.asarray(self._require().get_state(), dtype=float).reshape(DIM)

    def _send(self, command: np.ndarray) -> None:
        self._require().send_action(command)  # raises the arm's latched fault, if any

    def _start_schedule(self) -> None:
        self._t0 = self.clock()
        self._k = 0
        self.timing = TickTiming(self.rate_hz, self.late_slack_s)

    def _finish_episode(self) -> None:
        self.timing_total.add(self.timing)
        self.timing = TickTiming(self.rate_hz, self.late_slack_s)

    def _wait_tick(self, count: bool) -> None:
        """Sleep until the next tick t0 + k / rate; record how late it was read."""
        self._k += 1
        due = self._t0 + self._k * self.period
        now = self.clock()
        if now < due:
            self.sleep(due - now)
            now = self.clock()
        late = now - due
        if not count:
            return
        timing = self.timing
        timing.ticks += 1
        timing.lateness_s.append(late)
        timing.elapsed_s = now - self._t0
        if late > self.late_slack_s:
            timing.late += 1
        if late > self.period:  # a whole period behind: skip the ticks whose time has passed
            skipped = int(late / self.period)
            timing.overruns += skipped
            self._k += skipped


def _min_jerk_path(start: np.ndarray, end: np.ndarray, peak_speed: np.ndarray, min_s: float,
                   rate_hz: float) -> np.ndarray:
    """(n, DIM) targets from `start` (exclusive) to `end` (inclusive), one per tick: a minimum-jerk
    move lasting at least `min_s` whose peak speed stays within `peak_speed` (per dimension)."""
    seconds = max(min_s, float(np.max(np.abs(end - start) * MIN_JERK_PEAK / peak_speed)))
    ticks = max(1, int(np.ceil(seconds * rate_hz)))
    s = np.arange(1, ticks + 1) / ticks
    s = s**3 * (10 - 15 * s + 6 * s * s)
    return start + s[:, None] * (end - start)
