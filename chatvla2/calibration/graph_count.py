"""The graph counter: bytes read and FLOPs of one call of an ONNX graph, at given input shapes.
`calibration.predict` bounds a bundle's latency on a target from these counts;
`calibration.compute_roofline` counts the FLOPs of the compute-bound stages with them.

Per graph, at the manifest's "opt" input shapes (ONNX shape inference):
- bytes read per call: every initializer at its stored bit width, once per node that consumes it
  (an unrolled DDIM step re-reads the head's weights: the graph has a MatMul per step), a
  Gather/Slice reading only the part it takes (an expert stack gathered by the router's top-k:
  top_k/num_experts of it at one token; the dense MoE form reads every expert), plus the graph's
  inputs and outputs (the decode step reads the whole static KV cache, as `roofline.decode_traffic`
  counts it). Intermediate activations are left out: fused kernels need not spill them, and a
  lower bound may only count what every implementation must move.
- FLOPs per call: 2*M*N*K for each MatMul/Gemm (batched, the attention products included),
  Einsum (2 x the product of its index sizes), Conv; elementwise work is not counted. Each product
  is classed by the precision it runs in: int8/fp8 when both operands come out of
  DequantizeLinear (explicit Q/DQ), otherwise the float type of its output (a weight-only int4
  product runs in its activations' float type).

- `opt_shapes(entry)`: each input's shape as the robot feeds it.
- `typed_graph(model, bound, where)`: the graph with its inputs bound and shapes inferred, every
  value's (elem_type, dims) and the weights'.
- `count_graph(path, entry, num_experts, top_k)`: the count above; the routed MoE form's expert
  branches (If nodes) as `routed_branches` counts them: run by min(1, T x top_k / E) of the calls.
- `node_flops(node, shape)`: one product's FLOPs; `quantized_operand_class(name, producer,
  elem_type)`: how a product's operand is classed.

No torch; onnx is imported inside the functions that need it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from chatvla2.calibration.targets import MATMUL_CLASSES
from chatvla2.contract.bundle import parse_routed_expert_name
from chatvla2.contract.errors import MissingFile

# ONNX element types: bits per element, and the class of a product whose operands are dequantized from them.
_BITS = {
    1: 32,
    2: 8,
    3: 8,
    4: 16,
    5: 16,
    6: 32,
    7: 64,
    9: 8,
    10: 16,
    11: 64,
    12: 32,
    13: 64,
    16: 16,
    17: 8,
    18: 8,
    19: 8,
    20: 8,
    21: 4,
    22: 4,
    23: 4,
}
_QUANTIZED_CLASS = {2: "int8", 3: "int8", 17: "fp8", 18: "fp8", 19: "fp8", 20: "fp8", 21: "int4", 22: "int4", 23: "fp4"}
_FLOAT16_TYPES = {10, 16}
# Ops a weight passes through unchanged in size on its way to the product that reads it.
_WEIGHT_PASS = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}
# Ops an operand passes through between its DequantizeLinear and a matrix product.
_OPERAND_PASS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Expand", "Gather", "GatherND", "Slice", "Split"}
# Ops that read only part of their data input: bytes read = output size.
_PARTIAL_READS = {"Gather", "GatherND", "Slice"}


def opt_shapes(entry: dict) -> dict[str, list[int]]:
    """Each input's shape as the robot feeds it: the profile's "opt" for a dynamic input, the
    declared shape for a static one."""
    shapes = {}
    for spec in entry["inputs"]:
        name = spec["name"]
        profile = entry.get("profiles", {}).get(name)
        shapes[name] = list(profile["opt"]) if profile else list(spec["shape"])
    return shapes


def quantized_operand_class(name: str, producer: dict, elem_type) -> str | None:
    """int8/fp8 when the value comes out of a DequantizeLinear of that type (through data-movement
    ops), else None: how a product's operand is classed."""
    node = producer.get(name)
    for _ in range(16):
        if node is None or node.op_type not in _OPERAND_PASS:
            break
        node = producer.get(node.input[0])
    if node is not None and node.op_type == "DequantizeLinear":
        return _QUANTIZED_CLASS.get(elem_type(node.input[0]))
    return None


