"""`LanguageSession`: the prefill + decode engines and the KV cache they share, one per backend.

    hidden, logits = session.prefill(embeddings (1, S, hidden), position_ids (3, 1, S))
    logits, hidden = session.step(token, text_position, cache_position)   # one generated token

The cache has the decode engine's static shape (layers, 1, kv_heads, max_cache_len, head_dim).
Prefill fills positions [0, S); each step writes the token's keys/values at `cache_position`,
which must be the next free position (the cache is append-only within one inference).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.engine import EngineSpec, FeedError


class LanguageSession(ABC):
    provider: str = "?"

    def __init__(self, prefill: EngineSpec, decode: EngineSpec):
        """A prefill graph that outputs the padded cache and a decode graph that reads it."""
        cache = decode.input("key_cache")
        if not all(isinstance(d, int) for d in cache.shape) or len(cache.shape) != 5:
            raise InvalidInput(f"decode key_cache must have a static 5-D shape, the manifest says {cache.shape}")
        for spec, name in ((prefill, "key_cache"), (prefill, "value_cache"), (decode, "value_cache")):
            other = spec.output(name) if spec is prefill else spec.input(name)
            if tuple(other.shape) != tuple(cache.shape) or other.dtype != cache.dtype:
                raise InvalidInput(f"{spec.name} {name} {other.shape} {other.dtype} differs from decode key_cache {cache.shape} {cache.dtype}")
        self.init_cache(tuple(cache.shape), cache.dtype, int(decode.output("logits").shape[-1]))  # type: ignore[arg-type]

    def init_cache(self, shape: tuple[int, ...], dtype: np.dtype, vocab_size: int) -> None:
        """The cache's static shape (layers, 1, kv_heads, max_cache_len, head_dim) and the vocabulary."""
        self.cache_shape = tuple(shape)
        self.cache_dtype = dtype
        self.max_cache_len = self.cache_shape[3]
        self.vocab_size = vocab_size
        self.filled = 0

    def check_step(self, token: int, cache_position: int) -> None:
        if not 0 <= token < self.vocab_size:
            raise FeedError(f"engine 'decode' input 'token': expected an id in [0, {self.vocab_size}), received {token}")
        if cache_position != self.filled or cache_position >= self.max_cache_len:
            raise FeedError(
                f"engine 'decode' input 'cache_position': expected {self.filled} (the next free position, "
                f"< max_cache_len {self.max_cache_len}), received {cache_position}"
            )

    @abstractmethod
    def prefill(self, embeddings: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...

    @abstractmethod
    def step(self, token: int, position: int, cache_position: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (logits (vocab,), hidden (hidden,)); the returned arrays may be reused by the next step."""
