"""The TensorRT backend: runs the engines of `chatvla2 build` (TensorRT 10.x / 11.x, documented API).

Untested in this workplace (no TensorRT here; deploy.md): written small and strict, exercised by
the tests marked `tensorrt`, which skip with a reason where `tensorrt` does not import.

- Before loading, the engines description must name this GPU and TensorRT version (engines are
  specific to both) and each engine's source ONNX hash must match the bundle manifest's (engines
  rebuilt from another bundle are refused): those checks live in `runtime.tensorrt_identity`.
- Calls: `Runtime(logger).deserialize_cuda_engine`, `num_io_tensors`, `get_tensor_name`,
  `get_tensor_mode`, `get_tensor_dtype`, `get_tensor_profile_shape`, `create_execution_context`,
  `set_input_shape`, `get_tensor_shape`, `set_tensor_address`, `execute_async_v3(stream)`.
  CUDA memory, streams and graphs through cuda-python (`cuda.bindings.runtime`).
- Device buffers are allocated once per engine at the largest shape the profile allows and bound
  once with `set_tensor_address`; host arrays are copied in/out per call.
- The KV cache is two device buffers shared by prefill (its key_cache/value_cache outputs) and
  decode (its inputs): prefill writes them in place, and after each decode step the token's
  keys/values are copied into them at cache_position with one strided cudaMemcpy2DAsync per cache
  (layers x kv_heads rows of head_dim values). Nothing crosses to the host but logits and hidden.
- Static-shape engines (decode, action head) are captured once into a CUDA graph after a warm-up
  enqueue and replayed with cudaGraphLaunch (the inputs are copied into the same device buffers
  before each launch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from contract.bundle import BundleError  # stdlib only
from runtime.engine import Engine, EngineSpec, check_feed, check_out
from runtime.language_session import LanguageSession
from runtime.tensorrt_identity import (
    ENGINES_JSON,
    EngineMismatch,
    check_engine_sources,
    check_engines_match,
    gpu_identity,
    import_cudart,
    import_tensorrt,
)


def _check(result):
    """cuda-python returns (error, *values); raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


