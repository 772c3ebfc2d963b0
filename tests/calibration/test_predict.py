"""`chatvla2 calibrate predict` (calibration/predict.py, graph_count.py, targets.py): bytes and FLOPs
counted from ONNX graphs, the bound on each target, the analytic count that predicts the paper
preset, and the GR00T N1.6 anchors.

Hand-built graphs check the counting rules exactly (a MatMul's 2*M*N*K, an expert stack read
top_k/num_experts through Gather, a weight re-read by every node that uses it, a Q/DQ product in
int8); the session's tiny bundle (`tiny_bundle`, tests/conftest.py) checks the analytic count
against the graph count and runs the command end to end; the paper preset is checked against
`chatvla2 info`'s parameter counts (built on the meta device) and GR00T's measured latencies.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chatvla2.calibration import predict
from chatvla2.calibration.graph_count import count_graph
from chatvla2.calibration.predict import (
    analytic_counts,
    engine_bound,
    predict_bundle,
    predict_config,
)
from chatvla2.calibration.predict_config import PredictConfig
from chatvla2.calibration.roofline import decode_traffic
from chatvla2.calibration.targets import H100, ORIN, TARGETS, THOR, get_target, parse_targets
from chatvla2.contract.bundle import ENGINE_NAMES, bundle_model_config, load_manifest
from chatvla2.contract.command_config import parse_config
from chatvla2.contract.config import get_config
from chatvla2.export.precision import TARGETS as PRECISION_TARGETS

REPO = Path(__file__).resolve().parents[2]
# The analytic count against the graph count, per engine (measured: tiny fp32 bytes within 2.0%,
# FLOPs equal; small fp32 bytes within 0.03%, FLOPs equal).
BYTES_TOLERANCE = 0.03
FLOPS_TOLERANCE = 0.001


# ------------------------------------------------------------------------------ hand-built graphs
def _save(tmp_path: Path, nodes, inputs, outputs, initializers=(), name="g.onnx") -> tuple[Path, dict]:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path = tmp_path / name
    onnx.save(model, str(path))
    entry = {"precision": "fp32", "profiles": {},
             "inputs": [{"name": i.name, "shape": [d.dim_value for d in i.type.tensor_type.shape.dim],
                         "dtype": "int64" if i.type.tensor_type.elem_type == TensorProto.INT64 else "float32"} for i in inputs]}
    return path, entry


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _weight(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)


def test_matmul_gemm_einsum_flops_are_exact(tmp_path):
    # x (2, 3, 4, 5) @ W (5, 6); Gemm (4, 6) x W2^T with W2 (7, 6), transB; Einsum b,i,j x b,j,k.
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Gemm", ["a", "w2"], ["z"], transB=1),
        helper.make_node("Einsum", ["p", "q"], ["r"], equation="bij,bjk->bik"),
        helper.make_node("MatMul", ["y", "t"], ["s"]),  # two activations: y (2,3,4,6) @ t (3,6,2)
    ]
    inputs = [_f32("x", [2, 3, 4, 5]), _f32("a", [4, 6]), _f32("p", [2, 3, 4]), _f32("q", [2, 4, 5]), _f32("t", [3, 6, 2])]
    outputs = [_f32("s", None), _f32("z", None), _f32("r", None)]
    path, entry = _save(tmp_path, nodes, inputs, outputs, [_weight("w", (5, 6)), _weight("w2", (7, 6))])
    count = count_graph(path, entry, num_experts=8, top_k=2)
    expected = 2 * (2 * 3) * 4 * 5 * 6 + 2 * 4 * 7 * 6 + 2 * (2 * 3 * 4 * 5) + 2 * (2 * 3) * 4 * 6 * 2
    assert count["flops"] == expected and count["flops_by_class"] == {"fp32": expected}
    assert count["matmuls"] == 4 and count["unshaped_matmuls"] == 0
    assert count["weight_bytes"] == (5 * 6 + 7 * 6) * 4
    io = (2 * 3 * 4 * 5 + 4 * 6 + 2 * 3 * 4 + 2 * 4 * 5 + 3 * 6 * 2) + (2 * 3 * 4 * 2 + 4 * 7 + 2 * 3 * 5)
    assert count["io_bytes"] == io * 4 and count["bytes"] == count["weight_bytes"] + count["io_bytes"]


def test_dynamic_input_is_bound_to_the_opt_shape(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "tokens", 8])
    path, entry = _save(tmp_path, nodes, [x], [_f32("y", None)], [_weight("w", (8, 16))])
    entry["inputs"][0]["shape"] = [1, "tokens", 8]
    entry["profiles"] = {"x": {"min": [1, 1, 8], "opt": [1, 10, 8], "max": [1, 20, 8]}}
    assert count_graph(path, entry, 8, 2)["flops"] == 2 * 10 * 8 * 16
    assert count_graph(path, entry, 8, 2, shapes={"x": [1, 3, 8]})["flops"] == 2 * 3 * 8 * 16
    del entry["profiles"]["x"]
    with pytest.raises(ValueError, match="dynamic dimension"):
        count_graph(path, entry, 8, 2)


def _expert_graph(tmp_path, quantized: bool, gathered: bool):
    """An expert stack (8, 16, 32) multiplied by x (1, 32, 1): its top-2 gathered, or all of it."""
    stack = (8, 16, 32)
    nodes, inits = [], []
    if quantized:
        inits += [_weight("stack_q", stack, np.int8), numpy_helper.from_array(np.float32(0.1), "scale"),
                  numpy_helper.from_array(np.int8(0), "zero")]
        nodes.append(helper.make_node("DequantizeLinear", ["stack_q", "scale", "zero"], ["stack"]))
    else:
        inits.append(_weight("stack", stack))
    inputs = [_f32("x", [1, 32, 1])]
    if gathered:
        inputs.append(helper.make_tensor_value_info("chosen", TensorProto.INT64, [2]))
        nodes += [helper.make_node("Gather", ["stack", "chosen"], ["experts"], axis=0),
                  helper.make_node("MatMul", ["experts", "x"], ["y"])]
    else:
        nodes.append(helper.make_node("MatMul", ["stack", "x"], ["y"]))
    return _save(tmp_path, nodes, inputs, [_f32("y", None)], inits, name=f"experts-{quantized}-{gathered}.onnx")


@pytest.mark.parametrize("quantized", [False, True])
def test_gathered_experts_read_top_k_of_num_experts(tmp_path, quantized):
    itemsize = 1 if quantized else 4
    stack_bytes = 8 * 16 * 32 * itemsize
    small = 4 + 1 if quantized else 0  # scale and zero point
    gathered = count_graph(*_expert_graph(tmp_path, quantized, gathered=True), num_experts=8, top_k=2)
    assert gathered["weight_bytes"] == stack_bytes * 2 // 8 + small
    assert gathered["flops"] == 2 * 2 * 16 * 32  # two experts' matrix-vector products
    dense = count_graph(*_expert_graph(tmp_path, quantized, gathered=False), num_experts=8, top_k=2)
    assert dense["weight_bytes"] == stack_bytes + small  # the dense form reads every expert
    assert dense["flops"] == 2 * 8 * 16 * 32
    # the same rule as the decode roofline (calibration/roofline.py)
    from chatvla2.calibration.roofline import _weight_bytes_read

    assert _weight_bytes_read(tmp_path / f"experts-{quantized}-True.onnx", 8, 2) == gathered["weight_bytes"]


def test_a_weight_is_read_by_every_node_that_uses_it(tmp_path):
    """An unrolled denoising loop: one initializer, three MatMuls, three reads."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h1"]), helper.make_node("MatMul", ["h1", "w"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w"], ["y"])]
    path, entry = _save(tmp_path, nodes, [_f32("x", [4, 16])], [_f32("y", None)], [_weight("w", (16, 16))])
    count = count_graph(path, entry, 8, 2)
    assert count["weight_bytes"] == 3 * 16 * 16 * 4 and count["stored_weight_bytes"] == 16 * 16 * 4
    assert count["flops"] == 3 * 2 * 4 * 16 * 16


def test_qdq_product_runs_in_int8_weight_only_in_float(tmp_path):
    q = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "zp")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),  # both operands quantized: int8
        helper.make_node("MatMul", ["y", "wd"], ["y2"]),  # weight-only: the activation's float type
    ]
    path, entry = _save(tmp_path, nodes, [_f32("x", [4, 8])], [_f32("y2", None)], [_weight("wq", (8, 8), np.int8), *q])
    count = count_graph(path, entry, 8, 2)
    assert count["flops_by_class"] == {"int8": 2 * 4 * 8 * 8, "fp32": 2 * 4 * 8 * 8}
    # the int8 weight read at one byte per element by each of its two products
    assert count["weight_bytes"] == 2 * 64 + 3 * (4 + 1)


