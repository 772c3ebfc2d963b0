"""`OnnxRuntimeSharedLanguage`: prefill and decode through one graph, one ONNX Runtime session.

The cpu target exports the language model once (`language.onnx`, export/graphs.py LanguageGraph:
T new tokens after the cache's first `cache_position` entries), so its weights are in memory once,
prepacked once, where a prefill graph and a decode graph would each hold their own copy. Both entries
of the manifest ("prefill", "decode") name that file (contract/bundle.py `shared_language`).

- prefill: the prompt's embeddings after an empty cache (0 slots: no attention to pay for), the
  prompt's keys/values copied into the runtime's cache at [0, S);
- step: the token's embedding row from the runtime's table (the table the prompt is embedded with)
  into a bound input, its text position on the three M-RoPE axes, each layer's slice of the static
  cache bound in place as that layer's input (read, never copied), and the token's keys/values written into the cache at `cache_position`.
  Every decode input and output is bound once to preallocated arrays, as in `OnnxRuntimeLanguage`.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.engine import EngineSpec, check_feed
from chatvla2.runtime.language_session import LanguageSession
from chatvla2.runtime.onnxruntime_engine import OnnxRuntimeEngine, bind_host_arrays


def cache_inputs(spec: EngineSpec) -> tuple[list[str], list[str]]:
    """The graph's per-layer cache inputs, key_cache_<i> and value_cache_<i>, in layer order."""
    keys = sorted((t.name for t in spec.inputs if t.name.startswith("key_cache_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    values = [name.replace("key_", "value_", 1) for name in keys]
    missing = [name for name in values if name not in spec.input_names]
    if not keys or missing:
        raise InvalidInput(f"engine {spec.name!r}: the shared language graph needs key_cache_<i> and value_cache_<i> inputs "
                         f"per layer, it has {', '.join(spec.input_names)}")
    return keys, values


def static_cache_shape(decode: EngineSpec) -> tuple[int, ...]:
    """The runtime's cache (layers, 1, kv_heads, max_cache_len, head_dim): one layer's slice is what a
    decode step feeds, the decode entry's profile for key_cache_0 (min = max, static)."""
    keys, _ = cache_inputs(decode)
    limits = (decode.limits or {}).get(keys[0])
    if limits is None or limits[0] != limits[1] or len(limits[1]) != 4:
        raise InvalidInput(f"engine {decode.name!r}: the shared language graph needs a static 4-D {keys[0]} profile, "
                         f"the manifest gives {limits}")
    return (len(keys), *limits[1])


class OnnxRuntimeSharedLanguage(LanguageSession):
    def __init__(self, engine: OnnxRuntimeEngine, decode: EngineSpec, token_embedding: np.ndarray):
        """engine: the shared graph's session, its spec the manifest's prefill entry (whose profiles
        bound a prefill's feed); decode: the manifest's decode entry (its profiles bound a step's feed:
        the static cache); token_embedding (vocab, hidden)."""
        key_names, value_names = cache_inputs(decode)
        self.init_cache(static_cache_shape(decode), decode.input(key_names[0]).dtype, int(decode.output("logits").shape[-1]))
        hidden = decode.input("embeddings").shape[-1]
        if token_embedding.shape != (self.vocab_size, hidden):
            raise InvalidInput(f"token embedding table {token_embedding.shape}, the language graph needs ({self.vocab_size}, {hidden})")
        self.engine, self.provider = engine, engine.provider
        self.token_embedding = token_embedding
        dtype = decode.input("embeddings").dtype
        self.key_cache = np.zeros(self.cache_shape, self.cache_dtype)
        self.value_cache = np.zeros(self.cache_shape, self.cache_dtype)
        _, batch, kv_heads, _, head_dim = self.cache_shape
        # A prefill's cache: every layer empty (0 slots).
        empty = np.zeros((batch, kv_heads, 0, head_dim), self.cache_dtype)
        self._prefill_caches = dict.fromkeys(key_names + value_names, empty)
        # The decode step's inputs, updated in place (OrtValues over numpy arrays share their memory).
        self._embedding = np.zeros((1, 1, hidden), dtype)
        self._position_ids = np.zeros((3, 1, 1), np.int64)
        self._cache_position = np.zeros((1,), np.int64)
        # Each layer's cache input is that layer's slice of the runtime's cache: a contiguous view.
        step_feed = {"embeddings": self._embedding, "position_ids": self._position_ids, "cache_position": self._cache_position,
                     **dict(zip(key_names, self.key_cache)), **dict(zip(value_names, self.value_cache))}
        dims = check_feed(decode, step_feed)
        self._outputs = {t.name: np.zeros(t.concrete_shape(dims), t.dtype) for t in decode.outputs}
        self._binding, self._keep = bind_host_arrays(engine.session, step_feed, self._outputs)

    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # checked against the prefill entry's profiles (a prompt shorter than the cache, 0 cache slots)
        out = self.engine.run({"embeddings": embeddings, "position_ids": position_ids,
                               "cache_position": np.zeros((1,), np.int64), **self._prefill_caches})
        length = embeddings.shape[1]
        self.key_cache[:, :, :, :length] = out["new_keys"]
        self.value_cache[:, :, :, :length] = out["new_values"]
        self.filled = length
        return out["hidden"], out["logits"]

    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        self.check_step(token, cache_position)
        self._embedding[0, 0] = self.token_embedding[token]
        self._position_ids[:] = position
        self._cache_position[0] = cache_position
        self.engine.session.run_with_iobinding(self._binding)
        self.key_cache[:, :, :, cache_position] = self._outputs["new_keys"][:, :, :, 0]
        self.value_cache[:, :, :, cache_position] = self._outputs["new_values"][:, :, :, 0]
        self.filled = cache_position + 1
        return self._outputs["logits"][0], self._outputs["hidden"][0, 0]


__all__ = ["OnnxRuntimeSharedLanguage", "cache_inputs", "static_cache_shape"]
