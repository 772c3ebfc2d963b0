"""`chatvla2 calibrate predict`: a lower bound on a bundle's latency on a target (Orin, Thor, H100),
counted from its graphs, beside the latency measured on this machine, and the control-rate budget.

Per engine, from the ONNX graph at the manifest's "opt" input shapes (ONNX shape inference):
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
- the bound on a target = max(bytes / bandwidth, sum over classes of FLOPs / peak of that class)
  (calibration/targets.py), or none where the target cannot run the engine's precision.
A policy step = vision + prefill + T x decode + action_head (T reasoning tokens, `--tokens`); with
the reasoning reused between queries (the runtime's cadence) the step has no decode.
The control budget: a chunk of `chunk_size` actions at 50 Hz, executed `--query-every K` steps
before the next query, gives K/50 s of horizon; the margin is that horizon minus the step.

`--config NAME` (no bundle) counts the same quantities analytically from the ModelConfig, for a
precision plan (`--precision`, default fp16): this is how the `paper` preset, which cannot be
exported on a 2-core CPU, is predicted. The analytic count mirrors what the exporter writes
(which weights each quantizer leaves in float, stored fp16: see `_quantizes`) and is checked
against the graph count on the tiny preset by the tests (bytes within 3%, FLOPs equal; by hand:
the small preset within 0.03%, tiny fp16/int8/fp8/int4 bundles within ~3% but for the int8/fp8
prefill, whose uncalibrated experts modelopt leaves fp16: the graph reads 12% more there). For `paper` the output compares the bound with the
GR00T N1.6 measurements in docs/reference/deploy.md (4 denoising steps).

Accuracy measured here (parity at export) holds for a TensorRT engine built from the same graphs;
the latency measured here (ONNX Runtime on this CPU) does not carry to a target: the bounds do.

No torch; onnx and onnxruntime are imported inside the functions that need them (`chatvla2
calibrate` imports this module to build its parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from chatvla2.calibration.targets import MATMUL_CLASSES, TARGETS, Target, parse_targets
from chatvla2.evaluation.timing import latency_stats, time_runs
from chatvla2.contract.bundle import ENGINE_NAMES, bundle_model_config, load_manifest
from chatvla2.contract.config import ModelConfig, get_config

CONTROL_HZ = 50.0  # the math game's arms (docs/reference/model.md)
DEFAULT_TOKENS = 32
DEFAULT_QUERY_EVERY = 20
DEFAULT_RUNS = 10
WARMUP = 2
# GR00T N1.6 with 4 denoising steps, action head in TensorRT, backbone in PyTorch (docs/reference/deploy.md).
GR00T_N16 = {
    "denoising_steps": 4,
    "orin": {"backbone_ms": 95.0, "action_head_ms": 72.0, "step_ms": 173.0},
    "thor": {"backbone_ms": 38.0, "action_head_ms": 49.0, "step_ms": 92.0},
}
TRANSFER_NOTE = ("Accuracy measured here (parity at export) holds for a TensorRT engine built from these same graphs; "
                 "the latency measured here is ONNX Runtime on this machine's CPU and does not carry to a target: "
                 "use the bounds for the target.")

# ONNX element types: bits per element, and the class of a product whose operands are dequantized from them.
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 16: 16,
         17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}
_QUANTIZED_CLASS = {2: "int8", 3: "int8", 17: "fp8", 18: "fp8", 19: "fp8", 20: "fp8", 21: "int4", 22: "int4", 23: "fp4"}
_FLOAT16_TYPES = {10, 16}
# Ops a weight passes through unchanged in size on its way to the product that reads it.
_WEIGHT_PASS = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}
# Ops an operand passes through between its DequantizeLinear and a matrix product.
_OPERAND_PASS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Expand", "Gather",
                 "GatherND", "Slice", "Split"}
# Ops that read only part of their data input: bytes read = output size.
_PARTIAL_READS = {"Gather", "GatherND", "Slice"}
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


# ----------------------------------------------------------------------------------- graph count
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


def count_graph(path: str | Path, manifest_entry: dict, num_experts: int, top_k: int,
                shapes: dict[str, list[int]] | None = None) -> dict:
    """Bytes read and FLOPs of one call of the graph at `path`, at the manifest entry's opt
    shapes (overridden per input by `shapes`). Returns weight_bytes (read per call), io_bytes
    (inputs read + outputs written), bytes (both), stored_weight_bytes (each initializer once),
    flops and flops_by_class ({fp32|fp16|int8|fp8: FLOPs}), matmuls and unshaped_matmuls (products
    whose shapes inference could not give: not counted)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"graph not found: {path}")
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
        flops = _node_flops(node, shape)
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


