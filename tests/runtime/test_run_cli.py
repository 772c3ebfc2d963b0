"""`chatvla2 run` end to end on two simulated arms (real serial path), and its Ctrl-C path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN = ["-m", "chatvla2", "run"]  # the real command


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_on_sim_for_a_few_seconds(tiny_bundle, tmp_path):
    telemetry = tmp_path / "run.jsonl"
    result = subprocess.run([sys.executable, *RUN, str(tiny_bundle), "--robot", "sim", "--duration", "3", "--threads", "1",
                             "--telemetry", str(telemetry)], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = _summary(result.stdout)
    assert summary["stop_reason"] == "duration reached" and summary["damped"]
    assert summary["steps_sent"] >= 120 and summary["inferences"] >= 2
    assert summary["interventions"]["left"]["faults"] == 0
    events = [json.loads(line)["event"] for line in telemetry.read_text().splitlines()]
    assert events.count("step") >= 120 and events[-1] == "disconnected"


def test_sigint_damps_disables_and_flushes(tiny_bundle, tmp_path):
    telemetry = tmp_path / "run.jsonl"
    process = subprocess.Popen([sys.executable, *RUN, str(tiny_bundle), "--robot", "sim", "--threads", "1", "--telemetry", str(telemetry)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the loop runs (steps in the telemetry)
            if telemetry.exists() and telemetry.stat().st_size > 0 or process.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stdout[-2000:] + stderr[-3000:]
    summary = _summary(stdout)
    assert summary["stop_reason"] == "SIGINT" and summary["damped"] and summary["steps_sent"] > 0
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    stop = next(r for r in records if r["event"] == "stop")
    assert stop["reason"] == "SIGINT" and stop["damped"]
    assert records[-1]["event"] == "disconnected"  # disabled after damping, log complete
    assert elapsed < 15  # damping 2 s + disable, not a hang
