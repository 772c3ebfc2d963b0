"""Bad input to the runtime: a clear error naming what was wrong; on the robot, the arms damped and
the run's log kept."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from chatvla2.contract.bundle import BundleError, load_manifest, sha256_file
from chatvla2.contract.scene import sample_observation
from chatvla2.runtime.policy import Policy


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
    (["--sim-faults", "left:"], "no fault after 'left:'"),
    (["--sim-faults", "right: , "], "no fault after 'right:'"),
    (["--port", "/dev/ttyACM0"], "--port is given twice"),
    (["--robot", "arx", "--sim-faults", "left:unplug=1"], "simulated faults are for the simulated robot"),
    (["--sim-log", "/nonexistent"], "--sim-log /nonexistent: not a folder"),
    (["--robot", "arx", "--port", "/dev/null", "--port", "/dev/null", "--sim-log", "."], "--sim-log is the simulated arms' own log"),
    (["--robot", "arx"], "--robot arx needs two adapters"),
    (["--duration", "-1"], "--duration must be positive, got -1"),
    (["--duration", "0"], "--duration must be positive, got 0"),
    (["--duration", "nan"], "--duration must be a finite number of seconds, got nan"),
    (["--rate", "0"], "--rate must be within 1..1000 Hz, got 0"),
    (["--rate", "2000"], "--rate must be within 1..1000 Hz"),
    (["--rate", "nan"], "--rate must be a finite number"),
    (["--hold", "nan"], "--hold must be a finite number"),
    (["--threads", "-3"], "--threads must be >= 1"),
    (["--max-joint-speed", "nan"], "--max-joint-speed must be a positive number"),
    (["--feedback-timeout", "0"], "--feedback-timeout must be within (0, 1] seconds"),
    (["--feedback-timeout", "nan"], "--feedback-timeout must be within (0, 1] seconds"),
    (["--robot", "arx", "--port", "/dev/null", "--port", "/dev/null", "--feedback-timeout", "5"], "--feedback-timeout must be within"),
    (["--profile", "bogus"], "unknown arm profile 'bogus'"),  # not "the simulated arm did not start"
    (["--robot", "arx", "--port", "/dev/null", "--port", "/dev/null", "--profile", "x6"], "unknown arm profile 'x6'"),
    (["--engines", "/nonexistent"], "engines directory not found: /nonexistent"),
    (["--camera", "webcam0", "--camera", "static"], "webcam0"),
    # after the policy loads, before the arms: a camera that does not open, or one view for two
    (["--camera", "v4l2:/dev/nonexistent", "--camera", "static"], "camera v4l2:/dev/nonexistent"),
    (["--camera", "static"], "2 camera view"),
])
def test_run_argument_errors_are_one_line(tiny_bundle, tmp_path, args, message):
    """One line, exit 2, refused before the policy loads or anything starts: no output, no
    telemetry, no simulator (an unknown profile used to surface, after loading and warming up,
    as "the simulated arm did not start")."""
    args = ["--duration", "1", *args] if "--duration" not in args else args
    result = _run([str(tiny_bundle), *args], tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == "", result.stdout  # not even "policy: ..."
    assert not (tmp_path / "runs").exists()


def _tampered(tiny_bundle, tmp_path, rehash=(), **manifest_changes):
    """A copy of the bundle with its manifest changed; `rehash`: files whose sha256 is recorded
    anew (a change the hashes cannot see)."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(manifest_changes)
    for name in rehash:
        manifest["files"][name] = sha256_file(copy / name)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy, manifest


@pytest.mark.parametrize("manifest_text, message", [
    ("[]", "expected a JSON object, found list"),
    ('{"schema_version": 1, "engines": {}, "files": null, "model_config": {}}', "'files' must be an object, found NoneType"),
    ('{"schema_version": 1, "engines": {}, "files": {"a.onnx": 5}, "model_config": {}}', "expected its sha256 as a string"),
    ('{"schema_version": 1, "engines": {"vision": []}, "files": {}, "model_config": {}}', "engine 'vision' must be an object"),
    ('{"schema_version": 1, "engines": {}, "files": {"../x": "0"}, "model_config": {}}', "expected a file name inside the bundle"),
])
def test_malformed_manifests_are_bundle_errors(tiny_bundle, tmp_path, manifest_text, message):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").write_text(manifest_text)
    with pytest.raises(BundleError, match=re.escape(message)):
        load_manifest(copy)


def test_run_refuses_a_manifest_that_is_a_list_in_one_line(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").write_text("[]")
    result = _run([str(copy), "--duration", "1"], tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "expected a JSON object, found list" in result.stderr


def test_every_file_the_runtime_reads_must_be_hash_checked(tiny_bundle, tmp_path):
    """A file the runtime reads that the manifest's `files` does not list would be used unchecked."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    for name in ("tokenizer.json", "decode.onnx", "embeddings.safetensors", "normalization.json"):
        files = {k: v for k, v in manifest["files"].items() if k != name}
        copy, _ = _tampered(tiny_bundle, tmp_path / name, files=files)
        with pytest.raises(BundleError, match=f"{re.escape(name)} is read by the runtime but not listed"):
            Policy.from_bundle(copy, backend="onnxruntime")
    # an engine's external data file, named by the engine but not listed
    engines = json.loads(json.dumps(manifest["engines"]))
    engines["prefill"]["data_files"] = ["prefill.onnx.data"]
    copy, _ = _tampered(tiny_bundle, tmp_path / "data", engines=engines)
    (copy / "prefill.onnx.data").write_bytes(b"weights")
    with pytest.raises(BundleError, match="prefill.onnx.data is read by the runtime but not listed"):
        Policy.from_bundle(copy, backend="onnxruntime")
    # a graph or external-data file present in the directory but not listed
    for stray in ("extra.onnx", "vision.onnx.data"):
        copy = tmp_path / f"stray-{stray}"
        shutil.copytree(tiny_bundle, copy)
        (copy / stray).write_bytes(b"\0")
        with pytest.raises(BundleError, match=f"{re.escape(stray)} is in the bundle but not listed"):
            Policy.from_bundle(copy, backend="onnxruntime")


def test_a_corrupt_embeddings_header_is_a_bundle_error(tiny_bundle, tmp_path):
    """A safetensors header that is valid JSON but not a tensor table (hash recorded anew, so only
    the reader can tell): a BundleError naming the file; `run` says it in one line."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = (copy / "embeddings.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    entry = header["token_embedding"]
    del entry["data_offsets"]
    text = json.dumps(header).encode()
    (copy / "embeddings.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["embeddings.safetensors"] = sha256_file(copy / "embeddings.safetensors")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="embeddings.safetensors is not a readable safetensors file"):
        Policy.from_bundle(copy, backend="onnxruntime")
    result = _run([str(copy), "--duration", "1"], tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "embeddings.safetensors is not a readable safetensors file" in result.stderr, result.stderr


# ---- chatvla2 bench --------------------------------------------------------------------------
def _bench(args, tmp_path, timeout=180):
    return subprocess.run([sys.executable, "-m", "chatvla2", "bench", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--tokens", "-5"], "--tokens must be >= 1, got -5"),
    (["--runs", "0"], "--runs must be >= 1, got 0"),
    (["--threads", "-3"], "--threads must be >= 1"),
    (["--reference", "--config", "small"], "the reference (--config small) is not the bundle's model"),
])
def test_bench_argument_errors_are_one_line(tiny_bundle, tmp_path, args, message):
    result = _bench([str(tiny_bundle), *args], tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""  # refused before timing anything


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