def _node_flops(node, shape) -> int | None:
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


# ------------------------------------------------------------------------------ analytic count
@dataclasses.dataclass(frozen=True)
class _Matrix:
    """A weight matrix (in x out) as the exporter writes it: read `reads` times per call, applied
    to `rows` rows each time; gemm: a 2-D Linear (ONNX Gemm) rather than a batched MatMul."""

    inputs: int
    outputs: int
    reads: float = 1
    rows: int = 1
    gemm: bool = False
    role: str = "linear"  # linear | router | tied_lm_head | gathered_expert


def default_prompt_length(cfg: ModelConfig) -> int:
    """The prefill's opt length, as `chatvla2 export` sets it: the views' image tokens and the
    instruction. The character tokenizer's count exactly; for a Hugging Face tokenizer (paper)
    the instruction at ~4 characters a token (English BPE), not its exact count, plus the chat
    template's 19 tokens around it (system turn, role names) in the qwen2vl-chat layout."""
    from chatvla2.contract.prompt import prompt_token_ids
    from chatvla2.contract.scene import INSTRUCTION
    from chatvla2.contract.tokenizer import character_tokenizer

    vision = cfg.vision
    if cfg.tokenizer == "char":
        return len(prompt_token_ids(character_tokenizer(), INSTRUCTION, vision.num_views, vision.tokens_per_view))
    chat = 19 if cfg.prompt_format == "qwen2vl-chat" else 0
    return vision.num_views * (vision.tokens_per_view + 2) + math.ceil(len(INSTRUCTION + "\n") / 4) + chat


def default_moe_forms(plan: dict[str, str]) -> dict[str, str]:
    """The MoE forms `chatvla2 export --moe auto` picks (export.bundle.decode_moe_form)."""
    return {"prefill": "dense", "decode": "dense" if plan["decode"] == "int4" else "gather"}


def _float_bytes(precision: str) -> int:
    """What the exporter stores float tensors in: fp32 in an fp32 graph; fp16 in an fp16 graph and
    in the float part of a quantized one (export/precision.py converts it)."""
    return 4 if precision == "fp32" else 2


def _float_class(precision: str) -> str:
    return "fp32" if precision == "fp32" else "fp16"


def _quantizes(matrix: _Matrix, precision: str) -> bool:
    """Whether the exporter stores this weight below float at `precision` (export/precision.py,
    checked on tiny bundles at every precision): routers never; the decode step's tied lm_head
    (also the embedding Gather's table) never; gathered experts never (quantizers skip weights
    reached through Gather, and TensorRT's Gather takes no INT8); modelopt's int8/fp8 leave a
    Gemm on a single row in float, its int4 (weight-only AWQ) takes it. What is not quantized is
    stored fp16 (`_float_bytes`). Not modelled: experts that no calibration token reached, which
    modelopt's int8/fp8 leave in float (the tiny prefill reads 12% more than this count)."""
    if precision in ("fp32", "fp16") or matrix.role in ("router", "tied_lm_head", "gathered_expert"):
        return False
    if precision in ("int8", "fp8"):
        return not (matrix.gemm and matrix.rows == 1)
    return True


def _stored_bytes(matrix: _Matrix, precision: str) -> float:
    """Bytes of one matrix as stored: a per-channel scale (fp16) and zero point for int8/fp8,
    an fp16 scale per block of 128 input elements for int4; a float weight at `_float_bytes`."""
    k, n = matrix.inputs, matrix.outputs
    if _quantizes(matrix, precision):
        if precision == "int4":
            return k * n / 2 + math.ceil(k / 128) * n * 2
        return k * n + n * 3
    return k * n * _float_bytes(precision)


def _matmul_class(matrix: _Matrix, precision: str) -> str:
    """int8/fp8 where both operands are quantized (weights and activations); otherwise the
    activations' float type (a weight-only int4 product included)."""
    if _quantizes(matrix, precision) and precision in ("int8", "fp8"):
        return precision
    return _float_class(precision)


