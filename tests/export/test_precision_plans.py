"""The float part of a quantized graph: fp16 unless parity keeps a group in fp32, and the manifest's
account of every fp32 weight (which group, which parity figure kept it)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from chatvla2.export import precision
from chatvla2.export.calibration_data import record_engine_inputs
from chatvla2.export.lint import lint_model
from chatvla2.export.parity import ParityResult
from chatvla2.export.precision import ConversionReport, fp32_weights, int4_form, quantize, weight_bytes_by_dtype
from chatvla2.export.thresholds import BUDGETS
from chatvla2.models.loading import load_model


@pytest.fixture(scope="module")
def prefill_calibration():
    return record_engine_inputs(load_model("tiny"), samples=2, seed=0)["prefill"]


def router_weights_fp32(candidate: onnx.ModelProto) -> bool:
    router = [t for t in candidate.graph.initializer if ".router." in t.name]
    return bool(router) and all(t.data_type == onnx.TensorProto.FLOAT for t in router)


def test_parity_keeps_the_router_fp32_and_the_manifest_says_why(fp32_bundle, prefill_calibration, tmp_path, monkeypatch):
    """A stand-in parity that fails until the router is fp32: norms, softmax, then the router are
    kept (cumulatively, as for fp16 graphs); the router weights are listed with the figure that
    kept them; everything else float is fp16."""
    tried = []

    def parity(candidate):
        ok = router_weights_fp32(candidate)
        tried.append(ok)
        return ParityResult(cosine=1.0 if ok else 0.5, relative_error=0.0 if ok else 0.9, max_abs=0.0, worst_output="hidden")

    graph, report = quantize(fp32_bundle / "prefill.onnx", tmp_path / "prefill.onnx", "int8", prefill_calibration, parity, BUDGETS["int8"])
    assert tried == [False, False, False, True]
    assert report.kept_fp32 == ["norms", "softmax", "router"] and report.not_quantized == ["router", "graph inputs (the prompt embeddings)"]
    assert "cosine 0.500000" in report.why["router"] and "budget missed" not in report.method
    assert not list(tmp_path.iterdir()), "modelopt's intermediate graph was left behind"

    monkeypatch.setattr(precision, "WEIGHT_MIN_ELEMENTS", 256)  # the tiny router weights are 64 x 8
    listed = {w["name"]: w["why"] for w in fp32_weights(graph, report)}
    routers = {t.name for t in graph.graph.initializer if ".router." in t.name}
    assert routers and routers <= listed.keys()
    assert all(listed[r].startswith("router: parity needed it") for r in routers)
    assert not [w for w in listed.values() if w.startswith("unexplained")]
    # The rest of the float weights are fp16, not fp32.
    sizes = weight_bytes_by_dtype(graph)
    assert sizes["float16"] > 10 * sizes["float32"]


def test_a_missed_budget_is_reported_and_unexplained_fp32_is_named(fp32_bundle, prefill_calibration, tmp_path):
    def never(candidate):
        return ParityResult(cosine=0.1, relative_error=1.0, max_abs=1.0, worst_output="hidden")

    graph, report = quantize(fp32_bundle / "prefill.onnx", tmp_path / "prefill.onnx", "int8", prefill_calibration, never, BUDGETS["int8"])
    assert report.method.endswith("(budget missed)") and report.kept_fp32 == ["norms", "softmax", "router"]

    stray = numpy_helper.from_array(np.zeros((32, 64), np.float32), "stray")
    graph.graph.initializer.append(stray)
    listed = {w["name"]: w["why"] for w in fp32_weights(graph, ConversionReport(method="x"))}
    assert listed == {"stray": "unexplained: read by no node of a kept group"}


def test_int4_plan_is_w4a16(fp32_bundle, prefill_calibration, tmp_path):
    """TensorRT's documented int4 form: fp16 scales on the INT4 DequantizeLinear and fp16
    activations into the GEMMs that read the dequantized weights (a strongly typed network runs a
    DQ at its scale's type, so an fp32 scale would make the GEMM fp32: W4A32)."""
    def ok(candidate):
        return ParityResult(cosine=1.0, relative_error=0.0, max_abs=0.0, worst_output="hidden")

    graph, report = quantize(fp32_bundle / "prefill.onnx", tmp_path / "prefill.onnx", "int4", prefill_calibration, ok, BUDGETS["int4"])
    inferred = onnx.shape_inference.infer_shapes(graph).graph
    types = {t.name: t.data_type for t in graph.graph.initializer}
    types |= {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.output, *inferred.value_info]}
    int4_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and types[n.input[0]] == onnx.TensorProto.INT4]
    assert int4_dq, "no INT4 DequantizeLinear in the int4 prefill"
    # No fp32 scale on any DequantizeLinear, INT4 or not.
    scales = [types[n.input[1]] for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    assert onnx.TensorProto.FLOAT not in scales
    weights = {n.output[0] for n in int4_dq}
    gemms = [n for n in graph.graph.node if set(n.input) & weights]
    assert gemms and {n.op_type for n in gemms} <= {"MatMul", "Gemm"}
    assert {types[i] for n in gemms for i in n.input if i} == {onnx.TensorProto.FLOAT16}
    assert int4_form(graph) == "W4A16" and "int4 as W4A16" in report.method
    assert "int4-w4a32" not in {f.rule for f in lint_model(graph)}
