"""`chatvla2 export`'s options (export/cli.py runs it). The plan is parsed by the export itself
(export/precision.py, export/cpu_target.py, which import onnx): these options import nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.contract.config import MOE_FORMS, PRESETS
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import unknown_name
from chatvla2.export.thresholds import PRECISIONS

TARGETS = ("tensorrt", "cpu")
# "routed": each expert an If, quantized weights read only when a token chose it (export/routed_experts.py).
MOE_CHOICES = ("auto", *MOE_FORMS, "routed")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    preset: str | None = option(f"a named preset: {', '.join(PRESETS)}", None, metavar="NAME", flag="--config", exclusive="model")
    checkpoint: str | None = option("a checkpoint directory", None, metavar="DIR", exclusive="model")
    out: str = option("the bundle directory to write", metavar="BUNDLE")
    target: str = option(
        "tensorrt: Q/DQ graphs TensorRT parses (linted), the MoE dense in the prefill and routed in a quantized decode "
        "(each expert an If: only the chosen experts' INT8/INT4 weights are read; Orin and Thor alike); "
        "cpu: ONNX Runtime's CPU operators (MoE/QMoE, dynamic int8, MatMulNBits int4), never handed to TensorRT",
        "tensorrt",
        choices=TARGETS,
    )
    precision: str | None = option(
        f"{', '.join(PRECISIONS)}, or one per engine: vision=fp16,prefill=int4,decode=int4,action_head=int8 "
        "(default fp32; with --target cpu: auto, each engine's first of int8, fp32 within its parity budget (a rule, no timing; recorded in the manifest), "
        "prefill and decode as one language graph; language=P sets both)",
        None,
        metavar="PLAN",
    )
    moe: str = option(
        "MoE graph form (tensorrt target); auto: dense for the prefill; for decode routed at int8/fp8/int4 "
        "(each expert an If, its weights quantized, read only when routed), gather at fp32/fp16",
        "auto",
        choices=MOE_CHOICES,
    )
    cpu_isa: str | None = option(
        "--target cpu: the class of CPU the bundle is for, which sets its int8 weights' range "
        "(export/cpu_target.py's CPU_ISAS, or native: this machine's; default generic)",
        None,
        metavar="CLASS",
    )
    calibration: str | None = option("an .npz of recorded engine inputs (default: made by running the model)", None, metavar="FILE")
    max_seq: int | None = option("KV cache length (default: the model's max_cache_len)", None, metavar="N")
    seed: int = option("seed of the parity inputs", 0)
    force: bool = option(
        "replace an existing bundle at --out (refused if the folder holds anything the bundle's manifest "
        "does not list, e.g. engines/ from chatvla2 build: those are never deleted)",
        False,
    )

    def __post_init__(self) -> None:
        if self.preset and self.checkpoint:
            raise InvalidInput("give --config NAME or --checkpoint DIR, not both")
        if self.target not in TARGETS:
            raise unknown_name(self.target, TARGETS, "target", "targets")
        if self.moe not in MOE_CHOICES:
            raise unknown_name(self.moe, MOE_CHOICES, "MoE form", "forms")
        if self.max_seq is not None and self.max_seq < 1:
            raise InvalidInput(f"--max-seq must be a positive number of positions, got {self.max_seq}")