class TensorRTEngine(Engine):
    def __init__(self, trt, cudart, runtime, path: Path, spec: EngineSpec, stream, cuda_graph: bool = False):
        self.trt, self.cudart, self.spec, self.stream = trt, cudart, spec, stream
        self.provider = "TensorRT"
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
            raise EngineMismatch(f"{path.name}: engine I/O {inputs} -> {outputs} differs from the manifest's {spec.input_names} -> {spec.output_names}")
        for tensor in (*spec.inputs, *spec.outputs):
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor.name)))
            if dtype != tensor.dtype:
                raise EngineMismatch(f"{path.name}: tensor {tensor.name!r} is {dtype} in the engine, {tensor.dtype} in the manifest")
        # Allocate once at the largest shapes: set every dynamic input to its profile maximum.
        for tensor in spec.inputs:
            shape = tuple(self.engine.get_tensor_profile_shape(tensor.name, 0)[2]) if any(isinstance(d, str) for d in tensor.shape) else tensor.shape
            self.context.set_input_shape(tensor.name, shape)
        self.device: dict[str, int] = {}
        self.capacity: dict[str, int] = {}
        for name in names:
            nbytes = int(np.prod(tuple(self.context.get_tensor_shape(name)))) * np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
            self.capacity[name] = nbytes
            self.device[name] = int(_check(cudart.cudaMalloc(max(nbytes, 1))))
            self.context.set_tensor_address(name, self.device[name])
        self.static = all(isinstance(d, int) for t in spec.inputs for d in t.shape)
        self.want_graph = cuda_graph and self.static
        self.graph_exec = None

    def bind(self, name: str, pointer: int) -> None:
        """Point a tensor at memory owned elsewhere (the shared KV cache)."""
        self.context.set_tensor_address(name, pointer)
        self.device[name] = pointer

    def _h2d(self, name: str, value: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpyAsync(self.device[name], value.ctypes.data, value.nbytes, kind, self.stream))

    def enqueue(self, feed: Mapping[str, np.ndarray], skip: tuple[str, ...] = ()) -> dict[str, int]:
        dims = check_feed(self.spec, feed)
        for tensor in self.spec.inputs:
            value = feed[tensor.name]
            if value.nbytes > self.capacity[tensor.name]:
                raise ValueError(f"engine {self.spec.name!r} input {tensor.name!r}: {value.nbytes} bytes exceed the buffer ({self.capacity[tensor.name]})")
            if not self.static:
                self.context.set_input_shape(tensor.name, value.shape)
            if tensor.name not in skip:
                self._h2d(tensor.name, value)
        if self.want_graph and self.graph_exec is None:
            self.context.execute_async_v3(int(self.stream))  # warm-up enqueue before capture (TensorRT docs)
            mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _check(self.cudart.cudaStreamBeginCapture(self.stream, mode))
            self.context.execute_async_v3(int(self.stream))
            graph = _check(self.cudart.cudaStreamEndCapture(self.stream))
            self.graph_exec = _check(self.cudart.cudaGraphInstantiate(graph, 0))
        if self.graph_exec is not None:
            _check(self.cudart.cudaGraphLaunch(self.graph_exec, self.stream))
        elif not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"engine {self.spec.name!r}: execute_async_v3 failed")
        return dims

    def fetch(self, names, dims: Mapping[str, int], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        results = {}
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            array = (out or {}).get(name)
            if array is None:
                array = np.empty(shape, self.spec.output(name).dtype)
            else:
                check_out(self.spec, {name: array}, {name: shape})
            _check(self.cudart.cudaMemcpyAsync(array.ctypes.data, self.device[name], array.nbytes, kind, self.stream))
            results[name] = array
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return results

    def run(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        dims = self.enqueue(feed)
        return self.fetch(self.spec.output_names, dims, out)

    def close(self) -> None:
        if self.graph_exec is not None:
            self.cudart.cudaGraphExecDestroy(self.graph_exec)
            self.graph_exec = None
        for name, pointer in self.device.items():
            if self.capacity.get(name):
                self.cudart.cudaFree(pointer)
        self.device.clear()


class TensorRTLanguage(LanguageSession):
    """Prefill and decode sharing one device-resident KV cache (see the module docstring)."""

    def __init__(self, prefill: TensorRTEngine, decode: TensorRTEngine):
        super().__init__(prefill.spec, decode.spec)
        self.prefill_engine, self.decode_engine, self.cudart = prefill, decode, decode.cudart
        self.provider = "TensorRT"
        for name in ("key_cache", "value_cache"):
            # decode's own input buffers become the cache; prefill writes straight into them
            prefill.bind(name, decode.device[name])
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
        out = engine.fetch(("hidden", "logits"), dims)
        self.filled = embeddings.shape[1]
        return out["hidden"], out["logits"]

    def step(self, token, position, cache_position):
        self.check_step(token, cache_position)
        self._scalars["token"][0, 0] = token
        self._scalars["position"][0] = position
        self._scalars["cache_position"][0] = cache_position
        feed = {**self._scalars, "key_cache": self._host_cache, "value_cache": self._host_cache}
        engine = self.decode_engine
        engine.enqueue(feed, skip=("key_cache", "value_cache"))  # the cache stays on the device
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        pitch = self.max_cache_len * self.row_bytes
        for new, cache in (("new_keys", "key_cache"), ("new_values", "value_cache")):
            _check(self.cudart.cudaMemcpy2DAsync(
                engine.device[cache] + cache_position * self.row_bytes, pitch,
                engine.device[new], self.row_bytes, self.row_bytes, self.rows, kind, engine.stream))
        out = engine.fetch(("logits", "hidden"), {}, self._out)
        self.filled = cache_position + 1
        return out["logits"][0], out["hidden"][0]


def load_tensorrt(bundle: Path, manifest: dict, specs: dict[str, EngineSpec], engines_dir: Path):
    """-> ({name: TensorRTEngine}, TensorRTLanguage) after checking ENGINES_JSON."""
    record_path = engines_dir / ENGINES_JSON
    if not record_path.is_file():
        raise FileNotFoundError(f"no TensorRT engines at {engines_dir} (run: chatvla2 build {bundle} --out {engines_dir})")
    record = json.loads(record_path.read_text())
    check_engine_sources(record, manifest)
    trt, cudart = import_tensorrt(), import_cudart()  # both needed to run engines
    gpu_name, capability = gpu_identity()
    check_engines_match(record, trt.__version__, gpu_name, capability)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    stream = _check(cudart.cudaStreamCreate())
    engines = {}
    for name, spec in specs.items():
        path = engines_dir / record["engines"][name]["file"]
        if not path.is_file():
            raise BundleError(f"{engines_dir}: engine file {path.name} is missing")
        engines[name] = TensorRTEngine(trt, cudart, runtime, path, spec, stream, cuda_graph=name in ("decode", "action_head"))
    return engines, TensorRTLanguage(engines["prefill"], engines["decode"])
