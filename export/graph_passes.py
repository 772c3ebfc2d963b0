"""Small rewrites of exported ONNX graphs, each for a stated TensorRT reason."""

from __future__ import annotations

import math

import onnx
from onnx import helper, numpy_helper
import numpy as np


def decompose_gelu(model: onnx.ModelProto) -> int:
    """Replace opset-20 `Gelu` nodes by elementary ops. onnx-tensorrt lists Gelu only from
    10.x releases newer than JetPack 6's TensorRT 10.3, which does not parse it.
    Returns the number of nodes replaced."""
    graph = model.graph
    replaced = 0
    new_nodes = []
    constants = {}

    def constant(name: str, value: float) -> str:
        if name not in constants:
            constants[name] = numpy_helper.from_array(np.array(value, dtype=np.float32), name)
            graph.initializer.append(constants[name])
        return name

    for node in graph.node:
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        approximate = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "none")
        x, y, p = node.input[0], node.output[0], f"{node.name or y}_gelu"
        half, one = constant("gelu_half", 0.5), constant("gelu_one", 1.0)
        if approximate == "tanh":
            # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            c1 = constant("gelu_sqrt_2_over_pi", math.sqrt(2.0 / math.pi))
            c2 = constant("gelu_cubic", 0.044715)
            new_nodes += [
                helper.make_node("Mul", [x, x], [f"{p}_x2"]),
                helper.make_node("Mul", [f"{p}_x2", x], [f"{p}_x3"]),
                helper.make_node("Mul", [f"{p}_x3", c2], [f"{p}_cx3"]),
                helper.make_node("Add", [x, f"{p}_cx3"], [f"{p}_inner"]),
                helper.make_node("Mul", [f"{p}_inner", c1], [f"{p}_scaled"]),
                helper.make_node("Tanh", [f"{p}_scaled"], [f"{p}_tanh"]),
            ]
            core = f"{p}_tanh"
        else:
            # 0.5 x (1 + erf(x / sqrt(2)))
            c = constant("gelu_inv_sqrt_2", 1.0 / math.sqrt(2.0))
            new_nodes += [
                helper.make_node("Mul", [x, c], [f"{p}_scaled"]),
                helper.make_node("Erf", [f"{p}_scaled"], [f"{p}_erf"]),
            ]
            core = f"{p}_erf"
        new_nodes += [
            helper.make_node("Add", [core, one], [f"{p}_plus1"]),
            helper.make_node("Mul", [x, half], [f"{p}_halfx"]),
            helper.make_node("Mul", [f"{p}_halfx", f"{p}_plus1"], [y]),
        ]
        replaced += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return replaced


def fold_initializer_transposes(model: onnx.ModelProto) -> int:
    """Replace Transpose(initializer) by the transposed initializer. The exporter leaves weights
    behind a Transpose when one weight feeds several MatMuls (the action head's unrolled DDIM
    steps); weight quantizers only recognise MatMuls whose weight is a constant, and TensorRT
    would transpose at every run. Returns the number of Transposes folded."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    kept, folded = [], 0
    for node in graph.node:
        source = node.input[0] if node.op_type == "Transpose" and node.input else None
        if source not in initializers:
            kept.append(node)
            continue
        array = numpy_helper.to_array(initializers[source])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(array.ndim))[::-1])
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.transpose(perm)), node.output[0]))
        consumers[source] -= 1
        if consumers[source] == 0:
            graph.initializer.remove(initializers[source])
        folded += 1
    del graph.node[:]
    graph.node.extend(kept)
    return folded
