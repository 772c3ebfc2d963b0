"""ONNX Runtime engines: TensorRT EP > CUDA EP > CPU EP, whichever this onnxruntime build has.

Sessions come from `runtime.onnxruntime_session.create_session` (it disables the optimiser pass
that breaks Q/DQ graphs). `OnnxRuntimeEngine.run` checks the feed against the manifest, then runs;
outputs named in `out` are written through I/O binding straight into the caller's arrays.

`OnnxRuntimeLanguage` is the prefill + decode pair with the KV cache held by the runtime: the
cache is two numpy arrays allocated once; prefill writes its padded cache output into them
through I/O binding, and each decode step is one `run_with_iobinding` whose inputs (the cache
and three small scalars) and outputs (logits, hidden, the token's keys/values) are bound once to
preallocated memory. The step's new keys/values are written into the cache at `cache_position`
(layers x kv_heads x head_dim values); the cache is never copied per token on the CPU EP.

On the CUDA/TensorRT EPs (onnxruntime-gpu, the `gpu` extra) the cache lives on the GPU instead
(`DeviceCache`): two OrtValues allocated once on the device, bound as prefill's cache outputs and
decode's cache inputs, and the step's new keys/values (also device OrtValues) are copied into them
at `cache_position` with one strided device-to-device copy per cache (cuda-python's
cudaMemcpy2DAsync, the TensorRT backend's copy); only the scalars in and logits/hidden out cross to
the host. `cache_device="cpu"` runs that same path with CPU OrtValues and a host row copy: how it is
tested where there is no GPU. The CPU EP keeps the numpy path above, unchanged.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.engine import Engine, EngineSpec, FeedError, check_feed, check_out
from chatvla2.runtime.language_session import LanguageSession
from chatvla2.runtime.onnxruntime_session import available_providers, create_session
from chatvla2.runtime.tensorrt_identity import check_cuda, import_cudart

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
CACHE = ("key_cache", "value_cache")


class OnnxRuntimeEngine(Engine):
    def __init__(self, path: str | Path, spec: EngineSpec, providers: list[str] | None = None, threads: int | None = None,
                 spin: bool = False):
        self.spec = spec
        self.path = Path(path)
        self.session = create_session(self.path, providers or available_providers(), threads, spin)
        self.provider = self.session.get_providers()[0]
        graph_inputs = [i.name for i in self.session.get_inputs()]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        if sorted(graph_inputs) != sorted(spec.input_names) or sorted(graph_outputs) != sorted(spec.output_names):
            raise InvalidInput(
                f"{self.path.name}: the graph's inputs {graph_inputs} / outputs {graph_outputs} differ from the "
                f"manifest's {spec.input_names} / {spec.output_names}"
            )

    def run(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        dims = check_feed(self.spec, feed)
        if not out:
            return dict(zip(self.spec.output_names, self.session.run(self.spec.output_names, dict(feed))))
        # Outputs whose shape is fully known from the feed can be bound to the caller's buffers.
        shapes = {name: self.spec.output(name).concrete_shape(dims) for name in out}
        check_out(self.spec, out, shapes)
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        for tensor in self.spec.outputs:
            if tensor.name in out:
                buffer = out[tensor.name]
                binding.bind_output(tensor.name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
            else:
                binding.bind_output(tensor.name, "cpu")
        self.session.run_with_iobinding(binding)
        results = dict(zip(self.spec.output_names, binding.copy_outputs_to_cpu()))
        results.update(out)  # the bound buffers themselves (already written)
        return results


def bind_host_arrays(session: ort.InferenceSession, inputs: Mapping[str, np.ndarray],
                     outputs: Mapping[str, np.ndarray]) -> tuple[ort.IOBinding, dict[str, ort.OrtValue]]:
    """An I/O binding made once: each input an OrtValue over its numpy array (on the CPU they share
    memory, so updating an array in place updates the bound input), each output written straight
    into its array. Returns the binding and the OrtValues, which must live as long as it."""
    keep = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in inputs.items()}
    binding = session.io_binding()
    for name, value in keep.items():
        binding.bind_ortvalue_input(name, value)
    for name, buffer in outputs.items():
        binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
    return binding, keep


def _host_copy2d(dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int) -> None:
    for row in range(rows):
        ctypes.memmove(dst + row * dst_pitch, src + row * src_pitch, width)


def _cuda_copy2d(cudart):
    def copy(dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int) -> None:
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        check_cuda(cudart.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, kind, 0), "cudaMemcpy2DAsync into the KV cache")
        check_cuda(cudart.cudaStreamSynchronize(0), "cudaStreamSynchronize")  # done before the next run reads the cache
    return copy


class DeviceCache:
    """The KV cache and the step's new keys/values as OrtValues on `device`, allocated once."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device: str, device_id: int = 0):
        layers, _, kv_heads, slots, head_dim = shape
        self.device, self.rows = device, layers * kv_heads
        self.row_bytes = head_dim * dtype.itemsize
        self.pitch = slots * self.row_bytes
        new_shape = [layers, 1, kv_heads, 1, head_dim]
        self.cache = {n: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, device, device_id) for n in CACHE}
        self.new = {n: ort.OrtValue.ortvalue_from_shape_and_type(new_shape, dtype, device, device_id) for n in ("new_keys", "new_values")}
        # cuda-python only where the cache is on the GPU (the `gpu` extra installs it)
        self.copy2d = _host_copy2d if device == "cpu" else _cuda_copy2d(import_cudart())

    def write(self, cache_position: int) -> None:
        """cache[:, :, :, cache_position] = new[:, :, :, 0], on the device."""
        for new, cache in (("new_keys", "key_cache"), ("new_values", "value_cache")):
            self.copy2d(self.cache[cache].data_ptr() + cache_position * self.row_bytes, self.pitch,
                        self.new[new].data_ptr(), self.row_bytes, self.row_bytes, self.rows)


