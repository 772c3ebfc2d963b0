"""The MoE layers as ONNX Runtime's com.microsoft MoE / QMoE operators (export/cpu_moe.py): the
same function as `DynamicMoE` (fp32), the same top-k routing, quantized experts within stated
errors, and the tiny preset's prefill and decode graphs with one MoE node per layer and no
per-expert matrix products."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from chatvla2.export.cpu_moe import (
    CUSTOM_TRANSLATIONS,
    MS_DOMAIN,
    GroupedMoE,
    OrtMoE,
    dequantize_blocks,
    grouped_moe_layers,
    interleave_gate_up,
    moe_node_counts,
    ort_moe_layers,
    quantize_blocks,
    quantize_moe,
    routed_moe,
)
from chatvla2.export.onnx_export import TraceSpec, engine_specs, trace_to_onnx
from chatvla2.export.thresholds import budget_for
from chatvla2.models.loading import load_model
from chatvla2.models.moe import DynamicMoE

HIDDEN, INTERMEDIATE, EXPERTS, TOP_K = 64, 128, 8, 2
TOKEN_COUNTS = (1, 2, 7, 40)
# Relative error ||y - y_fp32|| / ||y_fp32|| of one layer with DynamicMoE's (uniform) random
# initialisation, blocks of 32. Measured: int8 0.012-0.014 (int8 weights 0.006, the rest is the
# kernel's int8 activations), int4 0.11 (0.107 at fp32 activations). Random uniform weights are the
# hard case for int4: trained (bell-shaped) weights quantize better per block.
QUANTIZED_ERROR_MAX = {8: 0.03, 4: 0.16}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return DynamicMoE(HIDDEN, INTERMEDIATE, EXPERTS, TOP_K).eval()


@pytest.fixture(scope="module")
def layer_graph(layer):
    """One OrtMoE layer traced as the engines are (dynamic token count)."""
    spec = TraceSpec("moe", OrtMoE(layer).eval(), (torch.randn(16, HIDDEN),), ("x",), ("y",),
                     {"x": {0: "tokens"}, "y": {0: "tokens"}})
    return trace_to_onnx(spec)


@pytest.fixture(scope="module")
def grouped_graph(layer):
    spec = TraceSpec("moe", GroupedMoE(layer).eval(), (torch.randn(16, HIDDEN),), ("x",), ("y",),
                     {"x": {0: "tokens"}, "y": {0: "tokens"}})
    return trace_to_onnx(spec)


def test_interleaved_fc1_rows():
    gate, up = torch.randn(EXPERTS, 3, 4), torch.randn(EXPERTS, 3, 4)
    fused = interleave_gate_up(gate, up)
    assert torch.equal(fused[:, 0::2], gate) and torch.equal(fused[:, 1::2], up)


@pytest.mark.parametrize("tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("form", ["gather", "dense"])
def test_eager_wrapper_matches_dynamic_moe(layer, tokens, form):
    layer.implementation = form
    x = torch.randn(1, tokens, HIDDEN)
    with torch.no_grad():
        expected = layer(x)
        actual, logits = OrtMoE(layer)(x, return_router_logits=True)
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, layer.route(x.reshape(-1, HIDDEN))[2])


@pytest.mark.parametrize("tokens", TOKEN_COUNTS)
def test_grouped_form_matches_dynamic_moe(layer, grouped_graph, tokens):
    x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        expected = layer(x).numpy()
        eager = GroupedMoE(layer)(x).numpy()
    (actual,) = session(grouped_graph).run(None, {"x": x.numpy()})
    for result in (eager, actual):
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_grouped_form_has_each_expert_matrix_once(grouped_graph):
    products = [n for n in grouped_graph.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert len(products) == 1 + 3 * EXPERTS  # the router, then gate/up/down of each expert
    assert {n.op_type for n in grouped_graph.graph.node} >= {"NonZero", "ScatterND"}
    assert not [n for n in grouped_graph.graph.node if n.op_type in ("Einsum", "GatherND")]


def test_layer_graph_is_one_moe_node(layer_graph):
    assert moe_node_counts(layer_graph) == {"MoE": 1, "QMoE": 0}
    assert not [n for n in layer_graph.graph.node if n.op_type in ("MatMul", "Einsum", "GatherND")]


@pytest.mark.parametrize("tokens", TOKEN_COUNTS)
def test_ort_moe_matches_dynamic_moe(layer, layer_graph, tokens):
    x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        expected = layer(x).numpy()
    (actual,) = session(layer_graph).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_routing_picks_the_routers_top_two():
    """Every token's two largest router logits are clear (and each expert is some token's
    choice): the output is exactly those two experts, weighted by the softmax of their logits."""
    torch.manual_seed(1)
    moe = DynamicMoE(HIDDEN, INTERMEDIATE, EXPERTS, TOP_K).eval()
    x = torch.randn(EXPERTS, HIDDEN)
    choices = [(e, (e + 3) % EXPERTS) for e in range(EXPERTS)]
    target = torch.full((EXPERTS, EXPERTS), -4.0)
    for t, (first, second) in enumerate(choices):
        target[t, first], target[t, second] = 3.0, 2.0
    with torch.no_grad():  # router weights that give exactly these logits for these tokens
        moe.router.weight.copy_(torch.linalg.lstsq(x, target).solution.T)
    logits = moe.route(x)[2]
    assert torch.equal(torch.topk(logits, 2).indices, torch.tensor(choices))
    expected = torch.zeros_like(x)
    for t, pair in enumerate(choices):
        weights = torch.softmax(logits[t, list(pair)], dim=0)
        for w, e in zip(weights, pair):
            hidden = torch.nn.functional.silu(moe.gate_proj[e] @ x[t]) * (moe.up_proj[e] @ x[t])
            expected[t] += w * (moe.down_proj[e] @ hidden)
    graph = trace_to_onnx(TraceSpec("moe", OrtMoE(moe), (x,), ("x",), ("y",), {"x": {0: "tokens"}}))
    (actual,) = session(graph).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(actual, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    # and one expert more or less would show: k=1 differs by far more than the tolerance
    one = routed_moe(x, logits, OrtMoE(moe).fc1, moe.down_proj, 1).detach().numpy()
    assert relative_error(one, expected.detach().numpy()) > 0.1


@pytest.mark.parametrize("bits", [8, 4])
def test_block_quantization_round_trip(bits):
    assert quantize_blocks(np.ones((2, 3, 64), np.float32), bits, 0)[1].shape == (2, 3)  # one scale per row
    weight = np.random.default_rng(bits).standard_normal((2, 6, 64)).astype(np.float32)
    codes, scales = quantize_blocks(weight, bits, 32)
    assert codes.dtype == np.uint8 and codes.shape == (2, 6, 64 * bits // 8)
    assert scales.dtype == np.float32 and scales.shape == (2, 6, 2)
    restored = dequantize_blocks(codes, scales, bits)
    step = np.abs(scales).repeat(32, axis=-1)
    error = np.abs(restored - weight)
    # half a step from rounding; up to one step where a value opposite in sign to the block's
    # extreme and nearly as large meets the top level 2^(b-1) - 1 (rare)
    assert np.all(error <= step + 1e-6) and np.mean(error <= step / 2 + 1e-6) > 0.95
    # each block's largest-magnitude value is exact (it is level -2^(b-1))
    blocks = weight.reshape(2, 6, 2, 32)
    top = np.abs(blocks).argmax(-1)[..., None]
    np.testing.assert_allclose(np.take_along_axis(restored.reshape(blocks.shape), top, -1),
                               np.take_along_axis(blocks, top, -1), rtol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("accuracy_level,block_size", [(0, 32), (4, 32), (4, 0)])
def test_qmoe_within_stated_error(layer, layer_graph, bits, accuracy_level, block_size):
    graph = copy.deepcopy(layer_graph)
    assert quantize_moe(graph, bits=bits, block_size=block_size, accuracy_level=accuracy_level) is graph
    assert moe_node_counts(graph) == {"MoE": 0, "QMoE": 1}
    fp32_experts = {(EXPERTS, 2 * INTERMEDIATE, HIDDEN), (EXPERTS, HIDDEN, INTERMEDIATE)}
    # the fp32 experts are replaced, not kept beside the quantized ones
    assert not [t.name for t in graph.graph.initializer if t.data_type == 1 and tuple(t.dims) in fp32_experts]
    x = torch.randn(40, HIDDEN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = layer(x).numpy()
    (actual,) = session(graph).run(None, {"x": x.numpy()})
    assert relative_error(actual, expected) < QUANTIZED_ERROR_MAX[bits]
    if (bits == 4 and accuracy_level == 0) or block_size == 0:
        # fp32 activations: exactly the layer with the dequantized weights (checks the layout)
        wrapper = OrtMoE(layer)
        fc1, fc2 = (torch.from_numpy(dequantize_blocks(*quantize_blocks(w.detach().numpy(), bits, block_size), bits))
                    for w in (wrapper.fc1, wrapper.fc2))
        logits = torch.nn.functional.linear(x, layer.router.weight)
        with torch.no_grad():
            dequantized = routed_moe(x, logits, fc1, fc2, TOP_K).numpy()
        assert relative_error(actual, dequantized) < 1e-5


def test_quantize_moe_rejects_bad_settings(layer_graph):
    with pytest.raises(ValueError):
        quantize_moe(copy.deepcopy(layer_graph), bits=4, block_size=24)
    with pytest.raises(ValueError):
        quantize_moe(copy.deepcopy(layer_graph), bits=3, block_size=32)


# --- the tiny preset's prefill and decode graphs ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_graphs():
    model = load_model("tiny").eval()
    originals = [layer.mlp for layer in model.language.layers]
    with ort_moe_layers(model) as replaced:
        assert replaced == sum(isinstance(m, DynamicMoE) for m in originals) > 0
        specs = {s.name: s for s in engine_specs(model) if s.name in ("prefill", "decode")}
        graphs = {name: trace_to_onnx(spec, CUSTOM_TRANSLATIONS) for name, spec in specs.items()}
    assert [layer.mlp for layer in model.language.layers] == originals  # restored
    # the PyTorch engines, with DynamicMoE layers again
    modules = {s.name: s for s in engine_specs(model) if s.name in ("prefill", "decode")}
    return model, graphs, modules, replaced


def expert_digests(model) -> set[str]:
    """Hashes of every single expert matrix and its transpose, as fp32 bytes."""
    digests = set()
    for layer in model.language.layers:
        if isinstance(layer.mlp, DynamicMoE):
            for stack in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                for matrix in stack.detach().float().numpy():
                    for form in (matrix, matrix.T):
                        digests.add(hashlib.sha1(np.ascontiguousarray(form).tobytes()).hexdigest())
    return digests


@pytest.mark.parametrize("engine", ["prefill", "decode"])
def test_tiny_graph_has_one_moe_node_per_layer(tiny_graphs, engine):
    model, graphs, _, replaced = tiny_graphs
    graph = graphs[engine].graph
    assert moe_node_counts(graphs[engine]) == {"MoE": replaced, "QMoE": 0}
    initializers = {t.name: t for t in graph.initializer}
    cfg = model.cfg.language
    for node in graph.node:
        if node.op_type == "MoE":
            assert node.domain == MS_DOMAIN
            assert tuple(initializers[node.input[2]].dims) == (cfg.moe.num_experts, 2 * cfg.intermediate, cfg.hidden)
            assert tuple(initializers[node.input[4]].dims) == (cfg.moe.num_experts, cfg.hidden, cfg.intermediate)
    # no single expert's matrix anywhere (no per-expert MatMul, no gathered copy)
    digests = expert_digests(model)
    assert not [t.name for t in graph.initializer
                if hashlib.sha1(np.ascontiguousarray(numpy_helper.to_array(t)).tobytes()).hexdigest() in digests]
    assert not [n for n in graph.node if n.op_type in ("Einsum", "GatherND")]
    # each weight at most once: no more stored elements than the language model has parameters
    stored = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert stored <= sum(p.numel() for p in model.language.parameters())


def test_tiny_prefill_matches_pytorch(tiny_graphs):
    model, graphs, modules, _ = tiny_graphs
    spec = modules["prefill"]
    run = session(graphs["prefill"])
    for length in (1, 16, 37):  # the traced length and others (the prompt axis is dynamic)
        embeddings = torch.randn(1, length, model.cfg.language.hidden, generator=torch.Generator().manual_seed(length))
        positions = torch.arange(length).view(1, 1, -1).expand(3, 1, -1).contiguous()
        with torch.no_grad():
            expected = spec.module(embeddings, positions)
        actual = run.run(None, {"embeddings": embeddings.numpy(), "position_ids": positions.numpy()})
        for name, a, e in zip(spec.output_names, actual, expected):
            e = e.numpy()
            assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max(), (length, name)


def test_tiny_decode_matches_pytorch(tiny_graphs):
    _, graphs, modules, _ = tiny_graphs
    spec = modules["decode"]
    run = session(graphs["decode"])
    for token in (1, 77):
        inputs = (torch.tensor([[token]]), *spec.example_inputs[1:])
        with torch.no_grad():
            expected = spec.module(*inputs)
        actual = run.run(None, {n: v.numpy() for n, v in zip(spec.input_names, inputs)})
        for name, a, e in zip(spec.output_names, actual, expected):
            e = e.numpy()
            assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max(), (token, name)


def test_tiny_graphs_in_the_grouped_form_match_pytorch(tiny_graphs):
    model, _, modules, _ = tiny_graphs
    with grouped_moe_layers(model):
        graphs = {name: trace_to_onnx(spec) for name, spec in modules.items()}
    for name, spec in modules.items():
        with torch.no_grad():
            expected = spec.module(*spec.example_inputs)
        actual = session(graphs[name]).run(None, {n: v.numpy() for n, v in zip(spec.input_names, spec.example_inputs)})
        for output, a, e in zip(spec.output_names, actual, expected):
            e = e.numpy()
            assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max(), (name, output)


@pytest.mark.parametrize("bits", [8, 4])
def test_tiny_prefill_quantized_within_budget(tiny_graphs, bits):
    _, graphs, modules, replaced = tiny_graphs
    graph = copy.deepcopy(graphs["prefill"])
    quantize_moe(graph, bits=bits, block_size=32)
    assert moe_node_counts(graph) == {"MoE": 0, "QMoE": replaced}
    spec = modules["prefill"]
    with torch.no_grad():
        expected = spec.module(*spec.example_inputs)
    actual = session(graph).run(None, {n: v.numpy() for n, v in zip(spec.input_names, spec.example_inputs)})
    budget = budget_for(f"int{bits}", "prefill")
    for name, a, e in zip(spec.output_names, actual, expected):
        assert relative_error(a, e.numpy()) < budget.relative_error_max, name
