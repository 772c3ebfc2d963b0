"""Simulated arms as processes (`sim/processes.py`): a signal while they start never leaves one
running. Checked by PID, in real processes with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sim_arms_marked(marker: str) -> list[int]:
    """PIDs of running `sim-arm` processes whose environment carries `marker` (inherited from the
    test's script, whatever became of the script)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and b"sim-arm" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if _running(pid)]


def _wait_gone(pids, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


# The signal at the worst moment: the child exists, but its Popen has not yet reached the caller
# (a signal inside subprocess.Popen after the fork, or right after it returns, used to lose the
# only handle on it).
# Whatever dispositions the test runner inherited (a background job of a non-interactive shell
# has SIGINT ignored, nohup SIGHUP): the scripts start from Python's defaults.
DEFAULT_SIGNALS = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
"""

INJECTED = DEFAULT_SIGNALS + textwrap.dedent("""
    import os, signal, subprocess, sys
    from chatvla2.sim.processes import start_sim_arms, stop_sim_arms

    signum, at = int(sys.argv[1]), int(sys.argv[2])
    real_popen = subprocess.Popen
    count = 0

    def popen(*args, **kwargs):
        global count
        process = real_popen(*args, **kwargs)
        count += 1
        print(process.pid, flush=True)
        if count == at:
            os.kill(os.getpid(), signum)
        return process

    subprocess.Popen = popen
    sims = []
    try:
        start_sim_arms("x5", started=sims)
        print("started: the signal was lost", flush=True)
    except KeyboardInterrupt as exc:
        print("interrupted", type(exc).__name__, flush=True)
        raise SystemExit(3)
    finally:
        stop_sim_arms(sims)  # if the signal was lost (a failed test must not leak either); else a no-op
""")


@pytest.mark.parametrize("signum, at, returncode", [
    (signal.SIGINT, 2, 3),                # Python's handler: KeyboardInterrupt, after both are stopped
    (signal.SIGTERM, 2, -signal.SIGTERM),  # the default action ends the process, after both are stopped
    (signal.SIGHUP, 1, -signal.SIGHUP),
], ids=["SIGINT-second", "SIGTERM-second", "SIGHUP-first"])
def test_a_signal_while_spawning_leaves_no_simulator(signum, at, returncode):
    result = subprocess.run([sys.executable, "-c", INJECTED, str(int(signum)), str(at)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    lines = result.stdout.split()
    pids = [int(x) for x in lines if x.isdigit()]
    assert len(pids) == at, result.stdout + result.stderr[-2000:]
    assert result.returncode == returncode, result.stdout + result.stderr[-2000:]
    assert _wait_gone(pids) == [], f"sim-arm processes left running: {pids}"


def test_a_signal_held_during_spawning_reaches_the_callers_handler():
    """In-process, with a handler of the caller's that does not raise (like `chatvla2 run`'s while
    the robot connects): the signal reaches it once the started process is stopped, and the start
    fails with StartupInterrupted."""
    import chatvla2.sim.processes as processes

    received, pids = [], []
    real_spawn = processes._spawn

    def spawn(*args):
        process = real_spawn(*args)
        pids.append(process.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        return process

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        processes._spawn = spawn
        with pytest.raises(processes.StartupInterrupted, match="SIGTERM"):
            processes.start_sim_arms("x5")
    finally:
        processes._spawn = real_spawn
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert len(pids) == 1 and _wait_gone(pids) == []
    assert signal.getsignal(signal.SIGTERM) is previous


SWEEP = DEFAULT_SIGNALS + textwrap.dedent("""
    import sys, time
    from chatvla2.sim.processes import start_sim_arms, stop_sim_arms

    sims = []
    try:
        print("starting", flush=True)
        started = time.monotonic()
        start_sim_arms("x5", started=sims)
        print("started", time.monotonic() - started, flush=True)
        time.sleep(60)
    finally:
        stop_sim_arms(sims)
""")


def test_ctrl_c_at_any_moment_of_the_start_up_leaves_no_simulator():
    """Ctrl-C (SIGINT) at moments spread over the start-up of two simulators (measured first, on
    this machine's load); used to leave one running about 3 times in 8."""
    marker = f"CHATVLA2_TEST_SIM_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}

    def start():
        process = subprocess.Popen([sys.executable, "-c", SWEEP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=REPO, env=env)
        assert process.stdout.readline().strip() == "starting"
        return process

    process = start()
    line = process.stdout.readline().split()
    assert line and line[0] == "started", process.stderr.read()
    startup = float(line[1])
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert _wait_gone(_sim_arms_marked(marker)) == []

    outcomes = []
    for fraction in (0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0):
        process = start()
        time.sleep(fraction * startup)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
        outcomes.append("started" in stdout)
        left = _wait_gone(_sim_arms_marked(marker))
        assert left == [], f"SIGINT {fraction * startup:.3f} s into a {startup:.3f} s start-up left {left} running"
    assert not all(outcomes), "every signal came after the start-up: the sweep missed it"
