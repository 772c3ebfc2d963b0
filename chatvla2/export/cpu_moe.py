"""The mixture-of-experts layers as ONNX Runtime's own CPU operators (the `cpu` export target).

- fp32: com.microsoft `MoE`. One node per layer takes the tokens, the router logits and the stacked
  expert weights; ONNX Runtime routes (top-k of the logits, softmax over those k) and runs each
  expert only on the tokens routed to it (one MLAS SGEMM per expert, the experts spread over the
  intra-op threads). A prefill does k/E of the dense form's expert FLOPs. A decode step reads the
  k chosen experts' weights in place on x86-64 (MLAS' M=1 kernels read B as stored); elsewhere
  (ARM) MLAS packs each chosen expert's B panel per call, so prefer QMoE there.
- int8 / int4: com.microsoft `QMoE`, written from the fp32 graph by `quantize_moe`: expert weights
  quantized symmetrically per block along K, fp32 scales, in the kernel's raw layout
  (`weights_prepacked=0`). ONNX Runtime prepacks block-wise experts once at session load for its
  MatMulNBits (QNBit) kernels, which then read them in place on every platform. Blocks of 32-128
  with accuracy_level 4 are the fast settings; block_size 0 (per-row scales) takes ONNX Runtime's
  dequantize + SGEMM fallback (a dequantized copy of the chosen experts per call, 2-3x slower).
- `GroupedMoE` / `grouped_moe_layers`: the same top-k work in standard ONNX operators (NonZero,
  Gather, Gemm, ScatterND), for comparison (benchmarks/cpu_moe.py: faster than MoE fp32 at a
  prefill on ONNX Runtime 1.32, whose fp32 MoE kernel repacks each expert's weights per call).

How the node gets into a traced graph without `models/` knowing about ONNX Runtime: inside
`ort_moe_layers(model)`, each `DynamicMoE` in `model.language.layers[i].mlp` is replaced by an
`OrtMoE` that holds the operator's weight layout. In eager mode it computes the operator's
semantics in PyTorch (`routed_moe`); while `torch.onnx.export(..., dynamo=True)` traces it, it
emits the com.microsoft node through `torch.onnx.ops.symbolic`, so the exporter needs no
translation table (`CUSTOM_TRANSLATIONS` is empty; passing it is harmless):

    with ort_moe_layers(model):
        specs = {s.name: s for s in engine_specs(model)}
        prefill = trace_to_onnx(specs["prefill"], CUSTOM_TRANSLATIONS)
        decode = trace_to_onnx(specs["decode"], CUSTOM_TRANSLATIONS)
    prefill = quantize_moe(prefill, bits=8, block_size=32)  # optional; rewrites in place, returns it

The operator's configuration (verified against `DynamicMoE`, ONNX Runtime 1.32, CPU EP): the CPU
kernel has no separate FC3, so gate and up are fused into FC1 with interleaved rows
(gate_0, up_0, gate_1, up_1, ...; `swiglu_fusion=1`), `activation_type='swiglu'` with alpha 1 and
beta 0 is silu(gate) * up, `normalize_routing_weights=1` is the softmax over the k chosen logits,
and `router_probs` are the router's raw logits.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from chatvla2.export.module_replacement import replaced_modules
from chatvla2.models.moe import DynamicMoE

MS_DOMAIN = "com.microsoft"
# The attributes that make com.microsoft MoE/QMoE compute DynamicMoE's layer (k is added per layer).
MOE_ATTRIBUTES: dict[str, int | float | str] = {
    "activation_type": "swiglu",
    "swiglu_fusion": 1,
    "activation_alpha": 1.0,
    "activation_beta": 0.0,
    "normalize_routing_weights": 1,
}
# The exporter's translation table for this module's operators: none needed, OrtMoE emits its node
# itself (torch.onnx.ops.symbolic). For trace_to_onnx(spec, CUSTOM_TRANSLATIONS).
CUSTOM_TRANSLATIONS: dict = {}
QUANT_BITS = (8, 4)
# accuracy_level 4: int8 activations (VNNI/dot-product kernels). Block-wise int8 experts use int8
# activations at every level; for int4, level 0 keeps fp32 activations.
DEFAULT_ACCURACY_LEVEL = 4


def interleave_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(E, I, H) gate and up projections -> the fused FC1 (E, 2I, H), rows gate_0, up_0, gate_1, ..."""
    experts, intermediate, hidden = gate.shape
    return torch.stack([gate, up], dim=2).reshape(experts, 2 * intermediate, hidden)


