"""What ties TensorRT engines to one machine: `engines.json`, the GPU and TensorRT identity checks,
and the tensorrt / cuda-python imports with their one install hint.

Shared by the TensorRT backend (`runtime.tensorrt_engine`) and `chatvla2 build`
(`export.tensorrt_build`). No torch; tensorrt and cuda-python are imported only inside functions,
so this module imports everywhere (the checks are tested without TensorRT).
"""

from __future__ import annotations

import subprocess
from typing import Any

# Written by `chatvla2 build` next to the engines; read by the backend before loading them.
ENGINES_JSON = "engines.json"
INSTALL_HINT = (
    "TensorRT engines need TensorRT and cuda-python: on Jetson apt install python3-libnvinfer and "
    "pip install cuda-python; elsewhere pip install 'chatvla2-edge[tensorrt]' cuda-python"
)


class TensorRTUnavailable(OSError):
    """No usable `tensorrt` / cuda-python module (or no GPU to identify): a setup problem, not a bug."""


class EngineMismatch(ValueError):
    """Engines built for another GPU or TensorRT version than the one running them, or from
    another bundle."""


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    return tensorrt


def import_cudart():
    """cuda-python's CUDA runtime bindings, in either package layout."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise TensorRTUnavailable(INSTALL_HINT) from None
    return cudart


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability "8.7") of device 0 via cuda-python's runtime, else nvidia-smi."""
    try:
        cudart = import_cudart()
    except TensorRTUnavailable:
        cudart = None  # `chatvla2 build` does not need cuda-python where nvidia-smi answers
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(0)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip().splitlines()[0]
        name, cap = (part.strip() for part in out.rsplit(",", 1))
        return name, cap
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        # Jetson's nvidia-smi may lack compute_cap; cuda-python is the route there.
        raise TensorRTUnavailable(f"cannot identify the GPU (neither cuda-python nor nvidia-smi answered): {INSTALL_HINT}") from None


def check_engines_match(engines_json: dict[str, Any], tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Engines run only on the GPU model and TensorRT version they were built with (deploy.md)."""
    built = (engines_json.get("gpu_name"), engines_json.get("compute_capability"), engines_json.get("tensorrt_version"))
    if built != (gpu_name, compute_capability, tensorrt_version):
        raise EngineMismatch(
            f"engines built for {built[0]} (SM {built[1]})/TRT {built[2]} but this is "
            f"{gpu_name} (SM {compute_capability})/TRT {tensorrt_version}: rebuild with chatvla2 build"
        )


def check_engine_sources(engines_json: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Each engine must be built from the ONNX file the bundle manifest names, byte for byte (hash)."""
    for name, entry in manifest["engines"].items():
        built = engines_json.get("engines", {}).get(name)
        if built is None:
            raise EngineMismatch(f"{ENGINES_JSON} has no engine {name!r}: rebuild with chatvla2 build")
        if built.get("source_sha256") != manifest["files"].get(entry["file"]):
            raise EngineMismatch(f"engine {name!r} was built from another {entry['file']}: rebuild with chatvla2 build")
