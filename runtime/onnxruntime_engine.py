"""ONNX Runtime engines: TensorRT EP > CUDA EP > CPU EP, whichever this onnxruntime build has.

Sessions come from `runtime.onnxruntime_session.create_session` (it disables the optimiser pass
that breaks Q/DQ graphs). `OnnxRuntimeEngine.run` checks the feed against the manifest, then runs;
outputs named in `out` are written through I/O binding straight into the caller's arrays.

`OnnxRuntimeLanguage` is the prefill + decode pair with the KV cache held by the runtime: the
cache is two numpy arrays allocated once; prefill writes its padded cache output into them
through I/O binding, and each decode step is one `run_with_iobinding` whose inputs (the cache
and three small scalars) and outputs (logits, hidden, the token's keys/values) are bound once to
preallocated memory. The step's new keys/values are written into the cache at `cache_position`
(layers x kv_heads x head_dim values); the cache is never copied per token on the CPU EP. On the
CUDA/TensorRT EPs the bound cache is host memory, so ONNX Runtime copies it to the device on every
step: correct, but the TensorRT backend (`runtime.tensorrt_engine`) is the fast GPU path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort

from runtime.engine import Engine, EngineSpec, FeedError, check_feed, check_out
from runtime.language_session import LanguageSession
from runtime.onnxruntime_session import available_providers, create_session


class OnnxRuntimeEngine(Engine):
    def __init__(self, path: str | Path, spec: EngineSpec, providers: list[str] | None = None, threads: int | None = None):
        self.spec = spec
        self.path = Path(path)
        self.session = create_session(self.path, providers or available_providers(), threads)
        self.provider = self.session.get_providers()[0]
        graph_inputs = [i.name for i in self.session.get_inputs()]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        if sorted(graph_inputs) != sorted(spec.input_names) or sorted(graph_outputs) != sorted(spec.output_names):
            raise ValueError(
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


class OnnxRuntimeLanguage(LanguageSession):
    """Prefill + decode over a runtime-held KV cache (see the module docstring)."""

    def __init__(self, prefill: OnnxRuntimeEngine, decode: OnnxRuntimeEngine):
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
        binding = decode.session.io_binding()
        # OrtValues made from numpy arrays on the CPU share their memory: updating the arrays in place
        # updates the bound inputs, so the binding is made once.
        self._keep = {
            name: ort.OrtValue.ortvalue_from_numpy(array)
            for name, array in (("token", self._token), ("position", self._position),
                                ("cache_position", self._cache_position), ("key_cache", self.key_cache),
                                ("value_cache", self.value_cache))
        }
        for name, value in self._keep.items():
            binding.bind_ortvalue_input(name, value)
        for name, buffer in self._outputs.items():
            binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
        self._binding = binding
        self.provider = decode.provider

    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.prefill_engine.run(
            {"embeddings": embeddings, "position_ids": position_ids},
            out={"key_cache": self.key_cache, "value_cache": self.value_cache},
        )
        self.filled = embeddings.shape[1]
        return out["hidden"], out["logits"]

    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        self.check_step(token, cache_position)
        self._token[0, 0] = token
        self._position[0] = position
        self._cache_position[0] = cache_position
        self.decode_engine.session.run_with_iobinding(self._binding)
        self.key_cache[:, :, :, cache_position] = self._outputs["new_keys"][:, :, :, 0]
        self.value_cache[:, :, :, cache_position] = self._outputs["new_values"][:, :, :, 0]
        self.filled = cache_position + 1
        return self._outputs["logits"][0], self._outputs["hidden"][0]


__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeLanguage", "FeedError"]
