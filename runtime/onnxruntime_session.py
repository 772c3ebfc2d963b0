"""ONNX Runtime sessions as the bundle's graphs need them (no torch).

ONNX Runtime 1.32's MatMulAddFusion rewrites a MatMul + Add that reads Q/DQ-quantized inputs into
a Gemm with reshaped inputs, and the QuantizeLinear it adds declares an INT8 output with a UINT8
zero point: session creation then fails with a type-inference error ("output_dtype INT8 does not
match y_zero_point type UINT8"). Every other optimisation stays on.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

DISABLED_OPTIMIZERS = ["MatMulAddFusion"]


def available_providers(preferred=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")) -> list[str]:
    """The preferred execution providers that this onnxruntime build has, in order."""
    present = set(ort.get_available_providers())
    return [p for p in preferred if p in present]


def create_session(model: str | Path | bytes, providers: list[str] | None = None, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source,
        options,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=DISABLED_OPTIMIZERS,
    )
