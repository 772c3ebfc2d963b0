"""`chatvla2 run`: a bundle's policy driving the arms, from load to a safe stop.

    policy (hashes verified) -> the cameras open (a camera that does not open stops here, before
    any arm is enabled) -> 3 warm-up inferences (excluded from every figure; they seed the loop's
    latency estimate) -> the robot connects (enables) -> the control loop until the
    duration, a stop signal, a watchdog stop or a fault -> damping, disable, close (the `finally`)
    -> summary table, telemetry path, one JSON line last.

Stop signals: SIGINT (Ctrl-C), SIGTERM (systemd stop, docker stop, timeout, kill), SIGHUP (the
terminal or the SSH session went away) and SIGQUIT (Ctrl-\\) all take the same path as Ctrl-C
(`RunStopSignals`): while the policy loads and warms up, nothing is connected and the run ends at
once; from the moment the robot starts connecting, the first signal stops the loop (or, if it
came while connecting, stops it before its first step): damping at once, disconnect (the
driver's damping, then disable), telemetry flushed, summary. Further signals change nothing: the
safe stop is bounded (about 2.2 s on the simulated arms) and an exception landing inside the
disable would leave an arm enabled (as `drivers/stop_signals.py` does for `chatvla2 arm`);
SIGKILL remains. A SIGHUP that was ignored when the run started (`nohup`) stays ignored.

Exit codes: 0 the duration was reached; 128 + the signal's number for a stop signal (130 SIGINT,
143 SIGTERM, 129 SIGHUP, 131 SIGQUIT); 1 any other stop (watchdog, robot fault, inference
error); 2 bad arguments or a bad bundle (one line, nothing started).

`main` runs real arms (`--robot arx`); `sim.robot.run_main` runs the same `run_policy` on
simulated arms behind ptys.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from chatvla2.drivers.stop_signals import StopSignals, exit_code
from chatvla2.runtime.camera import MultiCamera, open_cameras
from chatvla2.runtime.loop import ControlLoop, Telemetry, format_summary
from chatvla2.runtime.policy import Policy
from chatvla2.runtime.remote_policy import RemotePolicy
from chatvla2.runtime.robots import BimanualRobot, default_feedback_timeout, open_robot
from chatvla2.runtime.run_config import RunConfig
from chatvla2.runtime.safety import ActionSafety


class Interrupted(KeyboardInterrupt):
    """A stop signal before the robot started connecting: nothing to make safe; the command exits
    with 128 + signum."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} before the arms were connected")