# ------------------------------------------------------------------------------ targets and bounds
def test_targets_follow_export_precision_targets():
    for target in TARGETS.values():
        assert set(target.precisions) == {p for p, where in PRECISION_TARGETS.items() if target.arch in where}
    assert "fp8" not in ORIN.precisions and "fp8" in THOR.precisions and "fp8" in H100.precisions
    assert "fp8" not in ORIN.peak_tflops and "fp4" not in ORIN.peak_tflops
    assert ORIN.bandwidth_gbs == 204.8 and THOR.bandwidth_gbs == 273 and H100.bandwidth_gbs == 3350
    assert ORIN.peak_tflops["int8"] == pytest.approx(85.5) and ORIN.peak_tflops["fp16"] == pytest.approx(42.75)
    assert THOR.peak_tflops["fp8"] == pytest.approx(517.5) and THOR.peak_tflops["fp16"] == pytest.approx(258.75)
    assert H100.peak_tflops == {"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "int8": 1979.0, "fp8": 1979.0}
    for target in TARGETS.values():
        assert target.sources and set(target.peak_tflops) <= set(target.derivation)
    assert [t.name for t in parse_targets(["thor", "orin,h100", "thor"])] == ["thor", "orin", "h100"]
    assert [t.name for t in parse_targets(None)] == ["orin", "thor", "h100"]
    with pytest.raises(ValueError, match="unknown target 'oren'.*did you mean 'orin'"):
        get_target("oren")


def test_bound_is_memory_or_compute_whichever_is_longer():
    memory_heavy = {"bytes": 204.8e9 / 1000, "flops_by_class": {"fp16": 1e9}}  # 1 ms of Orin's bandwidth
    bound = engine_bound(memory_heavy, ORIN, "fp16")
    assert bound["limit"] == "memory" and bound["ms"] == pytest.approx(1.0)
    assert bound["compute_ms"] == pytest.approx(1e9 / 42.75e12 * 1e3, rel=1e-3)
    compute_heavy = {"bytes": 1e6, "flops_by_class": {"fp16": 42.75e12 / 100, "int8": 85.5e12 / 100}}  # 10 + 10 ms
    bound = engine_bound(compute_heavy, ORIN, "int8")
    assert bound["limit"] == "compute" and bound["ms"] == pytest.approx(20.0)
    # an fp32 product: bounded by the TF32 tensor-core rate, the faster path TensorRT may take
    assert engine_bound({"bytes": 0, "flops_by_class": {"fp32": 21.375e12 / 1000}}, ORIN, "fp32")["ms"] == pytest.approx(1.0)
    unsupported = engine_bound(memory_heavy, ORIN, "fp8")
    assert unsupported["ms"] is None and unsupported["limit"] == "unsupported" and "fp8" in unsupported["why"]
    assert engine_bound(memory_heavy, THOR, "fp8")["ms"] == pytest.approx(204.8 / 273, rel=1e-3)


# ------------------------------------------------------------------------- the tiny bundle's graphs
@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    manifest = load_manifest(tiny_bundle, verify_hashes=False)
    cfg = bundle_model_config(tiny_bundle, manifest)
    counts = {e: count_graph(tiny_bundle / manifest["engines"][e]["file"], manifest["engines"][e],
                             cfg.language.moe.num_experts, cfg.language.moe.top_k) for e in ENGINE_NAMES}
    return tiny_bundle, manifest, cfg, counts


def test_tiny_graph_count_agrees_with_the_analytic_count(tiny):
    bundle, manifest, cfg, counts = tiny
    plan = {e: manifest["engines"][e]["precision"] for e in ENGINE_NAMES}
    prompt = manifest["engines"]["prefill"]["profiles"]["embeddings"]["opt"][1]
    assert prompt == predict.default_prompt_length(cfg)
    analytic = analytic_counts(cfg, plan, manifest["moe_implementation"], prompt)
    for engine in ENGINE_NAMES:
        graph, model = counts[engine], analytic[engine]
        assert graph["unshaped_matmuls"] == 0, engine
        assert model["bytes"] == pytest.approx(graph["bytes"], rel=BYTES_TOLERANCE), engine
        assert model["flops"] == pytest.approx(graph["flops"], rel=FLOPS_TOLERANCE), engine
        assert model["io_bytes"] == graph["io_bytes"], engine


def test_tiny_graph_count_sees_the_moe_forms_and_the_unrolled_steps(tiny):
    bundle, manifest, cfg, counts = tiny
    assert manifest["moe_implementation"] == {"prefill": "dense", "decode": "gather"}
    # decode (gather): only the chosen experts' bytes, as the decode roofline counts them
    roof = decode_traffic(bundle, manifest)
    assert counts["decode"]["weight_bytes"] == pytest.approx(roof["weight_bytes"], rel=0.01)
    assert counts["decode"]["io_bytes"] >= roof["cache_bytes"]  # the whole static KV cache is read
    lm = cfg.language
    experts = lm.layers * 3 * lm.hidden * lm.intermediate * lm.moe.num_experts * 4
    assert counts["decode"]["weight_bytes"] < experts * lm.moe.top_k / lm.moe.num_experts * 1.6
    # prefill (dense): every expert read and computed
    assert counts["prefill"]["weight_bytes"] > experts
    # the action head: the denoiser's weights read once per unrolled DDIM step
    one_step = analytic_counts(cfg, dict.fromkeys(ENGINE_NAMES, "fp32"), ddim_steps=1)["action_head"]
    steps = cfg.scheduler.inference_steps
    assert counts["action_head"]["weight_bytes"] > 0.9 * steps * one_step["weight_bytes"]
    assert counts["action_head"]["flops"] == pytest.approx(steps * one_step["flops"], rel=0.01)


def test_predict_bundle_step_and_control_budget(tiny):
    bundle, manifest, cfg, counts = tiny
    result = predict_bundle(bundle, ["orin", "h100"], tokens=5, query_every=10)
    assert list(result["targets"]) == ["orin", "h100"] and "measured" not in result["engines"]["vision"]
    for t in ("orin", "h100"):
        bounds = {e: result["engines"][e]["bounds"][t]["ms"] for e in ENGINE_NAMES}
        reuse = bounds["vision"] + bounds["prefill"] + bounds["action_head"]
        assert result["step_ms"][t]["reuse"] == pytest.approx(reuse, abs=2e-3)
        assert result["step_ms"][t]["every"] == pytest.approx(reuse + 5 * bounds["decode"], abs=2e-3)
        assert result["control"]["margin_ms"][t]["every"] == pytest.approx(200.0 - result["step_ms"][t]["every"], abs=1e-3)
    assert result["control"]["horizon_ms"] == 200.0 and result["control"]["chunk_size"] == 50
    # a tiny model at batch 1 is memory-bound everywhere
    assert all(result["engines"][e]["bounds"]["orin"]["limit"] == "memory" for e in ENGINE_NAMES)
    assert result["engines"]["decode"]["bytes"] == counts["decode"]["bytes"]


def test_cli_prints_table_then_json_with_measured_latency(tiny, capsys):
    bundle = tiny[0]
    assert _main([str(bundle), "--target", "orin,thor", "--target", "h100", "--runs", "1", "--threads", "1", "--tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])["predict"]
    text = "\n".join(lines[:-1])
    for word in ("engine", "precision", "MB read", "GFLOP", "orin ms", "thor ms", "h100 ms", "here ms", "memory",
                 "step, 4 tokens", "control:", "TensorRT", "does not carry"):
        assert word in text, word
    for engine in ENGINE_NAMES:
        assert result["engines"][engine]["measured"]["p50_ms"] > 0
    measured = {e: result["engines"][e]["measured"]["p50_ms"] for e in ENGINE_NAMES}
    assert result["measured_step_ms"]["every"] == pytest.approx(
        measured["vision"] + measured["prefill"] + measured["action_head"] + 4 * measured["decode"], abs=2e-3)
    assert "here" in result["control"]["margin_ms"]
    # the bound is a lower bound: the CPU here is far slower than any target's roofline
    for engine in ENGINE_NAMES:
        assert result["engines"][engine]["bounds"]["h100"]["ms"] < measured[engine]


# ------------------------------------------------------------------------------------ paper scale
def test_paper_analytic_count_reads_chatvla2_info_parameters():
    """At fp32 (4 bytes a weight) the analytic bytes are the parameters `chatvla2 info` counts
    (models/info.py on the meta device): vision all, prefill the whole language model (every
    expert, dense form), decode the parameters active per token, the action head all (one step)."""
    from chatvla2.models.info import build_for_counting, parameter_breakdown

    counts = parameter_breakdown(build_for_counting("paper"))
    cfg = get_config("paper")
    analytic = analytic_counts(cfg, dict.fromkeys(ENGINE_NAMES, "fp32"), ddim_steps=1)
    weights = {e: analytic[e]["weight_bytes"] / 4 for e in ENGINE_NAMES}
    language = sum(counts[k] for k in ("embedding", "attention", "moe_experts", "router", "dense_mlp", "norms"))
    assert weights["vision"] == pytest.approx(counts["vision"], rel=1e-3)
    assert weights["prefill"] == pytest.approx(language, rel=1e-3)
    assert weights["decode"] == pytest.approx(counts["active_per_token"] - counts["vision"] - counts["action_head"], rel=1e-3)
    assert weights["action_head"] == pytest.approx(counts["action_head"], rel=1e-3)
    assert sum(weights[e] for e in ("vision", "prefill", "action_head")) == pytest.approx(counts["total"], rel=1e-3)


def test_paper_bound_below_gr00t_n16_where_comparable():
    """GR00T N1.6 at 4 denoising steps (docs/reference/deploy.md): Orin 95 + 72 = 173 ms, Thor 38 + 49 = 92 ms.
    A lower bound must not exceed a measurement of a comparable model: ScaleDP-H (1B) at 4 steps
    against GR00T's TensorRT action head, and on Orin the step with the reasoning reused against
    GR00T's whole step."""
    result = predict_config("paper", "fp16", ["orin", "thor", "h100"], tokens=32, query_every=20)
    g = result["gr00t_n1_6"]
    assert g["denoising_steps"] == 4 and set(g) >= {"orin", "thor"} and "h100" not in g
    assert g["orin"]["action_head_bound_ms"] < 72 and g["thor"]["action_head_bound_ms"] < 49
    assert g["orin"]["step_reuse_bound_ms"] < 173
    # and not vacuous: the bound is within a factor of GR00T's measurements
    assert g["orin"]["action_head_bound_ms"] > 72 / 4 and g["orin"]["step_reuse_bound_ms"] > 173 / 4
    # with 32 reasoning tokens decoded at every query the step cannot fit 20 steps at 50 Hz on Orin
    assert result["control"]["fits"]["orin"]["every"] is False
    assert result["control"]["fits"]["h100"]["reuse"] is True
    # decode is memory-bound: ~2.7B parameters read per token at fp16 on Orin's 204.8 GB/s
    decode = result["engines"]["decode"]
    assert decode["bounds"]["orin"]["limit"] == "memory"
    assert decode["bounds"]["orin"]["ms"] == pytest.approx(decode["bytes"] / 204.8e9 * 1e3, rel=1e-3)
    assert 2.6e9 * 2 < decode["bytes"] < 2.9e9 * 2


def test_paper_fp8_does_not_run_on_orin():
    result = predict_config("paper", "fp8", None, tokens=32, query_every=20)
    assert result["step_ms"]["orin"] == {"every": None, "reuse": None}
    assert result["step_ms"]["thor"]["reuse"] < predict_config("paper", "fp16", ["thor"])["step_ms"]["thor"]["reuse"]
    assert "unsupported" in result["gr00t_n1_6"]["orin"]


def test_cli_config_paper(capsys):
    assert _main(["--config", "paper", "--target", "orin", "--no-measure"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])["predict"]
    assert result["model"] == "paper" and result["plan"] == dict.fromkeys(ENGINE_NAMES, "fp16")
    assert "GR00T N1.6" in "\n".join(out) and "here ms" not in "\n".join(out)


# ------------------------------------------------------------------------------------ bad input
def _main(argv):
    """The command on its options (PredictConfig checks them as it is built)."""
    return predict.main(parse_config(PredictConfig, argv))


def test_bad_input_is_a_one_line_error(tmp_path, tiny_bundle):
    with pytest.raises(FileNotFoundError, match="not found"):
        predict_bundle(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a bundle"):
        predict_bundle(tmp_path)
    with pytest.raises(ValueError, match="unknown target 'xavier'"):
        predict_bundle(tiny_bundle, ["xavier"])
    for tokens in (0, -3):
        with pytest.raises(ValueError, match="--tokens must be"):
            predict_bundle(tiny_bundle, tokens=tokens)
    with pytest.raises(ValueError, match="--query-every 60 is longer than the action chunk"):
        predict_config("tiny", "fp32", query_every=60)
    with pytest.raises(ValueError, match="unknown model preset"):
        predict_config("papr")
    with pytest.raises(ValueError, match="unknown precision"):
        predict_config("paper", "fp7")
    with pytest.raises(ValueError, match="one of them"):
        _main([])
    with pytest.raises(ValueError, match="one of them"):
        _main([str(tiny_bundle), "--config", "paper"])
    with pytest.raises(ValueError, match="--ddim-steps applies to --config only"):
        _main([str(tiny_bundle), "--ddim-steps", "4"])
    with pytest.raises(ValueError, match="--runs must be"):
        _main([str(tiny_bundle), "--runs", "0"])
    for error in (ValueError, FileNotFoundError):
        assert issubclass(error, (ValueError, LookupError, OSError))  # what the CLI prints as one line, exit 2


def test_cli_exit_code_2_and_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "chatvla2", "calibrate", "predict", str(tmp_path / "nope"), "--no-measure"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "nope" in result.stderr


def test_importing_the_step_is_light():
    """`chatvla2 calibrate` imports every step to build its parser: no onnx, no torch."""
    code = "import sys, chatvla2.calibration.predict; print(sorted(m for m in ('onnx', 'torch', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_step_ms_needs_every_engine():
    assert predict.step_ms({"vision": 1.0, "prefill": 2.0, "decode": None, "action_head": 3.0}, 4) == {"every": None, "reuse": None}
    assert predict.step_ms({"vision": 1.0, "prefill": 2.0, "decode": 0.5, "action_head": 3.0}, 4) == {"every": 8.0, "reuse": 6.0}
    assert math.isclose(predict.control_budget(get_config("tiny"), 20, {})["horizon_ms"], 400.0)
