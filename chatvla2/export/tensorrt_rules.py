"""What the TensorRT ONNX parser accepts, by TensorRT version. The default target is 10.3
(JetPack 6 on Orin), the most restrictive; `chatvla2 build` lints for the version installed.

Sources (cited per table below):
  [ops]       onnx-tensorrt docs/operators.md: the release/10.1-GA revision (every operator and
              restriction it lists holds for 10.3 unless [changelog] says otherwise), and the
              10.15 revision for what came later.
  [importer]  onnx-tensorrt onnxOpImporters.cpp at release/10.1-GA (what the parser checks).
  [changelog] onnx-tensorrt docs/Changelog.md, entries for TensorRT 10.0 EA through 10.15.
  [deploy]    docs/reference/deploy.md, "ONNX that TensorRT accepts".
  [trt-guide] TensorRT developer guide, "Working with Quantized Types" (blocked INT4 quantization).
"""

from __future__ import annotations

import re

from onnx import TensorProto

from chatvla2.contract.errors import InvalidInput

Version = tuple[int, int]

DEFAULT_VERSION = "10.3"  # JetPack 6's TensorRT: the oldest target, so the most restrictive


def parse_version(version: str | Version | None) -> Version:
    """'10.3', '10.3.0.30' (trt.__version__), '11.1.0' or (10, 3) -> (major, minor)."""
    if version is None:
        version = DEFAULT_VERSION
    if isinstance(version, tuple):
        return (int(version[0]), int(version[1]))
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not match:
        raise InvalidInput(f"TensorRT version {version!r} is not MAJOR.MINOR[.PATCH...]")
    return (int(match.group(1)), int(match.group(2)))


def version_name(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


# Features that arrived after 10.0, with the first version that has them [changelog].
SINCE = {
    "pad-tensor-axes": (10, 4),         # "Added support for tensor `axes` for `Pad` operations"
    "squeeze-dynamic-axes": (10, 7),    # "Added dynamic axes support for `Squeeze` and `Unsqueeze`"
    "cumsum-dynamic-axis": (10, 8),     # "Added support for dynamic axes ... of `CumSum`"
    "fp4": (10, 8),                     # "Added support for `FLOAT4E2M1` types for quantized networks"
    "groupnorm-opset21": (10, 9),       # "Added support for opset 21 GroupNorm"
    "scatternd-opset18": (10, 9),       # "Fixed support for opset 18+ ScatterND"
    "einsum-general": (10, 12),         # "Added support for ellipses, diagonal, and broadcasting in `Einsum`"
    "opset-24": (10, 15),               # [ops] at 10.15: "opset 9 to opset 24"
}


def has(feature: str, version: Version) -> bool:
    return version >= SINCE[feature]


# Opsets the parser imports. [ops] at 10.1 says "opset 9 to opset 20"; INT4 quantization (10.0 EA,
# [changelog]) is expressed with opset-21 blocked DequantizeLinear, which ModelOpt emits for
# TensorRT 10 ([deploy]), and [importer] reads its output_dtype/block layout, so 21 is accepted.
MIN_OPSET = 9


def max_opset(version: Version) -> int:
    return 24 if has("opset-24", version) else 21


# ai.onnx operators the 10.3 parser imports [ops]: the 10.1 matrix's "Y" rows (Gelu, Mish and
# CastLike among them: [importer] maps Gelu's `none`/`tanh` to kGELU_ERF/kGELU_TANH) plus
# DeformConv (10.1, [changelog]).
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "Identity",
    "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM",
    "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization",
    "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad",
    "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN",
    "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu",
    "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where",
    "Xor",
})

# Operators added after 10.3: op -> (first version, hint) [changelog].
ADDED_OPS = {
    "BlackmanWindow": ((10, 4), ""),
    "HammingWindow": ((10, 4), ""),
    "HannWindow": ((10, 4), ""),
    "STFT": ((10, 5), ""),
    "Attention": ((10, 14), " (keep attention decomposed for Orin)"),
    "RotaryEmbedding": ((10, 15), ""),
    "RMSNormalization": ((10, 15), ""),
    "TensorScatter": ((10, 15), ""),
}

