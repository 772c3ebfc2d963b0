"""The `routed` MoE form for TensorRT: every expert an ONNX `If`, run only when a token is routed to
it, its weights stored at the plan's precision (weight-only) inside its branch.

Why a form of its own (docs/reference/routed-experts.md has the sources): TensorRT's Gather takes
no INT8/INT4 and blocked or per-channel dequantization must start at a constant, so the `gather`
form keeps its experts fp16; the `dense` form quantizes them but reads all E. TensorRT's own MoE
layer (`IMoELayer`) exists from 10.16 on Blackwell/Thor only, none on Orin's TensorRT 10.3. An
`If` is in every TensorRT since 8: "a trueSubgraph, which is executed when the condition evaluates
to true, and a falseSubgraph, which is executed when the condition evaluates to false" (TensorRT
developer guide, Working with Conditionals). So per expert e:

    condition_e = any token chose e        (TopK of the router's logits, Equal, ReduceMax, Greater)
    If condition_e: y_e = (down(silu(gate(x)) * up(x))) * combine_e    weights quantized, in the branch
    else:           y_e = x * 0                                        same shape: TensorRT 10.3 needs it
    out = Sum(y_0 .. y_E-1)

A decode step (one token) runs exactly top_k branches: it reads top_k/E of the expert bytes. A
prefill runs every expert one of its tokens chose (all of them, at a prompt's length), each on
all the prompt's rows: the dense form's FLOPs and expert bytes, no worse.

The branch holds its expert's weights as its own initializers, so a DequantizeLinear's input is a
constant where the layer is built (the parser's rule for per-channel and blocked scales):
- int8 (and fp8 plans: FP8 weight-only is not in the TensorRT documentation we checked): INT8
  per output channel, symmetric, `DequantizeLinear(axis=1)`, W8A16 after the fp16 conversion;
- int4: INT4 in blocks of `INT4_BLOCK` along K (`block_size`, opset 21), TensorRT's W4A16 form.
The routers, TopK and the combination weights stay in float, as in every form.

Built from the graph traced with `export.cpu_moe.OrtMoE` (one com.microsoft MoE node per layer,
the fused gate/up rows interleaved): `routed_experts(model)` rewrites those nodes, fp32 weights;
`quantize_routed_experts(model, precision)` stores the branch weights quantized, with scales in the
branch's float type: export/precision.py runs it after the fp16 conversion. The If nodes'
names end with `contract.bundle.routed_expert_name(...)`, which the graph counter (calibration/graph_count.py)
reads to count a branch as run by top_k/E of the tokens.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chatvla2.contract.bundle import parse_routed_expert_name, routed_expert_name
from chatvla2.export.cpu_moe import MS_DOMAIN

INT4_BLOCK = 128  # blocks along K, as modelopt writes the dense form's int4 (a smaller K takes one block)
INT4_MIN_OPSET = 21  # blocked DequantizeLinear and INT4 (ONNX opset 21)
# int4 clip search (with calibration rows): the block's largest value times one of these.
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
EXPERT_WEIGHT_TYPES = {"int8": "int8", "fp8": "int8", "int4": "int4"}  # plan precision -> expert weight type


def routed_experts(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every com.microsoft MoE node (as `OrtMoE` exports it: initializer
    weights, no biases or FC3, SwiGLU with interleaved gate/up rows, softmax over the top-k
    logits) into the routed If form, fp32 weights. Returns the number of layers rewritten."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rewritten = 0
    for position, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "MoE" or node.domain != MS_DOMAIN:
            continue
        inputs = list(node.input) + [""] * (8 - len(node.input))
        tokens, logits, fc1, fc1_bias, fc2, fc2_bias, fc3, fc3_bias = inputs[:8]
        if fc1_bias or fc2_bias or fc3 or fc3_bias or fc1 not in initializers or fc2 not in initializers:
            raise ValueError(f"routed_experts: node {node.name!r} is not OrtMoE's (biases, FC3 or non-constant weights)")
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("activation_type", b"") not in (b"swiglu", "swiglu") or attributes.get("swiglu_fusion") != 1:
            raise ValueError(f"routed_experts: node {node.name!r} is not an interleaved SwiGLU MoE")
        top_k = int(attributes["k"])
        fused = numpy_helper.to_array(initializers[fc1]).astype(np.float32)  # (E, 2I, H)
        down = numpy_helper.to_array(initializers[fc2]).astype(np.float32)  # (E, H, I)
        prefix = (node.name or f"moe_{position}").replace("/", "_")
        new_nodes = _routed_nodes(prefix, tokens, logits, node.output[0], fused[:, 0::2], fused[:, 1::2], down, top_k)
        graph.node.remove(node)
        for offset, new in enumerate(new_nodes):
            graph.node.insert(position + offset, new)
        rewritten += 1
    used = {name for n in graph.node for name in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return rewritten


def _routed_nodes(prefix, tokens, logits, output, gate, up, down, top_k) -> list[onnx.NodeProto]:
    """The routing and the E If nodes of one layer. gate, up: (E, I, H); down: (E, H, I)."""
    num_experts, _, hidden = gate.shape
    name = lambda suffix: f"{prefix}/{suffix}"  # noqa: E731
    nodes = [
        helper.make_node("Constant", [], [name("k")], value=numpy_helper.from_array(np.array([top_k], np.int64))),
        helper.make_node("TopK", [logits, name("k")], [name("top_logits"), name("top_experts")], axis=-1, largest=1, sorted=1),
        helper.make_node("Softmax", [name("top_logits")], [name("top_weights")], axis=-1),
        helper.make_node("Constant", [], [name("slot_axis")], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Constant", [], [name("zero")], value=numpy_helper.from_array(np.array(0.0, np.float32))),
    ]
    outputs = []
    for e in range(num_experts):
        ex = lambda suffix: name(f"expert{e}/{suffix}")  # noqa: E731
        nodes += [
            helper.make_node("Constant", [], [ex("index")], value=numpy_helper.from_array(np.array(e, np.int64))),
            helper.make_node("Equal", [name("top_experts"), ex("index")], [ex("chosen")]),
            helper.make_node("Cast", [ex("chosen")], [ex("chosen_f")], to=TensorProto.FLOAT),
            helper.make_node("Mul", [ex("chosen_f"), name("top_weights")], [ex("slot_weights")]),
            # (T, 1): the token's routing weight for e, 0 where e was not chosen
            helper.make_node("ReduceSum", [ex("slot_weights"), name("slot_axis")], [ex("combine")], keepdims=1),
            helper.make_node("ReduceMax", [ex("chosen_f")], [ex("any_f")], keepdims=0),
            helper.make_node("Greater", [ex("any_f"), name("zero")], [ex("condition")]),
        ]
        then_branch = _expert_branch(ex, tokens, ex("combine"), gate[e].T, up[e].T, down[e].T, hidden)
        else_branch = helper.make_graph(
            [helper.make_node("Mul", [tokens, name("zero")], [ex("skipped")])],
            f"{prefix}_expert{e}_else",
            [],
            [_rank2(ex("skipped"), hidden)],
        )
        nodes.append(
            helper.make_node(
                "If",
                [ex("condition")],
                [ex("out")],
                name=f"{prefix}/{routed_expert_name(e, num_experts, top_k)}",
                then_branch=then_branch,
                else_branch=else_branch,
            )
        )
        outputs.append(ex("out"))
    nodes.append(helper.make_node("Sum", outputs, [output], name=name("sum")))
    return nodes


def _expert_branch(ex, tokens, combine, gate_t, up_t, down_t, hidden) -> onnx.GraphProto:
    """y = down(silu(gate(x)) * up(x)) * combine, weights (K, N) as the branch's initializers."""
    weights = {ex("gate_weight"): gate_t, ex("up_weight"): up_t, ex("down_weight"): down_t}
    nodes = [
        helper.make_node("MatMul", [tokens, ex("gate_weight")], [ex("gate")]),
        helper.make_node("Sigmoid", [ex("gate")], [ex("gate_sigmoid")]),
        helper.make_node("Mul", [ex("gate"), ex("gate_sigmoid")], [ex("gate_silu")]),
        helper.make_node("MatMul", [tokens, ex("up_weight")], [ex("up")]),
        helper.make_node("Mul", [ex("gate_silu"), ex("up")], [ex("hidden")]),
        helper.make_node("MatMul", [ex("hidden"), ex("down_weight")], [ex("down")]),
        helper.make_node("Mul", [ex("down"), combine], [ex("routed")]),
    ]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(w, np.float32), n) for n, w in weights.items()]
    return helper.make_graph(nodes, ex("then").replace("/", "_"), [], [_rank2(ex("routed"), hidden)], initializers)


