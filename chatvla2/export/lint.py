"""`chatvla2 lint BUNDLE`: check ONNX graphs against the TensorRT ONNX parser's rules.

TensorRT is not installable where bundles are made, so an export that Orin's parser would refuse
is caught here, by node, before anyone carries the bundle to a robot. The target is TensorRT 10.3
(JetPack 6, the most restrictive) unless a version is given: `chatvla2 build` passes the one
installed (`tensorrt_version=trt.__version__`). The rule tables, keyed on the version, and their
sources live in `export/tensorrt_rules.py`; this file applies them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from chatvla2.contract.bundle import BundleError, engine_file, export_target, load_manifest
from chatvla2.contract.errors import InvalidInput
from chatvla2.export import tensorrt_rules as rules
from chatvla2.export.graph_passes import all_graphs
from chatvla2.export.lint_config import LintConfig

ERROR, WARNING, NOTE = "error", "warning", "note"


@dataclass(frozen=True)
class Finding:
    node: str  # node name, or a tensor / "<model>" for graph-level findings
    op_type: str
    rule: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.node} ({self.op_type}) [{self.rule}] {self.message}"


class LintError(InvalidInput):
    """A graph the target TensorRT would refuse; the message lists every offending node."""


def _dtype(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


class _Graphs:
    """Constants and tensor types of a model, across its subgraphs (names are global in ONNX)."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None):
        self.base_dir = base_dir
        self.constants: dict[str, TensorProto] = {}
        self.types: dict[str, onnx.TypeProto] = {}
        self.producers: dict[str, onnx.NodeProto] = {}
        try:
            # Dtypes of intermediate tensors; a graph shape inference cannot handle is linted without.
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # noqa: BLE001 - any failure just means fewer known types
            inferred = model
        for graph in all_graphs(inferred.graph):
            for init in graph.initializer:
                self.constants[init.name] = init
            for value in [*graph.input, *graph.output, *graph.value_info]:
                if value.type.HasField("tensor_type"):
                    self.types[value.name] = value.type
            for node in graph.node:
                for output in node.output:
                    self.producers[output] = node
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    for attr in node.attribute:
                        if attr.name == "value":
                            self.constants[node.output[0]] = attr.t
                        elif attr.name in ("value_int", "value_ints"):
                            self.constants[node.output[0]] = numpy_helper.from_array(
                                np.array(onnx.helper.get_attribute_value(attr), dtype=np.int64)
                            )
        for func in model.functions:
            for node in func.node:
                if node.op_type == "Constant":
                    for attr in node.attribute:
                        if attr.name == "value":
                            self.constants[node.output[0]] = attr.t

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        if tensor is None:
            return None
        if tensor.data_location == TensorProto.EXTERNAL:
            if self.base_dir is None:
                return None
            # Loaded without external data for speed; small tensors (zero points, K) are read here.
            return numpy_helper.to_array(tensor, base_dir=str(self.base_dir))
        return numpy_helper.to_array(tensor)

    def shape(self, name: str) -> list[int | None] | None:
        """Dims of a tensor (None for a symbolic one), or None when its rank is unknown."""
        if name in self.constants:
            return list(self.constants[name].dims)
        t = self.types.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]

    def elem_type(self, name: str) -> int | None:
        if name in self.constants:
            return self.constants[name].data_type
        t = self.types.get(name)
        return t.tensor_type.elem_type if t is not None and t.tensor_type.elem_type else None


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _rank(type_proto: onnx.TypeProto) -> int | None:
    tensor = type_proto.tensor_type
    return len(tensor.shape.dim) if tensor.HasField("shape") else None


def _ai_onnx_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


# --- per-node rules -------------------------------------------------------------------------

Check = Iterator[tuple[str, str, str]]  # (rule, message, severity)


