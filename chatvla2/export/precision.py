"""Precision: the per-engine plan, and turning an fp32 graph into an fp16, int8, fp8 or int4 one.

The precision lives in the ONNX graph itself (TensorRT 11 builds strongly typed networks only,
docs/reference/deploy.md): fp16 by converting the graph, int8 and fp8 by symmetric
Q/DQ nodes from calibration (modelopt ONNX PTQ, weights stored quantized), int4 by blocked
weight-only Q/DQ (AWQ) on the language model's matrix multiplies, in TensorRT's W4A16 form (fp16
scales and fp16 activations around the int4 weights: `int4_form`). A quantized graph keeps what it
does not quantize (the gather-form experts, the routers, weights the quantizer skips, the
activations between Q/DQ pairs) in fp16, as TensorRT deployments do; fp32 only where parity shows
it is needed, and the manifest names those tensors and why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from chatvla2.contract.bundle import ENGINE_NAMES
from chatvla2.contract.names import UnknownChoice
from chatvla2.export.graph_passes import all_graphs, deduplicate_initializers, untie_output_head
from chatvla2.export.routed_experts import expert_activations, quantize_routed_experts, routed_if_nodes
from chatvla2.export.thresholds import PRECISIONS, ParityBudget

if TYPE_CHECKING:  # export.parity imports torch; parse_plan's callers need not
    from chatvla2.export.parity import ParityResult

# Where each precision can run (docs/reference/deploy.md): Orin (Ampere, SM 8.7) has no FP8.
TARGETS = {
    "fp32": ("orin", "thor", "hopper"),
    "fp16": ("orin", "thor", "hopper"),
    "int8": ("orin", "thor", "hopper"),
    "int4": ("orin", "thor", "hopper"),
    "fp8": ("thor", "hopper"),
}
# int4 is weight-only for the language model (issue #3). Asked for alone, it gives the vision
# encoder int8 and the action head fp16: the small preset's action head at int8 missed its budget
# (cosine 0.931: the error compounds over the 10 unrolled DDIM steps), and GR00T's DiT gained
# nothing from INT8 on Orin (docs/reference/deploy.md).
LANGUAGE_ENGINES = ("prefill", "decode")
INT4_PLAN = {"vision": "int8", "prefill": "int4", "decode": "int4", "action_head": "fp16"}

# fp16 candidates to keep in fp32, tried in this order until the graph meets its budget (fp16
# graphs, and the float part of quantized ones). The router group is the nodes that read a router
# weight and the TopK that picks the experts from their scores.
FP32_CANDIDATES = (
    ("norms", {"op_types": ["LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Reciprocal"]}),
    ("softmax", {"op_types": ["Softmax"]}),
    ("router", {"router": True, "op_types": ["TopK"]}),
)
# Weights smaller than this are not counted as weights (biases, norm scales, constants).
WEIGHT_MIN_ELEMENTS = 1024


def parse_plan(text: str) -> dict[str, str]:
    """`int8` or `vision=fp16,prefill=int4,...` -> {engine: precision}. Engines a plan leaves out
    stay fp32."""
    text = text.strip()
    if "=" not in text:
        if text not in PRECISIONS:
            raise UnknownChoice(f"unknown precision {text!r}; choose from {', '.join(PRECISIONS)} or a plan per engine")
        if text == "int4":
            return dict(INT4_PLAN)
        return dict.fromkeys(ENGINE_NAMES, text)
    return per_engine_plan(text, PRECISIONS, "unknown precision")


def per_engine_plan(text: str, precisions, unknown: str, aliases: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """`vision=int8,decode=int4` -> every engine's precision (engines left out: fp32); an engine or
    precision outside `precisions` is an error (`unknown` words the latter). `aliases`: a name that
    sets several engines at once (the cpu target's `language`: prefill and decode)."""
    aliases = aliases or {}
    plan = dict.fromkeys(ENGINE_NAMES, "fp32")
    for item in text.split(","):
        engine, _, precision = item.partition("=")
        engine, precision = engine.strip(), precision.strip()
        if engine not in ENGINE_NAMES and engine not in aliases:
            raise UnknownChoice(f"precision plan: unknown engine {engine!r}; engines: {', '.join([*ENGINE_NAMES, *aliases])}")
        if precision not in precisions:
            raise UnknownChoice(f"precision plan: {unknown} {precision!r} for {engine}; choose from {', '.join(precisions)}")
        plan.update(dict.fromkeys(aliases.get(engine, (engine,)), precision))
    return plan


def plan_targets(plan: dict[str, str]) -> list[str]:
    targets = set(TARGETS["fp32"])
    for precision in plan.values():
        targets &= set(TARGETS[precision])
    return sorted(targets)


@dataclass
class ConversionReport:
    kept_fp32: list[str] = field(default_factory=list)  # FP32_CANDIDATES groups parity kept in fp32
    method: str = ""
    why: dict[str, str] = field(default_factory=dict)  # kept group -> the parity that kept it
    not_quantized: list[str] = field(default_factory=list)  # quantized graphs: float by design (stored fp16)


def router_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that read a router weight: the top-k decides which experts run, so a router
    quantized or halved can send a token to other experts altogether."""
    return [n.name for n in model.graph.node if any(".router." in i for i in n.input)]


def transposed_gemm_nodes(model: onnx.ModelProto) -> list[str]:
    """Gemm nodes with transB=1 (the output head tied to the token embedding). modelopt 0.47's
    int4 quantizer blocks their weight along the wrong axis, which onnxruntime then rejects
    ("x_scale must be ceil(Di/block_size) on the quantize axis")."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in n.attribute)
    ]


