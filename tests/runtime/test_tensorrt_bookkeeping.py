"""The TensorRT backend's own bookkeeping, against a RECORDING STAND-IN for `tensorrt` and the CUDA
runtime: `FakeCudart` and `FakeTensorRT` below are not TensorRT nor CUDA. They implement only the
calls the backend makes (documented TensorRT 10.x/11.x and cuda-python signatures), keep device
memory as host bytes so copies can be checked, record every allocation, free, tensor address,
stream and graph, and can be told to fail a call. What they show: buffers are allocated once, the
KV cache is bound (prefill's cache outputs point at decode's buffers) rather than copied, each
buffer and stream and graph is released exactly once, failures are reported naming the tensor,
and a failed CUDA-graph capture falls back to plain enqueues. Whether real TensorRT behaves as
documented is for the tests marked `tensorrt` (tests/runtime/test_engine.py), which skip here.
"""

from __future__ import annotations

import ast
import ctypes
import enum
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from chatvla2.runtime.engine import EngineSpec
from chatvla2.runtime.tensorrt_engine import TensorRTEngine, TensorRTError, TensorRTLanguage, capture_graph, load_tensorrt
from chatvla2.runtime.tensorrt_identity import (
    EngineMismatch,
    GpuIdentity,
    TensorRTUnavailable,
    check_engines_match,
    gpu_identity,
    import_cudart,
    tensorrt_logger,
)

ROOT = Path(__file__).resolve().parents[2]

# --- the stand-in CUDA runtime ------------------------------------------------------------------


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorStreamCaptureInvalidated = 901


class FakeCudart:
    """Stand-in for `cuda.bindings.runtime`: every call returns (error, *values) as cuda-python does."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal=0, cudaStreamCaptureModeThreadLocal=1)

    def __init__(self, fail=(), driver=12060, runtime=12060, name=b"Orin", major=8, minor=7):
        self.fail = set(fail)        # call names that return an error
        self.memory: dict[int, bytearray] = {}
        self.log: list[tuple] = []   # every allocation, free, stream, graph call
        self.streams: set[int] = set()
        self.graphs: set[int] = set()
        self.execs: set[int] = set()
        self.capturing: dict[int, list] = {}  # stream -> work recorded during capture
        self.graph_work: dict[int, list] = {}
        self._next = 1
        self.driver, self.runtime, self.props = driver, runtime, types.SimpleNamespace(name=name + b"\x00" * 8, major=major, minor=minor)

    def _id(self) -> int:
        self._next += 1
        return self._next

    def _err(self, call):
        return cudaError_t.cudaErrorMemoryAllocation if call in self.fail else cudaError_t.cudaSuccess

    # identity
    def cudaDriverGetVersion(self):
        return (cudaError_t.cudaSuccess, self.driver)

    def cudaRuntimeGetVersion(self):
        return (cudaError_t.cudaSuccess, self.runtime)

    def cudaGetDeviceProperties(self, device):
        if self.driver == 0:
            return (cudaError_t.cudaErrorNoDevice, None)
        if self.runtime // 1000 > self.driver // 1000:
            return (cudaError_t.cudaErrorInsufficientDriver, None)
        return (cudaError_t.cudaSuccess, self.props)

    # memory: each allocation at its own 2**32 boundary, so an address names its allocation
    def cudaMalloc(self, size):
        if "cudaMalloc" in self.fail:
            return (cudaError_t.cudaErrorMemoryAllocation, None)
        pointer = self._id() << 32
        self.memory[pointer] = bytearray(size)
        self.log.append(("malloc", pointer, size))
        return (cudaError_t.cudaSuccess, pointer)

    def cudaFree(self, pointer):
        assert pointer in self.memory, f"free of {pointer:#x}, which is not allocated (double free?)"
        del self.memory[pointer]
        self.log.append(("free", pointer))
        return (cudaError_t.cudaSuccess,)

    def _view(self, address, size):
        base = address >> 32 << 32
        offset = address - base
        assert base in self.memory and offset + size <= len(self.memory[base]), f"access outside an allocation at {address:#x}"
        return self.memory[base], offset

    def _write(self, address, data: bytes):
        buffer, offset = self._view(address, len(data))
        buffer[offset:offset + len(data)] = data

    def _read(self, address, size) -> bytes:
        buffer, offset = self._view(address, size)
        return bytes(buffer[offset:offset + size])

    def _run(self, stream, work):
        """Run `work` now, or record it if `stream` is being captured."""
        if stream in self.capturing:
            self.capturing[stream].append(work)
        else:
            work()

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.log.append(("memcpy", kind, count))
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            data = ctypes.string_at(src, count)
            self._run(stream, lambda: self._write(dst, data))
        elif kind == self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            self._run(stream, lambda: ctypes.memmove(dst, self._read(src, count), count))
        else:
            self._run(stream, lambda: self._write(dst, self._read(src, count)))
        return (self._err("cudaMemcpyAsync"),)

    def cudaMemcpy2DAsync(self, dst, dpitch, src, spitch, width, height, kind, stream):
        assert kind == self.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self.log.append(("memcpy2d", dst, dpitch, src, spitch, width, height))
        for row in range(height):
            self._write(dst + row * dpitch, self._read(src + row * spitch, width))
        return (self._err("cudaMemcpy2DAsync"),)

    def cudaMemsetAsync(self, pointer, value, count, stream):
        self._run(stream, lambda: self._write(pointer, bytes([value]) * count))
        return (self._err("cudaMemsetAsync"),)

    # streams and graphs
    def cudaStreamCreate(self):
        stream = self._id()
        self.streams.add(stream)
        self.log.append(("stream_create", stream))
        return (self._err("cudaStreamCreate"), stream)

    def cudaStreamDestroy(self, stream):
        self.streams.remove(stream)  # KeyError on a second destroy
        self.log.append(("stream_destroy", stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        assert stream in self.streams and stream not in self.capturing
        self.log.append(("sync", stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.log.append(("begin_capture", stream, mode))
        if "cudaStreamBeginCapture" in self.fail:
            return (cudaError_t.cudaErrorStreamCaptureInvalidated,)
        self.capturing[stream] = []
        return (cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        work = self.capturing.pop(stream)
        self.log.append(("end_capture", stream))
        if "cudaStreamEndCapture" in self.fail:
            return (cudaError_t.cudaErrorStreamCaptureInvalidated, None)
        graph = self._id()
        self.graphs.add(graph)
        self.graph_work[graph] = work
        return (cudaError_t.cudaSuccess, graph)

    def cudaGraphInstantiate(self, graph, flags):
        if "cudaGraphInstantiate" in self.fail:
            return (cudaError_t.cudaErrorMemoryAllocation, None)
        graph_exec = self._id()
        self.execs.add(graph_exec)
        self.graph_work[graph_exec] = self.graph_work[graph]
        self.log.append(("instantiate", graph, graph_exec))
        return (cudaError_t.cudaSuccess, graph_exec)

    def cudaGraphLaunch(self, graph_exec, stream):
        assert graph_exec in self.execs
        self.log.append(("launch", graph_exec))
        for work in self.graph_work[graph_exec]:
            work()
        return (cudaError_t.cudaSuccess,)

    def cudaGraphDestroy(self, graph):
        self.graphs.remove(graph)
        self.log.append(("graph_destroy", graph))
        return (cudaError_t.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.execs.remove(graph_exec)
        self.log.append(("exec_destroy", graph_exec))
        return (cudaError_t.cudaSuccess,)

    def cudaGetLastError(self):
        return (cudaError_t.cudaSuccess,)

    def count(self, what) -> int:
        return sum(1 for entry in self.log if entry[0] == what)


# --- the stand-in tensorrt ----------------------------------------------------------------------
# An "engine file" is JSON: the manifest's I/O description plus the profile maxima. execute_async_v3
# fills every output with the byte (number of enqueues so far), so copies can be traced.

DTYPES = {"float32": np.float32, "int64": np.int64}


class FakeTensorRT:
    __version__ = "10.3.0"
    TensorIOMode = types.SimpleNamespace(INPUT=0, OUTPUT=1)
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})

    def __init__(self, cudart: FakeCudart, fail=()):
        self.cudart, self.fail = cudart, dict.fromkeys(fail, True) if not isinstance(fail, dict) else fail
        self.addresses: dict[tuple[str, str], int] = {}  # (engine, tensor) -> address set
        self.enqueues = 0
        fake = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return FakeEngine(fake, json.loads(bytes(data)))

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype):
        return DTYPES[dtype]


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, description):
        self.trt, self.name = trt, description["name"]
        self.tensors = {t["name"]: t for t in description["tensors"]}
        self.profile_max = description["profile_max"]
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return self.tensors[name]["mode"]

    def get_tensor_dtype(self, name):
        return self.tensors[name]["dtype"]

    def get_tensor_profile_shape(self, name, profile):
        high = self.profile_max[name]
        return (high, high, high)

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.trt, self.shapes, self.dims = engine, engine.trt, {}, {}

    def _fails(self, call, name=None):
        wanted = self.trt.fail.get(call)
        return wanted is True or wanted == (self.engine.name, name)

    def set_input_shape(self, name, shape):
        if self._fails("set_input_shape", name):
            return False
        self.shapes[name] = tuple(shape)
        for want, got in zip(self.engine.tensors[name]["shape"], shape):
            if isinstance(want, str):
                self.dims[want] = got
        return True

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        return tuple(d if isinstance(d, int) else self.dims.get(d, -1) for d in self.engine.tensors[name]["shape"])

    def set_tensor_address(self, name, pointer):
        if self._fails("set_tensor_address", name):
            return False
        self.trt.addresses[(self.engine.name, name)] = pointer
        return True

    def execute_async_v3(self, stream):
        cudart = self.trt.cudart
        if self._fails("execute_async_v3") or (stream in cudart.capturing and self._fails("capture")):
            return False

        def work():  # runs now, or at each launch of a graph that captured it
            self.trt.enqueues += 1
            mark = self.trt.enqueues % 256
            for name, tensor in self.engine.tensors.items():
                if tensor["mode"] == FakeTensorRT.TensorIOMode.OUTPUT and name not in ("key_cache", "value_cache"):
                    size = int(np.prod(self.get_tensor_shape(name))) * np.dtype(DTYPES[tensor["dtype"]]).itemsize
                    cudart._write(self.trt.addresses[(self.engine.name, name)], bytes([mark]) * size)

        cudart._run(stream, work)
        return True


# --- a small language model's engines ----------------------------------------------------------

CACHE_SHAPE = [2, 1, 2, 8, 4]  # layers, batch, kv_heads, max_cache_len, head_dim
NEW_SHAPE = [2, 1, 2, 1, 4]
MANIFEST = {
    "prefill": {
        "inputs": [{"name": "embeddings", "shape": [1, "prompt_length", 6], "dtype": "float32"},
                   {"name": "position_ids", "shape": [3, 1, "prompt_length"], "dtype": "int64"}],
        "outputs": [{"name": "hidden", "shape": [1, "prompt_length", 6], "dtype": "float32"},
                    {"name": "logits", "shape": [1, 16], "dtype": "float32"},
                    {"name": "key_cache", "shape": CACHE_SHAPE, "dtype": "float32"},
                    {"name": "value_cache", "shape": CACHE_SHAPE, "dtype": "float32"}],
        "profiles": {"embeddings": {"min": [1, 1, 6], "opt": [1, 4, 6], "max": [1, 7, 6]},
                     "position_ids": {"min": [3, 1, 1], "opt": [3, 1, 4], "max": [3, 1, 7]}},
    },
    "decode": {
        "inputs": [{"name": "token", "shape": [1, 1], "dtype": "int64"},
                   {"name": "position", "shape": [1], "dtype": "int64"},
                   {"name": "cache_position", "shape": [1], "dtype": "int64"},
                   {"name": "key_cache", "shape": CACHE_SHAPE, "dtype": "float32"},
                   {"name": "value_cache", "shape": CACHE_SHAPE, "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [1, 16], "dtype": "float32"},
                    {"name": "hidden", "shape": [1, 6], "dtype": "float32"},
                    {"name": "new_keys", "shape": NEW_SHAPE, "dtype": "float32"},
                    {"name": "new_values", "shape": NEW_SHAPE, "dtype": "float32"}],
    },
}
SPECS = {name: EngineSpec.from_manifest(name, entry) for name, entry in MANIFEST.items()}


def write_engine(directory: Path, name: str) -> Path:
    entry = MANIFEST[name]
    tensors = [{**t, "mode": 0} for t in entry["inputs"]] + [{**t, "mode": 1} for t in entry["outputs"]]
    path = directory / f"{name}.engine"
    path.write_text(json.dumps({"name": name, "tensors": tensors,
                                "profile_max": {k: v["max"] for k, v in entry.get("profiles", {}).items()}}))
    return path


def nbytes(shape, dtype="float32") -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


@pytest.fixture
def stand_in(tmp_path):
    """-> make(fail_cuda=(), fail_trt=()) -> (trt, cudart, {name: engine path})."""
    def make(fail_cuda=(), fail_trt=()):
        cudart = FakeCudart(fail_cuda)
        trt = FakeTensorRT(cudart, fail_trt)
        return trt, cudart, {name: write_engine(tmp_path, name) for name in MANIFEST}
    return make


def load_pair(trt, cudart, paths, cuda_graph=True):
    runtime = trt.Runtime(None)
    decode = TensorRTEngine(trt, cudart, runtime, paths["decode"], SPECS["decode"], cuda_graph=cuda_graph)
    bound = {c: (decode.device[c], decode.capacity[c]) for c in ("key_cache", "value_cache")}
    prefill = TensorRTEngine(trt, cudart, runtime, paths["prefill"], SPECS["prefill"], bound=bound)
    return prefill, decode


def prompt(length=5):
    return np.zeros((1, length, 6), np.float32), np.zeros((3, 1, length), np.int64)


# --- buffers and the shared cache -----------------------------------------------------------


def test_each_buffer_is_allocated_once_and_the_cache_is_bound_not_copied(stand_in):
    trt, cudart, paths = stand_in()
    prefill, decode = load_pair(trt, cudart, paths)
    mallocs = [entry for entry in cudart.log if entry[0] == "malloc"]
    # decode: 5 inputs + 4 outputs; prefill: 2 inputs + hidden + logits, never its cache outputs
    assert len(mallocs) == 9 + 4
    assert sorted(decode.owned) == sorted(SPECS["decode"].input_names + SPECS["decode"].output_names)
    assert sorted(prefill.owned) == ["embeddings", "hidden", "logits", "position_ids"]
    for cache in ("key_cache", "value_cache"):
        assert trt.addresses[("prefill", cache)] == trt.addresses[("decode", cache)] == decode.owned[cache]
    # buffers at the profile's largest shapes
    assert prefill.capacity["embeddings"] == nbytes([1, 7, 6]) and prefill.capacity["hidden"] == nbytes([1, 7, 6])

    language = TensorRTLanguage(prefill, decode)
    language.prefill(*prompt())
    for position in range(5, 8):
        language.step(3, position, position)
    assert cudart.count("malloc") == 13  # nothing allocated per call
    # No cache-sized copy ever: only the token's rows move (one strided copy per cache and step).
    assert all(entry[2] < nbytes(CACHE_SHAPE) for entry in cudart.log if entry[0] == "memcpy")
    assert cudart.count("memcpy2d") == 2 * 3


def test_decode_writes_the_new_keys_into_the_cache_at_cache_position(stand_in):
    trt, cudart, paths = stand_in()
    prefill, decode = load_pair(trt, cudart, paths, cuda_graph=False)
    language = TensorRTLanguage(prefill, decode)
    language.prefill(*prompt())
    language.step(3, 5, 5)
    mark = trt.enqueues % 256  # the byte decode filled new_keys/new_values with
    for cache in ("key_cache", "value_cache"):
        data = np.frombuffer(cudart._read(decode.device[cache], nbytes(CACHE_SHAPE)), np.uint8).reshape(2, 1, 2, 8, 16)
        assert (data[:, :, :, 5] == mark).all()
        assert (data[:, :, :, 6:] == 0).all() and (data[:, :, :, :5] == 0).all()  # nothing else touched


def test_close_frees_each_buffer_and_the_streams_exactly_once(stand_in):
    trt, cudart, paths = stand_in()
    prefill, decode = load_pair(trt, cudart, paths)
    language = TensorRTLanguage(prefill, decode)
    language.prefill(*prompt())
    language.step(1, 5, 5)  # captures decode's graph
    assert decode.graph_exec is not None
    for engine in (prefill, decode, prefill, decode):  # twice each: the second close does nothing
        engine.close()
    allocated = {entry[1] for entry in cudart.log if entry[0] == "malloc"}
    freed = [entry[1] for entry in cudart.log if entry[0] == "free"]
    assert sorted(freed) == sorted(allocated) and len(freed) == len(set(freed))
    assert cudart.memory == {} and cudart.streams == set() and cudart.graphs == set() and cudart.execs == set()
    assert cudart.count("stream_create") == cudart.count("stream_destroy") == 2


# --- failures name the tensor, and leave nothing behind ---------------------------------------


@pytest.mark.parametrize("call, tensor, message", [
    ("set_tensor_address", "new_keys", "engine 'decode': set_tensor_address failed for tensor 'new_keys'"),
    ("set_input_shape", "key_cache", "engine 'decode': set_input_shape failed for tensor 'key_cache'"),
])
def test_a_refused_binding_names_the_tensor_and_frees_what_was_allocated(stand_in, call, tensor, message):
    trt, cudart, paths = stand_in(fail_trt={call: ("decode", tensor)})
    with pytest.raises(TensorRTError, match=message) as info:
        TensorRTEngine(trt, cudart, trt.Runtime(None), paths["decode"], SPECS["decode"])
    assert "\n" not in str(info.value)
    assert cudart.memory == {} and cudart.streams == set()


def test_a_shape_outside_the_profile_at_run_time_names_the_tensor(stand_in):
    trt, cudart, paths = stand_in()
    prefill, _ = load_pair(trt, cudart, paths)
    trt.fail["set_input_shape"] = ("prefill", "embeddings")
    with pytest.raises(TensorRTError, match=r"set_input_shape failed for tensor 'embeddings' at \(1, 5, 6\)"):
        prefill.enqueue(dict(zip(("embeddings", "position_ids"), prompt())))


def test_an_output_dimension_of_minus_one_is_refused(stand_in, tmp_path):
    trt, cudart, paths = stand_in()
    description = json.loads(paths["decode"].read_text())
    description["tensors"][-1]["shape"] = [2, 1, 2, "unknown", 4]  # new_values: data-dependent
    paths["decode"].write_text(json.dumps(description))
    with pytest.raises(TensorRTError, match=r"tensor 'new_values' has shape \(2, 1, 2, -1, 4\)"):
        TensorRTEngine(trt, cudart, trt.Runtime(None), paths["decode"], SPECS["decode"])
    assert cudart.memory == {} and cudart.streams == set()


def test_a_failed_allocation_frees_the_earlier_ones(stand_in):
    trt, cudart, paths = stand_in()
    decode = TensorRTEngine(trt, cudart, trt.Runtime(None), paths["decode"], SPECS["decode"])
    cudart.fail.add("cudaMalloc")
    with pytest.raises(RuntimeError, match="cudaMalloc for 'prefill' tensor 'embeddings' failed: cudaErrorMemoryAllocation"):
        TensorRTEngine(trt, cudart, trt.Runtime(None), paths["prefill"], SPECS["prefill"])
    decode.close()
    assert cudart.memory == {} and cudart.streams == set()


def test_a_failed_enqueue_is_reported(stand_in):
    trt, cudart, paths = stand_in(fail_trt=("execute_async_v3",))
    prefill, _ = load_pair(trt, cudart, paths)
    with pytest.raises(TensorRTError, match="engine 'prefill': execute_async_v3 failed"):
        prefill.run(dict(zip(("embeddings", "position_ids"), prompt())))


# --- CUDA graphs --------------------------------------------------------------------------------


def test_graph_capture_follows_the_documented_pattern(stand_in):
    trt, cudart, paths = stand_in()
    prefill, decode = load_pair(trt, cudart, paths)
    language = TensorRTLanguage(prefill, decode)
    language.prefill(*prompt())
    start = len(cudart.log)
    language.step(1, 5, 5)
    language.step(2, 6, 6)
    calls = [entry[0] for entry in cudart.log[start:] if entry[0] in ("sync", "begin_capture", "end_capture", "instantiate", "launch")]
    # warm-up enqueue, synchronise, capture, instantiate, launch; then launches only
    assert calls == ["sync", "begin_capture", "end_capture", "instantiate", "launch", "sync", "launch", "sync"]
    assert decode.graph_error is None
    assert [entry for entry in cudart.log if entry[0] == "begin_capture"][0][2] == FakeCudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal


@pytest.mark.parametrize("failure", ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "capture"])
def test_a_failed_capture_falls_back_to_plain_enqueues(stand_in, failure):
    trt, cudart, paths = stand_in(fail_cuda=() if failure == "capture" else (failure,), fail_trt=("capture",) if failure == "capture" else ())
    prefill, decode = load_pair(trt, cudart, paths)
    language = TensorRTLanguage(prefill, decode)
    language.prefill(*prompt())
    before = trt.enqueues
    logits, _ = language.step(1, 5, 5)
    assert (logits.view(np.uint8) == trt.enqueues).all()  # the step's own outputs came back
    language.step(2, 6, 6)
    assert decode.graph_exec is None and decode.want_graph is False and "capture failed" in decode.graph_error
    assert cudart.count("launch") == 0 and cudart.capturing == {}
    assert cudart.graphs == set() and cudart.execs == set()  # a half-made graph is destroyed at once
    assert trt.enqueues - before == 3  # warm-up, then one plain enqueue per step


def test_capture_graph_refuses_a_failing_warm_up():
    cudart = FakeCudart()
    stream = cudart.cudaStreamCreate()[1]
    with pytest.raises(TensorRTError, match="enqueue failed before CUDA graph capture"):
        capture_graph(cudart, stream, lambda: False)
    assert cudart.count("begin_capture") == 0


# --- loading: order, identity, one logger -----------------------------------------------------


def test_load_tensorrt_binds_decode_first_and_checks_identity(stand_in, tmp_path, monkeypatch):
    trt, cudart, paths = stand_in()
    monkeypatch.setattr("chatvla2.runtime.tensorrt_engine.import_tensorrt", lambda: trt)
    monkeypatch.setattr("chatvla2.runtime.tensorrt_engine.import_cudart", lambda: cudart)
    manifest = {"engines": {name: {"file": f"{name}.onnx"} for name in ("prefill", "decode")},
                "files": {"prefill.onnx": "p", "decode.onnx": "d"}}
    record = {"tensorrt_version": "10.3.0", "gpu_name": "Jetson AGX Orin", "compute_capability": "8.7",
              "engines": {name: {"file": f"{name}.engine", "source_sha256": name[0]} for name in ("prefill", "decode")}}
    (tmp_path / "engines.json").write_text(json.dumps(record))
    # the GPU name differs from the build's (Orin vs Jetson AGX Orin): SM and TensorRT decide
    engines, language = load_tensorrt(tmp_path, manifest, {"prefill": SPECS["prefill"], "decode": SPECS["decode"]}, tmp_path)
    assert list(engines) == ["prefill", "decode"] and language.provider == "TensorRT"
    for engine in engines.values():
        engine.close()
    assert cudart.memory == {}

    cudart.props.major = 9  # SM 9.7: another GPU generation
    with pytest.raises(EngineMismatch, match="SM 8.7"):
        load_tensorrt(tmp_path, manifest, {"prefill": SPECS["prefill"], "decode": SPECS["decode"]}, tmp_path)


def test_a_failed_load_closes_the_engines_already_made(stand_in, tmp_path, monkeypatch):
    trt, cudart, paths = stand_in(fail_trt={"set_tensor_address": ("prefill", "hidden")})
    monkeypatch.setattr("chatvla2.runtime.tensorrt_engine.import_tensorrt", lambda: trt)
    monkeypatch.setattr("chatvla2.runtime.tensorrt_engine.import_cudart", lambda: cudart)
    manifest = {"engines": {n: {"file": f"{n}.onnx"} for n in MANIFEST}, "files": {f"{n}.onnx": n for n in MANIFEST}}
    record = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
              "engines": {n: {"file": f"{n}.engine", "source_sha256": n} for n in MANIFEST}}
    (tmp_path / "engines.json").write_text(json.dumps(record))
    with pytest.raises(TensorRTError, match="'hidden'"):
        load_tensorrt(tmp_path, manifest, SPECS, tmp_path)
    assert cudart.memory == {} and cudart.streams == set()


def test_one_tensorrt_logger_per_process():
    trt = FakeTensorRT(FakeCudart())
    assert tensorrt_logger(trt) is tensorrt_logger(trt)


# --- the GPU identity ---------------------------------------------------------------------------


def test_gpu_identity_from_cudart():
    gpu = gpu_identity(FakeCudart(name=b"NVIDIA H100 PCIe", major=9, minor=0, driver=13000, runtime=12060))
    assert gpu == GpuIdentity("NVIDIA H100 PCIe", "9.0", "13.0", "12.6")


def test_a_runtime_newer_than_the_driver_is_one_line():
    with pytest.raises(TensorRTUnavailable) as info:
        gpu_identity(FakeCudart(driver=12060, runtime=13000))
    message = str(info.value)
    assert "runtime 13.0 is newer than the driver's CUDA 12.6" in message and "cuda-python>=12.2,<12.7" in message
    assert "\n" not in message
    with pytest.raises(TensorRTUnavailable, match="no NVIDIA driver"):
        gpu_identity(FakeCudart(driver=0))


def test_engines_depend_on_sm_and_tensorrt_not_the_gpu_name():
    record = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    check_engines_match(record, "10.3.0", "NVIDIA H100 PCIe", "9.0")  # SXM engine on a PCIe card
    with pytest.raises(EngineMismatch, match="SM 9.0 .*this GPU is SM 8.7 .*rebuild with chatvla2 build"):
        check_engines_match(record, "10.3.0", "Orin", "8.7")
    with pytest.raises(EngineMismatch, match="TensorRT 10.3.0, this is TensorRT 11.1.0"):
        check_engines_match(record, "11.1.0", "NVIDIA H100 PCIe", "9.0")
    ampere_plus = {**record, "hardware_compatibility": "ampere_plus"}
    check_engines_match(ampere_plus, "10.3.0", "Orin", "8.7")
    with pytest.raises(EngineMismatch, match="hardware compatibility"):
        check_engines_match(ampere_plus, "10.3.0", "Tesla T4", "7.5")


@pytest.mark.parametrize("layout", ["cuda.bindings.runtime", "cuda.cudart"])
def test_both_cuda_python_layouts_import(monkeypatch, layout):
    fake = FakeCudart()
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    package = types.ModuleType("cuda")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "cuda", package)
    if layout == "cuda.bindings.runtime":
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = fake
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake)
    else:
        package.cudart = fake
        monkeypatch.setitem(sys.modules, "cuda.cudart", fake)
    assert import_cudart() is fake


@pytest.mark.skipif(importlib.util.find_spec("cuda") is not None, reason="cuda-python is installed here")
def test_missing_cuda_python_says_so():
    with pytest.raises(TensorRTUnavailable, match=r"cuda-python is missing: pip install 'cuda-python>=12.2,<12.7' on JetPack 6"):
        import_cudart()


# --- benchmarks/cuda_identity_check.py against the stand-in ---------------------------------


def test_cuda_identity_check_script(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("cuda_identity_check", ROOT / "benchmarks" / "cuda_identity_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    top_level = [n for node in ast.parse(Path(spec.origin).read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])]
    assert not [n for n in top_level if n.split(".")[0] in ("tensorrt", "cuda")], top_level
    fake = FakeCudart(name=b"NVIDIA H200", major=9, minor=0, driver=13000, runtime=13000)
    monkeypatch.setattr(script, "import_cudart", lambda: fake)
    assert script.main([]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["gpu"]["name"] == "NVIDIA H200" and result["gpu"]["compute_capability"] == "9.0"
    assert result["graph_capture"] == "ok" and result["strided_copy"] == "ok" and result["ok"] is True
    assert fake.memory == {} and fake.streams == set() and fake.graphs == set() and fake.execs == set()
