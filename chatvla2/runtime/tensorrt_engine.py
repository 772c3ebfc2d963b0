"""The TensorRT backend: runs the engines of `chatvla2 build` (TensorRT 10.x / 11.x, documented API).

Never run in this workplace (no TensorRT here; docs/reference/deploy.md): written small and strict. Its own
bookkeeping (buffers, bindings, frees, streams, graphs, error reports) is tested against a recording
stand-in for `tensorrt` and the CUDA runtime (tests/runtime/test_tensorrt_bookkeeping.py); the
tests marked `tensorrt` run it for real where `tensorrt` imports and skip with a reason elsewhere.

- Before loading, `engines.json` must match this TensorRT version and GPU compute capability, and
  each engine's source ONNX hash the bundle manifest's (`runtime.tensorrt_identity`).
- Calls: `Runtime(logger).deserialize_cuda_engine`, `num_io_tensors`, `get_tensor_name`,
  `get_tensor_mode`, `get_tensor_dtype`, `get_tensor_profile_shape`, `create_execution_context`,
  `set_input_shape`, `get_tensor_shape`, `set_tensor_address`, `execute_async_v3(stream)`; the
  three that return a bool are checked, and a failure names the engine and the tensor.
  CUDA memory, streams and graphs through cuda-python (either module layout).
- Each engine owns one stream and the device buffers it allocated (once, at the largest shapes its
  profile allows); `close()` frees each of them exactly once, destroys its graph and its stream,
  and may be called again.
- The KV cache is decode's two input buffers. Prefill is loaded after decode with its key_cache /
  value_cache outputs bound to them before anything is allocated, so prefill writes the cache in
  place and never owns (or frees) it. After each decode step the token's keys/values are copied
  into the cache at cache_position with one strided cudaMemcpy2DAsync per cache (layers x kv_heads
  rows of head_dim values). Nothing crosses to the host but logits and hidden.
- Static-shape engines (decode, action head) are captured into a CUDA graph on their first call,
  by the documented pattern (`capture_graph`): enqueue, check, synchronise, capture one enqueue,
  check, instantiate; if any step fails the engine falls back to plain enqueues for good.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from chatvla2.contract.bundle import BundleError  # stdlib only
from chatvla2.contract.errors import MissingFile
from chatvla2.runtime.engine import Engine, EngineSpec, check_feed, check_out
from chatvla2.runtime.language_session import LanguageSession
from chatvla2.runtime.tensorrt_identity import (
    ENGINES_JSON,
    EngineMismatch,
    check_cuda,
    check_engine_sources,
    check_engines_match,
    gpu_identity,
    import_cudart,
    import_tensorrt,
    tensorrt_logger,
)

CACHE = ("key_cache", "value_cache")


class TensorRTError(RuntimeError):
    """A TensorRT call that returned False; the message names the engine and the tensor."""


# --- CUDA runtime helpers (also used by benchmarks/cuda_identity_check.py) ---------------------


def capture_graph(cudart, stream, enqueue: Callable[[], bool]):
    """-> (graph, graph_exec) capturing one `enqueue()` on `stream`, or None if capture failed
    (nothing left allocated; the caller enqueues plainly). A failing warm-up enqueue raises: the
    plain path would fail too."""
    if not enqueue():  # warm-up outside capture: TensorRT updates its state here, not in a graph
        raise TensorRTError("enqueue failed before CUDA graph capture")
    check_cuda(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal  # other threads stay free to call CUDA
    if int(cudart.cudaStreamBeginCapture(stream, mode)[0]) != 0:
        cudart.cudaGetLastError()
        return None
    captured = enqueue()
    err, graph = cudart.cudaStreamEndCapture(stream)  # always ended, or the stream stays capturing
    if not captured or int(err) != 0 or graph is None:
        if int(err) == 0 and graph is not None:
            cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()  # clear the error a failed capture leaves behind
        return None
    err, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
    if int(err) != 0:
        cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()
        return None
    return graph, graph_exec


def h2d(cudart, pointer: int, value: np.ndarray, stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    check_cuda(cudart.cudaMemcpyAsync(pointer, value.ctypes.data, value.nbytes, kind, stream), "cudaMemcpyAsync host to device")


def d2h(cudart, array: np.ndarray, pointer: int, stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check_cuda(cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, stream), "cudaMemcpyAsync device to host")


# --- one engine ---------------------------------------------------------------------------------


class TensorRTEngine(Engine):
    def __init__(self, trt, cudart, runtime, path: Path, spec: EngineSpec, cuda_graph: bool = False,
                 bound: Mapping[str, tuple[int, int]] | None = None):
        """`bound`: {tensor: (device pointer, bytes)} owned elsewhere (the KV cache), bound instead of allocated."""
        self.trt, self.cudart, self.runtime, self.spec = trt, cudart, runtime, spec
        self.provider = "TensorRT"
        self.engine = self.context = self.graph = self.graph_exec = None
        self.owned: dict[str, int] = {}     # allocated here, freed by close()
        self.device: dict[str, int] = {}    # every tensor's address (owned or bound)
        self.capacity: dict[str, int] = {}  # bytes behind each address
        self.graph_error: str | None = None
        self.stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        try:
            self._load(path, dict(bound or {}))
        except BaseException:
            self.close()  # nothing allocated so far leaks
            raise
        self.static = all(isinstance(d, int) for t in spec.inputs for d in t.shape)
        self.want_graph = cuda_graph and self.static

    def _load(self, path: Path, bound: dict[str, tuple[int, int]]) -> None:
        trt, spec = self.trt, self.spec
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TensorRTError(f"engine {spec.name!r}: create_execution_context failed (out of device memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
            raise EngineMismatch(f"{path.name}: engine I/O {inputs} -> {outputs} differs from the manifest's {spec.input_names} -> {spec.output_names}")
        for tensor in (*spec.inputs, *spec.outputs):
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor.name)))
            if dtype != tensor.dtype:
                raise EngineMismatch(f"{path.name}: tensor {tensor.name!r} is {dtype} in the engine, {tensor.dtype} in the manifest")
        unknown = sorted(set(bound) - set(outputs))
        if unknown:
            raise ValueError(f"engine {spec.name!r}: only outputs can be bound to outside buffers, not {unknown}")
        # Buffers are sized at the largest shapes: every dynamic input at its profile maximum.
        for tensor in spec.inputs:
            dynamic = any(isinstance(d, str) for d in tensor.shape)
            self._set_shape(tensor.name, tuple(self.engine.get_tensor_profile_shape(tensor.name, 0)[2]) if dynamic else tensor.shape)
        for name in names:
            nbytes = int(np.prod(self._shape(name))) * np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
            if name in bound:
                pointer, size = bound[name]
                if nbytes > size:
                    raise ValueError(f"engine {spec.name!r} output {name!r}: needs {nbytes} bytes, the bound buffer has {size}")
            else:
                pointer = int(check_cuda(self.cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc for {spec.name!r} tensor {name!r}"))
                self.owned[name], size = pointer, nbytes
            self.device[name], self.capacity[name] = pointer, size
            if not self.context.set_tensor_address(name, pointer):
                raise TensorRTError(f"engine {spec.name!r}: set_tensor_address failed for tensor {name!r}")

    def _set_shape(self, name: str, shape) -> None:
        if not self.context.set_input_shape(name, tuple(shape)):
            raise TensorRTError(f"engine {self.spec.name!r}: set_input_shape failed for tensor {name!r} at {tuple(shape)} (outside the engine's profile?)")

    def _shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):  # -1: an unset input, or an output only known after running
            raise TensorRTError(f"engine {self.spec.name!r}: tensor {name!r} has shape {shape}; data-dependent shapes are not supported")
        return shape

    def enqueue(self, feed: Mapping[str, np.ndarray], skip: tuple[str, ...] = ()) -> dict[str, int]:
        dims = check_feed(self.spec, feed)
        for tensor in self.spec.inputs:
            value = feed[tensor.name]
            if value.nbytes > self.capacity[tensor.name]:
                raise ValueError(f"engine {self.spec.name!r} input {tensor.name!r}: {value.nbytes} bytes exceed the buffer ({self.capacity[tensor.name]})")
            if not self.static:
                self._set_shape(tensor.name, value.shape)
            if tensor.name not in skip:
                h2d(self.cudart, self.device[tensor.name], value, self.stream)
        if self.want_graph and self.graph_exec is None:
            captured = capture_graph(self.cudart, self.stream, self._execute)
            if captured is None:
                self.want_graph, self.graph_error = False, "CUDA graph capture failed: plain enqueues from now on"
            else:
                self.graph, self.graph_exec = captured
        if self.graph_exec is not None:
            check_cuda(self.cudart.cudaGraphLaunch(self.graph_exec, self.stream), f"cudaGraphLaunch of engine {self.spec.name!r}")
        elif not self._execute():
            raise TensorRTError(f"engine {self.spec.name!r}: execute_async_v3 failed")
        return dims

    def _execute(self) -> bool:
        return bool(self.context.execute_async_v3(int(self.stream)))

    def fetch(self, names, dims: Mapping[str, int], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        results = {}
        for name in names:
            shape = self._shape(name)
            array = (out or {}).get(name)
            if array is None:
                array = np.empty(shape, self.spec.output(name).dtype)
            else:
                check_out(self.spec, {name: array}, {name: shape})
            if array.nbytes > self.capacity[name]:
                raise TensorRTError(f"engine {self.spec.name!r}: output {name!r} {shape} exceeds its buffer ({self.capacity[name]} bytes)")
            d2h(self.cudart, array, self.device[name], self.stream)
            results[name] = array
        check_cuda(self.cudart.cudaStreamSynchronize(self.stream), f"engine {self.spec.name!r}: cudaStreamSynchronize")
        return results

    def run(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        dims = self.enqueue(feed)
        return self.fetch(self.spec.output_names, dims, out)

    def close(self) -> None:
        """Free what this engine owns, each once (bound buffers belong to their owner); safe to repeat."""
        cudart = self.cudart
        if self.graph_exec is not None:
            cudart.cudaGraphExecDestroy(self.graph_exec)
        if self.graph is not None:
            cudart.cudaGraphDestroy(self.graph)
        self.graph = self.graph_exec = None
        self.context = self.engine = None  # the context goes before its engine
        for pointer in self.owned.values():
            cudart.cudaFree(pointer)
        self.owned.clear()
        self.device.clear()
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None


# --- prefill + decode over one device-resident KV cache -----------------------------------------


class TensorRTLanguage(LanguageSession):
    """Prefill and decode sharing decode's cache buffers (see the module docstring)."""

    def __init__(self, prefill: TensorRTEngine, decode: TensorRTEngine):
        super().__init__(prefill.spec, decode.spec)
        for name in CACHE:
            if prefill.device[name] != decode.device[name]:
                raise ValueError(f"prefill's {name} must be bound to decode's buffer (load prefill with bound=...)")
        self.prefill_engine, self.decode_engine, self.cudart = prefill, decode, decode.cudart
        self.provider = "TensorRT"
        layers, _, kv_heads, self.max_cache_len, head_dim = self.cache_shape
        self.row_bytes = head_dim * self.cache_dtype.itemsize
        self.rows = layers * kv_heads
        self._scalars = {"token": np.zeros((1, 1), np.int64), "position": np.zeros((1,), np.int64),
                         "cache_position": np.zeros((1,), np.int64)}
        self._host_cache = np.zeros(self.cache_shape, self.cache_dtype)  # only a stand-in for check_feed
        self._out = {n: np.zeros(decode.spec.output(n).concrete_shape({}), decode.spec.output(n).dtype) for n in ("logits", "hidden")}

    def prefill(self, embeddings, position_ids):
        engine = self.prefill_engine
        dims = engine.enqueue({"embeddings": embeddings, "position_ids": position_ids})
        out = engine.fetch(("hidden", "logits"), dims)  # synchronises: the cache is written
        self.filled = embeddings.shape[1]
        return out["hidden"], out["logits"]

    def step(self, token, position, cache_position):
        self.check_step(token, cache_position)
        self._scalars["token"][0, 0] = token
        self._scalars["position"][0] = position
        self._scalars["cache_position"][0] = cache_position
        feed = {**self._scalars, "key_cache": self._host_cache, "value_cache": self._host_cache}
        engine = self.decode_engine
        engine.enqueue(feed, skip=CACHE)  # the cache stays on the device
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        pitch = self.max_cache_len * self.row_bytes
        for new, cache in (("new_keys", "key_cache"), ("new_values", "value_cache")):
            check_cuda(self.cudart.cudaMemcpy2DAsync(
                engine.device[cache] + cache_position * self.row_bytes, pitch,
                engine.device[new], self.row_bytes, self.row_bytes, self.rows, kind, engine.stream), f"cudaMemcpy2DAsync into {cache}")
        out = engine.fetch(("logits", "hidden"), {}, self._out)
        self.filled = cache_position + 1
        return out["logits"][0], out["hidden"][0]


