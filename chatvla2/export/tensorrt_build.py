"""`chatvla2 build BUNDLE --out ENGINES`: one TensorRT engine per ONNX graph of a bundle.

Written against the documented TensorRT 10.x and 11.x Python API only (docs/reference/deploy.md, "TensorRT API:
10.x vs 11.x"): networks are strongly typed, so precision comes from the graph (converted or Q/DQ)
and no precision builder flag is set; those flags are gone in 11.x. TF32 (on by default for fp32
matrix products) is cleared for every engine: the fp32 plans, and the fp32 that lower-precision
plans keep where parity needed it (the manifest's `kept_fp32`), were checked against ONNX Runtime in
true fp32, and the fp32 plan's exact reasoning ids depend on it; `engines.json` records it per engine
with the plan's precision.

What `build` checks, in order: the manifest and every file's hash; lint, for the TensorRT version
installed (10.3's rules, the most restrictive, where none is); the profiles; then the tensorrt
module, cuda-python and the GPU (`runtime.tensorrt_identity.gpu_identity`, the same identity the
backend checks against). A bad bundle is reported before TensorRT is needed or used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from chatvla2.contract.bundle import BundleError, engine_file, load_manifest, sha256_file
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.staging import staged_directory
from chatvla2.export.build_config import BuildConfig
from chatvla2.export.lint import LintError, errors, lint_bundle
from chatvla2.runtime.tensorrt_identity import (
    ENGINES_JSON,
    TensorRTUnavailable,
    gpu_identity,
    identity_record,
    import_tensorrt,
    tensorrt_logger,
)

Shape = tuple[int, ...]


class BuildError(InvalidInput):
    """TensorRT refused a graph (a problem of the bundle); the message lists every parser error."""


# --- pure parts (tested everywhere) ---------------------------------------------------------


def profiles_for(engine_manifest: dict[str, Any]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """min/opt/max shapes for every dynamic input of one engine (manifest["engines"][name]).
    A dynamic input without a profile is refused: TensorRT would otherwise pick shapes for us."""
    profiles = engine_manifest.get("profiles", {})
    inputs = {spec["name"]: spec["shape"] for spec in engine_manifest.get("inputs", [])}
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise BundleError(f"profiles for unknown inputs: {', '.join(unknown)}")
    result: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, shape in inputs.items():
        if all(isinstance(d, int) for d in shape):
            continue
        if name not in profiles:
            raise BundleError(f"input {name!r} has dynamic shape {shape} but no optimization profile")
        try:
            low, opt, high = (tuple(int(d) for d in profiles[name][key]) for key in ("min", "opt", "max"))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"input {name!r}: profile needs integer 'min', 'opt' and 'max' shapes") from None
        if not len(low) == len(opt) == len(high) == len(shape):
            raise BundleError(f"input {name!r}: profile ranks {len(low)}/{len(opt)}/{len(high)}, input rank {len(shape)}")
        for axis, (dim, a, b, c) in enumerate(zip(shape, low, opt, high)):
            if not 0 <= a <= b <= c:
                raise BundleError(f"input {name!r} axis {axis}: need 0 <= min <= opt <= max, got {a}, {b}, {c}")
            if isinstance(dim, int) and not dim == a == b == c:
                raise BundleError(f"input {name!r} axis {axis} is static ({dim}) but its profile says {a}/{b}/{c}")
        result[name] = (low, opt, high)
    return result


def _verified_bundle(bundle: Path, tensorrt_version: str | None) -> tuple[dict[str, Any], dict[str, dict[str, tuple[Shape, Shape, Shape]]]]:
    """Manifest, hashes, lint (for `tensorrt_version`; None: 10.3, the most restrictive) and profiles."""
    manifest = load_manifest(bundle, verify_hashes=True)
    bad = {name: errors(found) for name, found in lint_bundle(bundle, manifest, tensorrt_version=tensorrt_version).items()}
    bad = {name: found for name, found in bad.items() if found}
    if bad:
        listed = "; ".join(f"{name}: {f.node} ({f.op_type}) [{f.rule}]" for name, found in bad.items() for f in found)
        raise LintError(f"{bundle}: graphs TensorRT {tensorrt_version or '10.3'} cannot build (run chatvla2 lint): {listed}")
    profiles = {}
    for name, entry in manifest["engines"].items():
        try:
            profiles[name] = profiles_for(entry)
        except BundleError as exc:
            raise BundleError(f"{bundle}: engine {name!r}: {exc}") from None
    return manifest, profiles


# --- TensorRT (runs where it is installed) --------------------------------------------------


def _build_one(trt, builder, logger, onnx_path: Path, profiles, workspace_bytes: int, cache, engine_path: Path) -> None:
    # 10.x: opt in to strong typing; 11.x: always on, the flag is kept but ignored (deprecated).
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves x.onnx.data next to the graph itself.
    if not parser.parse_from_file(str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            problems.append(f"node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}")
        raise BuildError(f"{onnx_path.name}: TensorRT parser errors: " + "; ".join(problems or ["(none reported)"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a foreign cache is an error
        raise BuildError(f"{onnx_path.name}: TensorRT refused the timing cache (made by another TensorRT or GPU?): "
                         "delete it or pass another --timing-cache")
    config.clear_flag(trt.BuilderFlag.TF32)  # see the module docstring

    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    missing = [t.name for t in dynamic if t.name not in profiles]
    if missing:
        raise BundleError(f"{onnx_path.name}: dynamic inputs without a profile: {', '.join(missing)}")
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            low, opt, high = profiles[tensor.name]
            profile.set_shape(tensor.name, low, opt, high)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"{onnx_path.name}: TensorRT could not build an engine (see the log above)")
    with engine_path.open("wb") as f:
        f.write(serialized)  # IHostMemory is a buffer: no copy of a multi-GB engine


def build_engines(bundle: Path, out: Path, workspace_gb: float, timing_cache: Path | None) -> dict[str, Any]:
    try:
        trt, missing = import_tensorrt(), None
    except TensorRTUnavailable as exc:  # reported after the bundle's own checks
        trt, missing = None, exc
    manifest, profiles = _verified_bundle(bundle, trt.__version__ if trt else None)
    if workspace_gb <= 0:
        raise InvalidInput(f"--workspace must be positive, got {workspace_gb}")
    if out.exists() and not (out / ENGINES_JSON).is_file() and any(out.iterdir()):
        raise InvalidInput(f"{out} exists and is not an engines directory: refusing to replace it")
    if missing is not None:
        raise missing
    gpu = gpu_identity()

    logger = tensorrt_logger(trt)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    # One cache for every engine of the run: later builds reuse the earlier ones' tactic timings.
    builder = trt.Builder(logger)
    cache = builder.create_builder_config().create_timing_cache(cache_bytes)

    with staged_directory(out) as staging:
        engines = {}
        for name, entry in manifest["engines"].items():
            onnx_path = engine_file(bundle, manifest, name)
            engine_path = staging / f"{name}.engine"
            start = time.perf_counter()
            _build_one(trt, builder, logger, onnx_path, profiles[name], int(workspace_gb * (1 << 30)), cache, engine_path)
            engines[name] = {
                "file": engine_path.name,
                "source_onnx": entry["file"],
                "source_sha256": manifest["files"][entry["file"]],
                "engine_sha256": sha256_file(engine_path),
                "build_seconds": round(time.perf_counter() - start, 3),
                "precision": entry.get("precision"),
                "tf32": False,
            }
        record = {
            **identity_record(gpu, trt.__version__),
            "tf32_reason": "cleared: fp32 plans and kept_fp32 nodes were parity-checked in true fp32; TF32 rounds fp32 matrix products' inputs to 10 mantissa bits",
            "engines": engines,
        }
        (staging / ENGINES_JSON).write_text(json.dumps(record, indent=2, sort_keys=True))
    if timing_cache is not None:
        _write_atomic(timing_cache, bytes(cache.serialize()))
    return record


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(config: BuildConfig) -> int:
    timing_cache = Path(config.timing_cache) if config.timing_cache else None
    record = build_engines(Path(config.bundle), Path(config.out), float(config.workspace), timing_cache)
    print(f"TensorRT {record['tensorrt_version']} on {record['gpu_name']} (SM {record['compute_capability']})")
    for name, entry in record["engines"].items():
        print(f"  {name:<12} {entry['file']:<24} {entry['build_seconds']:8.1f} s")
    print(f"wrote {Path(config.out) / ENGINES_JSON}")
    return 0