class _Engine:
    """Accumulates one engine's analytic count."""

    def __init__(self, precision: str):
        self.precision = precision
        self.weight_bytes = 0.0
        self.io_bytes = 0.0
        self.flops = dict.fromkeys(MATMUL_CLASSES, 0.0)

    def matrix(self, matrix: _Matrix, bias: bool = False, read_fraction: float = 1.0, flop_copies: float = 1.0) -> None:
        """A Linear: its weight read `reads` x read_fraction times, 2*rows*in*out FLOPs per read
        x flop_copies (a gathered expert stack: k experts computed per token)."""
        self.weight_bytes += _stored_bytes(matrix, self.precision) * matrix.reads * read_fraction
        if bias:
            self.vector(matrix.outputs, matrix.reads)
        self.flops[_matmul_class(matrix, self.precision)] += 2 * matrix.rows * matrix.inputs * matrix.outputs * matrix.reads * flop_copies

    def vector(self, elements: float, reads: float = 1) -> None:
        """Biases, norm weights, position embeddings: float, read in full."""
        self.weight_bytes += elements * _float_bytes(self.precision) * reads

    def attention(self, flops: float, reads: float = 1) -> None:
        """q k^T and p v: in float at every precision (the quantizers leave them, disable_mha_qdq)."""
        self.flops[_float_class(self.precision)] += flops * reads

    def io(self, *shapes: tuple[int, ...], itemsize: int = 4) -> None:
        for s in shapes:
            self.io_bytes += int(np.prod(s)) * itemsize

    def result(self) -> dict:
        flops = {k: int(v) for k, v in self.flops.items() if v}
        return {"precision": self.precision, "weight_bytes": int(self.weight_bytes), "io_bytes": int(self.io_bytes),
                "bytes": int(self.weight_bytes + self.io_bytes), "flops": int(sum(flops.values())), "flops_by_class": flops}


def analytic_counts(cfg: ModelConfig, plan: dict[str, str], moe_forms: dict[str, str] | None = None,
                    prompt_length: int | None = None, ddim_steps: int | None = None) -> dict[str, dict]:
    """Per engine, from the configuration alone, what `count_graph` counts on the exported graph:
    weight_bytes, io_bytes, bytes, flops, flops_by_class. plan: {engine: precision};
    moe_forms: {"prefill"/"decode": "dense"/"gather"} (default: the export's choice);
    prompt_length: the prefill's tokens (default: the export's opt length); ddim_steps: the
    action head's unrolled steps (default: cfg.scheduler.inference_steps)."""
    missing = [e for e in ENGINE_NAMES if e not in plan]
    if missing:
        raise ValueError(f"precision plan: no precision for {', '.join(missing)}")
    forms = {**default_moe_forms(plan), **(moe_forms or {})}
    seq = prompt_length or default_prompt_length(cfg)
    steps = ddim_steps or cfg.scheduler.inference_steps
    if seq < 1 or steps < 1:
        raise ValueError(f"prompt length and DDIM steps must be >= 1, got {seq} and {steps}")
    return {
        "vision": _vision(cfg, plan["vision"]).result(),
        "prefill": _language(cfg, plan["prefill"], forms["prefill"], seq, decode=False).result(),
        "decode": _language(cfg, plan["decode"], forms["decode"], 1, decode=True).result(),
        "action_head": _action_head(cfg, plan["action_head"], steps).result(),
    }