def load_tensorrt(bundle: Path, manifest: dict, specs: dict[str, EngineSpec], engines_dir: Path):
    """-> ({name: TensorRTEngine}, TensorRTLanguage) after checking ENGINES_JSON."""
    record_path = engines_dir / ENGINES_JSON
    if not record_path.is_file():
        raise MissingFile(f"no TensorRT engines at {engines_dir} (run: chatvla2 build {bundle} --out {engines_dir})")
    record = json.loads(record_path.read_text())
    check_engine_sources(record, manifest)
    trt, cudart = import_tensorrt(), import_cudart()  # both needed to run engines
    gpu = gpu_identity(cudart)
    check_engines_match(record, trt.__version__, gpu.name, gpu.compute_capability)
    runtime = trt.Runtime(tensorrt_logger(trt))
    engines: dict[str, TensorRTEngine] = {}
    try:
        for name in sorted(specs, key=lambda n: n != "decode"):  # decode first: prefill binds to its cache
            path = engines_dir / record["engines"][name]["file"]
            if not path.is_file():
                raise BundleError(f"{engines_dir}: engine file {path.name} is missing")
            bound = {c: (engines["decode"].device[c], engines["decode"].capacity[c]) for c in CACHE} if name == "prefill" else None
            engines[name] = TensorRTEngine(trt, cudart, runtime, path, specs[name], cuda_graph=name in ("decode", "action_head"), bound=bound)
        language = TensorRTLanguage(engines["prefill"], engines["decode"])
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return {name: engines[name] for name in specs}, language