def typed_graph(model, bound: dict[str, list[int]], where: str, strict: bool = True, infer=None):
    """(graph, types, weights) of `model` with its inputs bound to `bound` and shapes inferred:
    types maps every value to (elem_type, dims or None), weights the initializers and Constants to
    (elem_type, dims). strict: an input with a dynamic dimension and no bound shape is an error.
    infer: a shape-inference function returning the inferred model, or None to fall back to
    ONNX's (the compute roofline passes ONNX Runtime's symbolic inference for contrib operators)."""
    from onnx import shape_inference

    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializer_names:
            continue
        dims = value.type.tensor_type.shape.dim
        if value.name in bound:
            if len(bound[value.name]) != len(dims):
                raise ValueError(f"{where}: input {value.name} has rank {len(dims)}, shape {bound[value.name]} given")
            for dim, size in zip(dims, bound[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
        elif strict and any(not d.HasField("dim_value") for d in dims):
            raise ValueError(f"{where}: input {value.name} has a dynamic dimension and no opt shape in the manifest")
    del graph.value_info[:]
    # Shape inference visits nodes in order; converted graphs are not always sorted (the fp16
    # converter appends its input Casts at the end).
    ordered = _topological_order(graph)
    del graph.node[:]
    graph.node.extend(ordered)
    inferred = infer(model) if infer is not None else None
    model = inferred if inferred is not None else shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    graph = model.graph

    types: dict[str, tuple[int, list[int] | None]] = {}
    for value in [*graph.value_info, *graph.input, *graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim] if tensor.HasField("shape") else None
        known = None if dims is None or None in dims else dims
        if known is not None or value.name not in types:  # a declared output without a shape keeps the inferred one
            types[value.name] = (tensor.elem_type or types.get(value.name, (0, None))[0], known)
    weights: dict[str, tuple[int, list[int]]] = {t.name: (t.data_type, list(t.dims)) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t is not None:
                    weights[node.output[0]] = (attribute.t.data_type, list(attribute.t.dims))
    for name, (dtype, dims) in weights.items():
        types[name] = (dtype, dims)
    return graph, types, weights


def count_graph(path: str | Path, manifest_entry: dict, num_experts: int, top_k: int, shapes: dict[str, list[int]] | None = None) -> dict:
    """Bytes read and FLOPs of one call of the graph at `path`, at the manifest entry's opt
    shapes (overridden per input by `shapes`). Returns weight_bytes (read per call), io_bytes
    (inputs read + outputs written), bytes (both), stored_weight_bytes (each initializer once),
    flops and flops_by_class ({fp32|fp16|int8|fp8: FLOPs}), matmuls and unshaped_matmuls (products
    whose shapes inference could not give: not counted)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"graph not found: {path}")
    model = onnx.load(str(path), load_external_data=False)
    bound = {**opt_shapes(manifest_entry), **(shapes or {})} if manifest_entry else dict(shapes or {})
    bound = {k: v for k, v in bound.items() if all(isinstance(d, int) for d in v)}  # a named dim is no shape
    graph, types, weights = typed_graph(model, bound, path.name)

    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple[object, int]]] = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                consumers[name].append((node, index))
    graph_outputs = {o.name for o in graph.output}

    def shape(name: str) -> list[int] | None:
        return types.get(name, (0, None))[1]

    def elements(name: str) -> int | None:
        s = shape(name)
        return None if s is None else int(np.prod(s, dtype=np.int64))

    # Weight bytes: each initializer once per consuming node (through size-preserving ops).
    def terminal_uses(name: str, depth: int = 0) -> list[tuple[object, int]]:
        uses = []
        for node, index in consumers.get(name, []):
            if node.op_type in _WEIGHT_PASS and index == 0 and depth < 16:
                if any(o in graph_outputs for o in node.output):
                    uses.append((node, index))
                uses += [u for o in node.output for u in terminal_uses(o, depth + 1)]
            else:
                uses.append((node, index))
        return uses

    weight_read = stored = 0.0
    for name, (dtype, dims) in weights.items():
        size = int(np.prod(dims, dtype=np.int64)) * _BITS.get(dtype, 32) / 8
        stored += size
        for node, index in {id(n): (n, i) for n, i in terminal_uses(name)}.values():
            fraction = 1.0
            if node.op_type in _PARTIAL_READS and index == 0:
                out, whole = elements(node.output[0]), int(np.prod(dims, dtype=np.int64))
                if out is not None and whole:
                    fraction = min(1.0, out / whole)
                elif dims and dims[0] == num_experts:
                    fraction = top_k / num_experts
            weight_read += size * fraction

    io = 0.0
    for value in [*graph.input, *graph.output]:
        if value.name in weights:
            continue
        dtype, dims = types.get(value.name, (1, None))
        if dims is None:
            raise ValueError(f"{path.name}: the shape of {value.name} is unknown at the given input shapes")
        io += int(np.prod(dims, dtype=np.int64)) * _BITS.get(dtype, 32) / 8

    def quantized(name: str) -> str | None:
        return quantized_operand_class(name, producer, lambda value: types.get(value, (0, None))[0])

    flops_by_class = dict.fromkeys(MATMUL_CLASSES, 0.0)
    matmuls = unshaped = 0
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Einsum", "Conv"):
            continue
        matmuls += 1
        flops = node_flops(node, shape)
        if flops is None:
            unshaped += 1
            continue
        a, b = quantized(node.input[0]), quantized(node.input[1])
        if a == b and a in ("int8", "fp8"):
            kind = a
        elif {a, b} <= {"int8", "fp8"}:
            kind = "int8"  # a mixed int8 x fp8 product: the two run at the same rate where both exist
        else:
            kind = "fp16" if types.get(node.output[0], (1, None))[0] in _FLOAT16_TYPES else "fp32"
        flops_by_class[kind] += flops
    for branch in routed_branches(graph, shape, num_experts, top_k):
        weight_read += branch["weight_bytes"]
        stored += branch["stored_weight_bytes"]
        flops_by_class[branch["flops_class"]] += branch["flops"]
        matmuls += branch["matmuls"]
    return {
        "file": path.name,
        "precision": manifest_entry.get("precision") if manifest_entry else None,
        "shapes": {k: list(map(int, v)) for k, v in bound.items()},
        "weight_bytes": int(weight_read),
        "stored_weight_bytes": int(stored),
        "io_bytes": int(io),
        "bytes": int(weight_read + io),
        "flops": int(sum(flops_by_class.values())),
        "flops_by_class": {k: int(v) for k, v in flops_by_class.items() if v},
        "matmuls": matmuls,
        "unshaped_matmuls": unshaped,
    }


def routed_branches(graph, shape, num_experts: int, top_k: int) -> list[dict]:
    """The routed MoE form's If nodes (export/routed_experts.py; named by
    contract.bundle.routed_expert_name): each expert's branch runs when a token chose it, so at T
    tokens it counts min(1, T x top_k / num_experts) of its weights' bytes and of its products'
    FLOPs (all T rows: the branch computes them all). Products are weight-only: classed by the
    activations' float type. Per branch: weight_bytes, stored_weight_bytes, flops, flops_class,
    matmuls."""
    counts = []
    for node in graph.node:
        tag = parse_routed_expert_name(node.name) if node.op_type == "If" else None
        if tag is None:
            continue
        branch = next(a.g for a in node.attribute if a.name == "then_branch")
        initializers = {t.name: t for t in branch.initializer}
        dequantized = {n.output[0]: n.input[0] for n in branch.node if n.op_type == "DequantizeLinear"}
        products = [n for n in branch.node if n.op_type == "MatMul"]
        tokens = shape(products[0].input[0]) if products else None
        rows = int(np.prod(tokens[:-1], dtype=np.int64)) if tokens else 1
        fraction = min(1.0, rows * tag["top_k"] / tag["num_experts"])
        stored = sum(int(np.prod(t.dims, dtype=np.int64)) * _BITS.get(t.data_type, 32) / 8 for t in initializers.values())
        flops = 0
        for product in products:
            weight = initializers.get(dequantized.get(product.input[1], product.input[1]))
            if weight is not None and len(weight.dims) == 2:
                flops += 2 * rows * weight.dims[0] * weight.dims[1]
        # fp16 float weights, or fp16 scales around quantized ones (W8A16 / W4A16): fp16 products
        float16 = any(t.data_type in _FLOAT16_TYPES for t in initializers.values())
        counts.append(
            {
                "weight_bytes": stored * fraction,
                "stored_weight_bytes": stored,
                "flops": flops * fraction,
                "flops_class": "fp16" if float16 else "fp32",
                "matmuls": len(products),
            }
        )
    return counts


def _topological_order(graph) -> list:
    """The graph's nodes, each after the nodes that produce its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):  # a cycle or an input from nowhere: keep the rest as is
            ordered += remaining
            break
        pending = remaining
    return ordered


def node_flops(node, shape) -> int | None:
    """2 x multiply-adds of one matrix product, or None where a shape is unknown."""
    attributes = {a.name: a for a in node.attribute}
    if node.op_type == "MatMul":
        a, b = shape(node.input[0]), shape(node.input[1])
        if a is None or b is None:
            return None
        a = [1, *a] if len(a) == 1 else a
        b = [*b, 1] if len(b) == 1 else b
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        return 2 * int(np.prod(batch, dtype=np.int64)) * a[-2] * a[-1] * b[-1]
    if node.op_type == "Gemm":
        a, b = shape(node.input[0]), shape(node.input[1])
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if "transA" in attributes and attributes["transA"].i else (a[0], a[1])
        n = b[0] if "transB" in attributes and attributes["transB"].i else b[1]
        return 2 * m * n * k
    if node.op_type == "Einsum":
        if len(node.input) != 2:
            return 0
        equation = attributes["equation"].s.decode().replace(" ", "")
        left = equation.split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for letters, name in zip(left, node.input):
            dims = shape(name)
            if dims is None or "." in letters:
                return None
            sizes.update(zip(letters, dims))
        return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))
    if node.op_type == "Conv":
        w, out = shape(node.input[1]), shape(node.output[0])
        if w is None or out is None:
            return None
        return 2 * int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    return None