class RunStopSignals(StopSignals):
    """The stop signals during a run (drivers/stop_signals.py: which, exit codes, nohup). Before
    `defer()` a signal raises `Interrupted`; after it, the first signal is recorded and stops the
    attached loop (`ControlLoop.request_stop`: no lock taken in the handler), or the loop attached
    later. Only the first signal counts."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: ControlLoop | None = None
        self.deferring = False

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            return  # the stop is under way (bounded); a second signal must not break it
        super()._handle(signum, frame)
        if not self.deferring:
            raise Interrupted(signum)
        if self.loop is not None:
            self.loop.request_stop(self.name)

    def defer(self) -> None:
        """From now on the first signal stops the loop instead of raising."""
        self.deferring = True

    def attach(self, loop: ControlLoop) -> None:
        self.loop = loop
        if self.signum is not None:
            loop.request_stop(self.name)


def main(config: RunConfig) -> int:
    """`chatvla2 run --robot arx`: two real arms on their SLCAN adapters (the config checked them)."""
    left, right = config.ports
    timeout = default_feedback_timeout() if config.feedback_timeout is None else config.feedback_timeout
    return run_policy(config, lambda: open_robot(left, right, config.profile, feedback_timeout_s=timeout),
                      feedback_timeout_s=timeout)


def run_policy(config: RunConfig, connect_robot: Callable[[], BimanualRobot],
               feedback_timeout_s: float | None = None, open_views: Callable[[int], MultiCamera] | None = None,
               on_summary: Callable[[dict, str | None], Iterable[str] | None] | None = None,
               instruction: str | None = None) -> int:
    """Load, warm up, open the cameras, connect, run, stop safely; returns the exit code (module
    docstring). `feedback_timeout_s`: what connect_robot gives the arms, for the report.
    `open_views(num_views)`: the cameras, opened (default: `--camera` SPECs, `static` per view).
    `on_summary(summary, reasoning)`: called once the run is over (arms disconnected, cameras
    closed) with the summary and the last reasoning text the policy decoded (None if none); it may
    add fields to the summary (the JSON line) and returns lines printed after the summary table
    (sim/robot.py: a simulated task's outcome and scores). An error in it is one of the summary's
    errors, not a lost report. `instruction`: the text the policy is given (default the config's)."""
    if open_views is None:
        def open_views(num_views: int) -> MultiCamera:
            return open_cameras(config.camera or ["static"] * num_views, num_views, max_age_s=config.camera_max_age)
    with RunStopSignals() as signals:
        source = config.policy_url if config.policy_url is not None else config.bundle_path
        return _run(config, connect_robot, feedback_timeout_s, source, signals, open_views, on_summary,
                    config.instruction_text if instruction is None else instruction)


def _load_policy(config: RunConfig, source: Path | str):
    """A bundle's Policy here, or the server's (runtime/remote_policy.py: its contract checked at connect)."""
    if config.policy_url is not None:
        return RemotePolicy(config.policy_url, config.token(), config.request_deadline, config.expect_sha256).connect()
    return Policy.from_bundle(source, backend=config.backend, engines_dir=config.engines, threads=config.threads,
                              spin=config.spin)


def _run(config: RunConfig, connect_robot, feedback_timeout_s, bundle: Path | str, signals: RunStopSignals,
         open_views: Callable[[int], MultiCamera], on_summary, instruction: str) -> int:
    loop_settings = config.loop_config()
    policy = _load_policy(config, bundle)
    loop = None
    cameras = None
    try:
        if config.max_tokens is not None:
            policy.max_reasoning_tokens = min(policy.max_reasoning_tokens, config.max_tokens)
        # Before the arms are enabled: a camera that does not open is a one-line error, nothing moved.
        cameras = open_views(policy.num_views)
        print(f"cameras: {', '.join(cameras.specs)}", flush=True)

        def observe(state):
            # StaleCamera (a view too old or frozen) holds the plan: runtime/loop.py
            return {"images": cameras.images(), "instruction": instruction, "state": state, "seed": config.seed}

        providers = getattr(policy, "providers", None)
        where = ", ".join(sorted(set(providers.values()))) if providers else f"{policy.manifest['model']} on {policy.manifest['backend']}"
        print(f"policy: {bundle} ({policy.backend}: {where})", flush=True)
        d = getattr(policy, "deployment", None)  # the plan `calibrate select` recorded, if any
        if d:
            print(f"deployment plan: {d.get('name')} for {d.get('target')} (chatvla2 calibrate select), reasoning capped at "
                  f"{policy.max_reasoning_tokens} tokens", flush=True)
        warm = observe(np.zeros(policy.state_dim, np.float32))
        warmup_latencies = []
        for _ in range(3):
            started = time.perf_counter()
            policy.infer(warm)
            warmup_latencies.append(time.perf_counter() - started)
        safety = ActionSafety.bimanual_arx(config.rate, config.max_joint_speed, profile=config.profile)
        telemetry_path = config.telemetry or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        telemetry = Telemetry(telemetry_path)
        signals.defer()  # from here a signal stops the run the safe way instead of interrupting it
        try:
            robot = connect_robot()
        except BaseException as exc:
            telemetry.write({"event": "robot_failed_to_connect", "error": repr(exc)})
            telemetry.close()
            raise
        summary = None
        damping_sent = None
        try:
            loop = ControlLoop(policy, robot, observe, loop_settings, safety, telemetry)
            loop.latencies.append(warmup_latencies[-1])  # earlier runs include one-off allocations
            signals.attach(loop)
            timeout = "" if feedback_timeout_s is None else f", feedback timeout {feedback_timeout_s * 1000:g} ms"
            print(f"running on {config.robot} at {config.rate:g} Hz ({loop_settings.chunk_mode}, reasoning {loop_settings.reasoning}{timeout}); "
                  "Ctrl-C stops", flush=True)
            summary = loop.run()
            damping_sent = _damping_sent_or_none(robot)
        finally:
            try:
                robot.disconnect()  # damping, then disable, then close (then the simulators)
            finally:
                disabled = time.monotonic()
                if summary is not None:
                    summary["interventions"] = _interventions_or_none(robot)
                    summary["robot"] = {"kind": config.robot, "profile": config.profile,
                                        "feedback_timeout_s": _feedback_timeout_or_none(robot, feedback_timeout_s)}
                    telemetry.write({"event": "disconnected", "interventions": summary["interventions"],
                                     "signal": signals.name or None, "signal_monotonic_s": _round(signals.received_at),
                                     "damping_sent_monotonic_s": _round(damping_sent), "disabled_monotonic_s": _round(disabled)})
                telemetry.close()
    finally:
        if cameras is not None:
            cameras.close()
        # never while an inference runs: the loop joined its thread (bounded); check again
        if loop is None or loop.join_inference(loop.inference_join_bound()):
            policy.close()
        else:
            print("chatvla2 run: warning: an inference was still running: engines left open", file=sys.stderr, flush=True)
    extra = _call_on_summary(on_summary, summary, loop)
    _print_last(format_summary(summary), *extra, f"telemetry: {telemetry_path}", json.dumps(summary, default=str))
    reason = summary["stop_reason"]
    if reason in signal.Signals.__members__:
        return exit_code(signal.Signals[reason])
    return 0 if reason == "duration reached" and loop.inference_finished else 1


def _call_on_summary(on_summary, summary: dict, loop: ControlLoop) -> list[str]:
    """run_policy's `on_summary` hook: its lines to print (none without a hook or if it failed)."""
    if on_summary is None:
        return []
    reasoning = next((r["reasoning"] for r in reversed(loop.inferences) if r.get("reasoning") is not None), None)
    try:
        return [str(line) for line in on_summary(summary, reasoning) or ()]
    except Exception as exc:  # noqa: BLE001 - the run is over and safe: keep its report
        summary["errors"].append(f"on_summary: {exc!r}")
        return []


def _print_last(*lines: str) -> None:
    """The report; a terminal that went away (SIGHUP) must not turn a safe stop into a traceback:
    the telemetry file has everything."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except OSError:
        pass


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _damping_sent_or_none(robot):
    try:
        return robot.damping_sent_at()
    except Exception:  # noqa: BLE001 - only for the report
        return None


def _feedback_timeout_or_none(robot, fallback):
    try:
        return robot.feedback_timeout_s
    except Exception:  # noqa: BLE001 - a robot without the drivers' config (tests)
        return fallback


def _interventions_or_none(robot):
    try:
        return robot.interventions
    except Exception:  # noqa: BLE001 - the robot may already be gone
        return None
