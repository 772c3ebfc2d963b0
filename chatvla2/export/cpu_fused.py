"""The language model's RMSNorm as ONNX Runtime's fused CPU kernel (the `cpu` export target).

A traced `models.language.RMSNorm` is seven elementary nodes (Pow, ReduceMean, Add, Sqrt,
Reciprocal, Mul, Mul) that ONNX Runtime 1.32's graph optimizer does not fuse (its
SimplifiedLayerNormFusion matches a Div, not rsqrt's Reciprocal + Mul). A decode step is
dispatch-bound (docs/benchmarks.md, "The cpu target": ~420 kernels per token at `small`, most of them small), so
the language graph writes each norm as one `SimplifiedLayerNormalization` node, ONNX Runtime's
RMSNorm kernel: y = x / sqrt(mean(x^2) + epsilon) * scale, over the last axis, in float32
(stash_type 1). It is an ONNX Runtime operator registered in the default ONNX domain (version 1),
not a standard one: never in a TensorRT graph.

As `export.cpu_moe.ort_moe_layers`, the replacement is made around the trace without `models/`
knowing (`export.module_replacement`): inside `ort_fused_norms(model)`, every `RMSNorm` of `model.language` is an `OrtRMSNorm`
sharing its weight, which computes the same function eagerly and emits the node while
`torch.onnx.export(..., dynamo=True)` traces it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from chatvla2.export.module_replacement import replaced_modules
from chatvla2.models.language import RMSNorm

# Float32 statistics whatever the input dtype (as RMSNorm computes them).
STASH_FLOAT32 = 1


class OrtRMSNorm(nn.Module):
    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return torch.onnx.ops.symbolic(
                "::SimplifiedLayerNormalization",
                [x, self.norm.weight],
                {"axis": -1, "epsilon": float(self.norm.eps), "stash_type": STASH_FLOAT32},
                dtype=x.dtype,
                shape=x.shape,
                version=1,
            )
        return self.norm(x)


def ort_fused_norms(model: nn.Module) -> contextlib.AbstractContextManager[int]:
    """Within the block, every `RMSNorm` under `model.language` (a ChatVLA2 or its LanguageModel)
    is an `OrtRMSNorm`; the originals come back on exit. Yields the number replaced."""
    return replaced_modules(model, RMSNorm, OrtRMSNorm)
