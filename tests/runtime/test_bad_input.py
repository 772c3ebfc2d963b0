"""Bad input to the runtime: a clear error naming what was wrong; on the robot, the arms damped and
the run's log kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from contract.bundle import BundleError
from contract.scene import sample_observation
from runtime.policy import Policy



def _observation(**change):
    frames, instruction, state = sample_observation(2)
    return {"images": frames, "instruction": instruction, "state": state, "seed": 0, **change}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"images": sample_observation(2)[0][:1]}, r"expected 2 camera view\(s\), got 1"),
        ({"images": [np.zeros((240, 320), np.uint8)] * 2}, r"camera view 0: expected an \(H, W, 3\) RGB image"),
        ({"images": [np.zeros((0, 320, 3), np.uint8)] * 2}, r"camera view 0: .* at least 2 x 2 pixels, got shape \(0, 320, 3\)"),
        ({"images": [np.zeros((240, 320, 3), np.float32)] * 2}, r"camera view 0: expected uint8 pixels"),
        ({"state": np.zeros(7, np.float32)}, r"state has shape \(7,\), expected \(14,\)"),
        ({"state": np.full(14, np.nan, np.float32)}, r"state has non-finite values"),
    ],
)
def test_bad_observations_are_named(policy, change, message):
    with pytest.raises(ValueError, match=message):
        policy.infer(_observation(**change))


def test_a_missing_engine_file_is_named(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "decode.onnx").unlink()
    with pytest.raises(BundleError, match="decode.onnx is listed in the manifest but missing"):
        Policy.from_bundle(copy, backend="onnxruntime")


def _run(args, tmp_path, timeout=180):
    return subprocess.run([sys.executable, "-m", "chatvla2", "run", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=timeout)


def test_run_refuses_a_tampered_bundle_before_touching_the_arms(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "action_head.onnx", "ab") as f:
        f.write(b"\0")
    result = _run(["--bundle", str(copy), "--robot", "sim", "--duration", "1"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "action_head.onnx does not match the manifest" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("args, message", [
    (["--sim-faults", "middle:unplug=1"], "expected left:SPEC or right:SPEC"),
    (["--sim-faults", "left:explode=1"], "explode"),
    (["--port", "/dev/ttyACM0"], "--port is given twice"),
    (["--robot", "arx", "--sim-faults", "left:unplug=1"], "simulated faults are for the simulated robot"),
    (["--robot", "arx"], "--robot arx needs two adapters"),
])
def test_run_argument_errors_are_one_line(tiny_bundle, tmp_path, args, message):
    result = _run([str(tiny_bundle), "--duration", "1", *args], tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_cable_pulled_mid_run_damps_the_other_arm_and_keeps_the_log(tiny_bundle, tmp_path):
    """The left arm's adapter disappears 2 s after it connected: the loop stops on the robot fault,
    the robot is damped, both arms are disconnected (the right one damped, then disabled), the
    telemetry keeps every step up to the fault and the exit code says it failed."""
    telemetry = tmp_path / "run.jsonl"
    result = _run(["--bundle", str(tiny_bundle), "--robot", "sim", "--duration", "20", "--threads", "1",
                   "--sim-faults", "left:unplug=2", "--telemetry", str(telemetry)], tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["stop_reason"].startswith("robot error"), summary["stop_reason"]
    assert summary["damped"] and summary["duration_s"] < 15 and summary["steps_sent"] > 0
    assert summary["interventions"]["left"]["faults"] == 1 and summary["interventions"]["right"]["faults"] == 0
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    stop = next(r for r in records if r["event"] == "stop")
    assert stop["reason"].startswith("robot error")
    assert records[-1]["event"] == "disconnected"
    assert sum(r["event"] == "step" for r in records) >= summary["steps_sent"]
