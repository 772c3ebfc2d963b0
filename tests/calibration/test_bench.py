"""`chatvla2 bench`'s compute roofline (calibration/compute_roofline.py): the FLOPs a graph must do,
routed experts only, and this machine's GEMM rates. Counts are exact; rates only positive (no
timing thresholds in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from chatvla2.calibration.compute_roofline import compute_roofline, count_stage_flops, measure_gemm_rates
from chatvla2.calibration.graph_count import count_graph
from chatvla2.calibration.predict import analytic_counts
from chatvla2.contract.bundle import bundle_model_config, load_manifest

T, H, I, E, K = 6, 16, 24, 8, 2  # tokens, hidden, expert intermediate, experts, top-k  # noqa: E741 (I: the papers' name)


def _entry(*inputs: tuple[str, list[int]]) -> dict:
    return {"inputs": [{"name": n, "shape": s, "dtype": "float32"} for n, s in inputs]}


def _save(tmp_path, nodes, inputs, outputs, initializers, name="g", contrib=False):
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, initializers), opset_imports=opsets)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _weight(name: str, *dims: int):
    return numpy_helper.from_array(np.zeros(dims, np.float32), name)


def test_matmul_and_gemm_flops_are_exact(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, H])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1)]
    path = _save(tmp_path, nodes, [x], [y], [_weight("w1", H, I), _weight("w2", H, I)], "mm")
    count = count_stage_flops(path, _entry(("x", [T, H])), E, K)
    assert count["flops"] == count["graph_flops"] == 2 * T * H * I + 2 * T * I * H
    assert count["flops_by_class"] == {"fp32": 4 * T * H * I}
    assert count["unshaped"] == 0 and count["moe"]["form"] is None


def _dense_moe_graph(tmp_path):
    """The dense MoE form as the exporter writes it: a router (H -> E) into TopK, every expert's
    gate/up on the same activations, SwiGLU, down, weighted by its column of the combine matrix."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, H])
    nodes = [helper.make_node("Gemm", ["x", "router"], ["logits"]),
             helper.make_node("TopK", ["logits", "k"], ["top", "idx"]),
             helper.make_node("ReduceSum", ["top", "axes"], ["combine"], keepdims=1)]
    inits = [_weight("router", H, E), numpy_helper.from_array(np.array([K], np.int64), "k"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    previous = None
    for e in range(E):
        nodes += [helper.make_node("Gemm", ["x", f"gate{e}"], [f"g{e}"]),
                  helper.make_node("Gemm", ["x", f"up{e}"], [f"u{e}"]),
                  helper.make_node("Sigmoid", [f"g{e}"], [f"s{e}"]),
                  helper.make_node("Mul", [f"g{e}", f"s{e}"], [f"silu{e}"]),
                  helper.make_node("Mul", [f"silu{e}", f"u{e}"], [f"h{e}"]),
                  helper.make_node("Gemm", [f"h{e}", f"down{e}"], [f"d{e}"]),
                  helper.make_node("Mul", [f"d{e}", "combine"], [f"o{e}"])]
        inits += [_weight(f"gate{e}", H, I), _weight(f"up{e}", H, I), _weight(f"down{e}", I, H)]
        if previous is None:
            previous = f"o{e}"
        else:
            nodes.append(helper.make_node("Add", [previous, f"o{e}"], ["y" if e == E - 1 else f"sum{e}"]))
            previous = f"sum{e}"
    return _save(tmp_path, nodes, [x], [y], inits, "dense")


def test_dense_moe_counts_the_routed_experts_only(tmp_path):
    path = _dense_moe_graph(tmp_path)
    count = count_stage_flops(path, _entry(("x", [T, H])), E, K)
    router, expert = 2 * T * H * E, 3 * 2 * T * H * I  # one expert's gate + up + down on every token
    assert count_graph(path, _entry(("x", [T, H])), E, K)["flops"] == router + E * expert  # the graph as written
    assert count["graph_flops"] == router + E * expert
    assert count["moe"]["form"] == "dense" and count["moe"]["expert_products"] == 3 * E
    assert count["moe"]["all_experts_flops"] == E * expert
    assert count["moe"]["routed_flops"] == K * expert == count["moe"]["all_experts_flops"] * K // E
    assert count["flops"] == router + K * expert


def _moe_node_graph(tmp_path, op: str = "MoE", bits: int = 4, level: int = 4):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, H])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [T, E])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, H])
    if op == "MoE":
        inits = [_weight("fc1", E, 2 * I, H), _weight("fc2", E, H, I)]
        inputs = ["x", "probs", "fc1", "", "fc2"]
        attrs = {"k": K, "activation_type": "swiglu"}
    else:  # weights packed 8 // bits to a byte along the input dimension
        pack = 8 // bits
        inits = [numpy_helper.from_array(np.zeros((E, 2 * I, H // pack), np.uint8), "fc1"), _weight("s1", E, 2 * I),
                 numpy_helper.from_array(np.zeros((E, H, I // pack), np.uint8), "fc2"), _weight("s2", E, H)]
        inputs = ["x", "probs", "fc1", "s1", "", "fc2", "s2"]
        attrs = {"k": K, "activation_type": "swiglu", "expert_weight_bits": bits, "accuracy_level": level}
    node = helper.make_node(op, inputs, ["y"], domain="com.microsoft", **attrs)
    return _save(tmp_path, [node], [x, probs], [y], inits, op, contrib=True)


@pytest.mark.parametrize("op,bits,level,flop_class", [("MoE", 0, 0, "fp32"), ("QMoE", 4, 4, "int4"), ("QMoE", 4, 0, "fp32"),
                                                     ("QMoE", 8, 0, "int8")])
def test_moe_operator_counts_top_k_of_its_experts(tmp_path, op, bits, level, flop_class):
    path = _moe_node_graph(tmp_path, op, bits, level)
    count = count_stage_flops(path, _entry(("x", [T, H]), ("probs", [T, E])), E, K)
    every_expert = E * T * (2 * (2 * I) * H + 2 * H * I)  # fc1 [E, 2I, H] and fc2 [E, H, I] on all T tokens
    assert count["flops"] == every_expert * K // E == K * T * 6 * H * I
    assert count["moe"]["moe_operators"] == 1 and count["moe"]["all_experts_flops"] == every_expert
    assert count["graph_flops"] == count["flops"]  # the operator computes the routed experts only
    # export/cpu_moe.py's kernel settings: int8 experts on int8 activations, int4 at accuracy_level 4
    assert count["flops_by_class"] == {flop_class: count["flops"]}
    assert count["ops_added"] == {op: 1} and count["unshaped"] == 0


def test_moe_operator_and_dense_form_count_the_same_routed_experts(tmp_path):
    dense = count_stage_flops(_dense_moe_graph(tmp_path), _entry(("x", [T, H])), E, K)
    fused = count_stage_flops(_moe_node_graph(tmp_path), _entry(("x", [T, H]), ("probs", [T, E])), E, K)
    assert fused["flops"] == dense["moe"]["routed_flops"]


def test_ort_quantized_products_are_counted_at_their_class(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, H])
    block = 16
    nodes = [helper.make_node("DynamicQuantizeMatMul", ["x", "w8", "s8", "z8"], ["a"], domain="com.microsoft"),
             helper.make_node("MatMulNBits", ["a", "w4", "s4"], ["y"], domain="com.microsoft",
                              K=I, N=H, bits=4, block_size=block, accuracy_level=4)]
    inits = [numpy_helper.from_array(np.zeros((H, I), np.int8), "w8"), _weight("s8", I),
             numpy_helper.from_array(np.zeros(I, np.int8), "z8"),
             numpy_helper.from_array(np.zeros((H, I // block, block // 2), np.uint8), "w4"), _weight("s4", H * I // block)]
    path = _save(tmp_path, nodes, [x], [y], inits, "quantized", contrib=True)
    count = count_stage_flops(path, _entry(("x", [T, H])), E, K)
    assert count["flops_by_class"] == {"int8": 2 * T * H * I, "int4": 2 * T * I * H}


def test_tiny_bundle_counts_match_the_analytic_routed_count(tiny_bundle):
    manifest = load_manifest(tiny_bundle, verify_hashes=False)
    cfg = bundle_model_config(tiny_bundle, manifest)
    moe = cfg.language.moe
    routed = analytic_counts(cfg, manifest["plan"], {"prefill": "gather", "decode": "gather"})
    dense = analytic_counts(cfg, manifest["plan"], {"prefill": "dense", "decode": "gather"})
    for stage in ("vision", "prefill", "action_head"):
        entry = manifest["engines"][stage]
        count = count_stage_flops(tiny_bundle / entry["file"], entry, moe.num_experts, moe.top_k)
        assert count["flops"] == routed[stage]["flops"], stage
        assert count["graph_flops"] == dense[stage]["flops"], stage
    assert manifest["moe_implementation"]["prefill"] == "dense"


def test_gemm_rates_are_measured_positive():
    rates = measure_gemm_rates(threads=1, repeats=1, shapes=((32, 64, 64),))
    for precision in ("fp32", "int8", "int8_dynamic", "int4"):
        assert rates[precision]["gflops"] > 0, rates[precision]
    assert rates["fp16"]["gflops"] is None or rates["fp16"]["gflops"] > 0
    assert rates["fp16"]["gflops"] is not None or rates["fp16"]["unsupported"]
    assert measure_gemm_rates(threads=1, repeats=1, shapes=((32, 64, 64),)) is rates  # once per run


def test_roofline_of_a_mixed_stage():
    count = {"flops": 3_000_000_000, "graph_flops": 4_000_000_000, "flops_by_class": {"fp32": 1e9, "int8": 2e9},
             "moe": {}, "unshaped": 0}
    rates = {"fp32": {"gflops": 100.0}, "int8": {"gflops": 400.0}}
    roof = compute_roofline(count, rates, measured_ms=30.0, precision="int8", target="cpu")
    assert roof["roofline_ms"] == 15.0  # 10 ms fp32 + 5 ms int8
    assert roof["rate_gflops"] == 200.0 and roof["achieved_gflops"] == 100.0 and roof["fraction_of_rate"] == 0.5
    assert roof["required_gflop"] == 3.0 and roof["graph_gflop"] == 4.0


def test_bench_json_has_the_compute_roofline(tiny_bundle, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "chatvla2", "bench", str(tiny_bundle), "--runs", "1", "--warmup", "0",
                             "--threads", "1", "--json-out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == line
    rates = line["gemm_gflops"]
    assert rates["threads"] == 1 and rates["fp32"]["gflops"] > 0 and rates["int8"]["gflops"] > 0
    entry = line["bench"][0]
    roof = entry["compute_roofline"]
    assert set(roof) == {"vision", "prefill", "action_head"}
    for stage, r in roof.items():
        assert r["required_gflop"] > 0 and r["roofline_ms"] > 0, stage
        assert r["measured_ms"] == entry["runtime"]["stages"][stage]["p50_ms"]
        assert r["achieved_gflops"] > 0 and 0 < r["fraction_of_rate"], stage
        assert r["precision"] == "fp32" and r["rates"] == {"fp32": {"rate": "fp32", "gflops": rates["fp32"]["gflops"]}}
    moe = roof["prefill"]["moe"]
    assert moe["form"] == "dense" and moe["routed_flops"] * moe["num_experts"] == moe["all_experts_flops"] * moe["top_k"]
    assert roof["prefill"]["required_gflop"] < roof["prefill"]["graph_gflop"]
    assert "decode_roofline" in entry  # the memory roofline stays for decode
    table = result.stdout
    assert "GFLOP" in table and "of rate" in table and "compute roofline" in table


def test_dense_experts_are_found_through_dynamic_int8_products(tiny_bundle, tmp_path):
    """ONNX Runtime's quantize_dynamic turns every product into MatMulInteger (the cpu target's
    int8): the count is the fp32 graph's, in int8, with the experts still routed 2 of 8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    manifest = load_manifest(tiny_bundle, verify_hashes=False)
    entry = manifest["engines"]["prefill"]
    fp32 = count_stage_flops(tiny_bundle / entry["file"], entry, 8, 2)
    out = tmp_path / "prefill-int8.onnx"
    quantize_dynamic(str(tiny_bundle / entry["file"]), str(out), op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=True, weight_type=QuantType.QInt8)
    int8 = count_stage_flops(out, entry, 8, 2)
    assert int8["ops_added"]["MatMulInteger"] > 0 and int8["moe"]["expert_products"] == fp32["moe"]["expert_products"] == 48
    assert int8["flops"] == fp32["flops"] and int8["graph_flops"] == fp32["graph_flops"]
    assert int8["flops_by_class"]["int8"] > int8["flops_by_class"]["fp32"]


def test_decode_memory_roofline_reads_the_routed_experts_of_a_moe_operator(tmp_path):
    from chatvla2.calibration.roofline import _weight_bytes_read

    path = _moe_node_graph(tmp_path)  # fc1 (E, 2I, H) and fc2 (E, H, I), fp32
    assert _weight_bytes_read(path, E, K) == (E * 2 * I * H + E * H * I) * 4 * K // E


def test_faster_rates_keeps_the_faster_measurement_per_precision():
    from chatvla2.calibration.compute_roofline import faster_rates

    before = {"threads": 2, "fp32": {"gflops": 100.0}, "int8": {"gflops": 400.0}, "fp16": {"gflops": None, "unsupported": "x"}}
    after = {"threads": 2, "fp32": {"gflops": 200.0}, "int8": {"gflops": 300.0}, "fp16": {"gflops": None, "unsupported": "x"}}
    merged = faster_rates(before, after)
    assert merged["fp32"]["gflops"] == 200.0 and merged["int8"]["gflops"] == 400.0 and merged["fp16"]["gflops"] is None
    assert merged["measurements"] == 2


def test_onnxruntime_default_domain_operators_are_shaped_and_counted(tmp_path):
    """A graph with RMSNorm as ONNX Runtime's SimplifiedLayerNormalization (registered in the default
    domain, unknown to ONNX's shape inference; export/cpu_fused.py) and no com.microsoft node: its
    products are still shaped and counted."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, I])
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], ["n"], axis=-1, epsilon=1e-6),
             helper.make_node("MatMul", ["n", "w"], ["y"])]
    path = _save(tmp_path, nodes, [x], [y], [_weight("scale", H), _weight("w", H, I)], "norm")
    count = count_stage_flops(path, _entry(("x", [T, H])), E, K)
    assert count["unshaped"] == 0
    assert count["flops_by_class"] == {"fp32": 2 * T * H * I}