@contextlib.contextmanager
def _quiet():
    """modelopt logs every step at INFO and prints progress bars; keep export output readable."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


Parity = Callable[[onnx.ModelProto], "ParityResult"]


def _float16_with_fallbacks(
    load: Callable[[], onnx.ModelProto], parity: Parity, budget: ParityBudget, after: Callable[[onnx.ModelProto], object] | None = None
) -> tuple[onnx.ModelProto, list[str], dict[str, str], bool]:
    """Convert every float tensor but the graph inputs and outputs to fp16, keeping in fp32 the
    fewest FP32_CANDIDATES groups (none, then norms, softmax and the router, cumulatively) that let
    the graph meet `budget`; `after` rewrites each converted graph before its check. onnxruntime's converter: it writes the same standard fp16 graph as
    modelopt's AutoCast in a fraction of a second (AutoCast took 145 s on the tiny action head),
    and on a Q/DQ graph it turns the DequantizeLinear scales fp16, so the dequantized weights and
    the activations between Q/DQ pairs are fp16 too (opset 19+). Returns the model, the kept
    groups, why each was kept, and whether the budget was met."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    router = router_nodes(load())
    kept: list[str] = []
    why: dict[str, str] = {}
    op_types: list[str] = []
    nodes: list[str] = []
    last = None  # the last step's parity (it missed the budget, or we returned)
    for step in range(len(FP32_CANDIDATES) + 1):
        if step:
            name, rule = FP32_CANDIDATES[step - 1]
            why[name] = (
                f"parity needed it: with {', '.join(kept) or 'nothing'} kept fp32 the graph missed its budget "
                f"(cosine {last.cosine:.6f}, rel.err {last.relative_error:.3g}; budget {budget.cosine_min} / "
                f"{budget.relative_error_max})"
            )
            kept.append(name)
            op_types += rule.get("op_types", [])
            nodes += router if rule.get("router") else []
        with _quiet():
            model = convert_float_to_float16(load(), keep_io_types=True, op_block_list=op_types, node_block_list=nodes)
        if after is not None:  # a rewrite of the converted graph, before its parity (`quantize`)
            after(model)
        last = parity(model)
        if budget.admits(last):
            return model, kept, why, True
    return model, kept, why, False


def to_fp16(fp32_path: Path, parity: Parity, budget: ParityBudget) -> tuple[onnx.ModelProto, ConversionReport]:
    """Convert to fp16 (inputs and outputs stay fp32), keeping in fp32 the fewest candidate groups
    that let the graph meet its parity budget (`_float16_with_fallbacks`)."""
    model, kept, why, met = _float16_with_fallbacks(lambda: onnx.load(str(fp32_path)), parity, budget)
    method = "onnxruntime float16, io kept fp32" + ("" if met else " (budget missed)")
    return model, ConversionReport(kept_fp32=kept, method=method, why=why)


