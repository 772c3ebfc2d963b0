"""Precision: the per-engine plan, and turning an fp32 graph into an fp16, int8, fp8 or int4 one.

The precision lives in the ONNX graph itself (TensorRT 11 builds strongly typed networks only,
deploy.md): fp16 by converting the graph, int8 and fp8 by symmetric
Q/DQ nodes from calibration (modelopt ONNX PTQ, weights stored quantized), int4 by blocked
weight-only Q/DQ (AWQ) on the language model's matrix multiplies.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from export.graph_passes import deduplicate_initializers
from contract.bundle import ENGINE_NAMES
from export.thresholds import PRECISIONS

# Where each precision can run (deploy.md): Orin (Ampere, SM 8.7) has no FP8.
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
# nothing from INT8 on Orin (deploy.md).
LANGUAGE_ENGINES = ("prefill", "decode")
INT4_PLAN = {"vision": "int8", "prefill": "int4", "decode": "int4", "action_head": "fp16"}

# fp16 candidates to keep in fp32, tried in this order until the graph meets its budget.
FP32_CANDIDATES = (
    ("norms", {"op_types": ["LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Reciprocal"]}),
    ("softmax", {"op_types": ["Softmax"]}),
    ("router", {"router": True}),
)


def parse_plan(text: str) -> dict[str, str]:
    """`int8` or `vision=fp16,prefill=int4,...` -> {engine: precision}. Engines a plan leaves out
    stay fp32."""
    text = text.strip()
    if "=" not in text:
        if text not in PRECISIONS:
            raise ValueError(f"unknown precision {text!r}; choose from {', '.join(PRECISIONS)} or a plan per engine")
        if text == "int4":
            return dict(INT4_PLAN)
        return dict.fromkeys(ENGINE_NAMES, text)
    plan = dict.fromkeys(ENGINE_NAMES, "fp32")
    for item in text.split(","):
        engine, _, precision = item.partition("=")
        engine, precision = engine.strip(), precision.strip()
        if engine not in ENGINE_NAMES:
            raise ValueError(f"precision plan: unknown engine {engine!r}; engines: {', '.join(ENGINE_NAMES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision plan: unknown precision {precision!r} for {engine}; choose from {', '.join(PRECISIONS)}")
        plan[engine] = precision
    return plan


def plan_targets(plan: dict[str, str]) -> list[str]:
    targets = set(TARGETS["fp32"])
    for precision in plan.values():
        targets &= set(TARGETS[precision])
    return sorted(targets)


@dataclass
class ConversionReport:
    kept_fp32: list[str] = field(default_factory=list)
    method: str = ""


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


def to_fp16(fp32_path: Path, meets_budget: Callable[[onnx.ModelProto], bool]) -> tuple[onnx.ModelProto, ConversionReport]:
    """Convert to fp16 (inputs and outputs stay fp32), keeping in fp32 the fewest candidate groups
    that let the graph meet its parity budget: none, then norms, softmax and the router,
    cumulatively. onnxruntime's converter is used: it writes the same standard fp16 graph as
    modelopt's AutoCast in a fraction of a second (AutoCast took 145 s on the tiny action head)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = onnx.load(str(fp32_path))
    router = router_nodes(fp32)
    kept: list[str] = []
    op_types: list[str] = []
    nodes: list[str] = []
    for step in range(len(FP32_CANDIDATES) + 1):
        if step:
            name, rule = FP32_CANDIDATES[step - 1]
            kept.append(name)
            op_types += rule.get("op_types", [])
            nodes += router if rule.get("router") else []
        with _quiet():
            model = convert_float_to_float16(
                onnx.load(str(fp32_path)), keep_io_types=True, op_block_list=op_types, node_block_list=nodes
            )
        if meets_budget(model):
            return model, ConversionReport(kept_fp32=list(kept), method="onnxruntime float16, io kept fp32")
    return model, ConversionReport(kept_fp32=list(kept), method="onnxruntime float16 (budget missed)")


def quantize(
    fp32_path: Path, out_path: Path, precision: str, calibration: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, ConversionReport]:
    """int8 / fp8: symmetric Q/DQ on activations and weights from `max` calibration; int4:
    blocked weight-only AWQ. Weights are stored quantized (DequantizeLinear only); what is not
    quantized stays fp32; the routers are never quantized."""
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    graph = onnx.load(str(fp32_path), load_external_data=False)
    excluded = router_nodes(graph)
    kept = ["router"] if excluded else []
    if precision == "int4":
        transposed = transposed_gemm_nodes(graph)
        excluded += transposed
        kept += ["Gemm with transB (the tied lm_head)"] if transposed else []
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
    model = onnx.load(str(out_path))
    deduplicate_initializers(model)
    return model, ConversionReport(kept_fp32=kept, method=f"modelopt {precision} ({method}), attention matmuls in float")


def low_precision_weight_fraction(model: onnx.ModelProto) -> float:
    """Weight elements (initializers of 1024 elements or more) stored below fp32 / all of them."""
    low = total = 0
    for tensor in model.graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        if count < 1024:
            continue
        total += count
        if tensor.data_type != onnx.TensorProto.FLOAT:
            low += count
    return low / total if total else 0.0
