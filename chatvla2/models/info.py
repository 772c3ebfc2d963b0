"""`chatvla2 info`: parameters per component and the parameters active per token.

The `paper` preset is built on the meta device: shapes only, no memory.
"""

from __future__ import annotations

import torch

from chatvla2.contract.config import get_config
from chatvla2.models.info_config import InfoConfig
from chatvla2.models.moe import DynamicMoE
from chatvla2.models.vla import ChatVLA2

COMPONENTS = ("vision", "embedding", "attention", "moe_experts", "router", "dense_mlp", "norms", "action_head")


def parameter_breakdown(model: ChatVLA2) -> dict[str, int]:
    """Parameters per component, plus `total` and `active_per_token` (all but the experts that a
    token's router does not pick: (E - k) / E of the expert weights)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    counts["vision"] = sum(p.numel() for p in model.vision.parameters())
    counts["action_head"] = sum(p.numel() for p in model.action_head.parameters())
    language = model.language
    counts["embedding"] = language.embed_tokens.weight.numel()
    if language.lm_head is not None:
        counts["embedding"] += language.lm_head.weight.numel()
    counts["norms"] = language.norm.weight.numel()
    inactive = 0
    for layer in language.layers:
        counts["attention"] += sum(p.numel() for p in layer.attn.parameters())
        counts["norms"] += layer.input_norm.weight.numel() + layer.post_attention_norm.weight.numel()
        if isinstance(layer.mlp, DynamicMoE):
            moe = layer.mlp
            experts = moe.gate_proj.numel() + moe.up_proj.numel() + moe.down_proj.numel()
            counts["moe_experts"] += experts
            counts["router"] += moe.router.weight.numel()
            inactive += experts * (moe.num_experts - moe.top_k) // moe.num_experts
        else:
            counts["dense_mlp"] += sum(p.numel() for p in layer.mlp.parameters())
    counts["total"] = sum(counts[c] for c in COMPONENTS)
    assert counts["total"] == sum(p.numel() for p in model.parameters()), "a parameter is in no component"
    counts["active_per_token"] = counts["total"] - inactive
    return counts


def build_for_counting(name: str) -> ChatVLA2:
    with torch.device("meta"):
        return ChatVLA2(get_config(name))


def format_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(n)


def main(config: InfoConfig) -> int:
    if config.checkpoint:
        from chatvla2.models.checkpoint import checkpoint_on_meta, weights_dtype

        # Shapes from the config, checked against the weights' header; no weight is read, so a
        # paper-scale import (tens of GB) prints as fast as a preset.
        model = checkpoint_on_meta(config.checkpoint)
        title = f"checkpoint {config.checkpoint} ({model.cfg.name}, weights {weights_dtype(config.checkpoint)})"
    else:
        name = config.preset or "tiny"
        model = build_for_counting(name)
        title = f"preset {name}"
    counts = parameter_breakdown(model)
    moe = model.cfg.language.moe
    print(f"ChatVLA-2, {title}: {model.cfg.language.layers} decoder layers, "
          f"{moe.num_experts} experts / top-{moe.top_k}, ScaleDP {model.cfg.action_head.depth}x{model.cfg.action_head.width}")
    print(f"{'component':<18}{'parameters':>16}{'':>12}")
    for key in COMPONENTS + ("total", "active_per_token"):
        if key == "total":
            print("-" * 46)
        print(f"{key:<18}{counts[key]:>16,}{format_count(counts[key]):>12}")
    return 0
