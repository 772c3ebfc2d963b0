"""The exported PyTorch modules behind the runtime's `Engine` contract: a PyTorch backend.

`torch_policy(model)` is a `runtime.policy.Policy` whose four engines are the very modules that
`chatvla2 export` traces (`export.graphs`), run eagerly. So the eager reference timing
(`calibration.reference_timing`) and the recording of engine inputs (`export.calibration_data`)
go through the same inference code as the robot, and `ChatVLA2.act` stays an independent
reference for the parity tests.

`observer(engine, feed)`, when given, sees every engine's feed (numpy arrays, the decode step's
KV cache included) before it runs: that is how calibration inputs are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from chatvla2.export.onnx_export import TraceSpec, engine_specs
from chatvla2.models.vla import ChatVLA2
from chatvla2.runtime.engine import Engine, EngineSpec, TensorSpec, check_feed
from chatvla2.runtime.language_session import LanguageSession
from chatvla2.runtime.policy import Policy

Observer = Callable[[str, Mapping[str, np.ndarray]], None]


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)


def engine_spec_of(trace: TraceSpec) -> EngineSpec:
    """The engine's I/O as a manifest would record it: the example inputs' shapes with the dynamic
    axes named, the outputs' from one run on the example inputs."""
    with torch.inference_mode():
        outputs = trace.module(*trace.example_inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)

    def described(name: str, tensor: torch.Tensor) -> TensorSpec:
        dynamic = trace.dynamic_axes.get(name, {})
        shape = tuple(dynamic.get(axis, size) for axis, size in enumerate(tensor.shape))
        return TensorSpec(name, shape, _numpy_dtype(tensor.dtype))

    return EngineSpec(
        trace.name,
        tuple(described(n, t) for n, t in zip(trace.input_names, trace.example_inputs)),
        tuple(described(n, t) for n, t in zip(trace.output_names, outputs)),
        {},
    )


class TorchEngine(Engine):
    provider = "torch-eager"

    def __init__(self, trace: TraceSpec, observer: Observer | None = None):
        self.trace, self.spec, self.observer = trace, engine_spec_of(trace), observer
        self.module = trace.module.eval()

    def run(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        check_feed(self.spec, feed)
        if self.observer is not None:
            self.observer(self.spec.name, feed)
        with torch.inference_mode():
            outputs = self.module(*(torch.from_numpy(feed[name]) for name in self.spec.input_names))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        results = {name: value.numpy() for name, value in zip(self.spec.output_names, outputs)}
        for name, buffer in (out or {}).items():
            np.copyto(buffer, results[name])
            results[name] = buffer
        return results


class TorchLanguage(LanguageSession):
    """Prefill + decode over a numpy KV cache that the decode module reads in place (torch
    tensors made with `from_numpy` share the memory). Each stage runs in its own MoE form, as
    export writes them (`prefill_moe`, `decode_moe`: "gather" or "dense")."""

    provider = "torch-eager"

    def __init__(self, model: ChatVLA2, prefill: TorchEngine, decode: TorchEngine, prefill_moe: str, decode_moe: str):
        super().__init__(prefill.spec, decode.spec)
        self.model, self.prefill_engine, self.decode_engine = model, prefill, decode
        self.prefill_moe, self.decode_moe = prefill_moe, decode_moe
        self.key_cache = np.zeros(self.cache_shape, self.cache_dtype)
        self.value_cache = np.zeros(self.cache_shape, self.cache_dtype)

    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.model.set_moe_implementation(self.prefill_moe)
        out = self.prefill_engine.run({"embeddings": embeddings, "position_ids": position_ids},
                                      out={"key_cache": self.key_cache, "value_cache": self.value_cache})
        self.filled = embeddings.shape[1]
        return out["hidden"], out["logits"]

    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        self.check_step(token, cache_position)
        self.model.set_moe_implementation(self.decode_moe)
        out = self.decode_engine.run({
            "token": np.array([[token]], np.int64), "position": np.array([position], np.int64),
            "cache_position": np.array([cache_position], np.int64),
            "key_cache": self.key_cache, "value_cache": self.value_cache,
        })
        self.key_cache[:, :, :, cache_position] = out["new_keys"][:, :, :, 0]
        self.value_cache[:, :, :, cache_position] = out["new_values"][:, :, :, 0]
        self.filled = cache_position + 1
        return out["logits"][0], out["hidden"][0]


def torch_policy(model: ChatVLA2, prefill_moe: str = "dense", decode_moe: str = "gather",
                 observer: Observer | None = None) -> Policy:
    """`model` as a `Policy` on the PyTorch backend (the defaults are export's MoE forms at fp32)."""
    if model.tokenizer is None or model.stats is None:
        raise ValueError("a policy needs the model's tokenizer and normalization statistics (load a checkpoint)")
    model.eval()
    engines = {trace.name: TorchEngine(trace, observer) for trace in engine_specs(model)}
    language = TorchLanguage(model, engines["prefill"], engines["decode"], prefill_moe, decode_moe)
    table = model.language.embed_tokens.weight.detach().float().cpu().numpy()
    return Policy(model.cfg, model.tokenizer, model.stats, table, engines, language, "torch",
                  source=f"PyTorch {model.cfg.name}")
