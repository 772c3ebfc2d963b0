"""Small rewrites of exported ONNX graphs, each for a stated TensorRT reason."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Data-movement ops that are cheap to evaluate once on constant weights.
FOLDABLE_OPS = {"Transpose", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Slice", "Identity", "Cast"}


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph in it (If branches, Loop bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_graphs(g)


def fold_constant_weights(model: onnx.ModelProto) -> int:
    """Evaluate data-movement nodes whose inputs are all constants and store their results as
    initializers. The exporter leaves weights behind such nodes: a Transpose when one weight feeds
    several MatMuls (the action head's unrolled DDIM steps), a Gather that picks one expert from
    the stacked expert weights (the dense MoE form). Weight quantizers only recognise a MatMul
    whose weight is an initializer, and TensorRT would redo the data movement at every run.
    Inputs left without consumers are dropped. Returns the number of nodes folded."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].t.ByteSize() else None
    constants = {k: v for k, v in constants.items() if v is not None}
    kept, folded = [], 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in FOLDABLE_OPS and not node.domain and inputs and all(i in constants for i in inputs):
            single = helper.make_graph(
                [node],
                "fold",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(constants[i].dtype), constants[i].shape) for i in inputs],
                [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
            )
            opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
            results = ReferenceEvaluator(helper.make_model(single, opset_imports=opset)).run(None, {i: constants[i] for i in inputs})
            for name, value in zip(node.output, results):
                constants[name] = np.asarray(value)
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            folded += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    kept_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    return folded


def untranspose_gemm_weights(model: onnx.ModelProto) -> int:
    """Store Gemm weights already transposed (transB=0) where every consumer of the weight is a
    Gemm with transB=1. `F.linear` on 2-D inputs exports as Gemm(x, W, transB=1), and
    modelopt 0.47's int4 quantizer blocks such weights along the wrong axis. A weight also read
    elsewhere (the output head tied to the token embedding, which a Gather reads) is left alone.
    Returns the number of weights rewritten."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))

    def transposed_gemm(node, position) -> bool:
        return node.op_type == "Gemm" and position == 1 and any(a.name == "transB" and a.i == 1 for a in node.attribute)

    rewritten = 0
    for name, uses in consumers.items():
        if name not in initializers or not all(transposed_gemm(n, p) for n, p in uses):
            continue
        tensor = initializers[name]
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(tensor).T), name))
        for node, _ in uses:
            for attribute in node.attribute:
                if attribute.name == "transB":
                    attribute.i = 0
        stale = [v for v in graph.value_info if v.name == name]  # its recorded shape is the old one
        for value in stale:
            graph.value_info.remove(value)
        rewritten += 1
    return rewritten


def untie_output_head(model: onnx.ModelProto) -> int:
    """Give each Gemm(transB=1) whose weight a Gather also reads (the decode step's output head,
    tied to the token embedding table) its own copy of the weight, stored transposed (transB=0).
    The Gather then reads one fp16 row of the table per token, and the quantizer can store the head
    low-precision: TensorRT's Gather takes no INT8/INT4, so a tied table stays float, and at paper
    scale that head is 152k x 1536 fp16, 467 MB read per token (`chatvla2 calibrate predict
    --config paper`). Costs the copy's storage (at int4, a quarter of the table). Returns the number
    of heads untied."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    untied = 0
    for node in graph.node:
        if node.op_type != "Gemm" or not any(a.name == "transB" and a.i == 1 for a in node.attribute):
            continue
        weight = node.input[1]
        if weight not in initializers or "Gather" not in readers.get(weight, ()):
            continue
        head = f"{weight}_output_head"
        if head not in initializers:
            table = numpy_helper.to_array(initializers[weight])
            initializers[head] = numpy_helper.from_array(np.ascontiguousarray(table.T), head)
            graph.initializer.append(initializers[head])
        node.input[1] = head
        for attribute in node.attribute:
            if attribute.name == "transB":
                attribute.i = 0
        untied += 1
    return untied


def deduplicate_initializers(model: onnx.ModelProto) -> int:
    """Make nodes share one copy of initializers with identical type, shape and bytes.
    Quantizers give every consumer its own quantized weight, so a weight shared by the action
    head's 10 unrolled DDIM steps would be stored (and read from memory) 10 times.
    Returns the number of copies removed."""
    graph = model.graph
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        if key in first:
            rename[tensor.name] = first[key]
        else:
            first[key] = tensor.name
    if not rename:
        return 0
    outputs = {o.name for o in graph.output}
    rename = {k: v for k, v in rename.items() if k not in outputs}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    duplicates = [t for t in graph.initializer if t.name in rename]
    for tensor in duplicates:
        graph.initializer.remove(tensor)
    return len(duplicates)
