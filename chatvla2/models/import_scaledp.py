"""A ScaleDP head in DexVLA's layout -> our action head (the `combine` condition form).

DexVLA released ScaleDP-H and ScaleDP-L heads (github.com/juruobenruo/DexVLA,
policy_heads/models/transformer_diffusion/modeling_scaledp.py). Their tensors, with or without
the `policy_head.` prefix of DexVLA's full model (-> ours, under `action_head.`):
    x_embedder -> action_in; pos_embed -> position_embedding
    t_embedder.mlp.0 / mlp.2 -> timestep_embed.fc1 / fc2
    combine.0 / .2 / .4 (Linear([cond; state], 1024)-ReLU-Linear-ReLU-Linear) -> combine_o.combine.*
    cond_obs_emb -> combine_o.embed
    blocks.N.attn.qkv / attn.proj / mlp.fc1 / mlp.fc2 -> blocks.N.same
    blocks.N.adaLN_modulation.1 -> blocks.N.modulation
    final_layer.linear / final_layer.adaLN_modulation.1 -> final.linear / final.modulation
DexVLA's head has one condition path; ChatVLA-2 adds the reasoning path (docs/reference/model.md, point 4),
which has no source: combine_r and its embedding start as copies of the o path, so before any
training c_reason computes what c_obs does from r instead of o.

The head's sizes are read from the tensors (depth, width, action and state dims, chunk length,
the combine MLP's width); the attention heads, which no shape shows, from the head's config.json
(`num_heads`, or DexVLA's `model_size`), else 16 (both ScaleDP-H and ScaleDP-L use 16).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from chatvla2.contract.config import ActionHeadConfig
from chatvla2.models.hf_weights import SourceError, WeightSource
from chatvla2.models.import_plan import Fill, copy

PREFIX = "policy_head."
# DexVLA's configuration_scaledp.py MODEL_STRUCTURE: the heads of its two released sizes.
DEXVLA_HEADS = {"ScaleDP_H": 16, "ScaleDP_L": 16}
DEFAULT_HEADS = 16


def head_config(source: WeightSource, config: dict[str, Any] | None, like: ActionHeadConfig, condition_dim: int) -> ActionHeadConfig:
    where = f"head {source.directory}"

    def shape(name: str) -> tuple[int, ...]:
        if name not in source:
            raise SourceError(f"{where}: missing tensor {name!r} (is this a ScaleDP head in DexVLA's layout?)")
        return source.shape(name)

    width, action_dim = shape("x_embedder.weight")
    chunk = shape("pos_embed")[1]
    cond_dim = shape("cond_obs_emb.weight")[1]
    if cond_dim != condition_dim:
        raise SourceError(f"{where}: the head is conditioned on {cond_dim}-D features, the language model's hidden size is {condition_dim}")
    combine_hidden, combine_in = shape("combine.0.weight")
    depth = len({m.group(1) for n in source.names if (m := re.match(r"blocks\.(\d+)\.", n))})
    config = config or {}
    heads = config.get("num_heads") or DEXVLA_HEADS.get(config.get("model_size", ""), DEFAULT_HEADS)
    mlp_hidden = shape("blocks.0.mlp.fc1.weight")[0]
    try:
        return replace(
            like,
            depth=depth,
            width=width,
            heads=heads,
            mlp_ratio=mlp_hidden / width,
            chunk_size=chunk,
            action_dim=action_dim,
            state_dim=combine_in - cond_dim,
            projector_hidden=combine_hidden,
            timestep_embedding_dim=shape("t_embedder.mlp.0.weight")[1],
            condition="combine",
            reason_start_layer=None if like.reason_start_layer is None else min(like.reason_start_layer, depth),
        )
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None


def head_fills(cfg: ActionHeadConfig) -> list[Fill]:
    """Fills for `action_head.*` from the head's tensors (names without the `policy_head.` prefix)."""
    renames = {
        "action_in": "x_embedder", "timestep_embed.fc1": "t_embedder.mlp.0", "timestep_embed.fc2": "t_embedder.mlp.2",
        "combine_o.combine.0": "combine.0", "combine_o.combine.2": "combine.2", "combine_o.combine.4": "combine.4",
        "combine_o.embed": "cond_obs_emb", "final.linear": "final_layer.linear",
        "final.modulation": "final_layer.adaLN_modulation.1",
    }
    for i in range(cfg.depth):
        for part in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            renames[f"blocks.{i}.{part}"] = f"blocks.{i}.{part}"
        renames[f"blocks.{i}.modulation"] = f"blocks.{i}.adaLN_modulation.1"
    fills = [Fill("action_head.position_embedding", copy("pos_embed"), ("pos_embed",), "head")]
    for ours, theirs in renames.items():
        for part in ("weight", "bias"):
            fills.append(Fill(f"action_head.{ours}.{part}", copy(f"{theirs}.{part}"), (f"{theirs}.{part}",), "head"))
    # The reasoning path: no source in DexVLA's head; a copy of the observation path.
    for ours, theirs in (("combine_r.combine.0", "combine.0"), ("combine_r.combine.2", "combine.2"),
                         ("combine_r.combine.4", "combine.4"), ("combine_r.embed", "cond_obs_emb")):
        for part in ("weight", "bias"):
            source = f"{theirs}.{part}"
            fills.append(Fill(f"action_head.{ours}.{part}", copy(source), (source,), "head",
                              f"reasoning path: no source in DexVLA's head, copied from {source} (the o path)"))
    return fills
