"""The language model: a Qwen2-style decoder whose MLPs are dynamic mixtures of experts.

RMSNorm, q/k/v projections with bias, grouped-query attention, SwiGLU experts, M-RoPE.

The KV-cache interface is what export traces, so it has no data-dependent Python branching:
- `prefill(embeddings, position_ids)` runs the whole prompt and returns its keys and values;
- `decode_step(embedding, position_ids, cache_position, key_cache, value_cache)` runs one token
  against a static, preallocated cache of `max_cache_len` positions (entries at and after
  `cache_position` are masked out) and returns only the new token's keys and values. The caller
  writes them into its cache in place (`write_cache`), so the cache is never copied per token.
Cache layout: (layers, batch, kv_heads, max_cache_len, head_dim), one tensor for keys, one for values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.contract.config import LanguageConfig
from chatvla2.models.moe import DynamicMoE, SwiGLU
from chatvla2.models.rope import MultimodalRotaryEmbedding, apply_rotary


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32 whatever the input dtype, as Qwen2 does.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def _masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    scores = scores.float().masked_fill(~allowed, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Grouped-query attention: `heads` query heads share `kv_heads` key/value heads."""

    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.groups = cfg.heads // cfg.kv_heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        # Training only (training/reading_attention.py): keep the last full-sequence forward's
        # attention probabilities (B, kv_heads, groups, S, S) in `probabilities`.
        self.keep_probabilities = False
        self.probabilities: torch.Tensor | None = None

    def _project(self, x, cos, sin):
        batch, seq, _ = x.shape
        # Queries grouped by the key/value head they share: (B, kv_heads, groups, S, head_dim).
        q = self.q_proj(x).view(batch, seq, self.kv_heads, self.groups, self.head_dim).permute(0, 2, 3, 1, 4)
        k = self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos.unsqueeze(1), sin.unsqueeze(1))
        k = apply_rotary(k, cos, sin)
        return q, k, v

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        batch, _, _, seq, _ = out.shape
        return self.o_proj(out.permute(0, 3, 1, 2, 4).reshape(batch, seq, self.heads * self.head_dim))

    def forward(self, x, cos, sin, allowed):
        """Full sequence. allowed: (B, 1, 1, S, S) bool, which keys each query may see.
        Returns the output and this sequence's keys and values (B, kv_heads, S, head_dim)."""
        q, k, v = self._project(x, cos, sin)
        scores = (q @ k.unsqueeze(2).transpose(-1, -2)) * self.scale
        probabilities = _masked_softmax(scores, allowed).to(v.dtype)
        if self.keep_probabilities:
            self.probabilities = probabilities
        return self._output(probabilities @ v.unsqueeze(2)), k, v

    def extend(self, x, cos, sin, key_cache, value_cache, past_allowed):
        """New tokens (B, S, hidden) after those in the static cache (B, kv_heads, L, head_dim) of
        this layer: a decode step (S = 1), or a prompt after an empty cache (S = prompt length).
        past_allowed: (L,) bool, the cache entries that hold earlier tokens. The new tokens' own
        keys/values are attended to separately (causally among themselves), so the cache is only
        read, never concatenated or copied."""
        q, k, v = self._project(x, cos, sin)  # q (B, kvh, g, S, d); k, v (B, kvh, S, d)
        seq = x.shape[1]
        past_scores = q @ key_cache.unsqueeze(2).transpose(-1, -2)  # (B, kvh, g, S, L)
        own_scores = q @ k.unsqueeze(2).transpose(-1, -2)  # (B, kvh, g, S, S)
        scores = torch.cat((past_scores, own_scores), dim=-1) * self.scale
        index = torch.arange(seq, device=x.device)
        causal = index.view(-1, 1) >= index.view(1, -1)  # (S, S)
        allowed = torch.cat((past_allowed.view(1, -1).expand(seq, -1), causal), dim=-1)
        probabilities = _masked_softmax(scores, allowed).to(v.dtype)
        past_length = key_cache.shape[-2]
        out = probabilities[..., :past_length] @ value_cache.unsqueeze(2)
        out = out + probabilities[..., past_length:] @ v.unsqueeze(2)
        return self._output(out), k, v


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LanguageConfig, index: int):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attention_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        if cfg.moe.applies_to(index):
            self.mlp: nn.Module = DynamicMoE(cfg.hidden, cfg.intermediate, cfg.moe.num_experts, cfg.moe.top_k)
        else:
            self.mlp = SwiGLU(cfg.hidden, cfg.intermediate)

    def _mlp(self, x, router_logits: list | None):
        if router_logits is not None and isinstance(self.mlp, DynamicMoE):
            out, logits = self.mlp(x, return_router_logits=True)
            router_logits.append(logits)
            return out
        return self.mlp(x)

    def forward(self, x, cos, sin, allowed, router_logits=None):
        attended, k, v = self.attn(self.input_norm(x), cos, sin, allowed)
        x = x + attended
        return x + self._mlp(self.post_attention_norm(x), router_logits), k, v

    def extend(self, x, cos, sin, key_cache, value_cache, past_allowed):
        attended, k, v = self.attn.extend(self.input_norm(x), cos, sin, key_cache, value_cache, past_allowed)
        x = x + attended
        return x + self.mlp(self.post_attention_norm(x)), k, v