def routed_moe(x: torch.Tensor, logits: torch.Tensor, fc1: torch.Tensor, fc2: torch.Tensor, top_k: int) -> torch.Tensor:
    """What the com.microsoft MoE node computes, in PyTorch: x (T, H), router logits (T, E),
    fc1 (E, 2I, H) interleaved gate/up, fc2 (E, H, I) -> (T, H). Each expert runs only on the
    tokens routed to it."""
    top_logits, indices = torch.topk(logits.float(), top_k, dim=-1)
    weights = torch.softmax(top_logits, dim=-1).to(x.dtype)
    out = torch.zeros_like(x)
    for expert in range(fc1.shape[0]):
        token, slot = (indices == expert).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        fused = F.linear(x.index_select(0, token), fc1[expert])
        hidden = F.silu(fused[:, 0::2]) * fused[:, 1::2]
        out = out.index_add(0, token, F.linear(hidden, fc2[expert]) * weights[token, slot].unsqueeze(-1))
    return out


class OrtMoE(nn.Module):
    """A `DynamicMoE` in com.microsoft MoE's weight layout. Shares the router and the down
    projection with the layer it replaces; the fused FC1 is a new (E, 2I, H) tensor, and the
    layer's own gate/up projections are not held here, so a traced graph has each expert weight
    once."""

    def __init__(self, moe: DynamicMoE):
        super().__init__()
        self.num_experts = moe.num_experts
        self.top_k = moe.top_k
        self.router = moe.router
        self.fc1 = nn.Parameter(interleave_gate_up(moe.gate_proj.detach(), moe.up_proj.detach()), requires_grad=False)
        self.fc2 = moe.down_proj

    def forward(self, x: torch.Tensor, return_router_logits: bool = False):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        # The router in float32, as DynamicMoE.route: its top-k decides which weights are read.
        logits = F.linear(tokens.float(), self.router.weight.float())
        if torch.onnx.is_in_onnx_export():
            out = torch.onnx.ops.symbolic(
                f"{MS_DOMAIN}::MoE",
                [tokens, logits.to(tokens.dtype), self.fc1, None, self.fc2],
                {**MOE_ATTRIBUTES, "k": self.top_k},
                dtype=tokens.dtype,
                shape=tokens.shape,
                version=1,
            )
        else:
            out = routed_moe(tokens, logits, self.fc1, self.fc2, self.top_k)
        out = out.reshape(shape)
        return (out, logits) if return_router_logits else out


class GroupedMoE(nn.Module):
    """A `DynamicMoE` as standard ONNX operators that do top-k work: per expert, the rows of the
    tokens routed to it (NonZero, Gather), its three matrix products with its own constant weights
    (Gemm, which ONNX Runtime prepacks once at load) and the weighted rows added back (ScatterND,
    reduction add). Shares every weight with the layer it wraps (no copy). Not an operator of
    ONNX Runtime's own: the alternative to `OrtMoE` measured in benchmarks/cpu_moe.py."""

    def __init__(self, moe: DynamicMoE):
        super().__init__()
        self.moe = moe

    def forward(self, x: torch.Tensor, return_router_logits: bool = False):
        moe = self.moe
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        weights, indices, logits = moe.route(tokens)
        out = torch.zeros_like(tokens)
        for expert in range(moe.num_experts):
            chosen = indices == expert  # (T, k): at most one slot per token
            rows = torch.nonzero(chosen.any(dim=-1)).squeeze(1)
            routed = tokens.index_select(0, rows)
            hidden = F.silu(F.linear(routed, moe.gate_proj[expert])) * F.linear(routed, moe.up_proj[expert])
            weight = (weights * chosen).sum(dim=-1).index_select(0, rows).unsqueeze(-1)
            out = out.index_add(0, rows, F.linear(hidden, moe.down_proj[expert]) * weight)
        out = out.reshape(shape)
        return (out, logits) if return_router_logits else out


def ort_moe_layers(model: nn.Module) -> contextlib.AbstractContextManager[int]:
    """Within the block, every `DynamicMoE` of `model.language.layers[i].mlp` (a ChatVLA2 or its
    LanguageModel) is an `OrtMoE`; the originals come back on exit. Yields the number replaced.
    Graph modules (export.graphs.PrefillGraph, DecodeGraph) built before or inside the block see
    the replacement: they hold `model.language`, not its layers."""
    return replaced_modules(model, DynamicMoE, OrtMoE)


def grouped_moe_layers(model: nn.Module) -> contextlib.AbstractContextManager[int]:
    """As `ort_moe_layers`, with `GroupedMoE` (standard ONNX operators) instead."""
    return replaced_modules(model, DynamicMoE, GroupedMoE)


# --- int8 / int4 experts: com.microsoft QMoE -------------------------------------------------


