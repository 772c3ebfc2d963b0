"""The two commands as a new user runs them: `chatvla2 sim-arm` in one process, `chatvla2 arm --port
<its pty> status` in another."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from chatvla2.cli import main


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvla2.cli", *argv], capture_output=True, text=True, timeout=timeout)


def start_sim_arm(*argv: str) -> subprocess.Popen:
    # Started with SIGINT ignored, as every background job of a non-interactive shell (`cmd &` in a
    # script, CI runners, nohup) inherits it: Python then installs no KeyboardInterrupt handler, and
    # SIGINT used to leave the simulator running for good. `sim-arm` must stop on it all the same.
    return subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m", "chatvla2.cli", "sim-arm", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop_sim_arm(sim: subprocess.Popen, sig: int = signal.SIGINT, within_s: float = 10.0) -> None:
    """Ctrl-C it; it must exit 0. Idle it takes ~0.1 s; the bound is slack for a loaded 2-core
    machine. Never leaves the process behind, even when it fails."""
    sim.send_signal(sig)
    try:
        code = sim.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        sim.kill()
        sim.wait()
        pytest.fail(f"sim-arm did not exit within {within_s} s of {signal.Signals(sig).name}")
    err = sim.stderr.read()
    assert code == 0 and "Traceback" not in err, err


def test_sim_arm_then_arm_status_in_separate_processes():
    sim = start_sim_arm("--profile", "x5")
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        status = run_cli("arm", "--port", path, "status")
        assert status.returncode == 0, status.stderr
        assert "joint1" in status.stdout and "gripper width" in status.stdout and "NO REPLY" not in status.stdout
        damp = run_cli("arm", "--port", path, "damp")
        assert damp.returncode == 0, damp.stderr
    finally:
        stop_sim_arm(sim)


def test_arm_sim_home(capsys):
    assert main(["arm", "--sim", "home"]) == 0
    assert "home reached" in capsys.readouterr().out


def test_silent_motor_status_is_an_error():
    sim = start_sim_arm("--faults", "silent=7")
    try:
        path = sim.stdout.readline().strip()
        status = run_cli("arm", "--port", path, "status")
        assert status.returncode == 2
        assert "NO REPLY" in status.stdout and status.stderr.strip().endswith("(is the arm powered?)")
        assert len(status.stderr.strip().splitlines()) == 1
    finally:
        stop_sim_arm(sim, signal.SIGTERM)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["arm", "--port", "/dev/nonexistent-arm", "status"], "/dev/nonexistent-arm"),
        (["arm", "--sim", "--profile", "x9", "status"], "unknown arm profile 'x9'"),
        (["sim-arm", "--faults", "dorp=0.1"], "did you mean 'drop'"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