class LanguageModel(nn.Module):
    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        # Qwen2-VL-2B ties the output head to the token embedding.
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        self.rotary = MultimodalRotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.mrope_section)

    def set_moe_implementation(self, name: str) -> None:
        for layer in self.layers:
            if isinstance(layer.mlp, DynamicMoE):
                layer.mlp.implementation = name

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight)

    def forward(self, embeddings, position_ids, attention_mask=None, router_logits: list | None = None):
        """Full-sequence forward (training, and the reference for the cache).
        embeddings (B, S, hidden); position_ids (3, B, S); attention_mask (B, S) bool/int, 1 = real
        token (right padding). Returns the last layer's normalised hidden states (B, S, hidden) and
        per-layer keys and values. Router logits are appended to `router_logits` if given."""
        seq = embeddings.shape[1]
        # Causal mask as a comparison of positions (Range + GreaterOrEqual once exported).
        index = torch.arange(seq, device=embeddings.device)
        allowed = (index.view(-1, 1) >= index.view(1, -1)).view(1, 1, 1, seq, seq)
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool().view(-1, 1, 1, 1, seq)
        cos, sin = self.rotary(position_ids)
        x, keys, values = embeddings, [], []
        for layer in self.layers:
            x, k, v = layer(x, cos, sin, allowed, router_logits)
            keys.append(k)
            values.append(v)
        return self.norm(x), keys, values

    def prefill(self, embeddings, position_ids):
        """The prompt at once. Returns hidden states (B, S, hidden), the last position's logits
        (B, vocab) and the keys and values (layers, B, kv_heads, S, head_dim) to write at [0, S)."""
        hidden, keys, values = self(embeddings, position_ids)
        return hidden, self.logits(hidden[:, -1]), torch.stack(keys), torch.stack(values)

    def extend(self, embeddings, position_ids, cache_position, key_cache, value_cache):
        """S new tokens after the `cache_position` tokens already in the cache: one function for a
        prompt (an empty cache, cache_position 0) and a decode step (S = 1), so one graph with one
        copy of the weights can serve both. embeddings (B, S, hidden); position_ids (3, B, S);
        cache_position: int64 tensor, the cache index of the first new token; caches (layers, B,
        kv_heads, slots, head_dim), or one (B, kv_heads, slots, head_dim) tensor per layer, read
        only. Returns the hidden states (B, S, hidden), the last position's logits (B, vocab) and the
        new tokens' keys and values (layers, B, kv_heads, S, head_dim), to be written into the cache
        at [cache_position, cache_position + S)."""
        first = key_cache[0]
        past_allowed = torch.arange(first.shape[-2], device=first.device) < cache_position.reshape(())
        cos, sin = self.rotary(position_ids)
        x, keys, values = embeddings, [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.extend(x, cos, sin, key_cache[i], value_cache[i], past_allowed)
            keys.append(k)
            values.append(v)
        hidden = self.norm(x)
        return hidden, self.logits(hidden[:, -1]), torch.stack(keys), torch.stack(values)

    def decode_step(self, embedding, position_ids, cache_position, key_cache, value_cache):
        """One token: `extend` with S = 1. embedding (B, 1, hidden); position_ids (3, B, 1).
        Returns logits (B, vocab), the hidden state (B, hidden) and this token's keys and values
        (layers, B, kv_heads, 1, head_dim)."""
        hidden, logits, keys, values = self.extend(embedding, position_ids, cache_position, key_cache, value_cache)
        return logits, hidden[:, 0], keys, values

    def new_cache(self, batch: int = 1, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        shape = (c.layers, batch, c.kv_heads, c.max_cache_len, c.head_dim)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)


def write_cache(cache: torch.Tensor, entries: torch.Tensor, start: int) -> None:
    """Write keys or values (layers, B, kv_heads, n, head_dim) into the cache at [start, start + n)."""
    end = start + entries.shape[-2]
    if end > cache.shape[-2]:
        raise ValueError(f"KV cache overflow: positions up to {end} do not fit in {cache.shape[-2]}")
    cache[..., start:end, :] = entries