def quantize_blocks(weight: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(E, N, K) float weights -> QMoE's raw layout: uint8 (E, N, K * bits / 8) and float32 scales
    (E, N, K / block_size), or (E, N) with block_size 0 (one scale per output row). Symmetric per
    block along K, stored with the kernel's default zero point 2^(b-1) (no zero-point input); int4
    packs element 2j in the low nibble and 2j + 1 in the high one (MatMulNBits' order). As ONNX
    Runtime's own MatMulNBits quantizer does, the block's largest-magnitude value maps to level
    -2^(b-1) exactly (its scale is negative where that value is positive), so all 2^b levels are
    used: 5-12% less int4 weight error than levels -7..7 (measured on uniform and normal data)."""
    if bits not in QUANT_BITS:
        raise ValueError(f"QMoE experts: bits must be one of {QUANT_BITS}, got {bits}")
    experts, rows, depth = weight.shape
    per_row = block_size == 0
    block_size = depth if per_row else block_size
    if depth % block_size:
        raise ValueError(f"QMoE experts: K={depth} is not a multiple of block_size={block_size}")
    blocks = weight.astype(np.float32).reshape(experts, rows, depth // block_size, block_size)
    half = 2 ** (bits - 1)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    scales = (extreme / -half).astype(np.float32)
    safe = np.where(scales != 0, scales, 1.0).astype(np.float32)
    levels = np.clip(np.rint(blocks / safe[..., None]), -half, half - 1).astype(np.int16) + half
    codes = levels.reshape(experts, rows, depth).astype(np.uint8)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return np.ascontiguousarray(codes), scales[..., 0] if per_row else scales


def dequantize_blocks(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `quantize_blocks` (what the kernel multiplies by), for tests."""
    if bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)
    levels = codes.astype(np.float32) - 2 ** (bits - 1)
    experts, rows, depth = levels.shape
    scales = scales.reshape(experts, rows, -1)
    block_size = depth // scales.shape[-1]
    return (levels.reshape(experts, rows, -1, block_size) * scales[..., None]).reshape(experts, rows, depth)


def quantize_moe(
    model: onnx.ModelProto, bits: int = 8, block_size: int = 32, accuracy_level: int = DEFAULT_ACCURACY_LEVEL
) -> onnx.ModelProto:
    """Rewrite, in place, every com.microsoft MoE node (with initializer weights and no biases or
    FC3, as `OrtMoE` exports it) into a QMoE node with `bits`-bit experts (8 or 4), and return the
    model. `block_size`: blocks along K, a power of two >= 16 dividing both H and I; 0 gives one
    scale per output row, which ONNX Runtime 1.32 runs by dequantizing the chosen experts to fp32
    before an SGEMM (a copy of the weights per call, and slower): use blocks. Block-wise experts run
    on MLAS' MatMulNBits kernels, prepacked at session load; `accuracy_level` 4 lets int4 experts
    use int8 activations (int8 experts use them at every level). The fp32 expert initializers are
    replaced by the quantized ones."""
    if block_size != 0 and (block_size < 16 or block_size & (block_size - 1)):
        raise ValueError(f"QMoE block_size must be 0 or a power of two >= 16, got {block_size}")
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    for position, node in enumerate(list(graph.node)):
        if node.op_type != "MoE" or node.domain != MS_DOMAIN:
            continue
        inputs = list(node.input) + [""] * (8 - len(node.input))
        tokens, router, fc1, fc1_bias, fc2, fc2_bias, fc3, fc3_bias = inputs[:8]
        if fc1_bias or fc2_bias or fc3 or fc3_bias:
            raise ValueError(f"quantize_moe: node {node.name!r} has biases or FC3 (not written by OrtMoE)")
        if fc1 not in initializers or fc2 not in initializers:
            raise ValueError(f"quantize_moe: node {node.name!r} expert weights are not initializers")
        names = []
        for weight_name in (fc1, fc2):
            codes, scales = quantize_blocks(numpy_helper.to_array(initializers[weight_name]), bits, block_size)
            base = f"{weight_name}_q{bits}b{block_size}"
            graph.initializer.append(numpy_helper.from_array(codes, base))
            graph.initializer.append(numpy_helper.from_array(scales, base + "_scales"))
            names.append((base, base + "_scales"))
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attributes.update(expert_weight_bits=bits, weights_prepacked=0, accuracy_level=accuracy_level, quant_type="int")
        if block_size:
            attributes["block_size"] = block_size
        quantized = helper.make_node(
            "QMoE",
            [tokens, router, names[0][0], names[0][1], "", names[1][0], names[1][1]],
            list(node.output),
            name=(node.name or f"moe_{position}") + f"_q{bits}",
            domain=MS_DOMAIN,
            **attributes,
        )
        graph.node.remove(node)
        graph.node.insert(position, quantized)
    used = {name for n in graph.node for name in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return model


def moe_node_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many com.microsoft MoE and QMoE nodes a graph has."""
    counts = {"MoE": 0, "QMoE": 0}
    for node in model.graph.node:
        if node.domain == MS_DOMAIN and node.op_type in counts:
            counts[node.op_type] += 1
    return counts
