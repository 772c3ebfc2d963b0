"""`chatvla2 run` end to end on two simulated arms (real serial path), and its stop-signal paths."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.child_signals import default_stop_signals

REPO = Path(__file__).resolve().parents[2]
RUN = ["-m", "chatvla2", "run"]  # the real command


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_on_sim_for_a_few_seconds(tiny_bundle, tmp_path):
    telemetry = tmp_path / "run.jsonl"
    arms_log = tmp_path / "arms"
    arms_log.mkdir()
    result = subprocess.run([sys.executable, *RUN, str(tiny_bundle), "--robot", "sim", "--duration", "3", "--threads", "1",
                             "--telemetry", str(telemetry), "--sim-log", str(arms_log)],
                            capture_output=True, text=True, cwd=REPO, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = _summary(result.stdout)
    assert summary["stop_reason"] == "duration reached" and summary["damped"]
    assert summary["steps_sent"] >= 120 and summary["inferences"] >= 2
    assert summary["interventions"]["left"]["faults"] == 0
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    events = [record["event"] for record in records]
    assert events.count("step") >= 120 and events[-1] == "disconnected"
    # the simulated arms' own logs: every motor driven in position mode, then damped (the loop's stop,
    # then the disconnect's 2 s of damping), then disabled (Damiao) or limp (EC)
    for side in ("left", "right"):
        for motor, seen in json.loads((arms_log / f"{side}.json").read_text())["motors"].items():
            (_, last_driven), (damped, damping), (released, final) = seen["modes"][-3:]
            assert (last_driven, damping, final in ("disabled", "limp")) == ("position", "damping", True), (side, motor, seen)
            assert released - damped >= 1.9, (side, motor, seen["modes"])


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, from /proc (every thread's children)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum, feedback_timeout", [
    (signal.SIGINT, None), (signal.SIGTERM, None), (signal.SIGHUP, "0.25"),
], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_stop_signals_damp_disable_flush_and_stop_the_simulators(tiny_bundle, tmp_path, signum, feedback_timeout):
    """Ctrl-C, and what systemd/docker stop, `timeout` (SIGTERM) and a dropped SSH session (SIGHUP)
    send: the same path: damping at once, disable, telemetry complete, summary, exit 128 + signum,
    both sim-arm processes gone. Times are time.monotonic(), one clock for every process."""
    name = signal.Signals(signum).name
    telemetry = tmp_path / "run.jsonl"
    command = [sys.executable, *RUN, str(tiny_bundle), "--robot", "sim", "--threads", "1", "--telemetry", str(telemetry)]
    if feedback_timeout:
        command += ["--feedback-timeout", feedback_timeout]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               preexec_fn=default_stop_signals)
    try:
        first_lines = []
        for line in process.stdout:  # until the loop runs
            first_lines.append(line)
            if line.startswith("running on"):
                break
        assert first_lines and first_lines[-1].startswith("running on"), "".join(first_lines) + process.stderr.read()[-3000:]
        sims = [pid for pid in _children(process.pid) if "sim-arm" in _cmdline(pid)]
        assert len(sims) == 2, [(pid, _cmdline(pid)) for pid in _children(process.pid)]
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
        exited = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum, stdout[-2000:] + stderr[-3000:]
    summary = _summary(stdout)
    assert summary["stop_reason"] == name and summary["damped"] and summary["steps_sent"] > 0
    assert summary["robot"]["feedback_timeout_s"] == float(feedback_timeout or 0.2)  # what the arms' controllers use
    assert f"feedback timeout {float(feedback_timeout or 0.2) * 1000:g} ms" in first_lines[-1]
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    stop = next(r for r in records if r["event"] == "stop")
    assert stop["reason"] == name and stop["damped"]
    last = records[-1]
    assert last["event"] == "disconnected" and last["signal"] == name  # disabled after damping, log complete
    deadline = time.monotonic() + 5
    while any(map(_running, sims)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, sims)), f"simulators left running: {[p for p in sims if _running(p)]}"
    to_damping, to_disable, to_exit = (last["damping_sent_monotonic_s"] - sent, last["disabled_monotonic_s"] - sent, exited - sent)
    print(f"{name}: damping sent {to_damping * 1000:.0f} ms, disabled {to_disable:.2f} s, exited {to_exit:.2f} s after the signal")
    assert 0 <= to_damping < 0.5  # damping at once, not after the driver's 2 s
    assert to_damping < to_disable < 5 and to_exit < 10  # docker stop's grace period is 10 s


def test_sigterm_while_starting_exits_143_and_leaves_no_simulator(tiny_bundle, tmp_path):
    """SIGTERM while the policy warms up, the simulators start or the arms connect: exit 143
    whichever step it lands in (one line "interrupted (SIGTERM)" before the arms connected, else
    the summary of a run stopped before or at its first steps), and no sim-arm process left
    (found by an environment marker they inherit, whatever became of their parent)."""
    import os
    import uuid

    marker = uuid.uuid4().hex
    env = {**os.environ, "CHATVLA2_TEST_RUN_MARKER": marker}
    outcomes = set()
    for delay in (0.0, 0.15, 0.3, 0.45, 0.6):  # warm-up, simulators, connect, first steps (0.4 s here, quiet)
        telemetry = tmp_path / f"run-{delay}.jsonl"
        process = subprocess.Popen([sys.executable, *RUN, str(tiny_bundle), "--robot", "sim", "--threads", "1",
                                    "--telemetry", str(telemetry)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=REPO, env=env, preexec_fn=default_stop_signals)
        try:
            line = process.stdout.readline()
            if line.startswith("cameras:"):  # the cameras open right after the policy loads
                line = process.stdout.readline()
            assert line.startswith("policy:")  # loaded; warm-up next, then the simulators
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 143, stdout[-2000:] + stderr[-3000:]
        if "interrupted (SIGTERM)" in stderr:
            outcomes.add("before connecting")
            assert len(stderr.strip().splitlines()) == 1, stderr
        else:
            outcomes.add("stopped run")
            assert _summary(stdout)["stop_reason"] == "SIGTERM" and _summary(stdout)["damped"]
        left = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _marked(e, marker) and _running(int(e.name))]
            if not left:
                break
            time.sleep(0.05)
        assert left == [], f"SIGTERM {delay} s after loading left {left} running"
    print(f"outcomes: {sorted(outcomes)}")


def _marked(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "environ").read_bytes() and b"sim-arm" in (proc / "cmdline").read_bytes()
    except OSError:
        return False
