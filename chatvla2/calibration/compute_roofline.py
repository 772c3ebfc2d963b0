"""The compute roofline of the compute-bound stages (vision, prefill, action head): the FLOPs the
graph must do / this machine's measured GEMM rate at the precision each product runs in.

- `measure_gemm_rates(threads)`: GFLOP/s (2*M*N*K / s, integer products counted as operations
  alike) of single matrix products in ONNX Runtime's CPU execution provider, built with the
  runtime's session options (`runtime.onnxruntime_session.create_session`) and its thread count:
  fp32 `MatMul`; int8 `MatMulInteger` (uint8 activations x int8 weights: the VNNI kernel, the
  roof), beside the whole dynamic-quantization product as ONNX Runtime fuses it
  (`com.microsoft.DynamicQuantizeMatMul`: activations quantized per call, informational); int4
  `com.microsoft.MatMulNBits` (bits 4, block 32, accuracy_level 4: activations quantized to int8);
  fp16 `MatMul` where ONNX Runtime's CPU provider has the kernel (else recorded as unsupported).
  Per precision, the best of `repeats` runs at each of a few shapes the stages have (hundreds of
  tokens, widths 384 to 2048), the fastest shape giving the rate. Cached per argument set within
  a process; `chatvla2 bench` measures before and after its bundles and keeps the faster per
  precision (`faster_rates`: on a shared machine one of the two may find the cores busy).
- `count_stage_flops(path, entry, num_experts, top_k)`: the FLOPs the graph must do, from
  `calibration.graph_count.count_graph` (MatMul, Gemm, Einsum, Conv, classed fp32/fp16/int8/fp8) with
  two corrections: the MoE layers count the routed experts only (top_k of num_experts per token):
  a dense-form graph computes every expert for every token, so each expert product found there
  (the 3 x num_experts products beside a router, see `_dense_expert_products`) counts
  top_k/num_experts of its FLOPs; a gather-form graph already computes top_k per token. And the
  ONNX Runtime operators a `cpu` target graph may use, which `count_graph` does not know:
  `MatMulInteger`, `QLinearMatMul`, `com.microsoft` `DynamicQuantizeMatMul`,
  `MatMulIntegerToFloat` (int8), `MatMulNBits` (int4 at bits 4, int8 at bits 8), `FusedMatMul`
  (its output's float type) and `MoE`/`QMoE` (top_k/num_experts of num_experts experts' FLOPs at
  T tokens: k x (fc1 + fc2 [+ fc3]) x 2 x T; QMoE weights unpacked at `expert_weight_bits` and
  classed as export/cpu_moe.py configures the kernel: int8 experts run int8 products at every
  accuracy level, int4 experts at accuracy_level 4 (int8 activations), else in float). Where
  the graph has `com.microsoft` operators, shapes come from ONNX Runtime's symbolic shape
  inference (ONNX's own stops at operators it does not know).
- `compute_roofline(counts, rates)`: per stage the roofline time = sum over classes of FLOPs /
  rate of that class (fp8 has no CPU GEMM: counted at the fp32 rate, said so), and with the
  measured time the achieved GFLOP/s and the fraction of the rate reached (= roofline ms /
  measured ms; for a single-class stage achieved GFLOP/s / rate).

onnx (the export extra) builds the measurement graphs and reads the graphs; without it `bench`
says so and counts nothing. No torch here.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from chatvla2.calibration.graph_count import count_graph, node_flops, opt_shapes, quantized_operand_class, typed_graph
from chatvla2.contract.errors import MissingFile

COMPUTE_STAGES = ("vision", "prefill", "action_head")
# (M, K, N): a ViT block's MLP at ~400 patches, a prefill's expert at ~128 tokens, a wide product.
GEMM_SHAPES = ((400, 384, 1536), (128, 512, 1024), (256, 1024, 2048))
# The class of a product -> the measured rate it runs at here (no fp8 GEMM on an x86 CPU).
RATE_OF_CLASS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int4", "fp8": "fp32"}
_ONNX_FLOAT16 = (10, 16)
_INT8_PRODUCTS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
# Ops between a router product and its TopK, or between an expert product's output and the next
# (down) product: the SwiGLU's sigmoid and products, casts and Q/DQ.
_ELEMENTWISE_PASS = {"Sigmoid", "Mul", "Cast", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Reshape",
                     "Identity", "Softmax", "Tanh", "Div", "Unsqueeze", "Squeeze", "Transpose", "Flatten"}
# Ops an activation passes through unchanged in meaning on its way to a product.
_ACTIVATION_PASS = {"Reshape", "Cast", "Identity", "Flatten", "Squeeze", "Unsqueeze", "QuantizeLinear",
                    "DequantizeLinear", "DynamicQuantizeLinear", "Transpose"}
_PRODUCTS = {"MatMul", "Gemm", "Einsum", "Conv"}
# Products with a weight operand, the ONNX Runtime ones included (dense expert products may be any).
_WEIGHTED_PRODUCTS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
                      "MatMulIntegerToFloat", "MatMulNBits", "FusedMatMul"}


# ------------------------------------------------------------------------------------ measuring
@functools.lru_cache(maxsize=8)
def measure_gemm_rates(threads: int | None = None, repeats: int = 10, shapes: tuple = GEMM_SHAPES) -> dict:
    """{precision: {"gflops", "shape" [M, K, N], "op", "per_shape" {MxKxN: GFLOP/s}} or
    {"gflops": None, "unsupported": why}} for fp32, fp16, int8, int8_dynamic, int4; plus "threads"
    and "library". Without onnx: {"unavailable": why}."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # the graphs are built with onnx.helper
        return {"unavailable": "onnx is not installed (the export extra): no GEMM graphs to time", "threads": threads}
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    out: dict = {"library": f"onnxruntime {ort.__version__} CPUExecutionProvider", "threads": threads,
                 "repeats": repeats, "shapes_mkn": [list(s) for s in shapes]}
    for precision in ("fp32", "fp16", "int8", "int8_dynamic", "int4"):
        per_shape, op, why = {}, None, None
        for m, k, n in shapes:
            try:
                model, feed, op = _gemm_graph(precision, m, k, n, rng)
                seconds = _best_run(model, feed, threads, repeats)
            except Exception as exc:  # noqa: BLE001 - a missing kernel is reported, not raised
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                break
            per_shape[f"{m}x{k}x{n}"] = round(2 * m * n * k / seconds / 1e9, 1)
        if why is not None or not per_shape:
            out[precision] = {"gflops": None, "unsupported": f"ONNX Runtime's CPU provider: {why}", "op": op}
            continue
        best = max(per_shape, key=per_shape.get)
        out[precision] = {"gflops": per_shape[best], "shape": [int(d) for d in best.split("x")], "op": op,
                          "per_shape": per_shape}
    return out


