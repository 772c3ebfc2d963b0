"""Export of the tiny model: every precision, a per-engine plan, parity, determinism, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from export.bundle import decode_moe_form, export_bundle
from export.calibration_data import load_engine_inputs, record_engine_inputs, save_engine_inputs
from export.lint import lint_bundle
from export.manifest import BundleError, load_manifest, sha256_file
from export.parity import ParityError
from export.precision import parse_plan
from export import thresholds
from runtime.onnxruntime_session import create_session

from .conftest import tiny_model

ENGINES = {"vision", "prefill", "decode", "action_head"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "chatvla2", *args], capture_output=True, text=True, timeout=900)


def assert_lint_clean(bundle):
    findings = lint_bundle(bundle)
    errors = {e: [f for f in fs if f.severity == "error"] for e, fs in findings.items()}
    assert not any(errors.values()), errors


def standard_ops_only(bundle, manifest):
    for engine in manifest["engines"].values():
        graph = onnx.load(str(bundle / engine["file"]))
        domains = {n.domain for n in graph.graph.node}
        assert domains <= {"", "ai.onnx"}, domains
        ops = {n.op_type for n in graph.graph.node}
        assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "MatMulNBits", "QLinearMatMul"}


# ---- fp32 through the real command ---------------------------------------------------------
def test_fp32_bundle_is_complete_verified_and_lint_clean(fp32_bundle):
    manifest = load_manifest(fp32_bundle)
    assert set(manifest["engines"]) == ENGINES
    assert {"tokenizer.json", "normalization.json", "embeddings.safetensors"} <= set(manifest["files"])
    assert manifest["moe_implementation"] == {"prefill": "dense", "decode": "gather"}
    for name, engine in manifest["engines"].items():
        assert engine["precision"] == "fp32" and engine["opset"] == 21
        assert engine["parity"]["cosine"] >= thresholds.BUDGETS["fp32"].cosine_min
        assert engine["targets"] == ["hopper", "orin", "thor"]
    prefill = manifest["engines"]["prefill"]
    assert prefill["inputs"][0] == {"name": "embeddings", "shape": [1, "prompt_length", 64], "dtype": "float32"}
    assert prefill["profiles"]["embeddings"]["max"][1] == 191
    assert manifest["engines"]["vision"]["inputs"][0]["shape"][0] == "views"
    decode = manifest["engines"]["decode"]
    assert all(isinstance(d, int) for spec in decode["inputs"] for d in spec["shape"]), "decode must be static"
    assert {o["name"] for o in decode["outputs"]} == {"logits", "hidden", "new_keys", "new_values"}
    assert_lint_clean(fp32_bundle)
    standard_ops_only(fp32_bundle, manifest)


def test_lint_command_on_the_bundle(fp32_bundle):
    result = run_cli("lint", str(fp32_bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vision: ok" in result.stdout


def test_fp32_export_is_deterministic(fp32_bundle, tmp_path):
    """The same weights exported again (fresh trace, no cache) give byte-identical files."""
    manifest = export_bundle(tiny_model(), tmp_path / "again", parse_plan("fp32"), log=lambda *_: None)
    first = load_manifest(fp32_bundle)["files"]
    assert load_manifest(tmp_path / "again")["files"] == first
    assert manifest["engines"]["action_head"]["parity"] == load_manifest(fp32_bundle)["engines"]["action_head"]["parity"]


def test_tampering_with_one_byte_is_detected(fp32_bundle, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, copy)
    data = bytearray((copy / "prefill.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "prefill.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="prefill.onnx does not match the manifest"):
        load_manifest(copy)
    result = run_cli("lint", str(copy))
    assert result.returncode == 2
    assert "prefill.onnx does not match the manifest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---- every precision and the plan form (trace cache shared) --------------------------------
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4", "fp8"])
def test_export_at_each_precision_meets_its_budget(precision, trace_cache, tmp_path):
    bundle = tmp_path / precision
    manifest = export_bundle(
        tiny_model(), bundle, parse_plan(precision), log=lambda *_: None, calibration_samples=2, trace_cache=trace_cache
    )
    load_manifest(bundle)
    assert_lint_clean(bundle)
    standard_ops_only(bundle, manifest)
    for name, engine in manifest["engines"].items():
        budget = thresholds.budget_for(engine["precision"], name)
        assert engine["parity"]["cosine"] >= budget.cosine_min
        assert engine["parity"]["relative_error"] <= budget.relative_error_max
    engines = manifest["engines"]
    if precision == "fp16":
        assert all(e["precision"] == "fp16" and e["low_precision_weight_fraction"] > 0.9 for e in engines.values())
        graph = onnx.load(str(bundle / "vision.onnx"))
        assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept fp32
    if precision in ("int8", "fp8"):
        graph = onnx.load(str(bundle / "vision.onnx"))
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
        assert engines["vision"]["low_precision_weight_fraction"] == 1.0
        assert "router" in engines["prefill"]["kept_fp32"]
    if precision == "fp8":
        assert manifest["targets"] == ["hopper", "thor"]  # Orin has no FP8
    if precision == "int4":
        assert {e: engines[e]["precision"] for e in ENGINES} == {"vision": "int8", "prefill": "int4", "decode": "int4", "action_head": "fp16"}
        assert manifest["moe_implementation"]["decode"] == "dense"
        graph = onnx.load(str(bundle / "prefill.onnx"))
        int4 = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT4]
        assert int4, "no INT4 weights in the int4 prefill graph"
        assert engines["prefill"]["low_precision_weight_fraction"] > 0.9
        assert (bundle / "prefill.onnx").stat().st_size < 0.4 * traced_size(trace_cache, "prefill-dense")


def traced_size(cache, name):
    return next(cache.rglob(f"{name}.onnx")).stat().st_size


def test_plan_form_and_both_moe_forms(trace_cache, tmp_path):
    plan = parse_plan("vision=fp16,prefill=int4,decode=int8,action_head=fp32")
    for moe in ("gather", "dense"):
        manifest = export_bundle(
            tiny_model(), tmp_path / moe, plan, moe=moe, log=lambda *_: None, calibration_samples=2, trace_cache=trace_cache
        )
        assert manifest["moe_implementation"] == {"prefill": moe, "decode": moe}
        assert {n: e["precision"] for n, e in manifest["engines"].items()} == plan
        assert manifest["plan"] == plan
    # Only the dense form's experts are quantized: measured, not assumed.
    gather = load_manifest(tmp_path / "gather")["engines"]["prefill"]["low_precision_weight_fraction"]
    dense = load_manifest(tmp_path / "dense")["engines"]["prefill"]["low_precision_weight_fraction"]
    assert dense > 0.9 > 0.5 > gather


def test_exported_graphs_run_the_reference_pipeline(fp32_bundle):
    """The bundle's engines, chained by hand in numpy, reproduce `ChatVLA2.act`'s action chunk."""
    from models.sample_observation import sample_observation

    model = tiny_model().eval()
    inputs = record_engine_inputs(model, samples=1, seed=5, decode_steps=1)
    session = create_session(fp32_bundle / "action_head.onnx")
    out = session.run(None, {k: v for k, v in inputs["action_head"].items()})[0]
    import torch

    with torch.no_grad():
        expected = model.action_head.sample(*(torch.from_numpy(inputs["action_head"][k]) for k in ("o", "r", "state", "noise")))
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)
    frames, _, _ = sample_observation(2)
    assert out.shape == (1, 50, 14) and len(frames) == 2


# ---- bad input ------------------------------------------------------------------------------
def test_unknown_precision_and_plan_errors():
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        parse_plan("int3")
    with pytest.raises(ValueError, match="unknown engine 'llm'"):
        parse_plan("llm=int4")
    with pytest.raises(ValueError, match="unknown precision 'bf8' for decode"):
        parse_plan("decode=bf8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "tiny", "--precision", "int3"], "unknown precision 'int3'"),
        (["--config", "tinyy"], "did you mean 'tiny'"),
        (["--checkpoint", "/nonexistent/ckpt"], "checkpoint directory not found"),
    ],
)
def test_command_refuses_bad_input_in_one_line(args, message, tmp_path):
    result = run_cli("export", *args, "--out", str(tmp_path / "bundle"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bundle").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("export", "--config", "tiny", "--out", str(blocker / "bundle"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    existing = tmp_path / "precious"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    result = run_cli("export", "--config", "tiny", "--out", str(existing))
    assert result.returncode == 2 and "is not a bundle" in result.stderr
    assert (existing / "notes.txt").read_text() == "keep me"


def test_a_missed_budget_fails_and_leaves_nothing(monkeypatch, trace_cache, tmp_path):
    impossible = thresholds.ParityBudget(cosine_min=1.5, relative_error_max=0.0)
    monkeypatch.setitem(thresholds.BUDGETS, "fp32", impossible)
    with pytest.raises(ParityError, match=r"vision \(fp32\): cosine .* below the budget 1.5"):
        export_bundle(tiny_model(), tmp_path / "bundle", parse_plan("fp32"), log=lambda *_: None, trace_cache=trace_cache)
    assert list(tmp_path.iterdir()) == [], "the staging directory was left behind"


def test_calibration_file_round_trip_and_errors(tmp_path):
    model = tiny_model()
    inputs = record_engine_inputs(model, samples=2, seed=1)
    assert inputs["prefill"]["embeddings"].shape[0] == 2  # two samples along axis 0
    assert inputs["decode"]["key_cache"].shape[0] == 2 * 3 * model.cfg.language.layers
    path = tmp_path / "calibration.npz"
    save_engine_inputs(path, inputs)
    expected = {e: {n: a.shape for n, a in arrays.items()} for e, arrays in record_engine_inputs(model, 1, 0).items()}
    loaded = load_engine_inputs(path, expected)
    assert np.array_equal(loaded["vision"]["pixels"], inputs["vision"]["pixels"])
    np.savez(tmp_path / "partial.npz", **{"vision.pixels": inputs["vision"]["pixels"]})
    with pytest.raises(ValueError, match="missing 'prefill.embeddings'"):
        load_engine_inputs(tmp_path / "partial.npz", expected)


def test_decode_moe_form_follows_bytes_per_token():
    assert decode_moe_form("fp32") == "gather" and decode_moe_form("fp16") == "gather"
    assert decode_moe_form("int4") == "dense"
