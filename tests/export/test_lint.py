"""`export.lint`: hand-built graphs that TensorRT 10.3 accepts or refuses, and a hand-built bundle
(the rules added for issue 15, and the version targets, are in test_lint_rules.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chatvla2.contract.bundle import BundleError, write_manifest
from chatvla2.export.lint import Finding, LintError, assert_tensorrt_compatible, lint_bundle, lint_model, main
from chatvla2.export.lint_config import LintConfig

F = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset=20, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets)


def tensor(name, dtype=F, shape=(2, 4)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def clean_model(opset=20) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "b"], ["z"], name="add"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    return make_model(nodes, [tensor("x")], [tensor("y")], [w, b], opset=opset)


def rules_of(findings: list[Finding], severity="error") -> set[str]:
    return {f.rule for f in findings if f.severity == severity}


def dq_model(zero_point, dtype=TensorProto.INT8, opset=21, block_size=None):
    """x (quantized weight, constant) -> DequantizeLinear -> MatMul."""
    shape = [4, 4]
    q = helper.make_tensor("q", dtype, shape, np.zeros(16, np.int64).tolist())
    scale_shape = [4, 1] if block_size else []
    scale = helper.make_tensor("s", F, scale_shape, [0.1] * int(np.prod(scale_shape or [1])))
    inputs = ["q", "s"]
    inits = [q, scale]
    if zero_point is not None:
        inits.append(helper.make_tensor("zp", dtype, scale_shape, [zero_point] * int(np.prod(scale_shape or [1]))))
        inputs.append("zp")
    attrs = {"block_size": block_size, "axis": 1} if block_size else {}
    nodes = [
        helper.make_node("DequantizeLinear", inputs, ["w"], name="dq", **attrs),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul"),
    ]
    return make_model(nodes, [tensor("x")], [tensor("y")], inits, opset=opset)


# --- single graphs --------------------------------------------------------------------------


def test_clean_graph_passes():
    assert lint_model(clean_model()) == []
    assert_tensorrt_compatible(clean_model(), "tiny")  # does not raise


def test_com_microsoft_op_is_caught():
    node = helper.make_node("MatMulNBits", ["x", "w"], ["y"], name="mmnb", domain="com.microsoft", K=4, N=4, bits=4, block_size=32)
    model = make_model([node], [tensor("x")], [tensor("y")], extra_opsets=[("com.microsoft", 1)])
    findings = lint_model(model)
    assert [(f.node, f.op_type, f.rule) for f in findings if f.severity == "error"] == [("mmnb", "MatMulNBits", "domain")]
    with pytest.raises(LintError, match="mmnb"):
        assert_tensorrt_compatible(model, "decode")


def test_dynamic_quantization_ops_are_caught():
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
        helper.make_node("MatMulInteger", ["xq", "wq", "xz"], ["y"], name="mmi"),
    ]
    wq = numpy_helper.from_array(np.ones((4, 4), np.uint8), "wq")
    model = make_model(nodes, [tensor("x")], [tensor("y", TensorProto.INT32)], [wq])
    found = {(f.node, f.rule) for f in lint_model(model) if f.severity == "error"}
    assert {("dql", "unsupported-op"), ("mmi", "unsupported-op")} <= found


def test_dq_zero_point_must_be_zero():
    assert rules_of(lint_model(dq_model(zero_point=0))) == set()
    assert rules_of(lint_model(dq_model(zero_point=None))) == set()
    bad = lint_model(dq_model(zero_point=3))
    assert rules_of(bad) == {"qdq-zero-point"}
    assert [f.node for f in bad if f.rule == "qdq-zero-point"] == ["dq"]


def test_dq_zero_point_must_be_constant():
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    model = make_model(nodes, [tensor("q", TensorProto.INT8), tensor("zp", TensorProto.INT8, ())], [tensor("y")], [s])
    assert "qdq-zero-point" in rules_of(lint_model(model))


def test_int4_block_dq_needs_opset_21():
    assert rules_of(lint_model(dq_model(0, TensorProto.INT4, opset=21, block_size=4))) == set()
    assert rules_of(lint_model(dq_model(0, TensorProto.INT4, opset=19, block_size=4))) == {"qdq-int4-opset"}


def test_uint8_quantization_is_caught():
    assert "qdq-dtype" in rules_of(lint_model(dq_model(0, TensorProto.UINT8)))


def test_fp8_parses_but_warns_for_orin():
    findings = lint_model(dq_model(0, TensorProto.FLOAT8E4M3FN))
    assert rules_of(findings) == set() and "qdq-fp8-orin" in rules_of(findings, "warning")


def topk_model(sorted_=1, k=2):
    kk = numpy_helper.from_array(np.array([k], np.int64), "k")
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=-1, sorted=sorted_)]
    return make_model(nodes, [tensor("x", shape=(2, 8000))], [tensor("v", shape=(2, k)), tensor("i", TensorProto.INT64, (2, k))], [kk])


def test_topk_rules():
    assert rules_of(lint_model(topk_model())) == set()
    assert rules_of(lint_model(topk_model(sorted_=0))) == {"topk-sorted"}
    assert rules_of(lint_model(topk_model(k=3840))) == {"topk-k"}


def test_scatternd_reduction_add_is_caught():
    def model(**attrs):
        idx = numpy_helper.from_array(np.array([[0]], np.int64), "idx")
        upd = numpy_helper.from_array(np.ones((1, 4), np.float32), "upd")
        nodes = [helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="scatter", **attrs)]
        return make_model(nodes, [tensor("x")], [tensor("y")], [idx, upd], opset=18)

    assert rules_of(lint_model(model())) == set()
    assert rules_of(lint_model(model(reduction="add"))) == {"scatternd-reduction"}


def test_reduce_axes_must_be_constant():
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rsum", keepdims=0)]
    dynamic = make_model(nodes, [tensor("x"), tensor("axes", TensorProto.INT64, (1,))], [tensor("y", shape=(2,))])
    assert rules_of(lint_model(dynamic)) == {"constant-input"}
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    constant = make_model(nodes, [tensor("x")], [tensor("y", shape=(2,))], [axes])
    assert rules_of(lint_model(constant)) == set()


def test_unique_is_caught():
    nodes = [helper.make_node("Unique", ["x"], ["y"], name="uniq")]
    model = make_model(nodes, [tensor("x")], [helper.make_tensor_value_info("y", F, None)])
    assert rules_of(lint_model(model)) == {"unsupported-op"}


def test_attention_is_newer_than_orin():
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")]
    shape = (1, 2, 3, 4)
    model = make_model(nodes, [tensor(n, shape=shape) for n in "qkv"], [tensor("y", shape=shape)], opset=23)
    assert {"newer-op", "opset"} <= rules_of(lint_model(model))


def test_nonzero_on_bool_is_caught_and_float64_io_warned():
    nodes = [helper.make_node("NonZero", ["m"], ["y"], name="nz"), helper.make_node("Identity", ["d"], ["e"], name="id")]
    model = make_model(
        nodes,
        [tensor("m", TensorProto.BOOL), tensor("d", TensorProto.DOUBLE)],
        [tensor("y", TensorProto.INT64, (2, "n")), tensor("e", TensorProto.DOUBLE)],
    )
    findings = lint_model(model)
    assert rules_of(findings) == {"nonzero-dtype"}
    # [ops]: DOUBLE is cast down to float by the parser: it parses, with a warning.
    assert "dtype-double" in rules_of(findings, "warning")
    assert "int64-io" in rules_of(findings, "note")


def test_loop_with_dynamic_scan_output_and_if_rank_mismatch():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x"], ["scan"])],
        "body",
        [tensor("i", TensorProto.INT64, ()), tensor("cond_in", TensorProto.BOOL, ())],
        [tensor("cond_out", TensorProto.BOOL, ()), tensor("scan")],
    )
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [tensor("t")])
    else_g = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["e"], keepdims=0)], "else", [], [tensor("e", shape=())])
    nodes = [
        helper.make_node("Loop", ["n", "c"], ["y"], name="loop", body=body),
        helper.make_node("If", ["c"], ["z"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    model = make_model(
        nodes,
        [tensor("x"), tensor("n", TensorProto.INT64, ()), tensor("c", TensorProto.BOOL, ())],
        [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("z", F, None)],
        opset=17,
    )
    found = {(f.node, f.rule) for f in lint_model(model) if f.severity == "error"}
    assert {("loop", "loop-scan-output"), ("if", "if-branch-rank")} <= found


def test_opset_outside_range_is_caught():
    assert rules_of(lint_model(clean_model(opset=8))) == {"opset"}


# --- bundles --------------------------------------------------------------------------------


def write_bundle(root: Path, model: onnx.ModelProto | None = None) -> Path:
    bundle = root / "bundle"
    bundle.mkdir()
    onnx.save(model or clean_model(), str(bundle / "vision.onnx"))
    manifest = {
        "model_config": {"name": "test"},
        "engines": {
            "vision": {
                "file": "vision.onnx",
                "opset": 20,
                "precision": "fp32",
                "inputs": [{"name": "x", "shape": [2, 4], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [2, 4], "dtype": "float32"}],
                "profiles": {},
            }
        },
    }
    write_manifest(bundle, manifest)
    return bundle


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_bundle_lints_clean_and_tampering_is_reported(tmp_path):
    bundle = write_bundle(tmp_path)
    assert lint_bundle(bundle) == {"vision": []}
    assert main(LintConfig(bundle=str(bundle))) == 0
    flip_one_byte(bundle / "vision.onnx")
    with pytest.raises(BundleError, match="vision.onnx"):
        lint_bundle(bundle)


def test_bundle_with_external_data_lints_without_loading_it(tmp_path):
    model = dq_model(zero_point=3)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    light = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    # The zero point lives in m.onnx.data: with base_dir it is read and found non-zero.
    assert "qdq-zero-point" in rules_of(lint_model(light, base_dir=tmp_path))


def test_main_exits_1_on_errors(tmp_path, capsys):
    bad = make_model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [tensor("x")],
                     [helper.make_tensor_value_info("y", F, None)])
    bundle = write_bundle(tmp_path, bad)
    assert main(LintConfig(bundle=str(bundle))) == 1
    out = capsys.readouterr().out
    assert "vision: 1 error(s)" in out and "uniq (Unique) [unsupported-op]" in out


def _cli_has(command: str) -> bool:
    from chatvla2.cli import COMMANDS

    return command in COMMANDS


@pytest.mark.skipif(not _cli_has("lint"), reason="`chatvla2 lint` is not registered in chatvla2/cli.py yet")
def test_cli_exit_codes(tmp_path):
    def run(bundle):
        return subprocess.run([sys.executable, "-m", "chatvla2", "lint", str(bundle)], capture_output=True, text=True, timeout=120)

    (tmp_path / "clean").mkdir()
    clean = write_bundle(tmp_path / "clean")
    ok = run(clean)
    assert ok.returncode == 0, ok.stderr
    assert "vision: ok" in ok.stdout

    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    bad = write_bundle(bad_root, make_model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [tensor("x")],
                                            [helper.make_tensor_value_info("y", F, None)]))
    assert run(bad).returncode == 1

    flip_one_byte(clean / "vision.onnx")
    tampered = run(clean)
    assert tampered.returncode == 2
    assert "vision.onnx" in tampered.stderr and "Traceback" not in tampered.stderr
