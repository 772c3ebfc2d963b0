"""ONNX Runtime sessions as the bundle's graphs need them (no torch).

ONNX Runtime 1.32's MatMulAddFusion rewrites a MatMul + Add that reads Q/DQ-quantized inputs into
a Gemm with reshaped inputs, and the QuantizeLinear it adds declares an INT8 output with a UINT8
zero point: session creation then fails with a type-inference error ("output_dtype INT8 does not
match y_zero_point type UINT8"). And its QDQSelectorActionTransformer, on an fp16 graph whose
DequantizeLinear weights sit inside If branches (the routed MoE form, export/routed_experts.py),
fuses them into kernels that compute the branch wrongly: the tiny decode step's hidden state was off
by 0.36 with the fusion and by 0.005 without it, int8 and int4 alike (measured, ONNX Runtime 1.32);
graphs that carry the routed form's mark (`ROUTED_EXPERT_TAG`, found in the graph file's bytes) are
opened without it. Every other optimisation stays on.

Intra-op threads do not spin while they wait for work (`session.intra_op.allow_spinning` 0): on the
robot the engines share the cores with the two 500 Hz arm controllers (and, in simulation, the arm
simulators), and spinning threads take those cores. Measured on this 2-core CPU with the shipped
demo model (`chatvla2 demo --split in_domain --episodes 1`, through the drivers): query p50 114 ms
spinning, 90 ms not, and 170 vs 130 control ticks skipped; alone (`--mode fast`, no drivers)
spinning is 7% faster (47.9 vs 51.2 ms), a gain the robot never sees. `spin=True` turns it on
for a computer whose inference has cores to itself (an x86 PC with the arm controllers pinned
elsewhere): a `small` cpu-target decode step spends most of its time above the bytes' roofline
waking the second thread for each of its ~70 parallel kernels (int4, 2 threads: 0.96 ms per step
not spinning, 0.70 spinning, ~0.6 the roofline; docs/benchmarks.md, "The cpu target").
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import onnxruntime as ort

from chatvla2.contract.bundle import ROUTED_EXPERT_TAG

DISABLED_OPTIMIZERS = ["MatMulAddFusion"]
ROUTED_DISABLED_OPTIMIZERS = [*DISABLED_OPTIMIZERS, "QDQSelectorActionTransformer"]


def has_routed_experts(model: str | Path | bytes) -> bool:
    """Whether a graph (file or serialized bytes) has the routed MoE form's If nodes: their names
    carry ROUTED_EXPERT_TAG. The graph file holds node names; weights may sit in a .data file."""
    tag = ROUTED_EXPERT_TAG.encode()
    if isinstance(model, bytes):
        return tag in model
    # Mapped, not read into a copy: the file's pages are those ONNX Runtime reads next.
    with open(model, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return False
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(tag) != -1


def available_providers(preferred=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")) -> list[str]:
    """The preferred execution providers that this onnxruntime build has, in order."""
    present = set(ort.get_available_providers())
    return [p for p in preferred if p in present]


def create_session(
    model: str | Path | bytes, providers: list[str] | None = None, threads: int | None = None, spin: bool = False
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # Errors only: an fp16 graph makes ONNX Runtime warn, per node, that it has no CPU kernel to
    # constant-fold an fp16 Gemm at load time (harmless: the node runs at inference).
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source,
        options,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=ROUTED_DISABLED_OPTIMIZERS if has_routed_experts(model) else DISABLED_OPTIMIZERS,
    )