# Marked "N" in [ops]; the quantization ones are what onnxruntime's quantizers emit [deploy].
UNSUPPORTED_OPS = {
    "DynamicQuantizeLinear": "dynamic quantization is ONNX Runtime-only: use static Q/DQ",
    "MatMulInteger": "integer MatMul is ONNX Runtime-only: use Q/DQ around a float MatMul",
    "ConvInteger": "integer Conv is ONNX Runtime-only: use Q/DQ around a float Conv",
    "QLinearConv": "QOperator format is ONNX Runtime-only: quantize in QDQ format",
    "QLinearMatMul": "QOperator format is ONNX Runtime-only: quantize in QDQ format",
    "Unique": "data-dependent output shape",
    "Compress": "data-dependent output shape",
    "ConcatFromSequence": "sequence types are unsupported",
    "SplitToSequence": "sequence types are unsupported",
    "Det": "", "DFT": "", "BitShift": "", "BitwiseAnd": "", "BitwiseNot": "", "BitwiseOr": "",
    "BitwiseXor": "", "Bernoulli": "", "Multinomial": "", "MaxRoiPool": "", "MaxUnpool": "",
    "MelWeightMatrix": "", "AffineGrid": "", "Col2Im": "", "CenterCropPad": "",
    "NegativeLogLikelihoodLoss": "", "SoftmaxCrossEntropyLoss": "", "TfIdfVectorizer": "",
    "StringNormalizer": "", "StringConcat": "", "StringSplit": "", "RegexFullMatch": "",
    "ImageDecoder": "",
}
# Whole families marked "N" in [ops].
UNSUPPORTED_PREFIXES = {
    "QLinear": "QOperator format is ONNX Runtime-only: quantize in QDQ format",
    "Sequence": "sequence types are unsupported",
    "Optional": "optional types are unsupported",
}

# Quantized types [ops]: "INT8, INT4, and FP8 are treated as Quantized Types ... available only
# through quantization from a floating-point type": such a tensor may only be a constant, the
# output of a QuantizeLinear, or the data / zero point input of a DequantizeLinear. UINT4 and
# FP4 are listed so that a Cast or Gather of them is caught the same way.
QUANTIZED_TYPES = frozenset({
    TensorProto.INT8, TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT4E2M1,
})


# Types per direction [importer] (QuantDequantLinearHelper, 10.1: "TensorRT only allows FP8,
# INT8, and INT4 quantization", for Q and DQ alike); FP4 from 10.8 [changelog].
def quantize_types(version: Version) -> frozenset[int]:
    base = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}
    return frozenset(base | ({TensorProto.FLOAT4E2M1} if has("fp4", version) else set()))


INT4_MIN_OPSET = 21  # blocked DequantizeLinear (block_size) and INT4 inputs are opset 21 [deploy]
# Blocked quantization is weight-only [trt-guide]: the INT4 input a 2-D constant (the weight),
# the scale a constant; [importer] 10.1: "Quantization to INT4 is not supported for tensors with
# an odd last dimension" (INT4 packs two values to a byte).
BLOCKED_INPUT_RANK = 2

# Operator versions fixed after 10.3 [changelog]: op -> (first opset, feature, severity).
LATE_OPSET_SUPPORT = {
    "GroupNormalization": (21, "groupnorm-opset21", "error"),   # 10.3 imports only opset 17's
    "ScatterND": (18, "scatternd-opset18", "warning"),          # "fixed" in 10.9: may fail on 10.3
}

TOPK_MAX_K = 3840  # K must be < 3840 [ops] [deploy]

# Tensor types TensorRT 10 has [ops]: "FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, FP8, INT8, INT4,
# UINT8, and BOOL"; UINT8 only as a network input/output.
TENSOR_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
    TensorProto.INT64, TensorProto.INT8, TensorProto.INT4, TensorProto.FLOAT8E4M3FN,
    TensorProto.BOOL,
})
IO_ONLY_TYPES = frozenset({TensorProto.UINT8})
# [ops]: "TensorRT will attempt to cast DOUBLE down to FLOAT, clamping values to +-FLT_MAX":
# it parses, so a warning (the graph silently loses precision and range).
CAST_DOWN_TYPES = frozenset({TensorProto.DOUBLE})

# NonZero imports FP32/FP16 inputs only [ops] [deploy].
NONZERO_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})

# Inputs that must be build-time constants: op -> (input index, what it is, feature that lifts
# the rule or None). [ops]: Reduce* axes "must be an initializer", OneHot "`depth` must be a
# build-time constant", Dropout "`is_training` must be an initializer" (opset 12+ input 2,
# `training_mode`), Pad "`axes` must be an initializer" until tensor axes (10.4); CumSum axis
# until 10.8 and Squeeze/Unsqueeze axes until 10.7 [changelog].
CONSTANT_INPUTS = {
    **{op: (1, "axes", None) for op in SUPPORTED_OPS if op.startswith("Reduce")},
    "CumSum": (1, "axis", "cumsum-dynamic-axis"),
    "Squeeze": (1, "axes", "squeeze-dynamic-axes"),
    "Unsqueeze": (1, "axes", "squeeze-dynamic-axes"),
    "Pad": (3, "axes", "pad-tensor-axes"),
    "OneHot": (1, "depth", None),
    "Dropout": (2, "training_mode", None),
}
