"""The driver mode (sim/tasks/driver_backend.py): the tick schedule, finger stops, reset and restart
against a stand-in robot (fast), and the issue's check that both stepping modes give the same
outcome for the same actions, on two simulated X5 arms behind ptys driven through the real drivers
(slow: real time, ~50 s).

Agreement, measured on 2 shared x86_64 cores (~40 expert episodes, each run in both modes: toy
placement and the 1- and 2-step math game, in_domain seeds 0..1 and both splits' seeds 2..4):
- outcomes: identical every time (success; the props lifted, in the same order; every grasp, lift
  and release of the same prop by the same arm in the same order; every prop within 0.6 mm of
  where the kinematic mode left it, so a placed toy in the same region);
- joints along the trajectory: up to 0.085 rad apart (0.072 on a quiet machine). The simulated
  motor is PD-tracked and the driver sends no velocity feed-forward (v = 0), so a joint moving at v
  lags its command by v x kd / kp; the expert moves at up to half the limits, so at most 2.75 rad/s
  x 1 / 30 = 0.092 rad (joint 4; joints 2, 3: 2.75 x 2 / 70 = 0.079). The driver's controller also
  steps its command towards each new target at the velocity limit (twice the expert's peak), i.e.
  half a tick behind the target at most: 2.75 rad/s x 10 ms = 0.028 rad. 0.12 rad is the sum: the
  bound benchmarks/driver_mode_agreement.py reports against. It is not asserted here: simulators
  starved by other processes lag further (0.13 and 0.15 rad seen on loaded machines), while the
  outcome stays the same. (At the gripper: up to ~3 cm while moving; grasps and releases happen with the arm
  still.)
- at rest (the end of each episode): within JOINT_REST_RAD = 0.005 rad (the reset's settle
  tolerance: Coulomb friction against the PD gains), measured <= 0.0032 rad;
- events: the driver mode's grasps come 5..8 ticks later (the simulated gripper, held by the
  driver's stiff-command limit to 0.2 rad of motor angle at kp 5, moves at most ~0.066 m/s; the
  expert asks up to 0.15 m/s), lifts 1..2 and releases 3..4 ticks later: always before the expert's
  next move. The grippers differ by up to 3 cm along the trajectory for the same reason.

A simulator starved past the 200 ms feedback timeout by other processes on the machine (seen once in
~40 episodes while other sessions ran) damps its arm: the test retries that episode once, and says so.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from chatvla2.contract.embodiment import JOINT_INDICES
from chatvla2.drivers.faults import CommunicationLost
from chatvla2.sim.tasks.backend import HIGH, LOW, KinematicBackend
from chatvla2.sim.tasks.driver_backend import SQUEEZE_M, ArmsNotSettled, DriverBackend, TickTiming
from chatvla2.sim.tasks.env import START_STATE
from chatvla2.sim.tasks.mode_comparison import compare_modes

JOINT_REST_RAD = 0.005  # at the end of an episode, the arms still
JOINTS = list(JOINT_INDICES)


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeRobot:
    """A `BimanualRobot` stand-in that is where it was last told to be, its grippers `overshoot` m
    narrower (like the simulated gripper closing on a prop that is not there); `stuck`: never moves."""

    def __init__(self, state=None, stuck: bool = False):
        self.state = np.asarray(START_STATE if state is None else state, dtype=np.float32).copy()
        self.sent: list[np.ndarray] = []
        self.stuck = stuck
        self.overshoot = 0.0
        self.fault: Exception | None = None
        self.disconnected = 0

    def get_state(self) -> np.ndarray:
        return self.state.copy()

    def send_action(self, action) -> np.ndarray:
        if self.fault is not None:
            raise self.fault
        a = np.asarray(action, dtype=float)
        self.sent.append(a)
        if not self.stuck:
            self.state = a.astype(np.float32)
            self.state[[6, 13]] = np.maximum(0.0, a[[6, 13]] - self.overshoot)
        return a

    def disconnect(self) -> None:
        self.disconnected += 1


def fake_backend(**kwargs) -> tuple[DriverBackend, FakeRobot, FakeClock]:
    clock = FakeClock()
    robot = kwargs.pop("robot", None) or FakeRobot()
    return DriverBackend(connect=lambda: robot, clock=clock, sleep=clock.sleep, **kwargs), robot, clock


def test_apply_keeps_an_absolute_schedule_and_counts_late_ticks():
    backend, robot, clock = fake_backend()
    backend.reset(START_STATE)
    clock.now += 0.5  # the environment renders its first observation: the schedule has not started
    t0 = clock.now
    for k in range(1, 4):
        backend.apply(START_STATE, np.zeros(2))
        assert clock.now == pytest.approx(t0 + k * 0.02)  # t0 + k / rate, not "now + 1 / rate"
    clock.now += 0.011  # the caller took 11 ms: the next tick is still at t0 + 4 / rate
    backend.apply(START_STATE, np.zeros(2))
    assert clock.now == pytest.approx(t0 + 0.08) and backend.timing.late == 0
    clock.now += 0.025  # 5 ms past the next tick's time: read at once, late
    backend.apply(START_STATE, np.zeros(2))
    assert clock.now == pytest.approx(t0 + 0.105) and backend.timing.late == 1 and backend.timing.overruns == 0
    clock.now += 0.05  # tick 6 (t0 + 0.12) read 35 ms late, at t0 + 0.155: tick 7's time has passed
    backend.apply(START_STATE, np.zeros(2))
    assert backend.timing.late == 2 and backend.timing.overruns == 1
    backend.apply(START_STATE, np.zeros(2))  # tick 7 is skipped, not made up in a burst: tick 8
    assert clock.now == pytest.approx(t0 + 0.16)
    summary = backend.timing.summary()
    assert summary["ticks"] == 7 and summary["late"] == 2 and summary["lateness_max_ms"] == pytest.approx(35.0)
    backend.close()
    assert backend.timing_total.ticks == 7 and robot.disconnected == 1


def test_unpaced_apply_leaves_the_schedule_to_its_caller():
    """paced=False (the runtime's loop keeps time): apply sends and returns at once, counting the tick."""
    backend, robot, clock = fake_backend(paced=False)
    backend.reset(START_STATE)
    sleeps = len(clock.sleeps)
    target = START_STATE.copy()
    target[1] += 0.01
    for _ in range(3):
        clock.now += 0.02  # the loop's own tick
        state = backend.apply(target, np.zeros(2))
    assert len(clock.sleeps) == sleeps and robot.sent[-1][1] == pytest.approx(target[1])
    np.testing.assert_allclose(state, target, atol=1e-6)  # the stand-in robot is where it was told
    summary = backend.timing.summary()
    assert summary["ticks"] == 3 and summary["ticks_per_s"] == pytest.approx(50.0 * 3 / 2, rel=1e-6)  # 3 ticks, 2 periods apart
    assert summary["late"] == 0 and summary["overruns"] == 0
    backend.close()


def test_finger_stops_hold_the_gripper_on_the_prop():
    backend, robot, _ = fake_backend()
    open_state = START_STATE.copy()
    open_state[[6, 13]] = 0.06
    backend.reset(open_state)
    robot.overshoot = 0.01  # from now on the fake gripper closes 1 cm further than told
    state = backend.apply(START_STATE, np.array([0.03, 0.0]))  # closing: a 0.03 m prop in the left gripper
    assert robot.sent[-1][6] == pytest.approx(0.03 - SQUEEZE_M)  # pressed into it, no further
    assert robot.sent[-1][13] == 0.0  # nothing in the right one
    assert state[6] == pytest.approx(0.03) and state[13] == 0.0  # and measured on the prop
    state = backend.apply(START_STATE, np.array([0.03, 0.0]))
    assert state[6] == pytest.approx(0.03)
    # A gripper already narrower than the prop arrives closed: no stop (the kinematic rule).
    backend.state[6] = 0.02
    backend.apply(START_STATE, np.array([0.03, 0.0]))
    assert robot.sent[-1][6] == 0.0


def test_reset_moves_slowly_and_waits_until_settled():
    start = START_STATE.copy()
    start[1] = 1.0
    backend, robot, _ = fake_backend(robot=FakeRobot(start))
    state = backend.reset(START_STATE)
    np.testing.assert_allclose(state, START_STATE, atol=1e-6)
    steps = np.abs(np.diff([start[1]] + [a[1] for a in robot.sent]))
    assert steps.max() <= 0.5 * 5.0 / 50 + 1e-9  # at most half the joint's 5 rad/s limit per tick
    assert len(robot.sent) > 20 and backend.timing.ticks == 0  # reset's ticks are not the episode's
    stuck, _, _ = fake_backend(robot=FakeRobot(start, stuck=True), settle_timeout_s=0.5)
    with pytest.raises(ArmsNotSettled, match="did not settle"):
        stuck.reset(START_STATE)


def test_reset_restarts_the_arms_after_a_fault():
    robots = [FakeRobot(), FakeRobot()]
    clock = FakeClock()
    backend = DriverBackend(connect=lambda: robots.pop(0), clock=clock, sleep=clock.sleep)
    first = backend.robot
    backend.reset(START_STATE)
    first.fault = CommunicationLost("right arm: joint1 (motor 1) silent for more than 200 ms", 1)
    with pytest.raises(CommunicationLost):  # mid-episode: the episode ends with the driver's fault
        backend.apply(START_STATE, np.zeros(2))
    state = backend.reset(START_STATE)  # the next episode gets fresh arms
    assert first.disconnected == 1 and backend.robot is not first and not robots
    assert backend.restarts == ["right arm: joint1 (motor 1) silent for more than 200 ms"]
    np.testing.assert_allclose(state, START_STATE, atol=1e-6)
    backend.close()


def test_closed_backend_refuses_and_close_is_idempotent():
    backend, robot, _ = fake_backend()
    with backend:
        backend.reset(START_STATE)
    backend.close()
    assert robot.disconnected == 1
    with pytest.raises(RuntimeError, match="closed"):
        backend.apply(START_STATE, np.zeros(2))


@pytest.mark.slow
def test_both_modes_give_the_same_outcome_for_the_same_actions():
    """The issue's check, ~50 s: 6 expert episodes, each run in both modes (module docstring).

    Asserted here: what does not depend on how fast or busy the machine is (the outcome, the events'
    order, the arms and props at rest). The joints' lag along the trajectory, the events' delays and
    the ticks' timing grow when other processes starve the simulators: those are measured by
    benchmarks/driver_mode_agreement.py against the bounds above, not asserted."""
    with DriverBackend() as backend:
        for run in compare_modes(backend, time.perf_counter):
            case, k, d = run.case, run.kinematic, run.driver
            # The same outcome: success, which props were lifted and in what order, every grasp, lift
            # and release by the same arm in the same order, and where everything ended up.
            assert k.info["success"] and d.info["success"], (case, k.info["picked"], d.info["picked"])
            assert d.info["picked"] == k.info["picked"], case
            assert [e[1:] for e in d.events] == [e[1:] for e in k.events], case
            delays = [de[0] - ke[0] for ke, de in zip(k.events, d.events)]
            assert all(delay >= 0 for delay in delays), (case, delays)  # later, never earlier
            moved = max(float(np.abs(a - b).max()) for a, b in zip(k.props, d.props))
            assert moved < 0.002, (case, moved)  # every prop within 2 mm of where the kinematic mode left it
            if case.startswith("toy_placement"):  # the final placement region: the same (success says so too)
                x1, x2, y1, y2, z = d.scene.region
                for x, y, pz in (d.props[0], k.props[0]):
                    assert x1 <= x <= x2 and y1 <= y <= y2 and pz == pytest.approx(z), case
            # At rest: within the settle tolerance; every tick of the schedule stepped.
            rest_gap = np.abs(d.states[-1] - k.states[-1])[JOINTS]
            assert rest_gap.max() <= JOINT_REST_RAD, (case, rest_gap.max())
            point_gap = np.linalg.norm(d.gripper_points[-1] - k.gripper_points[-1], axis=1)
            assert point_gap.max() < 0.002, (case, point_gap.max())
            assert run.timing["ticks"] == run.steps, run.timing
            print(f"{case}: {run.steps} steps, rest {rest_gap.max():.4f} rad, event delays {delays} ticks, "
                  f"timing {run.timing}, retried {run.retried}")
    assert backend.robot is None  # closed: damped, disabled, simulators stopped


def test_driver_backend_clips_targets_like_the_kinematic_one():
    backend, robot, _ = fake_backend()
    backend.reset(START_STATE)
    wild = np.full(14, 10.0)
    backend.apply(wild, np.zeros(2))
    np.testing.assert_allclose(robot.sent[-1], HIGH)
    np.testing.assert_allclose(KinematicBackend().reset(wild), HIGH)
    backend.apply(-wild, np.zeros(2))
    np.testing.assert_allclose(robot.sent[-1], LOW)


def test_tick_timing_adds_up():
    a, b = TickTiming(50.0, 0.002, ticks=10, late=1, elapsed_s=0.2, lateness_s=[0.0] * 10), TickTiming(50.0, 0.002)
    b.add(a)
    b.add(a)
    assert b.ticks == 20 and b.late == 2 and b.ticks_per_s == pytest.approx(50.0)
