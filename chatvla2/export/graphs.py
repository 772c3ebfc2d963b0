"""The four engines of a bundle as torch modules with plain-tensor inputs and outputs, ready to
trace. Each wraps a part of `models.vla.ChatVLA2` without changing its numerics.

- vision:      pixels (views, 3, H, W) -> visual embeddings (views * tokens_per_view, hidden)
- prefill:     embeddings (1, S, hidden), position_ids (3, 1, S)
               -> hidden (1, S, hidden), logits of the last position (1, vocab),
                  key/value caches (layers, 1, kv_heads, max_cache_len, head_dim) filled at [0, S)
- decode:      token (1, 1) int64, position (1,) int64 (M-RoPE text position), cache_position (1,)
               int64, key/value caches -> logits (1, vocab), hidden (1, hidden),
               the token's keys/values (layers, 1, kv_heads, 1, head_dim), which the runtime
               writes into its cache at cache_position (the cache itself is never copied)
- language:    (the cpu target's prefill and decode in one graph, one copy of the weights)
               embeddings (1, T, hidden), position_ids (3, 1, T), cache_position (1,) int64,
               key_cache_<i> / value_cache_<i> (1, kv_heads, slots, head_dim) per layer (read only)
               -> hidden (1, T, hidden), logits of the last position (1, vocab),
               the T tokens' keys/values (layers, 1, kv_heads, T, head_dim), which the runtime
               writes into its cache at [cache_position, cache_position + T). A prefill is T =
               prompt length at cache_position 0; a decode step is T = 1 with the token's embedding
               looked up by the runtime (it holds the table for the prompt already).
- action_head: o (1, hidden), r (1, hidden), state (1, state_dim) normalised,
               noise (1, chunk, action_dim), prefix_actions (1, chunk, action_dim) normalised,
               prefix_len (1,) int64 -> normalised action chunk, every DDIM step inside; its first
               prefix_len steps are prefix_actions' (real-time chunking; 0: no prefix)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.models.vla import ChatVLA2


class VisionGraph(nn.Module):
    def __init__(self, model: ChatVLA2):
        super().__init__()
        self.vision = model.vision

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision(pixels)


class PrefillGraph(nn.Module):
    def __init__(self, model: ChatVLA2):
        super().__init__()
        self.language = model.language

    def forward(self, embeddings: torch.Tensor, position_ids: torch.Tensor):
        hidden, logits, keys, values = self.language.prefill(embeddings, position_ids)
        # Pad the prompt's keys/values to the static cache length: the decode step reads this
        # buffer as it is.
        padding = self.language.cfg.max_cache_len - keys.shape[-2]
        keys = F.pad(keys, (0, 0, 0, padding))
        values = F.pad(values, (0, 0, 0, padding))
        return hidden, logits, keys, values


class DecodeGraph(nn.Module):
    def __init__(self, model: ChatVLA2):
        super().__init__()
        self.language = model.language

    def forward(self, token, position, cache_position, key_cache, value_cache):
        embedding = self.language.embed_tokens(token)
        position_ids = position.view(1, 1, 1).expand(3, 1, 1)
        return self.language.decode_step(embedding, position_ids, cache_position, key_cache, value_cache)


class LanguageGraph(nn.Module):
    def __init__(self, model: ChatVLA2):
        super().__init__()
        self.language = model.language

    def forward(self, embeddings, position_ids, cache_position, *caches):
        """caches: each layer's keys, then each layer's values, (1, kv_heads, slots, head_dim) each:
        one input per layer, so each is the runtime's cache slice read in place (indexing one stacked
        input would copy every layer's cache out of it on every token)."""
        layers = len(caches) // 2
        return self.language.extend(embeddings, position_ids, cache_position, caches[:layers], caches[layers:])


class ActionHeadGraph(nn.Module):
    def __init__(self, model: ChatVLA2):
        super().__init__()
        self.action_head = model.action_head

    def forward(self, o, r, state, noise, prefix_actions, prefix_len):
        return self.action_head.sample(o, r, state, noise, prefix_actions, prefix_len)
