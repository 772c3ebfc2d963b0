"""What ties TensorRT engines to one machine: `engines.json`, the GPU identity, the engine
compatibility check, the tensorrt / cuda-python imports (each with its own install hint) and the
one TensorRT logger.

Shared by the TensorRT backend (`runtime.tensorrt_engine`) and `chatvla2 build`
(`export.tensorrt_build`). No torch; tensorrt and cuda-python are imported only inside functions,
so this module imports everywhere (the checks are tested without TensorRT).

cuda-python links its own CUDA runtime statically, and that runtime must not be newer than the
driver's CUDA (pyproject's `tensorrt` extra pins it per platform: 12.2-12.6 on JetPack 6, 13.x on
JetPack 7, 12.x on x86_64). A newer one fails with cudaErrorInsufficientDriver, which
`gpu_identity` reports in one line, as it does a missing driver.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from chatvla2.contract.errors import DeviceError, InvalidInput

# Written by `chatvla2 build` next to the engines; read by the backend before loading them.
ENGINES_JSON = "engines.json"
# The same pins as pyproject's `tensorrt` extra.
CUDA_PYTHON_HINT = (
    "pip install 'cuda-python>=12.2,<12.7' on JetPack 6 (CUDA 12.6), 'cuda-python>=13,<14' on JetPack 7 (CUDA 13), "
    "'cuda-python>=12.2,<13' on x86_64 (runs on CUDA 12 and 13 drivers); its CUDA runtime must not be newer than the driver's"
)
TENSORRT_HINT = (
    "on Jetson TensorRT comes from JetPack (apt install python3-libnvinfer, into /usr/lib/python3/dist-packages: "
    "make the venv with python3 -m venv --system-site-packages, or add that directory to PYTHONPATH); "
    "elsewhere pip install 'chatvla2-edge[tensorrt]'"
)
INSTALL_HINT = f"TensorRT engines need the tensorrt module and cuda-python: {TENSORRT_HINT}; {CUDA_PYTHON_HINT}"


class TensorRTUnavailable(DeviceError):
    """No usable `tensorrt` / cuda-python module, or no GPU to identify: a setup problem, not a bug."""


class EngineMismatch(InvalidInput):
    """Engines built for another GPU or TensorRT version than the one running them, or from
    another bundle."""


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(f"the tensorrt Python module is missing ({exc}): {TENSORRT_HINT}") from None
    return tensorrt


def import_cudart():
    """cuda-python's CUDA runtime bindings, in either package layout."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (cuda-bindings), 13.x
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.2 .. 12.5
        except ImportError:
            raise TensorRTUnavailable(f"cuda-python is missing: {CUDA_PYTHON_HINT}") from None
    return cudart


@functools.cache
def tensorrt_logger(trt):
    """One TensorRT logger for the process (TensorRT keeps the first one it is given)."""
    return trt.Logger(trt.Logger.WARNING)


def check_cuda(result, what: str = "CUDA call"):
    """cuda-python returns (error, *values): raise a one-line error, else return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else (values or None)


def _version(number: int) -> str:
    """12060 -> "12.6" (the CUDA version encoding: 1000 * major + 10 * minor)."""
    return f"{number // 1000}.{number % 1000 // 10}"


@dataclass(frozen=True)
class GpuIdentity:
    name: str                 # as cudaGetDeviceProperties reports it (recorded, not compared)
    compute_capability: str   # "8.7": what engines depend on
    driver_cuda: str          # the newest CUDA the driver supports, "12.6"
    runtime_cuda: str         # cuda-python's own runtime, "12.6"


def gpu_identity(cudart=None, device: int = 0) -> GpuIdentity:
    """Device `device` as the CUDA runtime sees it: the one identity `chatvla2 build` records and the
    backend checks (no nvidia-smi: on a Jetson it may lack compute_cap or name the GPU otherwise)."""
    cudart = cudart or import_cudart()
    try:
        driver = int(check_cuda(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        runtime = int(check_cuda(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        err, props = cudart.cudaGetDeviceProperties(device)
    except RuntimeError as exc:  # cuda-bindings 13 raises when libcuda.so.1 cannot be loaded
        raise TensorRTUnavailable(f"no NVIDIA driver found ({exc})") from None
    if driver == 0:
        raise TensorRTUnavailable("no NVIDIA driver found (cudaDriverGetVersion reports none)")
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        raise TensorRTUnavailable(
            f"cuda-python's CUDA runtime {_version(runtime)} is newer than the driver's CUDA {_version(driver)}: {CUDA_PYTHON_HINT}")
    if int(err) != 0:
        raise TensorRTUnavailable(f"cannot read GPU {device}'s properties: {getattr(err, 'name', err)}")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuIdentity(name.split("\x00")[0].strip(), f"{props.major}.{props.minor}", _version(driver), _version(runtime))


def identity_record(gpu: GpuIdentity, tensorrt_version: str) -> dict[str, str]:
    """The engines.json fields that describe the build machine."""
    return {"tensorrt_version": tensorrt_version, "gpu_name": gpu.name, "compute_capability": gpu.compute_capability,
            "driver_cuda": gpu.driver_cuda, "cuda_python_runtime": gpu.runtime_cuda, "hardware_compatibility": "none"}


def check_engines_match(engines_json: dict[str, Any], tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
    """What a TensorRT engine depends on: the TensorRT version it was built with and the GPU's
    compute capability (SM); an engine built with a hardware-compatibility level runs on any GPU
    of that level. The GPU name is recorded, not compared (an H100 PCIe runs an H100 SXM's engine)."""
    sm, version = engines_json.get("compute_capability"), engines_json.get("tensorrt_version")
    level = engines_json.get("hardware_compatibility", "none")
    if version != tensorrt_version:
        problem = f"TensorRT {version}, this is TensorRT {tensorrt_version}"
    elif level == "none" and sm != compute_capability:
        problem = f"SM {sm} ({engines_json.get('gpu_name')}), this GPU is SM {compute_capability} ({gpu_name})"
    elif level != "none" and float(compute_capability) < 8.0:  # AMPERE_PLUS, the documented level
        problem = f"hardware compatibility {level} (SM 8.0 and newer), this GPU is SM {compute_capability} ({gpu_name})"
    else:
        return
    raise EngineMismatch(f"engines built for {problem}: rebuild with chatvla2 build")


def check_engine_sources(engines_json: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Each engine must be built from the ONNX file the bundle manifest names, byte for byte (hash)."""
    for name, entry in manifest["engines"].items():
        built = engines_json.get("engines", {}).get(name)
        if built is None:
            raise EngineMismatch(f"{ENGINES_JSON} has no engine {name!r}: rebuild with chatvla2 build")
        if built.get("source_sha256") != manifest["files"].get(entry["file"]):
            raise EngineMismatch(f"engine {name!r} was built from another {entry['file']}: rebuild with chatvla2 build")