def _vision(cfg: ModelConfig, precision: str) -> _Engine:
    v, hidden = cfg.vision, cfg.language.hidden
    e = _Engine(precision)
    patches = v.grid[0] * v.grid[1]
    rows = v.num_views * patches
    width, mlp = v.width, int(v.width * v.mlp_ratio)
    grouped = width * v.spatial_merge_size**2
    merged = rows // v.spatial_merge_size**2
    e.matrix(_Matrix(3 * v.temporal_patch_size * v.patch_size**2, width, rows=rows))
    for _ in range(v.depth):
        e.vector(4 * width)  # two LayerNorms
        e.matrix(_Matrix(width, 3 * width, rows=rows), bias=True)
        e.matrix(_Matrix(width, width, rows=rows), bias=True)
        e.matrix(_Matrix(width, mlp, rows=rows), bias=True)
        e.matrix(_Matrix(mlp, width, rows=rows), bias=True)
        e.attention(2 * 2 * v.num_views * patches * patches * width)
    e.vector(2 * width)
    e.matrix(_Matrix(grouped, grouped, rows=merged), bias=True)
    e.matrix(_Matrix(grouped, hidden, rows=merged), bias=True)
    # the rotary angle table (patches x head_dim/2), read once (the exporter folds small cos/sin
    # tables into constants that every block re-reads: tiny reads 24 KB more than this)
    e.vector(patches * (width // v.heads // 2))
    e.io((v.num_views, 3, v.image_height, v.image_width), (merged, hidden))
    return e


def _language(cfg: ModelConfig, precision: str, form: str, tokens: int, decode: bool) -> _Engine:
    lm = cfg.language
    e = _Engine(precision)
    h, kv = lm.hidden, lm.kv_heads * lm.head_dim
    moe = lm.moe
    for layer in range(lm.layers):
        e.vector(2 * h)  # the two RMSNorms
        e.matrix(_Matrix(h, h, rows=tokens), bias=True)
        e.matrix(_Matrix(h, kv, rows=tokens), bias=True)
        e.matrix(_Matrix(h, kv, rows=tokens), bias=True)
        e.matrix(_Matrix(h, h, rows=tokens))
        # q k^T and p v over the whole prompt (masked) or the whole static cache and the token itself
        # (decode: `LanguageModel.extend` attends to the cache, then to the new token's own key)
        keys = lm.max_cache_len + 1 if decode else tokens
        e.attention(2 * 2 * tokens * keys * h)
        if moe.applies_to(layer):
            e.matrix(_Matrix(h, moe.num_experts, rows=tokens, gemm=True, role="router"))
            experts = (_Matrix(h, lm.intermediate), _Matrix(h, lm.intermediate), _Matrix(lm.intermediate, h))
            if form == "gather":
                # each token's k experts gathered: the distinct experts read, k computed per token
                fraction = min(1.0, tokens * moe.top_k / moe.num_experts)
                for m in experts:
                    m = dataclasses.replace(m, reads=moe.num_experts, rows=tokens, role="gathered_expert")
                    e.matrix(m, read_fraction=fraction, flop_copies=moe.top_k / moe.num_experts)
            else:
                for m in experts:
                    e.matrix(dataclasses.replace(m, reads=moe.num_experts, rows=tokens, gemm=True))
        else:
            e.matrix(_Matrix(h, lm.intermediate, rows=tokens))
            e.matrix(_Matrix(h, lm.intermediate, rows=tokens))
            e.matrix(_Matrix(lm.intermediate, h, rows=tokens))
    e.vector(h)  # the final norm
    e.vector(lm.head_dim // 2)  # rotary inverse frequencies
    cache = (lm.layers, 1, lm.kv_heads, lm.max_cache_len, lm.head_dim)
    if decode:
        # the tied table: one row gathered (the token's embedding) and read whole as the lm_head
        e.matrix(_Matrix(h, lm.vocab_size, gemm=True, role="tied_lm_head" if lm.tie_word_embeddings else "linear"))
        e.vector(h)
        e.io((1, 1), (1,), (1,), itemsize=8)
        e.io(cache, cache, (1, lm.vocab_size), (1, h), (lm.layers, 1, lm.kv_heads, 1, lm.head_dim),
             (lm.layers, 1, lm.kv_heads, 1, lm.head_dim))
    else:
        e.matrix(_Matrix(h, lm.vocab_size, gemm=True))  # the lm_head on the last position
        e.io((3, 1, tokens), itemsize=8)
        e.io((1, tokens, h), (1, tokens, h), (1, lm.vocab_size), cache, cache)
    return e


def _action_head(cfg: ModelConfig, precision: str, steps: int) -> _Engine:
    a, hidden = cfg.action_head, cfg.language.hidden
    e = _Engine(precision)
    w, mlp, projector = a.width, int(a.width * a.mlp_ratio), a.projector_hidden or a.width
    chunk = a.chunk_size
    # once per call: the o / r projectors and the two condition embeddings
    for used in (a.reason_start > 0, True):
        if used:
            e.matrix(_Matrix(hidden, projector, gemm=True), bias=True)
            e.matrix(_Matrix(projector, w, gemm=True), bias=True)
            e.vector(2 * w)  # LayerNorm
            e.matrix(_Matrix(w + a.state_dim, w, gemm=True), bias=True)
    # every unrolled DDIM step reads the denoiser's weights again
    n = steps
    e.matrix(_Matrix(a.timestep_embedding_dim, w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(w, w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(a.action_dim, w, reads=n, rows=chunk), bias=True)
    e.vector(chunk * w, reads=n)  # the position embedding
    for _ in range(a.depth):
        e.matrix(_Matrix(w, 6 * w, reads=n, gemm=True), bias=True)
        e.matrix(_Matrix(w, 3 * w, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(w, w, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(w, mlp, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(mlp, w, reads=n, rows=chunk), bias=True)
        e.attention(2 * 2 * chunk * chunk * w, reads=n)
    e.matrix(_Matrix(w, 2 * w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(w, a.action_dim, reads=n, rows=chunk), bias=True)
    e.io((1, hidden), (1, hidden), (1, a.state_dim), (1, chunk, a.action_dim), (1, chunk, a.action_dim))
    return e


# ---------------------------------------------------------------------------------- the bounds
def engine_bound(count: dict, target: Target, precision: str) -> dict:
    """max(bytes / bandwidth, FLOPs / peak per class) on `target`, in ms, and what limits it; none
    where the target cannot run `precision`."""
    if not target.runs(precision):
        return {"ms": None, "limit": "unsupported", "why": f"{precision} does not run on {target.name} (runs {', '.join(target.precisions)})"}
    memory_s = count["bytes"] / (target.bandwidth_gbs * 1e9)
    compute_s = sum(f / (target.matmul_peak_tflops(k) * 1e12) for k, f in count["flops_by_class"].items())
    return {"ms": _sig(max(memory_s, compute_s) * 1e3), "memory_ms": _sig(memory_s * 1e3),
            "compute_ms": _sig(compute_s * 1e3), "limit": "memory" if memory_s >= compute_s else "compute"}


def _sig(value: float, digits: int = 6) -> float:
    """Rounded to significant digits: a tiny model's bounds are microseconds."""
    return float(f"{value:.{digits}g}")


def step_ms(per_engine: dict[str, float | None], tokens: int) -> dict[str, float | None]:
    """every: vision + prefill + tokens x decode + action_head; reuse: the reasoning reused
    (no decode)."""
    if any(per_engine.get(e) is None for e in ENGINE_NAMES):
        return {"every": None, "reuse": None}
    reuse = per_engine["vision"] + per_engine["prefill"] + per_engine["action_head"]
    return {"every": _sig(reuse + tokens * per_engine["decode"]), "reuse": _sig(reuse)}


def control_budget(cfg: ModelConfig, query_every: int, steps: dict[str, dict], hz: float = CONTROL_HZ) -> dict:
    """A chunk of chunk_size actions at `hz`, executed query_every steps before the next query:
    query_every / hz of horizon for the step to fit in. steps: {name: {"every", "reuse"}}."""
    horizon = query_every / hz * 1e3
    margins = {}
    for name, s in steps.items():
        margins[name] = {cadence: (None if v is None else _sig(horizon - v)) for cadence, v in s.items()}
    return {"hz": hz, "chunk_size": cfg.action_head.chunk_size, "query_every": query_every,
            "horizon_ms": round(horizon, 3), "margin_ms": margins,
            "fits": {n: {c: (None if m is None else m >= 0) for c, m in ms.items()} for n, ms in margins.items()}}


def _check_common(targets, tokens: int, query_every: int, cfg: ModelConfig | None = None) -> list[Target]:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"--tokens must be an integer >= 1, got {tokens!r}")
    if isinstance(query_every, bool) or not isinstance(query_every, int) or query_every < 1:
        raise ValueError(f"--query-every must be an integer >= 1, got {query_every!r}")
    if cfg is not None and query_every > cfg.action_head.chunk_size:
        raise ValueError(f"--query-every {query_every} is longer than the action chunk ({cfg.action_head.chunk_size} steps)")
    if isinstance(targets, (str, Target)):
        targets = [targets]
    return parse_targets(None if targets is None else [t.name if isinstance(t, Target) else t for t in targets])


def _assemble(cfg: ModelConfig, counts: dict[str, dict], precisions: dict[str, str], targets: list[Target],
              tokens: int, query_every: int) -> dict:
    engines = {}
    for name in ENGINE_NAMES:
        c = counts[name]
        engines[name] = {**c, "precision": precisions[name],
                         "bounds": {t.name: engine_bound(c, t, precisions[name]) for t in targets}}
    steps = {t.name: step_ms({e: engines[e]["bounds"][t.name]["ms"] for e in ENGINE_NAMES}, tokens) for t in targets}
    return {"model": cfg.name, "engines": engines, "tokens": tokens, "step_ms": steps,
            "control": control_budget(cfg, query_every, steps), "targets": {t.name: t.to_dict() for t in targets}}


def predict_bundle(bundle: str | Path, targets=None, tokens: int = DEFAULT_TOKENS, query_every: int = DEFAULT_QUERY_EVERY,
                   *, runs: int = 0, threads: int | None = None) -> dict:
    """Bounds per engine and per step on each target, counted from the bundle's graphs; with
    runs > 0 also each engine's median ONNX Runtime latency on this machine (after warm-up)."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify_hashes=False)
    cfg = bundle_model_config(bundle, manifest)
    targets = _check_common(targets, tokens, query_every, cfg)
    missing = [e for e in ENGINE_NAMES if e not in manifest["engines"]]
    if missing:
        raise ValueError(f"{bundle}: the manifest has no engine {missing[0]!r}")
    moe = cfg.language.moe
    counts = {e: count_graph(bundle / manifest["engines"][e]["file"], manifest["engines"][e], moe.num_experts, moe.top_k)
              for e in ENGINE_NAMES}
    precisions = {e: manifest["engines"][e].get("precision", "fp32") for e in ENGINE_NAMES}
    result = _assemble(cfg, counts, precisions, targets, tokens, query_every)
    result.update({"source": f"bundle {bundle}", "bundle": str(bundle), "plan": precisions,
                   "moe_implementation": manifest.get("moe_implementation", {}),
                   "ddim_steps": cfg.scheduler.inference_steps,
                   "prompt_length": counts["prefill"]["shapes"].get("embeddings", [0, 0])[1]})
    if runs:
        measured = measure_bundle(bundle, manifest, runs, threads)
        for name in ENGINE_NAMES:
            result["engines"][name]["measured"] = measured[name]
        result["measured_step_ms"] = step_ms({e: measured[e]["p50_ms"] for e in ENGINE_NAMES}, tokens)
        result["control"]["margin_ms"]["here"] = {c: _sig(result["control"]["horizon_ms"] - v)
                                                  for c, v in result["measured_step_ms"].items()}
        result["measured_on"] = f"ONNX Runtime CPU, {threads or 'default'} threads, median of {runs} after {WARMUP} warm-up"
    return result


def predict_config(cfg: ModelConfig | str, precision_plan: dict[str, str] | str = "fp16", targets=None,
                   tokens: int = DEFAULT_TOKENS, query_every: int = DEFAULT_QUERY_EVERY, *,
                   prompt_length: int | None = None, ddim_steps: int | None = None,
                   moe_forms: dict[str, str] | None = None) -> dict:
    """The same prediction from the configuration alone (analytic count), for a precision plan
    ("fp16", "vision=int8,...", or {engine: precision}); for the paper preset also the comparison
    with GR00T N1.6 at 4 denoising steps."""
    from chatvla2.export.precision import parse_plan  # a plan is read as `chatvla2 export --precision` reads it

    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    plan = parse_plan(precision_plan) if isinstance(precision_plan, str) else {**dict.fromkeys(ENGINE_NAMES, "fp32"), **precision_plan}
    targets = _check_common(targets, tokens, query_every, cfg)
    steps = ddim_steps or cfg.scheduler.inference_steps
    seq = prompt_length or default_prompt_length(cfg)
    forms = {**default_moe_forms(plan), **(moe_forms or {})}
    counts = analytic_counts(cfg, plan, forms, seq, steps)
    result = _assemble(cfg, counts, plan, targets, tokens, query_every)
    result.update({"source": f"config {cfg.name} (analytic count)", "plan": plan, "moe_implementation": forms,
                   "ddim_steps": steps, "prompt_length": seq})
    if cfg == get_config("paper") or cfg.name == "paper":
        result["gr00t_n1_6"] = gr00t_comparison(cfg, plan, forms, seq, [t for t in targets if t.name in GR00T_N16], tokens)
    return result


def gr00t_comparison(cfg: ModelConfig, plan: dict[str, str], forms: dict[str, str], prompt_length: int,
                     targets: list[Target], tokens: int) -> dict:
    """ChatVLA-2's bound at GR00T N1.6's 4 denoising steps against its measured step (docs/reference/deploy.md):
    the action head alone against GR00T's TensorRT action head, vision + prefill + head (the
    reasoning reused) and with `tokens` reasoning tokens against its whole step. A lower bound
    above a measurement of a smaller model is no contradiction; below it, it must be."""
    steps = GR00T_N16["denoising_steps"]
    counts = analytic_counts(cfg, plan, forms, prompt_length, steps)
    out = {"denoising_steps": steps, "source": "docs/reference/deploy.md: GR00T N1.6, action head in TensorRT, backbone in PyTorch"}
    for t in targets:
        bounds = {e: engine_bound(counts[e], t, plan[e])["ms"] for e in ENGINE_NAMES}
        measured = GR00T_N16[t.name]
        if any(v is None for v in bounds.values()):
            out[t.name] = {"unsupported": f"the plan does not run on {t.name}"}
            continue
        step = step_ms(bounds, tokens)
        out[t.name] = {
            "gr00t_measured_ms": measured,
            "action_head_bound_ms": bounds["action_head"],
            "backbone_bound_ms": round(bounds["vision"] + bounds["prefill"], 3),
            "backbone_gb_read": round((counts["vision"]["bytes"] + counts["prefill"]["bytes"]) / 1e9, 3),
            "step_reuse_bound_ms": step["reuse"], "step_every_bound_ms": step["every"],
            "action_head_below_gr00t": bounds["action_head"] <= measured["action_head_ms"],
            "step_reuse_below_gr00t": step["reuse"] <= measured["step_ms"],
        }
    return out


# ------------------------------------------------------------------------------------ measuring
def engine_feed(entry: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs at the opt shapes (benchmarks/export_table.py's feed): random floats, and integer
    ids/positions of a mid-sequence decode step."""
    feed = {}
    for spec in entry["inputs"]:
        shape = opt_shapes(entry)[spec["name"]]
        dtype = _NUMPY_DTYPES.get(spec["dtype"], np.float32)
        if np.issubdtype(dtype, np.integer):
            feed[spec["name"]] = np.full(shape, 20, dtype=dtype)
        else:
            feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
    return feed


def measure_bundle(bundle: Path, manifest: dict, runs: int, threads: int | None = None) -> dict[str, dict]:
    """Each engine's ONNX Runtime latency on this machine: {p50_ms, p99_ms} over `runs` after
    WARMUP runs, one engine at a time."""
    from chatvla2.runtime.onnxruntime_session import create_session

    rng = np.random.default_rng(0)
    measured = {}
    for name in ENGINE_NAMES:
        entry = manifest["engines"][name]
        session = create_session(bundle / entry["file"], threads=threads)
        feed = engine_feed(entry, rng)
        measured[name] = latency_stats(time_runs(functools.partial(session.run, None, feed), WARMUP, runs))
        del session
    return measured


# ------------------------------------------------------------------------------------ the report
def format_prediction(result: dict) -> str:
    targets = list(result["targets"])
    measured = "measured" in result["engines"]["vision"]
    plan = ",".join(f"{k}={v}" for k, v in result["plan"].items())
    moe = ", ".join(f"{k} {v}" for k, v in result.get("moe_implementation", {}).items())
    lines = [f"ChatVLA-2 {result['model']}, {result['source']}: plan {plan}; MoE {moe}; prompt {result['prompt_length']} tokens, "
             f"{result['ddim_steps']} DDIM steps in the action head; lower bounds = max(bytes / bandwidth, FLOPs / peak)"]
    header = f"  {'engine':<13}{'precision':<10}{'MB read':>10}{'GFLOP':>10}" + "".join(f"{t + ' ms':>20}" for t in targets)
    if measured:
        header += f"{'here ms':>12}"
    lines.append(header)
    for name, e in result["engines"].items():
        label = name if name != "decode" else "decode/token"
        row = f"  {label:<13}{e['precision']:<10}{e['bytes'] / 1e6:>10.2f}{e['flops'] / 1e9:>10.3f}"
        for t in targets:
            b = e["bounds"][t]
            row += f"{'n/a (' + e['precision'] + ')':>20}" if b["ms"] is None else f"{_ms(b['ms']):>12} {b['limit'][:7]:>7}"
        if measured:
            row += f"{e['measured']['p50_ms']:>12.3f}"
        lines.append(row)
    for cadence, label in (("every", f"step, {result['tokens']} tokens"), ("reuse", "step, reused")):
        row = f"  {label:<33}" + "".join(f"{_ms(result['step_ms'][t][cadence]):>20}" for t in targets)
        if measured:
            row += f"{result['measured_step_ms'][cadence]:>12.3f}"
        lines.append(row)
    c = result["control"]
    lines.append(f"  control: a chunk of {c['chunk_size']} actions at {c['hz']:g} Hz, queried every {c['query_every']} steps = "
                 f"{c['horizon_ms']:g} ms of horizon per step; margin (horizon - step):")
    for name, margins in c["margin_ms"].items():
        parts = [f"{cadence} {'n/a' if m is None else f'{m:+.1f} ms'} ({'n/a' if m is None else ('fits' if m >= 0 else 'does not fit')})"
                 for cadence, m in margins.items()]
        lines.append(f"    {name:<6} " + "; ".join(parts) + (" [bound: the real margin is smaller]" if name != "here" else " [measured here]"))
    if "gr00t_n1_6" in result:
        g = result["gr00t_n1_6"]
        lines.append(f"  against GR00T N1.6 ({g['denoising_steps']} denoising steps; action head TensorRT, backbone PyTorch; docs/reference/deploy.md):")
        for t, v in g.items():
            if not isinstance(v, dict) or t not in GR00T_N16:
                continue
            if "unsupported" in v:
                lines.append(f"    {t}: {v['unsupported']}")
                continue
            m = v["gr00t_measured_ms"]
            lines.append(
                f"    {t}: ChatVLA-2 action head (ScaleDP, {g['denoising_steps']} steps) >= {v['action_head_bound_ms']:.1f} ms vs GR00T's "
                f"{m['action_head_ms']:g} ms measured ({'below' if v['action_head_below_gr00t'] else 'ABOVE'}); vision + prefill + head, "
                f"reasoning reused >= {v['step_reuse_bound_ms']:.1f} ms vs GR00T's whole step {m['step_ms']:g} ms ("
                + ("below" if v["step_reuse_below_gr00t"] else
                   f"above: not a contradiction, ChatVLA-2's vision + prefill read {v['backbone_gb_read']:.1f} GB, the prefill all 8 experts")
                + f"); with {result['tokens']} reasoning tokens >= {v['step_every_bound_ms']:.1f} ms")
    lines.append(f"  {TRANSFER_NOTE}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    """Three significant digits (at least one decimal, at most five)."""
    if value is None:
        return "n/a"
    if value <= 0:
        return "0"
    return f"{value:.{min(5, max(1, 2 - math.floor(math.log10(value))))}f}"


# ------------------------------------------------------------------------------------ the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", nargs="?", metavar="BUNDLE", help="a bundle directory (or --config NAME)")
    parser.add_argument("--config", metavar="NAME", help="predict a preset from its configuration alone (e.g. paper)")
    parser.add_argument("--precision", default="fp16", metavar="PLAN",
                        help="with --config: the precision plan, as `chatvla2 export --precision` takes it (default fp16)")
    parser.add_argument("--target", action="append", metavar="NAME",
                        help=f"repeatable or a comma list of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, metavar="N",
                        help=f"reasoning tokens per step (default {DEFAULT_TOKENS})")
    parser.add_argument("--query-every", type=int, default=DEFAULT_QUERY_EVERY, metavar="K",
                        help=f"control steps executed per query at {CONTROL_HZ:g} Hz (default {DEFAULT_QUERY_EVERY})")
    parser.add_argument("--ddim-steps", type=int, metavar="N", help="with --config: the action head's denoising steps (default: the config's)")
    parser.add_argument("--prompt-length", type=int, metavar="N", help="with --config: the prefill's tokens (default: the export's opt length)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per engine here (default {DEFAULT_RUNS})")
    parser.add_argument("--no-measure", action="store_true", help="do not time the engines on this machine")
    parser.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads (default: its own)")


def main(args: argparse.Namespace) -> int:
    if bool(args.bundle) == bool(args.config):
        raise ValueError("give a BUNDLE or --config NAME (one of them): chatvla2 calibrate predict BUNDLE | --config paper")
    targets = parse_targets(args.target)
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for name in ("ddim_steps", "prompt_length"):
        value = getattr(args, name)
        if value is not None:
            if args.bundle:
                raise ValueError(f"--{name.replace('_', '-')} applies to --config only (a bundle's graphs fix it)")
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.bundle:
        result = predict_bundle(args.bundle, targets, args.tokens, args.query_every,
                                runs=0 if args.no_measure else args.runs, threads=args.threads)
    else:
        result = predict_config(args.config, args.precision, targets, args.tokens, args.query_every,
                                prompt_length=args.prompt_length, ddim_steps=args.ddim_steps)
    print(format_prediction(result))
    print(json.dumps({"predict": result}), flush=True)
    return 0