def _rank2(value: str, hidden: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(value, TensorProto.FLOAT, ["tokens", hidden])


def routed_if_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "If" and parse_routed_expert_name(n.name)]


def expert_activations(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows each routed If's branch multiplies, on the calibration inputs: {If node name: (n, H)}.
    `calibration`: the engine's recorded inputs, samples concatenated along axis 0 (export's
    calibration format); the graph is run once per sample with ONNX Runtime."""
    from chatvla2.runtime.onnxruntime_session import create_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    tokens = {}
    for node in routed_if_nodes(probe):
        branch = next(a.g for a in node.attribute if a.name == "then_branch")
        tokens[node.name] = next(n.input[0] for n in branch.node if n.op_type == "MatMul")
    known = {o.name for o in probe.graph.output}
    for name in sorted(set(tokens.values()) - known):
        probe.graph.output.append(helper.make_value_info(name, onnx.TypeProto()))
    session = create_session(probe.SerializeToString())
    inputs = {i.name: i for i in probe.graph.input}
    first = next(iter(calibration))
    per_sample = inputs[first].type.tensor_type.shape.dim[0].dim_value or 1
    pieces = calibration[first].shape[0] // per_sample
    rows: dict[str, list[np.ndarray]] = {name: [] for name in set(tokens.values())}
    wanted = sorted(rows)
    for i in range(pieces):
        feed = {k: np.array_split(v, pieces)[i] for k, v in calibration.items() if k in inputs}
        for name, value in zip(wanted, session.run(wanted, feed)):
            rows[name].append(np.asarray(value, np.float32).reshape(-1, value.shape[-1]))
    return {node: np.concatenate(rows[value]) for node, value in tokens.items()}


def quantize_routed_experts(model: onnx.ModelProto, precision: str, activations: dict[str, np.ndarray] | None = None) -> str | None:
    """Store, in place, every routed branch's expert weights weight-only at `precision`'s expert
    type (`EXPERT_WEIGHT_TYPES`): each float (K, N) initializer feeding a MatMul becomes a quantized
    initializer, its scale and a DequantizeLinear. Returns the form written (e.g. "int4 blocks of
    128 along K"), None where the precision keeps float experts or the graph has no routed If."""
    kind = EXPERT_WEIGHT_TYPES.get(precision)
    ifs = routed_if_nodes(model)
    if kind is None or not ifs:
        return None
    if kind == "int4":
        _require_opset(model, INT4_MIN_OPSET)
    for node in ifs:
        branch = next(a.g for a in node.attribute if a.name == "then_branch")
        stored = {t.name: numpy_helper.to_array(t) for t in branch.initializer}
        floats = {name: w.astype(np.float32) for name, w in stored.items() if w.ndim == 2 and w.dtype in (np.float32, np.float16)}
        rows = _branch_rows(floats, activations.get(node.name)) if activations else {}
        for tensor in list(branch.initializer):
            if tensor.name not in floats:
                continue
            branch.initializer.remove(tensor)
            if kind == "int4":
                quantized, scale, attributes = _int4_blocks(floats[tensor.name], rows.get(tensor.name))
            else:
                quantized, scale, attributes = _int8_channels(floats[tensor.name])
            scale = scale.astype(stored[tensor.name].dtype)  # the dequantized weight keeps the branch's float type (fp16: W8A16 / W4A16)
            branch.initializer.extend(
                [quantized_tensor(quantized, kind, tensor.name + "_q"), numpy_helper.from_array(scale, tensor.name + "_scale")]
            )
            branch.node.insert(
                0,
                helper.make_node(
                    "DequantizeLinear", [tensor.name + "_q", tensor.name + "_scale"], [tensor.name], name=tensor.name + "_dq", **attributes
                ),
            )
    return "int8 per output channel (W8A16)" if kind == "int8" else f"int4 in blocks of {INT4_BLOCK} along K (W4A16)"


def _int8_channels(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), scale, {"axis": 1}


def _branch_rows(weights: dict[str, np.ndarray], tokens: np.ndarray | None) -> dict[str, np.ndarray]:
    """{weight name: the rows it multiplies} of one expert branch (its float weights, named as
    `_expert_branch` names them), from the layer's calibration tokens: gate and up see the tokens,
    down sees silu(gate) * up."""
    if tokens is None:
        return {}
    gate, up, down = (next(w for w in weights if w.endswith(suffix)) for suffix in ("gate_weight", "up_weight", "down_weight"))
    g, u = tokens @ weights[gate], tokens @ weights[up]
    hidden = g / (1.0 + np.exp(-g)) * u
    return {gate: tokens, up: tokens, down: hidden}


def _int4_blocks(weight: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Symmetric levels -7..7 (TensorRT: zero point 0) per block of K. With the rows the weight
    multiplies (calibration), each block's scale is its largest value times the ratio of
    CLIP_RATIOS that best reproduces those rows' products (AWQ's clip search, per block and column);
    without, the largest value itself (round to nearest)."""
    depth = weight.shape[0]
    block = INT4_BLOCK if depth % INT4_BLOCK == 0 else depth
    blocks = weight.reshape(depth // block, block, -1)
    peak = np.abs(blocks).max(axis=1)  # (blocks, N)
    best = np.where(peak > 0, peak / 7.0, 1.0).astype(np.float32)
    if rows is not None and len(rows):
        x = rows.reshape(len(rows), depth // block, block).transpose(1, 0, 2)  # (blocks, n, block)
        best_error = None
        for ratio in CLIP_RATIOS:
            scale = np.where(peak > 0, peak * ratio / 7.0, 1.0).astype(np.float32)
            delta = np.clip(np.rint(blocks / scale[:, None, :]), -7, 7) * scale[:, None, :] - blocks  # (blocks, block, N)
            error = ((x @ delta) ** 2).sum(axis=1)  # (blocks, N): the products' squared error
            if best_error is None:
                best, best_error = scale, error
            else:
                better = error < best_error
                best, best_error = np.where(better, scale, best), np.where(better, error, best_error)
    levels = np.clip(np.rint(blocks / best[:, None, :]), -7, 7).astype(np.int8).reshape(weight.shape)
    return levels, best.astype(np.float32), {"axis": 0, "block_size": block}


def quantized_tensor(values: np.ndarray, kind: str, name: str) -> onnx.TensorProto:
    """An INT8 or (packed) INT4 initializer of the given integer values."""
    if kind == "int8":
        return numpy_helper.from_array(values.astype(np.int8), name)
    return helper.make_tensor(name, TensorProto.INT4, values.shape, values.reshape(-1).astype(np.int8).tolist())


def _require_opset(model: onnx.ModelProto, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < version:
            raise ValueError(f"int4 routed experts need opset >= {version}; the graph has {opset.version}")
