"""Rotary position embeddings: M-RoPE for the language model, 2-D RoPE for the vision encoder.

Both follow Qwen2-VL (arXiv 2409.12191): the language model's head dimension is split into
(temporal, height, width) sections, each rotated by its own position id; the ViT rotates half of
each head by the patch's row and half by its column.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., seq, head_dim); cos/sin broadcast to it."""
    return x * cos + rotate_half(x) * sin


def inverse_frequencies(dim: int, theta: float) -> torch.Tensor:
    """dim/2 frequencies theta^(-2i/dim)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


class MultimodalRotaryEmbedding(torch.nn.Module):
    """M-RoPE: position ids (3, batch, seq) -> cos, sin of shape (batch, 1, seq, head_dim).

    Frequency j of the head_dim/2 rotary frequencies takes its position from axis
    0 (temporal), 1 (height) or 2 (width) according to `section`; for text tokens the three ids are
    equal and this is ordinary 1-D RoPE.
    """

    def __init__(self, head_dim: int, theta: float, section: tuple[int, int, int]):
        super().__init__()
        axis = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(section)])
        # Buffers, not parameters: derived from the config, never saved in checkpoints.
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, theta), persistent=False)
        self.register_buffer("axis_of_frequency", axis, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (3, B, S) -> (B, S, head_dim/2): each frequency reads its own axis' position.
        positions = position_ids.to(torch.float32).index_select(0, self.axis_of_frequency)
        freqs = positions.permute(1, 2, 0) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
        return emb.cos(), emb.sin()


class VisionRotaryEmbedding(torch.nn.Module):
    """2-D RoPE of the ViT: (rows, cols) of each patch -> cos, sin of shape (patches, head_dim)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        # head_dim/4 frequencies for the row and as many for the column.
        self.register_buffer("inv_freq", inverse_frequencies(head_dim // 2, theta), persistent=False)

    def forward(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.cat(
            (rows.to(torch.float32)[:, None] * self.inv_freq, cols.to(torch.float32)[:, None] * self.inv_freq),
            dim=-1,
        )
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()
