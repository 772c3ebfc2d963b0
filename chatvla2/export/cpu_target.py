"""The `cpu` export target: graphs shaped for ONNX Runtime's CPU kernels, never handed to TensorRT.

The TensorRT plans hold their precision as Q/DQ pairs (what TensorRT fuses); ONNX Runtime's CPU
execution provider runs those as float arithmetic around (de)quantization, slower than fp32. The
`cpu` target uses the operators ONNX Runtime's CPU kernels are built for instead:
- the mixture of experts as com.microsoft MoE / QMoE (`export.cpu_moe`): each token's top-2
  experts only, in prefill and decode, reading the chosen experts' weights in place;
- int8: the weight matrix products dynamically quantized (onnxruntime.quantization's
  quantize_dynamic: weights int8 per output channel, activations quantized per call, int8 GEMMs
  that use AVX512-VNNI / AVX-VNNI / ARM dot-product instructions where the CPU has them);
- int4: block-wise 4-bit weights as com.microsoft MatMulNBits (block 32, symmetric), accuracy
  level 4 (int8 activations into the dot products).
Nothing in these graphs is x86-only: ONNX Runtime picks the kernel for the CPU it runs on (a
Jetson's ARM cores too). The routers stay fp32 (their top-k decides which experts run at all), and
so do the attention products between activations (they are not weights).

Per engine, `CANDIDATES` lists the precisions fastest first (measured here, README "The cpu target");
`chatvla2 export --target cpu` without `--precision` keeps, per engine, the first that meets its
parity budget (`export.thresholds`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from chatvla2.contract.bundle import ENGINE_NAMES
from chatvla2.export.precision import LANGUAGE_ENGINES, ConversionReport, per_engine_plan, router_nodes

CPU_PRECISIONS = ("fp32", "int8", "int4")
# Fastest first. Vision and the action head are compute-bound: int8 GEMMs (VNNI) first. Prefill and
# decode share one graph (`language`, one copy of the weights in memory) when the plan gives them
# one precision, so they are chosen together. int4 would be faster at `small` from ~12 reasoning
# tokens on (2 threads: a 150-token prefill 39 ms at int4 against 35 at int8, a decode step 1.23 ms
# against 1.60), and its graph meets the engines' int4 parity budgets, but not the policy's: on the
# shipped demo model an int4 language agrees with the fp32 reasoning on 0.38 of its tokens, outside
# the int4 policy budget of 0.5 (int8: 0.87; an int8 prefill with an int4 decode, two graphs: 0.55;
# benchmarks/policy_accuracy.py, README "The cpu target"). So auto stops at int8; `--precision
# prefill=int4,decode=int4,...` or the two-graph mix remain a choice per deployment.
CANDIDATES = {
    "vision": ("int8", "fp32"),
    "language": ("int8", "fp32"),
    "action_head": ("int8", "fp32"),
}
INT4_BLOCK = 32


def parse_cpu_plan(text: str | None) -> dict[str, str | tuple[str, ...]]:
    """`auto` (or None): every engine's `CANDIDATES` (prefill and decode: the language's, together);
    `int8`: every engine at int8; or one per engine, `vision=int8,prefill=int8,decode=int4,action_head=fp32`
    (engines left out: fp32; prefill and decode at different precisions get a graph each);
    `language=P` stands for `prefill=P,decode=P` (their one shared graph)."""
    text = (text or "auto").strip()
    if text == "auto":
        return {"vision": CANDIDATES["vision"], "prefill": CANDIDATES["language"], "decode": CANDIDATES["language"],
                "action_head": CANDIDATES["action_head"]}
    if "=" not in text:
        if text not in CPU_PRECISIONS:
            raise ValueError(f"the cpu target has no precision {text!r}; choose from auto, {', '.join(CPU_PRECISIONS)} or a plan per engine")
        return dict.fromkeys(ENGINE_NAMES, text)
    return per_engine_plan(text, CPU_PRECISIONS, "the cpu target has no precision", aliases={"language": LANGUAGE_ENGINES})


def shares_language(plan: dict) -> bool:
    """Prefill and decode are one graph (`export.graphs.LanguageGraph`, one copy of the language
    model's weights in memory) when the plan gives them the same precision or the same candidates."""
    return plan["prefill"] == plan["decode"]


def cpu_quantize(fp32_path: Path, precision: str) -> tuple[onnx.ModelProto, ConversionReport]:
    """The traced fp32 graph at `precision` for ONNX Runtime's CPU kernels."""
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"the cpu target has no precision {precision!r}; choose from {', '.join(CPU_PRECISIONS)}")
    model = onnx.load(str(fp32_path))
    if precision == "fp32":
        return model, ConversionReport(method="traced fp32 (cpu target)")
    excluded = router_nodes(model)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()  # the quantizer advises shape pre-processing on the root logger
        level = root.level
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "int8.onnx"
            root.setLevel(logging.ERROR)
            try:
                # MatMulConstBOnly: only products with a constant weight; attention's q @ k and p @ v stay float.
                quantize_dynamic(str(fp32_path), str(out), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                                 weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                                 extra_options={"MatMulConstBOnly": True})
            finally:
                root.setLevel(level)
            model = onnx.load(str(out))
        method = "onnxruntime quantize_dynamic int8 (per-channel weights, dynamic activations)"
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=INT4_BLOCK, is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=excluded)
        quantizer.process()
        model = quantizer.model.model
        method = f"onnxruntime MatMulNBits int4 (block {INT4_BLOCK}, symmetric, accuracy level 4)"
    moe_bits = {"int8": 8, "int4": 4}[precision]
    moe_nodes = [n for n in model.graph.node if n.op_type == "MoE" and n.domain == "com.microsoft"]
    if moe_nodes:
        from chatvla2.export.cpu_moe import quantize_moe

        block = moe_block_size(model, moe_nodes[0])
        model = quantize_moe(model, bits=moe_bits, block_size=block, accuracy_level=4)
        method += f"; experts QMoE int{moe_bits} (block {block}, accuracy level 4)"
    return model, ConversionReport(method=method, not_quantized=excluded)


def moe_block_size(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """QMoE's block along K: the largest power of two up to 128 dividing the hidden and the expert
    width. Blocks, not one scale per row: ONNX Runtime 1.32 runs per-row experts by dequantizing
    the chosen ones to fp32 on every call (a weight copy, 2-3x slower); block 128 measured fastest
    at the `small` shapes (benchmarks/cpu_moe.py: decode 0.095 ms/layer vs 0.10 at block 32)."""
    fc1 = next(t for t in model.graph.initializer if t.name == node.input[2])
    hidden, inter = fc1.dims[2], fc1.dims[1] // 2
    block = 128
    while block > 16 and (hidden % block or inter % block):
        block //= 2
    return block
