"""The deployment targets a prediction is made for: memory bandwidth and dense peak compute per
precision, each figure with where it comes from (no torch; `chatvla2 calibrate predict` reads them).

Peaks are dense (no 2:4 sparsity: exported graphs are not sparse) and are matrix-unit (Tensor
Core) rates, the most the GPU can do; a lower bound must use the fastest path TensorRT may take.
An fp32 graph's matrix products are bounded by the TF32 rate: TensorRT lets FP32 layers use TF32
unless told otherwise. Which precisions a target runs at all is export/precision.py's `TARGETS`
(Orin has no FP8), read from there, not copied (imported when asked: export/precision.py imports
onnx, and `chatvla2 calibrate` imports this module to build its parser).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.names import unknown_name

# The matrix-product classes a graph is counted in (calibration.predict): an fp32/fp16 product,
# or an int8/fp8 one when both operands come out of DequantizeLinear (explicit Q/DQ).
MATMUL_CLASSES = ("fp32", "fp16", "int8", "fp8")

DEPLOY_MD = "docs/reference/deploy.md, 'Jetson targets'"
H100_DATASHEET = ("NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column): FP32 67 TFLOPS, TF32 989, "
                  "BF16/FP16 1,979, FP8 3,958, INT8 3,958 TOPS 'with sparsity' (dense = half), "
                  "GPU memory bandwidth 3.35 TB/s")


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    # Name of this target in export/precision.py's TARGETS ("hopper" for the H100).
    arch: str
    bandwidth_gbs: float
    # Dense peak per number format, TFLOPS (TOPS for int8): "fp32" CUDA cores, "tf32", "fp16",
    # "int8", "fp8", "fp4" (absent where the hardware has no such unit).
    peak_tflops: dict[str, float]
    sources: tuple[str, ...]
    # How each figure was derived, by key ("bandwidth" and the peak_tflops keys).
    derivation: dict[str, str] = field(default_factory=dict)

    @property
    def precisions(self) -> tuple[str, ...]:
        """The bundle precisions this target can run (export/precision.py's TARGETS)."""
        from chatvla2.export.precision import TARGETS as PRECISION_TARGETS

        return tuple(p for p, where in PRECISION_TARGETS.items() if self.arch in where)

    def runs(self, precision: str) -> bool:
        return precision in self.precisions

    def matmul_peak_tflops(self, kind: str) -> float:
        """The peak a matrix product of class `kind` (MATMUL_CLASSES) can reach: an fp32 product
        the faster of TF32 tensor cores and FP32 CUDA cores."""
        if kind == "fp32":
            return max(self.peak_tflops.get("tf32", 0.0), self.peak_tflops.get("fp32", 0.0))
        if kind not in self.peak_tflops:
            raise ValueError(f"{self.name} has no {kind} matrix units (it runs {', '.join(self.precisions)})")
        return self.peak_tflops[kind]

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "bandwidth_gbs": self.bandwidth_gbs,
                "peak_tflops": dict(self.peak_tflops), "precisions": list(self.precisions),
                "sources": list(self.sources), "derivation": dict(self.derivation)}


# AGX Orin 64GB, GPU only (the DLAs run none of these graphs).
_ORIN_INT8_DENSE = 171 / 2
ORIN = Target(
    name="orin",
    title="Jetson AGX Orin 64GB (Ampere SM 8.7)",
    arch="orin",
    bandwidth_gbs=204.8,
    peak_tflops={"fp32": 5.3, "tf32": _ORIN_INT8_DENSE / 4, "fp16": _ORIN_INT8_DENSE / 2, "int8": _ORIN_INT8_DENSE},
    sources=(DEPLOY_MD + ": LPDDR5 204.8 GB/s, ~5.3 FP32 TFLOPS, 275 sparse INT8 TOPS in all (GPU ~171, DLAs ~105), no FP8/FP4",),
    derivation={
        "bandwidth": "204.8 GB/s LPDDR5 (docs/reference/deploy.md)",
        "fp32": "5.3 TFLOPS on the CUDA cores (docs/reference/deploy.md)",
        "int8": "the GPU's ~171 sparse INT8 TOPS / 2 (2:4 sparsity doubles the rate) = 85.5 dense",
        "fp16": "half the dense INT8 rate (Ampere tensor cores: INT8 = 2 x FP16) = 42.75",
        "tf32": "half the dense FP16 rate (Ampere: TF32 = FP16 / 2) = 21.4",
    },
)

_THOR_FP8_DENSE = 1035 / 2
THOR = Target(
    name="thor",
    title="Jetson AGX Thor T5000 (Blackwell)",
    arch="thor",
    bandwidth_gbs=273.0,
    peak_tflops={"tf32": _THOR_FP8_DENSE / 4, "fp16": _THOR_FP8_DENSE / 2, "int8": _THOR_FP8_DENSE,
                 "fp8": _THOR_FP8_DENSE, "fp4": _THOR_FP8_DENSE * 2},
    sources=(DEPLOY_MD + ": LPDDR5X 273 GB/s, FP8 and NVFP4, ~1035 FP8 TFLOPS sparse",
             "NVIDIA Jetson Thor announcement: 2,070 FP4 TFLOPS (sparse)"),
    derivation={
        "bandwidth": "273 GB/s LPDDR5X (docs/reference/deploy.md)",
        "fp8": "~1035 sparse FP8 TFLOPS / 2 = 517.5 dense",
        "fp16": "half the dense FP8 rate = 258.75",
        "tf32": "half the dense FP16 rate = 129.4",
        "int8": "assumed equal to dense FP8 (Blackwell tensor cores run INT8 at the FP8 rate); not in docs/reference/deploy.md",
        "fp4": "twice dense FP8 = 1035 (2,070 sparse FP4 / 2); no exported precision uses it yet",
        "fp32": "CUDA-core FP32 is not in docs/reference/deploy.md: not listed; the TF32 rate bounds fp32 products",
    },
)

H100 = Target(
    name="h100",
    title="NVIDIA H100 SXM (Hopper)",
    arch="hopper",
    bandwidth_gbs=3350.0,
    peak_tflops={"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "int8": 1979.0, "fp8": 1979.0},
    sources=(H100_DATASHEET,),
    derivation={
        "bandwidth": "3.35 TB/s HBM3 (datasheet)",
        "fp32": "67 TFLOPS (datasheet)",
        "tf32": "989 sparse / 2 = 494.5 dense (datasheet)",
        "fp16": "1,979 sparse / 2 = 989.5 dense (datasheet; BF16 the same)",
        "fp8": "3,958 sparse / 2 = 1,979 dense (datasheet)",
        "int8": "3,958 sparse TOPS / 2 = 1,979 dense (datasheet)",
    },
)

TARGETS: dict[str, Target] = {t.name: t for t in (ORIN, THOR, H100)}


def get_target(name: str) -> Target:
    """A target by name; an unknown name is a ValueError that suggests the closest one."""
    try:
        return TARGETS[name]
    except KeyError:
        raise unknown_name(name, TARGETS, "target", "targets") from None


def parse_targets(values: list[str] | str | None) -> list[Target]:
    """`["orin", "thor,h100"]` or `"orin,thor"` -> targets in the order given, each once; None or
    empty -> all of them."""
    if values is None:
        return list(TARGETS.values())
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if name and name not in names:
                names.append(name)
    if not names:
        return list(TARGETS.values())
    return [get_target(n) for n in names]