def faster_rates(first: dict, second: dict) -> dict:
    """Per precision the faster of two measurements (before and after a bench's bundles: on a
    shared machine another process can hold the cores during one of them; the roof is what the
    machine attains)."""
    if "unavailable" in first or "unavailable" in second:
        return first
    out = {**first, "measurements": 2}
    for key, a in first.items():
        b = second.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and "gflops" in a:
            out[key] = b if (b.get("gflops") or 0) > (a.get("gflops") or 0) else a
    return out


def _best_run(model: bytes, feed: dict, threads: int | None, repeats: int) -> float:
    from chatvla2.runtime.onnxruntime_session import create_session

    session = create_session(model, threads=threads)
    session.run(None, feed)
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best


def _gemm_graph(precision: str, m: int, k: int, n: int, rng: np.random.Generator) -> tuple[bytes, dict, str]:
    """One product y = a (m x k) @ w (k x n), w a constant initializer as in the bundles' graphs."""
    from onnx import TensorProto, helper, numpy_helper

    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)
    float_in = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
    float_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    opsets = [helper.make_opsetid("", 21)]
    if precision in ("fp32", "fp16"):
        dtype, elem = (np.float32, TensorProto.FLOAT) if precision == "fp32" else (np.float16, TensorProto.FLOAT16)
        nodes = [helper.make_node("MatMul", ["a", "w"], ["y"])]
        inits = [numpy_helper.from_array(w.astype(dtype), "w")]
        inputs = [helper.make_tensor_value_info("a", elem, [m, k])]
        outputs = [helper.make_tensor_value_info("y", elem, [m, n])]
        feed, op = {"a": a.astype(dtype)}, "MatMul"
    elif precision == "int8":
        nodes = [helper.make_node("MatMulInteger", ["a", "w", "a_zero"], ["y"])]
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w"),
                 numpy_helper.from_array(np.array(128, np.uint8), "a_zero")]
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])]
        feed, op = {"a": rng.integers(0, 256, (m, k), dtype=np.uint8)}, "MatMulInteger (u8 x s8)"
    elif precision == "int8_dynamic":
        scale = np.abs(w).max(axis=0) / 127
        nodes = [helper.make_node("DynamicQuantizeMatMul", ["a", "w", "w_scale", "w_zero"], ["y"], domain="com.microsoft")]
        inits = [numpy_helper.from_array(np.round(w / scale).astype(np.int8), "w"),
                 numpy_helper.from_array(scale.astype(np.float32), "w_scale"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "w_zero")]
        inputs, outputs = [float_in], [float_out]
        feed, op = {"a": a}, "com.microsoft.DynamicQuantizeMatMul"
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    elif precision == "int4":
        block = 32
        blocks = -(-k // block)
        packed = rng.integers(0, 256, (n, blocks, block // 2), dtype=np.uint8)
        scales = (rng.random(n * blocks).astype(np.float32) + 0.5) / 8
        nodes = [helper.make_node("MatMulNBits", ["a", "w", "w_scale"], ["y"], domain="com.microsoft",
                                  K=k, N=n, bits=4, block_size=block, accuracy_level=4)]
        inits = [numpy_helper.from_array(packed, "w"), numpy_helper.from_array(scales, "w_scale")]
        inputs, outputs = [float_in], [float_out]
        feed, op = {"a": a}, "com.microsoft.MatMulNBits (bits 4, block 32, accuracy_level 4)"
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    else:
        raise ValueError(f"unknown precision {precision!r}")
    graph = helper.make_graph(nodes, f"gemm_{precision}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString(), feed, op


def rate_for_class(flop_class: str, rates: dict) -> tuple[float | None, str]:
    """(GFLOP/s, which measurement) for products of a FLOP class; fp16 falls back to fp32 where
    ONNX Runtime's CPU provider has no fp16 MatMul (it would not run the graph in fp16 anyway)."""
    name = RATE_OF_CLASS.get(flop_class, "fp32")
    entry = rates.get(name) or {}
    if entry.get("gflops") is None and name != "fp32":
        name = "fp32"
        entry = rates.get("fp32") or {}
    return entry.get("gflops"), name


# ------------------------------------------------------------------------------------- counting
def count_stage_flops(path: str | Path, entry: dict, num_experts: int, top_k: int,
                      shapes: dict[str, list[int]] | None = None) -> dict:
    """The FLOPs one call of the graph must do, routed experts only. Returns flops (routed),
    flops_by_class, graph_flops (what the graph as written computes: a dense MoE form all
    experts, a MoE operator the routed ones), moe {"form": "dense" | "MoE operator" | None,
    "expert_products" (dense), "moe_operators", "all_experts_flops" (every expert on every token),
    "routed_flops" (top_k of them), "num_experts", "top_k"} (a gather form's experts are counted as
    written, not broken out), ops_added (the ONNX Runtime operators counted beside count_graph's),
    unshaped (products not counted: no shape)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"graph not found: {path}")
    graph, shape, elem_type = _shaped_graph(path, entry, shapes)
    try:
        base = count_graph(path, entry, num_experts, top_k, shapes)
    except ValueError:
        if not graph_has_contrib(graph):
            raise
        # an output ONNX's inference cannot shape past an ONNX Runtime operator: the symbolic shapes
        base = {"flops_by_class": {}, "unshaped_matmuls": 1, "shapes": {}}
    by_class = defaultdict(float)
    ops_added: dict[str, int] = defaultdict(int)
    contrib_unshaped = 0
    moe_computed = moe_routed = 0.0
    moe_nodes = 0
    for node in graph.node:
        flops = _extra_node_flops(node, shape, elem_type, num_experts, top_k)
        if flops is None:
            continue
        ops_added[node.op_type] += 1
        value, flop_class, routed_fraction = flops
        if value is None:
            contrib_unshaped += 1
            continue
        if routed_fraction is not None:
            moe_nodes += 1
            moe_computed += value / routed_fraction if routed_fraction else 0.0
            moe_routed += value
        by_class[flop_class] += value
    standard = dict(base["flops_by_class"])
    standard_unshaped = base["unshaped_matmuls"]
    if graph_has_contrib(graph) and standard_unshaped:
        # ONNX's shape inference stopped at an ONNX Runtime operator: count the standard products
        # at the symbolic shapes instead (count_graph's own per-product formula).
        standard, standard_unshaped = _standard_flops(graph, shape, elem_type)
    dense = _dense_expert_products(graph, shape, num_experts)
    dense_flops = defaultdict(float)
    for node in dense:
        extra = _extra_node_flops(node, shape, elem_type, num_experts, top_k)
        value, flop_class = (extra[0], extra[1]) if extra else (node_flops(node, shape), None)
        if value is not None:
            dense_flops[flop_class or _product_class(node, graph, elem_type)] += value
    graph_by_class = defaultdict(float, standard)
    for k, v in by_class.items():
        graph_by_class[k] += v
    routed_by_class = defaultdict(float, graph_by_class)
    for k, v in dense_flops.items():
        routed_by_class[k] -= v * (1 - top_k / num_experts)
    dense_total = sum(dense_flops.values())
    form = "dense" if dense else ("MoE operator" if moe_nodes else None)
    return {
        "file": path.name,
        "flops": int(round(sum(routed_by_class.values()))),
        "flops_by_class": {k: int(round(v)) for k, v in routed_by_class.items() if v},
        "graph_flops": int(round(sum(graph_by_class.values()))),
        "moe": {"form": form, "expert_products": len(dense), "moe_operators": moe_nodes,
                "all_experts_flops": int(round(dense_total + moe_computed)),
                "routed_flops": int(round(dense_total * top_k / num_experts + moe_routed)),
                "num_experts": num_experts, "top_k": top_k},
        "ops_added": dict(ops_added),
        "unshaped": int(standard_unshaped + contrib_unshaped),
        "shapes": base["shapes"] or _bound_shapes(entry, shapes),
    }


def _bound_shapes(entry: dict, shapes: dict | None) -> dict:
    bound = {**opt_shapes(entry), **(shapes or {})} if entry else dict(shapes or {})
    return {k: list(map(int, v)) for k, v in bound.items() if all(isinstance(d, int) for d in v)}


def graph_has_contrib(graph) -> bool:
    """ONNX Runtime's own operators: com.microsoft ones, or those it registers in the default domain
    (SimplifiedLayerNormalization, export/cpu_fused.py), which ONNX's shape inference does not know."""
    import onnx

    return any(node.domain == "com.microsoft" or (node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type))
               for node in graph.node)


def _shaped_graph(path: Path, entry: dict, shapes: dict | None):
    """The graph with the inputs bound to the entry's opt shapes (as count_graph binds them) and
    shapes inferred: ONNX's inference, or ONNX Runtime's symbolic inference where the graph has
    com.microsoft operators. Returns (graph, shape(name), elem_type(name))."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    infer = _symbolic_shapes if graph_has_contrib(model.graph) else None
    graph, types, _ = typed_graph(model, _bound_shapes(entry, shapes), Path(path).name, strict=False, infer=infer)
    return graph, (lambda name: types.get(name, (0, None))[1]), (lambda name: types.get(name, (0, None))[0])


def _symbolic_shapes(model):
    """ONNX Runtime's symbolic shape inference (onnxruntime.tools), taught the product operators
    it lacks (DynamicQuantizeMatMul, MatMulIntegerToFloat, FusedMatMul without transposes: a
    MatMul's shape; QMoE: its input's), run as its `infer_shapes` runs it but without writing a
    file when some shape stays unknown. None where it fails (ONNX's inference is used)."""
    try:
        from onnx import TensorProto
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return None
    try:
        inference = SymbolicShapeInference(2**31 - 1, True, True, 0)
        matmul = inference._compute_matmul_shape

        def fused(node):
            if any(a.name in ("transA", "transB", "transBatchA", "transBatchB") and a.i for a in node.attribute):
                raise ValueError("FusedMatMul with transposes")
            matmul(node)

        inference.dispatcher_.setdefault("DynamicQuantizeMatMul", lambda node: matmul(node, TensorProto.FLOAT))
        inference.dispatcher_.setdefault("MatMulIntegerToFloat", lambda node: matmul(node, TensorProto.FLOAT))
        inference.dispatcher_.setdefault("FusedMatMul", fused)
        inference.dispatcher_.setdefault("QMoE", inference._propagate_shape_and_type)
        inference._preprocess(model)
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception:  # noqa: BLE001 - a private API of onnxruntime.tools: any failure falls back
        return None


def _standard_flops(graph, shape, elem_type) -> tuple[dict, int]:
    by_class, unshaped = defaultdict(float), 0
    for node in graph.node:
        if node.op_type in _PRODUCTS and node.domain in ("", "ai.onnx"):
            value = node_flops(node, shape)
            if value is None:
                unshaped += 1
            else:
                by_class[_product_class(node, graph, elem_type)] += value
    return dict(by_class), unshaped


def _product_class(node, graph, elem_type) -> str:
    """count_graph's classing: int8/fp8 when both operands come out of DequantizeLinear of that
    type, otherwise the output's float type."""
    producer = {out: n for n in graph.node for out in n.output}
    a, b = (quantized_operand_class(name, producer, elem_type) for name in node.input[:2])
    if a == b and a in ("int8", "fp8"):
        return a
    if a and b and {a, b} <= {"int8", "fp8"}:
        return "int8"
    return "fp16" if elem_type(node.output[0]) in _ONNX_FLOAT16 else "fp32"


def _extra_node_flops(node, shape, elem_type, num_experts: int, top_k: int):
    """(FLOPs or None if unshaped, class, routed fraction or None) for the ONNX Runtime
    operators count_graph does not count; None for any other node."""
    attrs = {a.name: a for a in node.attribute}

    def attr(name: str, default: int) -> int:
        return attrs[name].i if name in attrs else default

    def rows(name: str) -> int | None:
        s = shape(name)
        return None if s is None else int(np.prod(s[:-1], dtype=np.int64))

    def float_class(name: str) -> str:
        return "fp16" if elem_type(name) in _ONNX_FLOAT16 else "fp32"

    op, domain = node.op_type, node.domain or ""
    if op in _INT8_PRODUCTS and (domain == "com.microsoft" or op in ("MatMulInteger", "QLinearMatMul")):
        b_index = 3 if op == "QLinearMatMul" else 1
        a, b = shape(node.input[0]), shape(node.input[b_index])
        if a is None or b is None:
            return None, "int8", None
        a = [1, *a] if len(a) == 1 else a
        b = [*b, 1] if len(b) == 1 else b
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        return 2 * int(np.prod(batch, dtype=np.int64)) * a[-2] * a[-1] * b[-1], "int8", None
    if domain != "com.microsoft":
        return None
    if op == "MatMulNBits":
        m = rows(node.input[0])
        bits = attr("bits", 4)
        flop_class = "int4" if bits == 4 else ("int8" if bits == 8 else float_class(node.input[0]))
        if m is None:
            return None, flop_class, None
        return 2 * m * attr("K", 0) * attr("N", 0), flop_class, None
    if op == "FusedMatMul":
        a, b = shape(node.input[0]), shape(node.input[1])
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            return None, float_class(node.output[0]), None
        m, k = (a[-1], a[-2]) if attr("transA", 0) else (a[-2], a[-1])
        n = b[-2] if attr("transB", 0) else b[-1]
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        return 2 * int(np.prod(batch, dtype=np.int64)) * m * n * k, float_class(node.output[0]), None
    if op in ("MoE", "QMoE"):
        k = attr("k", top_k)
        # MoE: input, router_probs, fc1, fc1_bias, fc2, fc2_bias, fc3, fc3_bias;
        # QMoE: input, router_probs, fc1, fc1_scales, fc1_bias, fc2, fc2_scales, fc2_bias, fc3, ...
        weights = (2, 4, 6) if op == "MoE" else (2, 5, 8)
        bits = attr("expert_weight_bits", 8) if op == "QMoE" else 0
        unpack = 8 // bits if bits else 1
        flop_class = float_class(node.input[0])
        if bits == 8 or (bits == 4 and attr("accuracy_level", 0) == 4):
            flop_class = f"int{bits}"  # int8 activations: at every level for int8 experts, at level 4 for int4
        tokens = rows(node.input[0])
        if tokens is None and len(node.input) > 1:
            tokens = rows(node.input[1])  # router_probs (T, E)
        experts, per_token_expert = None, 0
        for index in weights:
            if index >= len(node.input) or not node.input[index]:
                continue
            dims = shape(node.input[index])
            if dims is None or len(dims) != 3:
                return None, flop_class, k / max(experts or num_experts, 1)
            experts = dims[0]
            per_token_expert += 2 * int(np.prod(dims[1:], dtype=np.int64)) * unpack
        experts = experts or num_experts
        fraction = k / experts
        if tokens is None:
            return None, flop_class, fraction
        # experts x their FLOPs at T tokens, of which the routing computes k / experts
        return int(round(experts * per_token_expert * tokens * fraction)), flop_class, fraction
    return None


def _dense_expert_products(graph, shape, num_experts: int) -> list:
    """The expert products of the dense MoE form: per router (a product with num_experts outputs
    whose result reaches a TopK), the products (other than the router) that read the same
    activations with a constant weight (gate and up: 2 x num_experts), and the product each of
    their results reaches through the SwiGLU's elementwise ops (down: num_experts). A layer is
    taken only where exactly 3 x num_experts products are found; gather-form products read
    gathered weights, not constants, and are not found (they already compute top_k per token)."""
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name].append(node)
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    products = [n for n in graph.node if n.op_type in _WEIGHTED_PRODUCTS and len(n.input) > 1]

    def weight(node) -> str:
        return node.input[3 if node.op_type == "QLinearMatMul" else 1]

    def root(name: str) -> str:
        for _ in range(16):
            node = producer.get(name)
            if node is None or node.op_type not in _ACTIVATION_PASS:
                return name
            name = node.input[0]
        return name

    def constant_weight(name: str) -> bool:
        for _ in range(16):
            if name in constants:
                return True
            node = producer.get(name)
            if node is None or node.op_type not in _ACTIVATION_PASS:
                return False
            name = node.input[0]
        return False

    def reaches(name: str, op_types: set[str], depth: int = 8) -> list:
        found, frontier, seen = [], [name], set()
        for _ in range(depth):
            following = []
            for tensor in frontier:
                for node in consumers.get(tensor, []):
                    if id(node) in seen:
                        continue
                    seen.add(id(node))
                    if node.op_type in op_types:
                        found.append(node)
                    elif node.op_type in _ELEMENTWISE_PASS:
                        following.extend(node.output)
            frontier = following
        return found

    experts = []
    for router in products:
        out = shape(router.output[0])
        if not out or out[-1] != num_experts or not reaches(router.output[0], {"TopK"}):
            continue
        source = root(router.input[0])
        gate_up = [n for n in products if n is not router and root(n.input[0]) == source and constant_weight(weight(n))]
        taken, down = {id(n) for n in gate_up}, []
        for node in gate_up:
            for nxt in reaches(node.output[0], _WEIGHTED_PRODUCTS):
                if id(nxt) not in taken and len(nxt.input) > 1 and constant_weight(weight(nxt)):
                    taken.add(id(nxt))
                    down.append(nxt)
        if len(gate_up) == 2 * num_experts and len(down) == num_experts:
            experts += gate_up + down
    return experts


# ------------------------------------------------------------------------------------ the roofline
def stage_target(manifest: dict, name: str) -> str:
    """What a stage's graph was shaped for: "cpu" (ONNX Runtime's CPU kernels: fp32, dynamic int8,
    MatMulNBits int4) or "tensorrt" (contract.bundle.export_target; an engine's own `target`
    first, should a manifest carry one)."""
    from chatvla2.contract.bundle import export_target

    return manifest.get("engines", {}).get(name, {}).get("target") or export_target(manifest)


def compute_roofline(count: dict, rates: dict, measured_ms: float | None, precision: str | None = None,
                     target: str | None = None) -> dict:
    """One stage's compute roofline: the routed FLOPs (count_stage_flops) at the measured rate of
    each FLOP class -> roofline_ms; with the stage's measured time achieved_gflops (the routed
    FLOPs per second), graph_achieved_gflops (the FLOPs the graph as written computes, per second:
    higher for a dense MoE form) and fraction_of_rate (roofline ms / measured ms: 1.0 = at the
    machine's GEMM rate)."""
    seconds, rates_used, missing = 0.0, {}, []
    for flop_class, flops in count["flops_by_class"].items():
        rate, name = rate_for_class(flop_class, rates)
        if rate is None:
            missing.append(flop_class)
            continue
        rates_used[flop_class] = {"rate": name, "gflops": rate}
        seconds += flops / (rate * 1e9)
    flops = count["flops"]
    roofline_ms = round(seconds * 1e3, 4) if not missing and flops else None
    effective = round(flops / seconds / 1e9, 1) if seconds else None
    out = {"precision": precision, "target": target, "required_gflop": round(flops / 1e9, 4),
           "graph_gflop": round(count["graph_flops"] / 1e9, 4), "flops_by_class": count["flops_by_class"],
           "moe": count["moe"], "unshaped_products": count["unshaped"], "rates": rates_used,
           "rate_gflops": effective, "roofline_ms": roofline_ms, "measured_ms": measured_ms,
           "achieved_gflops": None, "graph_achieved_gflops": None, "fraction_of_rate": None}
    if missing:
        out["no_rate"] = missing
    if measured_ms:
        out["achieved_gflops"] = round(flops / (measured_ms / 1e3) / 1e9, 1)
        out["graph_achieved_gflops"] = round(count["graph_flops"] / (measured_ms / 1e3) / 1e9, 1)
        if roofline_ms:
            out["fraction_of_rate"] = round(roofline_ms / measured_ms, 3)
    return out


def stage_rooflines(bundle: Path, manifest: dict, stages: dict, rates: dict, shapes: dict | None = None,
                    num_experts: int | None = None, top_k: int | None = None) -> dict:
    """{stage: compute_roofline(...)} for the compute-bound stages of a bundle; stages: bench's
    {stage: {"p50_ms", ...}}; shapes: per stage, input shapes overriding the manifest's opt ones
    (the prompt the bench ran). Without onnx: {"unavailable": why}."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return {"unavailable": "onnx is not installed (the export extra): the graphs' FLOPs are not counted"}
    if "unavailable" in rates:
        return {"unavailable": rates["unavailable"]}
    if num_experts is None or top_k is None:
        from chatvla2.contract.bundle import bundle_model_config

        moe = bundle_model_config(bundle, manifest).language.moe
        num_experts, top_k = moe.num_experts, moe.top_k
    out = {}
    for name in COMPUTE_STAGES:
        entry = manifest["engines"][name]
        count = count_stage_flops(bundle / entry["file"], entry, num_experts, top_k, (shapes or {}).get(name))
        if count["moe"]["form"] is None:
            count["moe"]["form"] = manifest.get("moe_implementation", {}).get(name)
        measured = stages.get(name, {}).get("p50_ms")
        out[name] = compute_roofline(count, rates, measured, entry.get("precision"), stage_target(manifest, name))
    return out