class OnnxRuntimeLanguage(LanguageSession):
    """Prefill + decode over a runtime-held KV cache (see the module docstring).

    `cache_device`: None picks "cuda" when decode runs on a GPU execution provider, else this class's
    host path; "cuda" or "cpu" (CPU OrtValues: how the device path is tested without a GPU) make an
    `OnnxRuntimeDeviceLanguage`. A subclass, so the CPU path's step carries no extra test per token."""

    def __new__(cls, prefill: OnnxRuntimeEngine, decode: OnnxRuntimeEngine, cache_device: str | None = None):
        if cls is OnnxRuntimeLanguage and (cache_device is not None or decode.provider in GPU_PROVIDERS):
            cls = OnnxRuntimeDeviceLanguage
        return super().__new__(cls)

    def __init__(self, prefill: OnnxRuntimeEngine, decode: OnnxRuntimeEngine, cache_device: str | None = None):
        super().__init__(prefill.spec, decode.spec)
        self.prefill_engine, self.decode_engine = prefill, decode
        self.key_cache = np.zeros(self.cache_shape, self.cache_dtype)
        self.value_cache = np.zeros(self.cache_shape, self.cache_dtype)
        spec = decode.spec
        self._token = np.zeros((1, 1), np.int64)
        self._position = np.zeros((1,), np.int64)
        self._cache_position = np.zeros((1,), np.int64)
        check_feed(spec, {"token": self._token, "position": self._position, "cache_position": self._cache_position,
                          "key_cache": self.key_cache, "value_cache": self.value_cache})
        self._outputs = {t.name: np.zeros(t.concrete_shape({}), t.dtype) for t in spec.outputs}
        self._binding, self._keep = bind_host_arrays(
            decode.session,
            {"token": self._token, "position": self._position, "cache_position": self._cache_position,
             "key_cache": self.key_cache, "value_cache": self.value_cache},
            self._outputs,
        )
        self.provider = decode.provider

    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.prefill_engine.run(
            {"embeddings": embeddings, "position_ids": position_ids},
            out={"key_cache": self.key_cache, "value_cache": self.value_cache},
        )
        self.filled = embeddings.shape[1]
        return out["hidden"], out["logits"]

    def _run_decode(self, token: int, position: int, cache_position: int) -> None:
        """One decode run on the bound inputs and outputs (both cache placements)."""
        self.check_step(token, cache_position)
        self._token[0, 0] = token
        self._position[0] = position
        self._cache_position[0] = cache_position
        self.decode_engine.session.run_with_iobinding(self._binding)

    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        self._run_decode(token, position, cache_position)
        self.key_cache[:, :, :, cache_position] = self._outputs["new_keys"][:, :, :, 0]
        self.value_cache[:, :, :, cache_position] = self._outputs["new_values"][:, :, :, 0]
        self.filled = cache_position + 1
        return self._outputs["logits"][0], self._outputs["hidden"][0]


class OnnxRuntimeDeviceLanguage(OnnxRuntimeLanguage):
    """The KV cache on the execution provider's device (`DeviceCache`; see the module docstring)."""

    def __init__(self, prefill: OnnxRuntimeEngine, decode: OnnxRuntimeEngine, cache_device: str | None = None):
        LanguageSession.__init__(self, prefill.spec, decode.spec)
        self.prefill_engine, self.decode_engine, self.provider = prefill, decode, decode.provider
        self.device_cache = DeviceCache(self.cache_shape, self.cache_dtype, cache_device or "cuda")
        self._token = np.zeros((1, 1), np.int64)
        self._position = np.zeros((1,), np.int64)
        self._cache_position = np.zeros((1,), np.int64)
        self._outputs = {n: np.zeros(decode.spec.output(n).concrete_shape({}), decode.spec.output(n).dtype) for n in ("logits", "hidden")}
        # Bound once: the scalars from host arrays (ONNX Runtime copies these few bytes in), logits and
        # hidden into host arrays, the cache and the new keys/values on the device.
        binding = decode.session.io_binding()
        self._keep = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in
                      (("token", self._token), ("position", self._position), ("cache_position", self._cache_position))}
        for name, value in (*self._keep.items(), *self.device_cache.cache.items()):
            binding.bind_ortvalue_input(name, value)
        for name in decode.spec.output_names:
            if name in self._outputs:
                buffer = self._outputs[name]
                binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
            else:
                binding.bind_ortvalue_output(name, self.device_cache.new[name])
        self._binding = binding

    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        engine = self.prefill_engine
        feed = {"embeddings": embeddings, "position_ids": position_ids}
        check_feed(engine.spec, feed)
        binding = engine.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        for name in engine.spec.output_names:
            if name in CACHE:
                binding.bind_ortvalue_output(name, self.device_cache.cache[name])  # written where decode reads it
            else:
                binding.bind_output(name, "cpu")
        engine.session.run_with_iobinding(binding)
        outputs = dict(zip(engine.spec.output_names, binding.get_outputs()))
        self.filled = embeddings.shape[1]
        return outputs["hidden"].numpy(), outputs["logits"].numpy()

    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        self._run_decode(token, position, cache_position)
        self._binding.synchronize_outputs()  # the new keys/values are complete before they are copied
        self.device_cache.write(cache_position)
        self.filled = cache_position + 1
        return self._outputs["logits"][0], self._outputs["hidden"][0]

    def cache_arrays(self) -> dict[str, np.ndarray]:
        """Host copies of the cache (tests, debugging)."""
        return {name: value.numpy() for name, value in self.device_cache.cache.items()}


__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeLanguage", "OnnxRuntimeDeviceLanguage", "FeedError"]