def quantize(
    fp32_path: Path,
    out_path: Path,
    precision: str,
    calibration: dict[str, np.ndarray],
    parity: Parity,
    budget: ParityBudget,
) -> tuple[onnx.ModelProto, ConversionReport]:
    """int8 / fp8: symmetric Q/DQ on activations and weights from `max` calibration; int4:
    blocked weight-only AWQ. Weights are stored quantized (DequantizeLinear only); the routers are
    never quantized. Then everything still float (weights the quantizer leaves, the gather-form
    experts, activations, DequantizeLinear scales and outputs) becomes fp16, inputs and outputs
    fp32, with the fp16 conversion's parity fallbacks (`_float16_with_fallbacks`) on the quantized
    graph.

    modelopt quantizes in fp32 (`high_precision_dtype="fp32"`) and onnxruntime's converter does
    the fp16 step: modelopt's own `high_precision_dtype="fp16"` runs AutoCast, which is minutes per
    graph on this CPU and has no parity fallback."""
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    # The weights themselves only for int4 (the untied head, the experts' calibration rows).
    graph = onnx.load(str(fp32_path), load_external_data=precision == "int4")
    untied_files: list[Path] = []
    # int4 only: modelopt's int8/fp8 leave a one-row product float, so an untied head would only be a second copy.
    if precision == "int4" and untie_output_head(graph):  # the decode step's head, quantized apart from its table
        from chatvla2.export.onnx_export import save_onnx

        fp32_path = out_path.with_name(out_path.stem + ".untied.onnx")
        untied_files = save_onnx(graph, fp32_path)
    excluded = router_nodes(graph)
    not_quantized = ["router"] if excluded else []
    if precision == "int4":
        transposed = transposed_gemm_nodes(graph)
        excluded += transposed
        not_quantized += ["Gemm with transB (the tied lm_head)"] if transposed else []
    # awq_clip, not awq_lite: modelopt 0.47's awq_lite calls cupy's .get() on a numpy array
    # when cupy is absent (int4.py, _quantize_awq_lite) and fails on a CPU-only machine.
    method = {"int8": "max", "fp8": "max", "int4": "awq_clip"}[precision]
    with _quiet():
        modelopt_quantize(
            str(fp32_path),
            quantize_mode=precision,
            calibration_data=calibration,
            calibration_method=method,
            calibration_eps=["cpu"],
            output_path=str(out_path),
            high_precision_dtype="fp32",
            dq_only=True,
            # Attention's own matrix products (q k^T, p v) stay in float: with them in int8 the
            # small preset's vision encoder fell to cosine 0.858, without them 0.998 (measured).
            disable_mha_qdq=True,
            nodes_to_exclude=[f"^{n}$" for n in excluded] or None,
            log_level="ERROR",
        )
    if not out_path.is_file():
        raise RuntimeError(f"modelopt wrote no {precision} graph for {fp32_path.name}")
    quantized = onnx.load(str(out_path))
    if drop_input_qdq(quantized):
        not_quantized.append("graph inputs (the prompt embeddings)")
    for leftover in [*out_path.parent.glob(out_path.name + "*"), *untied_files]:  # the caller saves the final graph
        leftover.unlink(missing_ok=True)
    deduplicate_initializers(quantized)
    serialized = quantized.SerializeToString()
    # The routed form's experts (If branches, which modelopt leaves) are quantized after the fp16
    # conversion, with fp16 scales: onnxruntime's converter mishandles DequantizeLinear inside an If
    # branch (the tiny decode's cosine fell from 0.9995 to 0.988, int8 or int4 alike).
    experts = []
    # int4 experts: clipped against the rows they multiply on the calibration inputs (fp32 graph)
    rows = expert_activations(graph, calibration) if precision == "int4" and routed_if_nodes(graph) else None
    model, kept, why, met = _float16_with_fallbacks(
        lambda: onnx.load_from_string(serialized), parity, budget, after=lambda m: experts.append(quantize_routed_experts(m, precision, rows))
    )
    if experts and experts[-1]:
        not_quantized.append(f"routed experts: weight-only {experts[-1]}, not by modelopt")
    deduplicate_initializers(model)
    # In a strongly typed network a DequantizeLinear outputs its scale's type, so the fp16 scales
    # the conversion wrote make the GEMMs fp16: W4A16, TensorRT's documented int4 form. Said in
    # the manifest's conversion; lint warns on any int4 weight left with an fp32 scale (W4A32).
    form = f"; int4 as {int4_form(model)}" if precision == "int4" else ""
    return model, ConversionReport(
        kept_fp32=kept,
        method=f"modelopt {precision} ({method}), attention matmuls in float; float part onnxruntime float16, io kept fp32"
        + form + ("" if met else " (budget missed)"),
        why=why,
        not_quantized=not_quantized,
    )


