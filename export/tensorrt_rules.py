"""What the TensorRT 10.3 ONNX parser accepts (JetPack 6 on Orin: the most restrictive target).

Sources (cited per table below):
  [ops]       onnx-tensorrt docs/operators.md, TensorRT 10.x operator support matrix
              (read at the 10.15 revision, then narrowed to 10.3 with [changelog]).
  [changelog] onnx-tensorrt docs/Changelog.md, entries for TensorRT 10.0 EA through 10.15.
  [deploy]    /work/shared/docs/deploy.md, "ONNX that TensorRT accepts".
"""

from __future__ import annotations

from onnx import TensorProto

# Opsets the parser imports. [ops] at 10.0 says "opset 9 to opset 20"; INT4 quantization (10.0 EA,
# [changelog]) is expressed with opset-21 blocked DequantizeLinear, which ModelOpt emits for
# TensorRT 10 ([deploy]), so 21 is accepted. Unverified for 10.3 itself: see the report.
MIN_OPSET = 9
MAX_OPSET = 21

# ai.onnx operators the 10.3 parser imports [ops]. The 10.15 matrix minus the operators the
# changelog says arrived after 10.3: Blackman/Hamming/HannWindow (10.4), STFT (10.5),
# Attention (10.14), RotaryEmbedding, RMSNormalization, TensorScatter (10.15).
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "Identity",
    "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM",
    "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization",
    "Min", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad",
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

# In the 10.15 matrix but neither in the 8.5 matrix nor in a changelog entry we could read:
# may or may not parse on 10.3, so they are warnings, not errors.
UNVERIFIED_OPS = frozenset({"CastLike", "Gelu", "Mish"})

# Newer than 10.3: worth a specific hint because the exporter may be tempted to emit them.
ADDED_AFTER_10_3 = {
    "Attention": "10.14 (keep attention decomposed for Orin)",
    "RotaryEmbedding": "10.15",
    "RMSNormalization": "10.15",
    "TensorScatter": "10.15",
    "STFT": "10.5",
    "BlackmanWindow": "10.4",
    "HammingWindow": "10.4",
    "HannWindow": "10.4",
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

# Quantized types per direction [ops] [deploy]: Q produces INT8 or FP8; DQ also reads INT4.
# FP4 arrived after 10.3 (10.8), so it is not listed.
QUANTIZE_TYPES = frozenset({TensorProto.INT8, TensorProto.FLOAT8E4M3FN})
DEQUANTIZE_TYPES = frozenset({TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4})
INT4_MIN_OPSET = 21  # blocked DequantizeLinear (block_size) and INT4 inputs are opset 21 [deploy]

# Operator versions fixed after 10.3 (onnx-tensorrt PR #1022, "10.9-GA Release": "Added support
# for opset 21 GroupNorm", "Fixed support for opset 18+ ScatterND"): op -> (first opset, severity).
LATE_OPSET_SUPPORT = {
    "GroupNormalization": (21, "error"),   # 10.3 imports only the opset-17 definition
    "ScatterND": (18, "warning"),          # "fixed" in 10.9: may fail on 10.3
}

TOPK_MAX_K = 3840  # K must be < 3840 [ops] [deploy]

# Tensor types TensorRT 10 has [ops]: "FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, FP8, INT8, INT4,
# UINT8, and BOOL"; DOUBLE is only cast down to float (silently losing what the graph says),
# UINT8 only as a network input/output.
TENSOR_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
    TensorProto.INT64, TensorProto.INT8, TensorProto.INT4, TensorProto.FLOAT8E4M3FN,
    TensorProto.BOOL,
})
IO_ONLY_TYPES = frozenset({TensorProto.UINT8})

# NonZero imports FP32/FP16 inputs only [ops] [deploy].
NONZERO_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})

# Inputs that must be build-time constants: op -> (input index, what it is). [ops]: Reduce* axes
# and CumSum axis "must be an initializer"; Squeeze/Unsqueeze axes became dynamic only in 10.7
# ([changelog]), so on 10.3 they must be constant too.
CONSTANT_INPUTS = {
    **{op: (1, "axes") for op in SUPPORTED_OPS if op.startswith("Reduce")},
    "CumSum": (1, "axis"),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
}
