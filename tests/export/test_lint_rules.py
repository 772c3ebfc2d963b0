"""`export.lint`, the rules of issue 15: each on a hand-built graph that breaks it and one that
passes, for TensorRT 10.3 (JetPack 6, the default target) and, where a later release lifted the
rule, for that release. What 10.3 does parse (Gelu, Mish, CastLike, Q to INT4, DOUBLE) is not
refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chatvla2.contract.bundle import write_manifest
from chatvla2.export import tensorrt_rules
from chatvla2.export.lint import LintError, assert_tensorrt_compatible, lint_bundle, lint_model

F, F16, I8, I4, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.INT4, TensorProto.INT64


def model_of(nodes, inputs, outputs, initializers=(), opset=21):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def value(name, dtype=F, shape=(2, 4)):
    return helper.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def int_tensor(name, dtype, shape):
    return helper.make_tensor(name, dtype, list(shape), np.zeros(int(np.prod(shape)), np.int64).tolist())


def found(findings, severity="error"):
    return {(f.node, f.rule) for f in findings if f.severity == severity}


def rules_of(findings, severity="error"):
    return {f.rule for f in findings if f.severity == severity}


def clean(findings):
    """No error and no warning (the int64-io note on int64 graph inputs is not a finding here)."""
    return [f for f in findings if f.severity != "note"] == []


# --- quantized types only through Q/DQ ------------------------------------------------------


def test_gather_of_int8_weights_is_refused_and_gather_after_dq_passes():
    """The gather-form experts: a Gather reading int8 weights fails in the parser; dequantize first."""
    table, idx, scale = int_tensor("table", I8, (8, 4)), const("idx", np.array([1], np.int64)), const("s", np.float32(0.1))
    bad = model_of(
        [helper.make_node("Gather", ["table", "idx"], ["rows"], name="gather"),
         helper.make_node("DequantizeLinear", ["rows", "s"], ["y"], name="dq")],
        [], [value("y", shape=(1, 4))], [table, idx, scale])
    assert found(lint_model(bad)) == {("gather", "quantized-type")}
    good = model_of(
        [helper.make_node("DequantizeLinear", ["table", "s"], ["w"], name="dq"),
         helper.make_node("Gather", ["w", "idx"], ["y"], name="gather")],
        [], [value("y", shape=(1, 4))], [table, idx, scale])
    assert lint_model(good) == []


@pytest.mark.parametrize("op, attrs, extra", [
    ("Reshape", {}, [const("shape", np.array([4, 2], np.int64))]),
    ("Transpose", {"perm": [1, 0]}, []),
    ("Cast", {"to": F}, []),
])
def test_data_movement_or_cast_of_a_quantized_tensor_is_refused(op, attrs, extra):
    """Q -> Reshape/Transpose/Cast -> DQ: the quantized tensor must go straight to a DequantizeLinear."""
    zp, s = const("zp", np.int8(0)), const("s", np.float32(0.1))
    inputs = ["xq"] + [t.name for t in extra]
    out_type = F if op == "Cast" else None
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node(op, inputs, ["moved"], name="move", **attrs)]
    if out_type is None:
        nodes.append(helper.make_node("DequantizeLinear", ["moved", "s", "zp"], ["y"], name="dq"))
    outputs = [value("y" if out_type is None else "moved", shape=None)]
    findings = lint_model(model_of(nodes, [value("x")], outputs, [zp, s, *extra]))
    assert found(findings) == {("move", "quantized-type")}
    assert "'xq' (int8)" in next(f.message for f in findings if f.rule == "quantized-type")


def test_cast_to_int8_is_refused_and_quantize_linear_passes():
    s, zp = const("s", np.float32(0.1)), const("zp", np.int8(0))
    cast = model_of([helper.make_node("Cast", ["x"], ["xq"], name="cast", to=I8),
                     helper.make_node("DequantizeLinear", ["xq", "s"], ["y"], name="dq")],
                    [value("x")], [value("y")], [s])
    assert found(lint_model(cast)) == {("cast", "quantized-type")}
    qdq = model_of([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
                    helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["y"], name="dq")],
                   [value("x")], [value("y")], [s, zp])
    assert lint_model(qdq) == []


# --- blocked and per-channel dequantization -------------------------------------------------


def blocked_dq(q_shape=(4, 4), scale_shape=(1, 4), q_const=True, scale_const=True, scale_dtype=F16, axis=0, block=4):
    """INT4 weight -> blocked DequantizeLinear (opset 21) -> MatMul, fp16 activations (W4A16)."""
    scale = numpy_helper.from_array(np.full(scale_shape, 0.1, helper.tensor_dtype_to_np_dtype(scale_dtype)), "s")
    inits = ([int_tensor("q", I4, q_shape)] if q_const else []) + ([scale] if scale_const else [])
    inputs = [value("x", F16, (2, q_shape[-2] if len(q_shape) > 1 else 4))]
    inputs += [] if q_const else [value("q", I4, q_shape)]
    inputs += [] if scale_const else [value("s", scale_dtype, scale_shape)]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq", axis=axis, block_size=block),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    return model_of(nodes, inputs, [value("y", F16, None)], inits)


def test_blocked_int4_weight_w4a16_passes():
    assert lint_model(blocked_dq()) == []


def test_blocked_dq_needs_a_2d_constant_weight_and_constant_scale():
    assert found(lint_model(blocked_dq(q_shape=(2, 4, 4), scale_shape=(2, 1, 4), axis=1))) == {("dq", "qdq-blocked-rank")}
    assert found(lint_model(blocked_dq(q_const=False))) == {("dq", "qdq-blocked-input")}
    assert found(lint_model(blocked_dq(scale_const=False))) == {("dq", "qdq-blocked-scale")}


def test_int4_odd_last_dimension_is_refused():
    findings = lint_model(blocked_dq(q_shape=(4, 3), scale_shape=(1, 3)))
    assert found(findings) == {("dq", "qdq-int4-odd")}
    assert "'q'" in next(f.message for f in findings if f.rule == "qdq-int4-odd")


def test_int4_with_fp32_scales_warns_w4a32():
    findings = lint_model(blocked_dq(scale_dtype=F))
    assert rules_of(findings) == set() and found(findings, "warning") == {("dq", "int4-w4a32")}


def test_per_channel_dq_only_on_weights():
    s = const("s", np.full(4, 0.1, np.float32))
    on_weight = model_of([helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq", axis=1),
                          helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
                         [value("x")], [value("y")], [int_tensor("q", I8, (4, 4)), s])
    assert lint_model(on_weight) == []
    on_activation = model_of([helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q", axis=1, output_dtype=I8),
                              helper.make_node("DequantizeLinear", ["xq", "s"], ["y"], name="dq", axis=1)],
                             [value("x")], [value("y")], [s])
    assert found(lint_model(on_activation)) == {("q", "qdq-per-channel-activation"), ("dq", "qdq-per-channel-activation")}


# --- what 10.3 does parse -------------------------------------------------------------------


@pytest.mark.parametrize("op, attrs, opset", [
    ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 21), ("Mish", {}, 21), ("CastLike", {}, 21),
])
def test_gelu_mish_castlike_parse_on_10_3(op, attrs, opset):
    inputs = ["x", "x"] if op == "CastLike" else ["x"]
    model = model_of([helper.make_node(op, inputs, ["y"], name="n", **attrs)], [value("x")], [value("y")], opset=opset)
    assert lint_model(model, tensorrt_version="10.3") == []


def test_quantize_linear_to_int4_parses_on_10_3():
    s = const("s", np.full((1, 4), 0.1, np.float32))
    nodes = [helper.make_node("QuantizeLinear", ["w", "s"], ["q"], name="q", axis=0, block_size=4, output_dtype=I4),
             helper.make_node("DequantizeLinear", ["q", "s"], ["wd"], name="dq", axis=0, block_size=4),
             helper.make_node("MatMul", ["x", "wd"], ["y"], name="matmul")]
    model = model_of(nodes, [value("x")], [value("y")], [const("w", np.ones((4, 4), np.float32)), s])
    assert rules_of(lint_model(model)) == set()


def test_double_is_a_warning_not_an_error():
    model = model_of([helper.make_node("Cast", ["x"], ["y"], name="cast", to=TensorProto.DOUBLE)],
                     [value("x")], [value("y", TensorProto.DOUBLE)])
    findings = lint_model(model)
    assert rules_of(findings) == set() and ("y", "dtype-double") in found(findings, "warning")


# --- Einsum, Pad axes, OneHot depth, Dropout training_mode ----------------------------------


@pytest.mark.parametrize("equation, shapes, rule", [
    ("...ij,...jk->...ik", [(3, 2, 4), (3, 4, 5)], "einsum-ellipsis"),
    ("ii->i", [(4, 4)], "einsum-diagonal"),
    ("bij,bjk->bik", [(3, 2, 4), (1, 4, 5)], "einsum-broadcast"),
])
def test_einsum_forms_newer_than_10_3(equation, shapes, rule):
    names = [f"x{i}" for i in range(len(shapes))]
    model = model_of([helper.make_node("Einsum", names, ["y"], name="einsum", equation=equation)],
                     [value(n, shape=s) for n, s in zip(names, shapes)], [value("y", shape=None)])
    assert found(lint_model(model)) == {("einsum", rule)}
    assert lint_model(model, tensorrt_version="10.12.0.36") == []


def test_plain_einsum_passes_on_10_3():
    model = model_of([helper.make_node("Einsum", ["a", "b"], ["y"], name="einsum", equation="bij,bjk->bik")],
                     [value("a", shape=(3, 2, 4)), value("b", shape=(3, 4, 5))], [value("y", shape=(3, 2, 5))])
    assert lint_model(model) == []


def pad_model(axes_constant: bool):
    pads, axes = const("pads", np.array([1, 1], np.int64)), const("axes", np.array([1], np.int64))
    inputs = [value("x")] + ([] if axes_constant else [value("axes", I64, (1,))])
    inits = [pads] + ([axes] if axes_constant else [])
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad")
    return model_of([node], inputs, [value("y", shape=(2, 6))], inits)


def test_pad_tensor_axes_need_10_4():
    assert lint_model(pad_model(axes_constant=True)) == []
    assert found(lint_model(pad_model(axes_constant=False))) == {("pad", "constant-input")}
    assert clean(lint_model(pad_model(axes_constant=False), tensorrt_version="10.4"))


def test_onehot_depth_must_be_constant():
    values = const("values", np.array([0.0, 1.0], np.float32))
    node = helper.make_node("OneHot", ["i", "depth", "values"], ["y"], name="onehot")
    dynamic = model_of([node], [value("i", I64, (2,)), value("depth", I64, ())], [value("y", shape=None)], [values])
    assert found(lint_model(dynamic, tensorrt_version="11.1.0")) == {("onehot", "constant-input")}
    constant = model_of([node], [value("i", I64, (2,))], [value("y", shape=None)], [values, const("depth", np.int64(5))])
    assert clean(lint_model(constant))


def dropout_model(training):
    node = helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="dropout")
    inits = [const("ratio", np.float32(0.1))]
    inputs = [value("x")]
    if training is None:
        inputs.append(value("training", TensorProto.BOOL, ()))
    else:
        inits.append(const("training", np.bool_(training)))
    return model_of([node], inputs, [value("y")], inits)


def test_dropout_training_mode_must_be_a_constant_false():
    assert lint_model(dropout_model(False)) == []
    assert found(lint_model(dropout_model(None))) == {("dropout", "constant-input")}
    assert found(lint_model(dropout_model(True))) == {("dropout", "dropout-training")}


# --- the target version ---------------------------------------------------------------------


def test_version_strings():
    assert tensorrt_rules.parse_version("10.3.0.30") == (10, 3)
    assert tensorrt_rules.parse_version("11.1.0") == (11, 1)
    assert tensorrt_rules.parse_version(None) == (10, 3)
    with pytest.raises(ValueError, match="'ten'"):
        tensorrt_rules.parse_version("ten")


def test_rules_follow_the_version():
    squeeze = model_of([helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")],
                       [value("x", shape=(1, 4)), value("axes", I64, (1,))], [value("y", shape=(4,))])
    assert found(lint_model(squeeze)) == {("squeeze", "constant-input")}
    assert clean(lint_model(squeeze, tensorrt_version="10.7"))
    attention = model_of([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")],
                         [value(n, shape=(1, 2, 3, 4)) for n in "qkv"], [value("y", shape=(1, 2, 3, 4))], opset=23)
    assert rules_of(lint_model(attention)) == {"newer-op", "opset"}
    assert rules_of(lint_model(attention, tensorrt_version="10.15")) == set()
    with pytest.raises(LintError, match=r"TensorRT 10\.3 cannot build.*attn \(Attention\) \[newer-op\]"):
        assert_tensorrt_compatible(attention, "decode")
    assert_tensorrt_compatible(attention, "decode", tensorrt_version="11.1.0")  # does not raise


def test_lint_bundle_takes_the_installed_version(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    model = model_of([helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")],
                     [value("x", shape=(1, 4)), value("axes", I64, (1,))], [value("y", shape=(4,))])
    onnx.save(model, str(bundle / "vision.onnx"))
    io = {"inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}], "outputs": [{"name": "y", "shape": [4], "dtype": "float32"}]}
    write_manifest(bundle, {"model_config": {"name": "t"}, "engines": {"vision": {"file": "vision.onnx", "opset": 21, "precision": "fp32", "profiles": {}, **io}}})
    assert rules_of(lint_bundle(bundle)["vision"]) == {"constant-input"}
    assert clean(lint_bundle(bundle, tensorrt_version="10.7.0.23")["vision"])
    with pytest.raises(ValueError, match="'x.y'"):
        lint_bundle(bundle, tensorrt_version="x.y")