def _check_op(node: onnx.NodeProto, local_functions: set[tuple[str, str]], version: rules.Version) -> Check:
    """An operator the target TensorRT cannot import at all."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        if (node.domain, op) in local_functions:
            return  # a model-local function: the parser inlines it; its body is linted instead
        hint = " (ONNX Runtime contrib op)" if node.domain == "com.microsoft" else ""
        yield "domain", f"domain {node.domain!r}{hint}: TensorRT parses only ai.onnx operators", ERROR
        return
    if op in rules.UNSUPPORTED_OPS:
        why = rules.UNSUPPORTED_OPS[op]
        yield "unsupported-op", f"{op} is unsupported by TensorRT" + (f": {why}" if why else ""), ERROR
        return
    for prefix, why in rules.UNSUPPORTED_PREFIXES.items():
        if op.startswith(prefix):
            yield "unsupported-op", f"{op} is unsupported by TensorRT: {why}", ERROR
            return
    if op in rules.ADDED_OPS:
        since, hint = rules.ADDED_OPS[op]
        if version < since:
            yield "newer-op", f"{op} needs TensorRT {rules.version_name(since)}{hint}; target is {rules.version_name(version)}", ERROR
    elif op not in rules.SUPPORTED_OPS:
        yield "unknown-op", f"{op} is not in TensorRT's supported ai.onnx operators", ERROR


def _from_constant(name: str, g: _Graphs) -> bool:
    """A constant, or a QuantizeLinear of one (a Q/DQ pair on a weight, folded at build time)."""
    if g.is_constant(name):
        return True
    producer = g.producers.get(name)
    return producer is not None and producer.op_type == "QuantizeLinear" and g.is_constant(producer.input[0])


def _check_qdq(node: onnx.NodeProto, g: _Graphs, opset: int | None, version: rules.Version) -> Check:
    quantize = node.op_type == "QuantizeLinear"
    data, scale, zero_point = node.input[0], _input(node, 1), _input(node, 2)
    if zero_point:
        if not g.is_constant(zero_point):
            yield "qdq-zero-point", f"zero point {zero_point!r} must be a constant 0", ERROR
        else:
            values = g.value(zero_point)
            if values is not None and np.any(values != 0):
                yield "qdq-zero-point", f"zero point {zero_point!r} is not 0: TensorRT needs symmetric quantization", ERROR
    # The quantized tensor's type: zero point's type, else output_dtype (opset 21), else the
    # tensor's own type; ONNX's default for a Q without either is uint8.
    quantized = node.output[0] if quantize else data
    dtype = g.elem_type(zero_point) if zero_point else None
    if dtype is None and quantize:
        dtype = _attr(node, "output_dtype") or g.elem_type(quantized) or TensorProto.UINT8
    if dtype is None:
        dtype = g.elem_type(quantized)
    allowed = rules.quantize_types(version)
    if dtype is not None and dtype not in allowed:
        names = ", ".join(sorted(_dtype(t) for t in allowed))
        yield "qdq-dtype", f"{_dtype(dtype)} quantization is unsupported (TensorRT {rules.version_name(version)} takes {names})", ERROR
    block_size = _attr(node, "block_size") or 0
    if dtype == TensorProto.INT4 or block_size > 0:
        if opset is not None and opset < rules.INT4_MIN_OPSET:
            yield "qdq-int4-opset", f"INT4/blocked DequantizeLinear needs opset >= {rules.INT4_MIN_OPSET} (model: {opset})", ERROR
    if dtype == TensorProto.FLOAT8E4M3FN:
        yield "qdq-fp8-orin", "FP8 parses but Orin (SM 8.7) has no FP8: this graph builds on Thor/Hopper only", WARNING

    shape, scale_shape = g.shape(data), g.shape(scale) if scale else None
    if dtype == TensorProto.INT4 and shape and shape[-1] is not None and shape[-1] % 2:
        yield "qdq-int4-odd", f"{data!r} has an odd last dimension ({shape[-1]}): INT4 packs two values to a byte", ERROR
    scale_size = int(np.prod(scale_shape)) if scale_shape is not None and None not in scale_shape else None
    blocked = block_size > 0 or (
        scale_shape is not None and shape is not None and len(scale_shape) == len(shape) >= 1 and (scale_size or 0) > 1
    )
    if blocked:
        # [trt-guide] blocked quantization is weight-only: a 2-D constant weight, a constant scale.
        if not _from_constant(data, g):
            yield "qdq-blocked-input", f"blocked quantization of {data!r}, which is not a constant weight (weight-only in TensorRT)", ERROR
        if shape is not None and len(shape) != rules.BLOCKED_INPUT_RANK:
            yield "qdq-blocked-rank", f"blocked quantization of {data!r} of rank {len(shape)}: TensorRT takes 2-D weights", ERROR
        if scale and not g.is_constant(scale):
            yield "qdq-blocked-scale", f"blocked scale {scale!r} must be a constant (initializer or Constant)", ERROR
    elif scale_shape is not None and len(scale_shape) == 1 and (scale_size or 0) > 1 and not _from_constant(data, g):
        # [importer] 10.1: per-channel scales are taken as "weight-quantization ... Activations-
        # quantization does not support per-axis quantization".
        yield "qdq-per-channel-activation", f"per-channel scale {scale!r} on {data!r}, not a constant weight: activations quantize per tensor only", ERROR
    if not quantize and dtype == TensorProto.INT4:
        scale_type = g.elem_type(scale) if scale else None
        if scale_type == TensorProto.FLOAT:
            # [importer] 10.1: in a strongly typed network the DQ output takes the scale's type,
            # so fp32 scales make the GEMM fp32 (W4A32). TensorRT's documented form is W4A16.
            yield "int4-w4a32", f"INT4 weight {data!r} dequantized with fp32 scale {scale!r} (W4A32): use fp16 scales and activations (W4A16)", WARNING


def _einsum_terms(equation: str) -> tuple[list[str], str | None]:
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    return lhs.split(","), (rhs if "->" in equation else None)


def _check_einsum(node: onnx.NodeProto, g: _Graphs, version: rules.Version) -> Check:
    if rules.has("einsum-general", version):
        return
    # [changelog] 10.12: "Added support for ellipses, diagonal, and broadcasting in `Einsum`";
    # before it, every label names one dimension and equal labels have equal sizes.
    equation = _attr(node, "equation", b"")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    terms, _ = _einsum_terms(equation)
    need = f"needs TensorRT {rules.version_name(rules.SINCE['einsum-general'])}"
    if "..." in equation:
        yield "einsum-ellipsis", f"equation {equation!r} uses an ellipsis: {need}", ERROR
        return
    for term in terms:
        repeated = sorted({c for c in term if term.count(c) > 1})
        if repeated:
            yield "einsum-diagonal", f"equation {equation!r} repeats {''.join(repeated)!r} in {term!r} (a diagonal): {need}", ERROR
            return
    sizes: dict[str, set[int]] = {}
    for term, name in zip(terms, node.input):
        shape = g.shape(name)
        if shape is None or len(shape) != len(term):
            continue
        for label, dim in zip(term, shape):
            if dim is not None:
                sizes.setdefault(label, set()).add(dim)
    broadcast = sorted(label for label, dims in sizes.items() if len(dims) > 1)
    if broadcast:
        yield "einsum-broadcast", f"equation {equation!r} broadcasts {''.join(broadcast)!r} between inputs: {need}", ERROR


def _check_node(node: onnx.NodeProto, g: _Graphs, opset: int | None, version: rules.Version) -> Check:
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        yield from _check_qdq(node, g, opset, version)
    elif op == "Einsum":
        yield from _check_einsum(node, g, version)
    elif op == "TopK":
        if _attr(node, "sorted", 1) != 1:
            yield "topk-sorted", "TopK needs sorted=1", ERROR
        k = g.value(_input(node, 1)) if _input(node, 1) else None
        if k is not None and k.size == 1 and int(k.reshape(-1)[0]) >= rules.TOPK_MAX_K:
            yield "topk-k", f"TopK K={int(k.reshape(-1)[0])} must be < {rules.TOPK_MAX_K}", ERROR
    elif op == "ScatterND":
        if _attr(node, "reduction", b"none") not in (b"none", "none"):
            reduction = _attr(node, "reduction")
            reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
            yield "scatternd-reduction", f"ScatterND reduction {reduction!r}: only 'none' is supported", ERROR
    elif op == "NonZero":
        dtype = g.elem_type(node.input[0])
        if dtype is not None and dtype not in rules.NONZERO_TYPES:
            yield "nonzero-dtype", f"NonZero on {_dtype(dtype)}: TensorRT takes float32/float16 only", ERROR
    elif op == "Dropout":
        training = g.value(_input(node, 2)) if _input(node, 2) else None
        if training is not None and training.size and bool(training.reshape(-1)[0]):
            yield "dropout-training", "Dropout with training_mode true: TensorRT runs inference only", ERROR
    elif op == "If":
        then_branch, else_branch = _attr(node, "then_branch"), _attr(node, "else_branch")
        for i, (a, b) in enumerate(zip(then_branch.output, else_branch.output)):
            ra, rb = _rank(a.type), _rank(b.type)
            if ra is not None and rb is not None and ra != rb:
                yield "if-branch-rank", f"output {i}: then-branch rank {ra}, else-branch rank {rb}; they must match", ERROR
    elif op == "Loop":
        scan_outputs = len(node.output) - (len(node.input) - 2)
        trip_count = _input(node, 0)
        if scan_outputs > 0 and not (trip_count and g.is_constant(trip_count)):
            yield "loop-scan-output", f"{scan_outputs} scan output(s) with a dynamic trip count: scan length cannot be dynamic", ERROR
    if op in rules.LATE_OPSET_SUPPORT and opset is not None:
        first, feature, severity = rules.LATE_OPSET_SUPPORT[op]
        if opset >= first and not rules.has(feature, version):
            since = rules.version_name(rules.SINCE[feature])
            yield "late-opset", f"{op} at opset {opset}: TensorRT supports it from {since} (target {rules.version_name(version)})", severity
    if op in rules.CONSTANT_INPUTS:
        index, what, lifted_by = rules.CONSTANT_INPUTS[op]
        name = _input(node, index)
        if name and not g.is_constant(name) and not (lifted_by and rules.has(lifted_by, version)):
            until = f" before TensorRT {rules.version_name(rules.SINCE[lifted_by])}" if lifted_by else ""
            yield "constant-input", f"{op} {what} ({name!r}) must be a constant (initializer or Constant){until}", ERROR


# --- model-level rules ----------------------------------------------------------------------


def _check_quantized_placement(nodes: list[tuple[str, onnx.NodeProto]], g: _Graphs) -> Iterator[Finding]:
    """[ops]: quantized types exist only "through quantization": a quantized tensor may be read
    only as a DequantizeLinear's data or zero point (or a QuantizeLinear's zero point), and made
    only by a QuantizeLinear or as a constant. A Gather, Reshape, Transpose or Cast of one fails
    in the parser."""
    allowed_reads = {"DequantizeLinear": (0, 2), "QuantizeLinear": (2,)}
    for name, node in nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        bad = [
            (tensor, g.elem_type(tensor)) for i, tensor in enumerate(node.input)
            if tensor and g.elem_type(tensor) in rules.QUANTIZED_TYPES and i not in allowed_reads.get(node.op_type, ())
        ]
        if bad:
            tensor, dtype = bad[0]
            yield Finding(name, node.op_type, "quantized-type",
                          f"reads {tensor!r} ({_dtype(dtype)}): a quantized tensor may only feed a DequantizeLinear")
            continue
        if node.op_type in ("QuantizeLinear", "Constant"):
            continue
        made = [(t, g.elem_type(t)) for t in node.output if t and g.elem_type(t) in rules.QUANTIZED_TYPES]
        if made:
            tensor, dtype = made[0]
            yield Finding(name, node.op_type, "quantized-type",
                          f"makes {tensor!r} ({_dtype(dtype)}): only a QuantizeLinear may produce a quantized tensor")


def _check_types(model: onnx.ModelProto, g: _Graphs) -> Iterator[Finding]:
    graph = model.graph
    io = {v.name: v for v in [*graph.input, *graph.output]}
    used = {name for sub in all_graphs(graph) for node in sub.node for name in node.input}
    initializers = {t.name for sub in all_graphs(graph) for t in sub.initializer}
    for name in sorted(set(io) | (initializers & used) | set(g.types)):
        dtype = g.elem_type(name)
        if dtype is None or dtype in rules.TENSOR_TYPES:
            continue
        if dtype in rules.IO_ONLY_TYPES and name in io:
            continue
        where = "graph input/output" if name in io else "initializer" if name in initializers else "tensor"
        if dtype in rules.CAST_DOWN_TYPES:
            yield Finding(name, "<tensor>", "dtype-double",
                          f"{where} of type {_dtype(dtype)}: the parser casts it down to float32 (clamped); export float32", WARNING)
            continue
        if dtype in rules.QUANTIZED_TYPES:
            continue  # placed or not by _check_quantized_placement; the Q/DQ type rules name the node
        yield Finding(name, "<tensor>", "dtype", f"{where} of type {_dtype(dtype)} is not a TensorRT type")
    int64_io = sorted(n for n, v in io.items() if v.type.tensor_type.elem_type == TensorProto.INT64)
    if int64_io:
        yield Finding(
            ", ".join(int64_io), "<tensor>", "int64-io",
            "int64 graph inputs/outputs: native in TensorRT 10 (bind int64 buffers), slower than int32 on some layers",
            NOTE,
        )


def lint_model(
    model: onnx.ModelProto, base_dir: str | Path | None = None, tensorrt_version: str | rules.Version | None = rules.DEFAULT_VERSION
) -> list[Finding]:
    """Every way `model` breaks the ONNX parser's rules of TensorRT `tensorrt_version` (default
    10.3, JetPack 6; '10.3.0.30' and '11.1.0' work too). `base_dir` is where its external data
    lies (to read external zero points); without it those are not checked."""
    version = rules.parse_version(tensorrt_version)
    g = _Graphs(model, Path(base_dir) if base_dir is not None else None)
    findings: list[Finding] = []
    opset = _ai_onnx_opset(model)
    top = rules.max_opset(version)
    if opset is None or not rules.MIN_OPSET <= opset <= top:
        findings.append(Finding(
            "<model>", "<model>", "opset",
            f"ai.onnx opset {opset} is outside what TensorRT {rules.version_name(version)} parses ({rules.MIN_OPSET}..{top})",
        ))
    local_functions = {(f.domain, f.name) for f in model.functions}
    nodes = [n for sub in all_graphs(model.graph) for n in sub.node] + [n for f in model.functions for n in f.node]
    named = [(node.name or f"<unnamed #{index}>", node) for index, node in enumerate(nodes)]
    for name, node in named:
        checks = list(_check_op(node, local_functions, version))
        if not checks and node.domain in ("", "ai.onnx"):
            checks = list(_check_node(node, g, opset, version))
        findings += [Finding(name, node.op_type, rule, message, severity) for rule, message, severity in checks]
    findings += _check_quantized_placement(named, g)
    findings += _check_types(model, g)
    return findings


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


def assert_tensorrt_compatible(
    model: onnx.ModelProto, engine_name: str, base_dir: str | Path | None = None,
    tensorrt_version: str | rules.Version | None = rules.DEFAULT_VERSION,
) -> None:
    """For the exporter: raise LintError naming every node the target TensorRT would refuse."""
    bad = errors(lint_model(model, base_dir, tensorrt_version))
    if bad:
        target = rules.version_name(rules.parse_version(tensorrt_version))
        listed = "; ".join(f"{f.node} ({f.op_type}) [{f.rule}] {f.message}" for f in bad)
        raise LintError(f"{engine_name}: {len(bad)} node(s) TensorRT {target} cannot build: {listed}")


def lint_bundle(
    bundle: str | Path, manifest: dict[str, Any] | None = None,
    tensorrt_version: str | rules.Version | None = rules.DEFAULT_VERSION,
) -> dict[str, list[Finding]]:
    """Lint every engine's graph for TensorRT `tensorrt_version`. Verifies the manifest's hashes
    first unless handed a manifest already verified. Graphs load without external data: dtypes
    and dims are in the proto."""
    bundle = Path(bundle)
    version = rules.parse_version(tensorrt_version)  # a bad version string fails before any work
    if manifest is None:
        manifest = load_manifest(bundle, verify_hashes=True)
    if export_target(manifest) != "tensorrt":
        raise BundleError(f"{bundle}: exported for the {export_target(manifest)} target (ONNX Runtime's own operators); "
                          "lint and build apply to TensorRT bundles (chatvla2 export --target tensorrt)")
    results: dict[str, list[Finding]] = {}
    for name, entry in manifest["engines"].items():
        path = engine_file(bundle, manifest, name)
        if entry.get("file") not in manifest["files"]:
            raise BundleError(f"{bundle}: engine {name!r} file {entry.get('file')!r} has no hash in the manifest")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - a corrupt protobuf surfaces in many types
            raise BundleError(f"{bundle}: {entry['file']} is not a readable ONNX model ({exc})") from None
        results[name] = lint_model(model, base_dir=path.parent, tensorrt_version=version)
    return results


def main(config: LintConfig) -> int:
    # the rules of TensorRT 10.3 (JetPack 6), the most restrictive target
    results = lint_bundle(config.bundle, tensorrt_version=rules.DEFAULT_VERSION)
    failed = False
    for name, findings in results.items():
        bad = errors(findings)
        failed |= bool(bad)
        others = [f for f in findings if f.severity != ERROR]
        print(f"{name}: {'ok' if not bad else f'{len(bad)} error(s)'}" + (f", {len(others)} warning/note(s)" if others else ""))
        for finding in [*bad, *others]:
            print(f"  {finding}")
    return 1 if failed else 0