def int4_form(model: onnx.ModelProto) -> str | None:
    """'W4A16' when every INT4 weight's DequantizeLinear has an fp16 scale and every node reading a
    dequantized INT4 weight reads only fp16 tensors; 'W4A32' otherwise; None without INT4 weights.
    Activation types come from shape inference; a graph it cannot handle (over 2 GB) is judged by
    its scales alone."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        values = [*inferred.input, *inferred.output, *inferred.value_info]
    except Exception:  # noqa: BLE001 - an over-large or odd graph: scales alone
        values = []
    types.update({v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")})
    dequantized = {
        n.output[0]: n.input[1] for n in model.graph.node
        if n.op_type == "DequantizeLinear" and types.get(n.input[0]) == onnx.TensorProto.INT4
    }
    if not dequantized:
        return None
    fp16 = onnx.TensorProto.FLOAT16
    if any(types.get(scale) != fp16 for scale in dequantized.values()):
        return "W4A32"
    for node in model.graph.node:
        if any(i in dequantized for i in node.input):
            if any(types.get(i, fp16) != fp16 for i in node.input if i):
                return "W4A32"
    return "W4A16"


def drop_input_qdq(model: onnx.ModelProto) -> int:
    """Remove the activation Q/DQ pairs modelopt puts directly on a graph input; their consumers
    read the input itself. The one such input is the prefill's prompt embeddings, the residual
    stream's start: one per-tensor scale covers image tokens (|x| up to 1.7 at `small`) and text
    tokens (|x| near 0.05, 4 int8 levels), and parity then hangs on rounding ties: the `small` int8
    prefill measured cosine 0.993 with the float part fp32, 0.979 with it fp16 (below the 0.98
    budget), 0.9955 fp16 without this pair. Returns the number of nodes removed."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    rename: dict[str, str] = {}
    dropped = []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in inputs:
            readers = [n for n in graph.node if node.output[0] in n.input]
            if readers and all(n.op_type == "DequantizeLinear" for n in readers):
                dropped += [node, *readers]
                rename.update({n.output[0]: node.input[0] for n in readers})
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in graph.node for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(dropped)


def low_precision_weight_fraction(model: onnx.ModelProto) -> float:
    """Weight elements (initializers of WEIGHT_MIN_ELEMENTS or more) stored below fp32 / all of them."""
    low = total = 0
    for tensor in all_initializers(model):
        count = _elements(tensor)
        if count < WEIGHT_MIN_ELEMENTS:
            continue
        total += count
        if tensor.data_type != onnx.TensorProto.FLOAT:
            low += count
    return low / total if total else 0.0


def all_initializers(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers of the graph and of its subgraphs (If branches: the routed form's experts)."""
    return [tensor for graph in all_graphs(model.graph) for tensor in graph.initializer]


def _elements(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def weight_bytes_by_dtype(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of every initializer by its stored type ({"int8": n, "float16": n, "float32": n, ...};
    int4 packed two to a byte)."""
    totals: dict[str, int] = {}
    for tensor in all_initializers(model):
        if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            size = (_elements(tensor) + 1) // 2
        else:
            size = _elements(tensor) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        dtype = _DTYPE_NAMES.get(tensor.data_type) or onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
        totals[dtype] = totals.get(dtype, 0) + size
    return dict(sorted(totals.items()))


_DTYPE_NAMES = {
    onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.UINT4: "uint4",
    onnx.TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    onnx.TensorProto.FLOAT8E5M2: "float8e5m2",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}


def fp32_weights(model: onnx.ModelProto, report: ConversionReport) -> list[dict]:
    """Every initializer of WEIGHT_MIN_ELEMENTS or more still stored fp32 in a graph below fp32:
    {"name", "elements", "why"}. `why` names the kept group whose nodes read it and the parity
    that kept that group; a weight no kept group explains says so (the tests fail on it)."""
    groups = _fp32_groups(model, report.kept_fp32)
    listed = []
    for tensor in all_initializers(model):
        count = _elements(tensor)
        if tensor.data_type != onnx.TensorProto.FLOAT or count < WEIGHT_MIN_ELEMENTS:
            continue
        group = groups.get(tensor.name)
        if group is not None:
            why = f"{group}: {report.why.get(group, 'kept fp32')}"
        else:
            why = "unexplained: read by no node of a kept group"
        listed.append({"name": tensor.name, "elements": count, "why": why})
    return listed


def _fp32_groups(model: onnx.ModelProto, kept: list[str]) -> dict[str, str]:
    """Initializer name -> the first kept FP32_CANDIDATES group with a node that reads it."""
    router = set(router_nodes(model))
    rules = [(name, rule) for name, rule in FP32_CANDIDATES if name in kept]
    groups: dict[str, str] = {}
    for node in model.graph.node:
        for name, rule in rules:
            if node.op_type in rule.get("op_types", ()) or (rule.get("router") and node.name in router):
                for tensor in node.input:
                    groups.setdefault(tensor, name)
                break
    return groups
