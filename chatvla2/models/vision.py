"""The vision encoder: Qwen2-VL's ViT (patch 14, 2-D RoPE) and its 2x2 patch merger.

Pixels of V camera views (V, 3, H, W), already resized and normalised, become V * tokens_per_view
language-width embeddings, one view after the other: several views are one concatenated sequence.
Each view attends only within itself (Qwen2-VL does the same with per-image sequence bounds).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from chatvla2.contract.config import VisionConfig
from chatvla2.models.rope import VisionRotaryEmbedding, apply_rotary


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the ViT MLP activation of CLIP and Qwen2-VL."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class VisionAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        views, patches, width = x.shape
        qkv = self.qkv(x).view(views, patches, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (V, heads, N, head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return self.proj(out.transpose(1, 2).reshape(views, patches, width))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = VisionAttention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, hidden), QuickGELU(), nn.Linear(hidden, cfg.width))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """LayerNorm, then each 2x2 group of neighbouring patches (contiguous in our patch order)
    -> MLP -> one token of the language model's width."""

    def __init__(self, width: int, out_dim: int, merge: int, eps: float):
        super().__init__()
        grouped = width * merge * merge
        self.norm = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(grouped, grouped), nn.GELU(), nn.Linear(grouped, out_dim))
        self.grouped = grouped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = x.shape[0]
        return self.mlp(self.norm(x).reshape(views, -1, self.grouped))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, out_dim: int):
        super().__init__()
        self.cfg = cfg
        patch_features = 3 * cfg.temporal_patch_size * cfg.patch_size**2
        self.patch_embed = nn.Linear(patch_features, cfg.width, bias=False)
        self.rotary = VisionRotaryEmbedding(cfg.width // cfg.heads, cfg.rope_theta)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg.width, out_dim, cfg.spatial_merge_size, cfg.norm_eps)
        rows, cols = patch_positions(cfg)
        self.register_buffer("patch_rows", rows, persistent=False)
        self.register_buffer("patch_cols", cols, persistent=False)

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        """(V, 3, H, W) -> (V, patches, 3 * temporal * patch * patch), in merge-group order:
        the four patches that the merger joins are consecutive."""
        c = self.cfg
        views = pixels.shape[0]
        rows, cols = c.grid
        m, p = c.spatial_merge_size, c.patch_size
        x = pixels.reshape(views, 3, rows // m, m, p, cols // m, m, p)
        x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # V, row-group, col-group, m, m, C, p, p
        x = x.reshape(views, rows * cols, 3, 1, p, p)
        # A still image fills both frames of Qwen2-VL's temporal patch.
        x = x.expand(-1, -1, -1, c.temporal_patch_size, -1, -1)
        return x.reshape(views, rows * cols, -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(V, 3, H, W) -> (V * tokens_per_view, out_dim)."""
        x = self.patch_embed(self.patchify(pixels))
        cos, sin = self.rotary(self.patch_rows, self.patch_cols)
        for block in self.blocks:
            x = block(x, cos, sin)
        merged = self.merger(x)
        return merged.reshape(-1, merged.shape[-1])


def patch_positions(cfg: VisionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every patch, in the merge-group order of `VisionEncoder.patchify`."""
    rows, cols = cfg.grid
    m = cfg.spatial_merge_size
    r = torch.arange(rows).view(rows // m, m, 1, 1).expand(rows // m, m, cols // m, m)
    c = torch.arange(cols).view(1, 1, cols // m, m).expand(rows // m, m, cols // m, m)
    # Order (row-group, col-group, m, m), as in patchify.
    return r.permute(0, 2, 1, 3).reshape(-1), c.permute(0, 2, 1, 3).reshape(-1)
