"""The control loop against a fake robot and a fake policy with injected latency."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.loop import ActionPlan, ControlLoop, InferenceStopped, LoopConfig, Telemetry, format_summary
from chatvla2.runtime.safety import ActionSafety

CHUNK = 25  # 0.5 s at 50 Hz


class FakeRobot:
    def __init__(self):
        self.state = np.zeros(14, np.float32)
        self.sent: list[tuple[float, np.ndarray]] = []
        self.damped_at = None
        self.lock = threading.Lock()

    def get_state(self):
        return self.state.copy()

    def send_action(self, action):
        with self.lock:
            self.sent.append((time.monotonic(), np.asarray(action).copy()))
        return action

    def damping(self):
        self.damped_at = time.monotonic()


class FakePolicy:
    """Action chunks whose row i is the value (first step + i) * 1e-4 in every dimension, after `latencies`."""

    def __init__(self, latencies, loop_ref):
        self.latencies = iter(latencies)
        self.loop_ref = loop_ref
        self.calls = 0
        self.reused = 0

    def infer(self, observation, reuse=None, should_stop=None):
        first = self.loop_ref[0].next_step if self.loop_ref else 0
        time.sleep(next(self.latencies))
        self.calls += 1
        self.reused += reuse is not None
        chunk = np.repeat(((first + np.arange(CHUNK)) * 1e-4)[:, None], 14, axis=1)
        return {"action_chunk": chunk, "reasoning": "r", "reasoning_ids": [1], "r": np.zeros((1, 4)), "tokens": 1,
                "timings": {"total": 0.0}}


def run_loop(latencies, duration=2.0, tmp_path=None, **config):
    loop_ref: list = []
    robot = FakeRobot()
    policy = FakePolicy(latencies, loop_ref)
    telemetry = Telemetry(tmp_path / "t.jsonl" if tmp_path else None)
    cfg = LoopConfig(rate_hz=50, duration_s=duration, **config)
    loop = ControlLoop(policy, robot, lambda state: {"state": state}, cfg, ActionSafety.bimanual_arx(50), telemetry)
    loop_ref.append(loop)
    summary = loop.run()
    telemetry.close()
    return loop, robot, policy, summary


def test_fast_policy_never_starves(tmp_path):
    loop, robot, policy, summary = run_loop(itertools.repeat(0.01), tmp_path=tmp_path)
    assert summary["stop_reason"] == "duration reached"
    assert summary["steps_held"] == 0 and summary["steps_sent"] >= 90
    assert robot.damped_at is not None
    # started early but not wastefully: about one inference per chunk horizon, never per step
    assert 3 <= summary["inferences"] <= 12
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "summary" and any(r["event"] == "inference" for r in lines)
    assert "control rate" in format_summary(summary)


def test_actions_follow_the_step_schedule():
    loop, robot, policy, summary = run_loop(itertools.repeat(0.05), duration=1.5)
    values = np.array([a[0] for _, a in robot.sent])
    # row i of a chunk made before step s is for step s + i: the sent value is the step index * 1e-4
    steps = np.rint(values / 1e-4)
    assert np.all(np.diff(steps) >= 1), steps  # never goes back in time
    assert summary["steps_held"] == 0 and summary["stale_actions"] > 0


def test_spiky_latency_below_the_horizon_does_not_starve():
    # spikes of 0.2 s, often back to back: 0.2 + 0.2 < the 0.5 s horizon (the bound, see loop.py)
    rng = np.random.default_rng(0)
    spikes = [0.2 if rng.random() < 0.3 else 0.02 for _ in range(200)]
    loop_ref_latencies = iter([0.2] + spikes)  # the first (measured) inference shows the spike level
    loop, robot, policy, summary = run_loop(loop_ref_latencies, duration=3.0)
    assert summary["stop_reason"] == "duration reached"
    assert summary["steps_held"] == 0, summary


def test_slow_policy_holds_then_damps():
    # 0.8 s per inference > the 0.5 s chunk horizon: the plan runs dry, the watchdog holds for
    # hold_s, then damps and stops.
    loop, robot, policy, summary = run_loop(itertools.repeat(0.8), duration=5.0, hold_s=0.2)
    assert summary["stop_reason"].startswith("watchdog")
    assert summary["steps_held"] >= 5 and robot.damped_at is not None
    held = [a for _, a in robot.sent][-3:]
    np.testing.assert_allclose(held[0], held[-1])  # holding repeats the last safe action


def test_stop_damps_at_once():
    loop_ref: list = []
    robot = FakeRobot()
    loop = ControlLoop(FakePolicy(itertools.repeat(0.01), loop_ref), robot, lambda s: {"state": s},
                       LoopConfig(rate_hz=50), ActionSafety.bimanual_arx(50))
    loop_ref.append(loop)
    threading.Timer(0.5, loop.stop, args=("SIGINT",)).start()
    requested = time.monotonic() + 0.5
    summary = loop.run()
    assert summary["stop_reason"] == "SIGINT" and summary["damped"]
    assert robot.damped_at - requested < 0.5


def test_temporal_ensembling_and_reuse_cadence():
    loop, robot, policy, summary = run_loop(itertools.repeat(0.02), duration=1.5, chunk_mode="ensemble", reasoning="reuse")
    assert summary["steps_held"] == 0 and policy.reused == policy.calls - 1


class PrefixPolicy(FakePolicy):
    """A head trained for real-time chunking: its chunk starts with the committed prefix it is given
    (exactly, as runtime.policy.Policy's does) and continues with FakePolicy's values."""

    def __init__(self, latencies, loop_ref, max_prefix):
        super().__init__(latencies, loop_ref)
        self.max_prefix = max_prefix
        self.prefixes: list[np.ndarray | None] = []
        self.chunks: list[np.ndarray] = []

    def infer(self, observation, reuse=None, should_stop=None):
        result = super().infer(observation, reuse, should_stop)
        prefix = observation.get("prefix")
        self.prefixes.append(None if prefix is None else np.array(prefix))
        chunk = result["action_chunk"].astype(np.float32)  # as the real policy returns
        if prefix is not None:
            chunk[: len(prefix)] = prefix
        self.chunks.append(chunk)
        return {**result, "action_chunk": chunk}


@pytest.mark.parametrize("max_prefix", [5, 12])
def test_rtc_commits_the_planned_actions_its_expected_latency_covers(max_prefix):
    loop_ref: list = []
    robot = FakeRobot()
    policy = PrefixPolicy(itertools.repeat(0.1), loop_ref, max_prefix)
    loop = ControlLoop(policy, robot, lambda s: {"state": s}, LoopConfig(rate_hz=50, duration_s=2.0, chunk_mode="rtc"),
                       ActionSafety.bimanual_arx(50))
    loop_ref.append(loop)
    summary = loop.run()
    assert summary["stop_reason"] == "duration reached" and summary["steps_held"] == 0
    records = loop.inferences
    assert len(records) == len(policy.prefixes) >= 4 and policy.prefixes[0] is None  # nothing is planned before the first
    for n in range(1, len(records)):
        start, prefix = records[n]["obs_step"], policy.prefixes[n]
        # at most max_prefix, and no more than the plan holds (an inference starts when about the
        # expected latency of the plan is left)
        assert len(prefix) == records[n]["prefix_steps"] and 1 <= len(prefix) <= max_prefix
        # the committed actions are exactly what the plan held for those steps: the latest chunk's rows
        previous, first = policy.chunks[n - 1], records[n - 1]["obs_step"]
        np.testing.assert_array_equal(prefix, previous[start - first : start - first + len(prefix)])
    # 0.1 s inferences: an estimate of >= 1.5 x 0.1 s + the 20 ms margin covers >= 9 steps of 20 ms
    assert max(len(p) for p in policy.prefixes[1:]) >= min(max_prefix, 6)
    # and what the arm was sent never jumps at a join: each step's value is one step on (row i = step * 1e-4)
    values = np.array([a[0] for _, a in robot.sent])
    assert np.all(np.diff(np.rint(values / 1e-4)) >= 1)


def test_rtc_needs_a_head_trained_for_it():
    with pytest.raises(InvalidInput, match="chunk mode rtc needs an action head trained to continue"):
        ControlLoop(FakePolicy([], []), FakeRobot(), lambda s: {"state": s}, LoopConfig(chunk_mode="rtc"), ActionSafety.bimanual_arx(50))


def test_action_plan_commits_consecutive_planned_steps():
    plan = ActionPlan("rtc")
    plan.add(np.arange(10.0)[:, None] * np.ones((1, 14)), first_step=5, current_step=5)
    np.testing.assert_array_equal(plan.committed(7, 4)[:, 0], [2.0, 3.0, 4.0, 5.0])
    assert plan.committed(13, 10).shape == (2, 14)  # steps 13 and 14 are the last planned
    assert plan.committed(20, 3).shape[0] == 0 and plan.committed(7, 0).shape[0] == 0


def test_action_plan_ensemble_weights():
    plan = ActionPlan("ensemble", decay=1.0)
    plan.add(np.zeros((3, 1)), 0, 0)
    plan.add(np.ones((3, 1)), 1, 1)
    w_old, w_new = 1.0, np.exp(-1.0)
    assert plan.pop(0)[0] == 0.0
    assert plan.pop(1)[0] == pytest.approx(w_new / (w_old + w_new))
    switch = ActionPlan("switch")
    switch.add(np.zeros((5, 1)), 0, 0)
    assert switch.add(np.ones((5, 1)), 1, 3) == 2  # rows for steps 1, 2 already passed
    assert switch.pop(3)[0] == 1.0 and switch.end() == 6


class SlowAtStopPolicy:
    """The first `quick` inferences are quick; the next ones take `slow` seconds and (unless
    `honour_stop`) ignore should_stop, like an engine call that cannot be interrupted. Records when
    each call returned and whether close() came while one was running."""

    def __init__(self, slow: float, honour_stop: bool = False, quick: int = 1):
        self.slow, self.honour_stop, self.quick = slow, honour_stop, quick
        self.calls = 0
        self.running = 0
        self.returned_at: list[float] = []
        self.stopped_early = 0
        self.closed_at = None
        self.closed_while_running = False

    def infer(self, observation, reuse=None, should_stop=None):
        self.running += 1
        try:
            self.calls += 1
            if self.calls > self.quick:
                end = time.monotonic() + self.slow
                while time.monotonic() < end:
                    if self.honour_stop and should_stop():
                        self.stopped_early += 1
                        raise InferenceStopped("stopping")
                    time.sleep(0.005)
            chunk = np.zeros((CHUNK, 14))
            return {"action_chunk": chunk, "reasoning": "", "tokens": 0, "timings": {"total": 0.0}}
        finally:
            self.running -= 1
            self.returned_at.append(time.monotonic())

    def close(self):
        self.closed_while_running = self.running > 0
        self.closed_at = time.monotonic()


def _loop_with(policy, **config):
    robot = FakeRobot()
    loop = ControlLoop(policy, robot, lambda s: {"state": s}, LoopConfig(rate_hz=50, **config), ActionSafety.bimanual_arx(50))
    return loop, robot


def test_run_returns_only_after_an_inference_in_flight_has_finished():
    """An inference still inside the engine when the loop stops (it ignores should_stop, like one
    ONNX Runtime call): run() joins the inference thread before it returns, so the caller's close()
    never overlaps it (exiting under a running ONNX Runtime call aborted the process, exit 134).
    6 s: longer than the 5 s the loop used to wait before abandoning the thread."""
    policy = SlowAtStopPolicy(slow=6.0)
    loop, robot = _loop_with(policy, hold_s=5.0)
    # the plan of 25 steps (0.5 s) runs low after ~0.4 s: the second, slow inference starts; stop during it
    threading.Timer(0.7, loop.stop, args=("SIGTERM",)).start()
    summary = loop.run()
    returned = time.monotonic()
    policy.close()
    assert policy.calls == 2 and policy.running == 0, "the slow inference was not running at the stop"
    assert policy.returned_at[-1] <= returned and not policy.closed_while_running
    assert loop.inference_finished and summary["errors"] == [] and summary["damped"]
    # damping did not wait for the inference: it came at the stop, before the slow call returned
    assert robot.damped_at < policy.returned_at[-1] - 0.2


def test_an_inference_honouring_should_stop_ends_at_once():
    policy = SlowAtStopPolicy(slow=30.0, honour_stop=True)
    loop, robot = _loop_with(policy, hold_s=5.0)
    threading.Timer(0.7, loop.stop, args=("SIGTERM",)).start()
    started = time.monotonic()
    summary = loop.run()
    assert time.monotonic() - started < 3.0  # not the 30 s inference
    assert policy.stopped_early == 1 and policy.running == 0
    assert summary["stop_reason"] == "SIGTERM" and summary["errors"] == [], summary["errors"]


def test_join_bound_is_reported_and_the_engines_must_stay_open(monkeypatch):
    import chatvla2.runtime.loop as loop_module

    monkeypatch.setattr(loop_module, "INFERENCE_JOIN_MIN_S", 0.2)
    policy = SlowAtStopPolicy(slow=2.0)
    loop, robot = _loop_with(policy, hold_s=5.0)
    threading.Timer(0.7, loop.stop, args=("SIGTERM",)).start()
    summary = loop.run()
    assert not loop.inference_finished and "inference still running" in summary["errors"][-1]
    assert loop.join_inference(5.0)  # it does end; then closing is safe
    assert policy.running == 0


def test_request_stop_before_run_damps_without_running():
    """A stop requested before run() (a signal while the robot connected): no inference, no step,
    the robot damped."""
    policy = SlowAtStopPolicy(slow=0.0)
    loop, robot = _loop_with(policy)
    loop.request_stop("SIGHUP")
    summary = loop.run()
    assert summary["stop_reason"] == "SIGHUP" and summary["damped"]
    assert policy.calls == 0 and robot.sent == [] and robot.damped_at is not None


def test_request_stop_from_a_signal_handler_damps_within_a_poll():
    import signal

    loop_ref: list = []
    robot = FakeRobot()
    loop = ControlLoop(FakePolicy(itertools.repeat(0.01), loop_ref), robot, lambda s: {"state": s},
                       LoopConfig(rate_hz=50), ActionSafety.bimanual_arx(50))
    loop_ref.append(loop)
    sent = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: loop.request_stop("SIGUSR1"))
    try:
        def send():
            sent.append(time.monotonic())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

        threading.Timer(0.5, send).start()
        summary = loop.run()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert summary["stop_reason"] == "SIGUSR1" and summary["steps_sent"] > 0
    assert robot.damped_at - sent[0] < 0.2


@pytest.mark.parametrize("change, message", [
    ({"duration_s": -1.0}, "duration_s must be positive"),
    ({"duration_s": 0.0}, "duration_s must be positive"),
    ({"duration_s": float("nan")}, "duration_s must be a finite number"),
    ({"duration_s": float("inf")}, "duration_s must be a finite number"),
    ({"rate_hz": 0.5}, "rate_hz must be within 1..1000"),
    ({"rate_hz": 2000.0}, "rate_hz must be within 1..1000"),
    ({"rate_hz": float("nan")}, "rate_hz must be a finite number"),
    ({"hold_s": float("nan")}, "hold_s must be a finite number"),
    ({"hold_s": 0.0}, "hold_s must be positive"),
    ({"latency_margin_s": -0.1}, "latency_margin_s must not be negative"),
    ({"reasoning_reuse_s": float("inf")}, "reasoning_reuse_s must be a finite number"),
    ({"latency_headroom": 0.5}, "latency_headroom must be >= 1"),
])
def test_loop_config_refuses_bad_numbers(change, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**change)


def test_run_policy_closes_the_engines_after_the_inference_in_flight(monkeypatch, tmp_path):
    """`chatvla2 run`'s own sequence (runtime/run.py) with a fake policy and robot: the duration
    ends while the slow inference runs; close() comes after it returned, after the disconnect."""
    import chatvla2.runtime.run as run_module
    from chatvla2.runtime.run_config import RunConfig

    class Policy(SlowAtStopPolicy):
        num_views, state_dim, backend, providers, max_reasoning_tokens = 2, 14, "fake", {"all": "fake"}, 8

    class Robot(FakeRobot):
        interventions = {}

        def disconnect(self):
            self.disconnected_at = time.monotonic()

    policy, robot = Policy(slow=2.0, quick=4), Robot()  # 3 warm-up calls and the loop's first are quick
    monkeypatch.setattr(run_module.Policy, "from_bundle", classmethod(lambda cls, *a, **k: policy))
    config = RunConfig(bundle=str(tmp_path), duration=0.8, telemetry=str(tmp_path / "t.jsonl"))
    assert run_module.run_policy(config, lambda: robot) == 0
    assert policy.calls == 5, "the slow inference did not run"
    assert policy.closed_at is not None and not policy.closed_while_running
    assert policy.returned_at[-1] <= policy.closed_at and robot.disconnected_at <= policy.closed_at
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "disconnected"
