"""Qwen2-VL in Hugging Face's format -> our vision encoder and MoE language model.

The configuration: config.json's fields (the Hub's flat layout, or newer transformers releases'
`text_config`) become our VisionConfig and LanguageConfig; what Qwen2-VL's config does not hold
(the camera image size and views, the KV cache's length, the reasoning cap) comes from a preset.
Anything our modules do not implement is refused by name (another model_type such as Qwen2.5-VL,
sliding-window attention, an activation other than Qwen2-VL's).

The tensors, name by name (Hub layout -> ours):
    visual.patch_embed.proj.weight (W, 3, 2, 14, 14) -> vision.patch_embed.weight (W, 3*2*14*14):
        the Conv3d's kernel flattened in (channel, frame, row, column) order, the order in which
        our patchify (and Qwen2-VL's image processor) flattens a patch
    visual.blocks.N.{norm1,norm2,attn.qkv,attn.proj} -> vision.blocks.N.{same}
    visual.blocks.N.mlp.fc1 / fc2 -> vision.blocks.N.mlp.0 / mlp.2
    visual.merger.ln_q / mlp.0 / mlp.2 -> vision.merger.norm / mlp.0 / mlp.2
    model.embed_tokens -> language.embed_tokens; model.norm -> language.norm
    model.layers.N.input_layernorm / post_attention_layernorm -> language.layers.N.input_norm /
        post_attention_norm; model.layers.N.self_attn.* -> language.layers.N.attn.*
    model.layers.N.mlp.{gate,up,down}_proj -> language.layers.N.mlp.{gate,up,down}_proj, repeated
        for each of the E experts (upcycling: every expert starts as the dense MLP, so whatever
        the router picks the layer computes what Qwen2-VL's MLP computes)
    lm_head.weight -> language.lm_head.weight when the embeddings are not tied; when tied it must
        equal model.embed_tokens (checked) and is not stored twice.
No source: language.layers.N.mlp.router.weight, drawn from N(0, initializer_range) (Qwen2's
initialiser, 0.02), seeded. A random router, not a zero one: zero logits tie, top-k then picks
the same two experts for every token, those two get the same gradients and stay equal, and the
other experts are never trained (sparse upcycling, Komatsuzaki et al. 2022, starts routers from a
random initialisation for the same reason).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from chatvla2.contract.config import LanguageConfig, MoEConfig, VisionConfig
from chatvla2.models.hf_weights import SourceError, WeightSource
from chatvla2.models.import_plan import Fill, copy

MODEL_TYPE = "qwen2_vl"


def _field(config: dict[str, Any], name: str, where: str, kind: type = int) -> Any:
    if name not in config:
        raise SourceError(f"{where}: missing field {name!r}")
    value = config[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SourceError(f"{where}: field {name!r} must be {kind.__name__}, got {value!r}")
    return value


def text_config(hf: dict[str, Any]) -> dict[str, Any]:
    """The language model's fields, wherever config.json keeps them."""
    model_type = hf.get("model_type")
    if model_type != MODEL_TYPE:
        raise SourceError(f"config.json: model_type {model_type!r} is not Qwen2-VL ({MODEL_TYPE!r})")
    text = dict(hf)
    text.update(hf.get("text_config") or {})
    return text


def language_config(hf: dict[str, Any], like: LanguageConfig, moe: MoEConfig) -> LanguageConfig:
    text, where = text_config(hf), "config.json"
    if text.get("hidden_act", "silu") != "silu":
        raise SourceError(f"{where}: hidden_act {text['hidden_act']!r}; Qwen2-VL's decoder MLP is silu (SwiGLU)")
    if text.get("use_sliding_window"):
        raise SourceError(f"{where}: use_sliding_window is true; sliding-window attention is not implemented here")
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    kind = rope.get("type", rope.get("rope_type"))
    if kind not in ("mrope", "default") or "mrope_section" not in rope:
        raise SourceError(f"{where}: rope_scaling must be M-RoPE with an mrope_section, got {rope!r}")
    section = rope["mrope_section"]
    theta = text.get("rope_theta", rope.get("rope_theta"))
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise SourceError(f"{where}: missing field 'rope_theta'")
    heads = _field(text, "num_attention_heads", where)
    tie = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    try:
        return replace(
            like,
            hidden=_field(text, "hidden_size", where),
            layers=_field(text, "num_hidden_layers", where),
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            intermediate=_field(text, "intermediate_size", where),
            vocab_size=_field(text, "vocab_size", where),
            rope_theta=float(theta),
            mrope_section=tuple(section),
            norm_eps=_field(text, "rms_norm_eps", where, float),
            tie_word_embeddings=bool(tie),
            moe=moe,
        )
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None


def vision_config(hf: dict[str, Any], like: VisionConfig, language_hidden: int) -> VisionConfig:
    where = "config.json vision_config"
    vision = hf.get("vision_config")
    if not isinstance(vision, dict):
        raise SourceError("config.json: missing vision_config")
    if vision.get("hidden_act", "quick_gelu") != "quick_gelu":
        raise SourceError(f"{where}: hidden_act {vision['hidden_act']!r}; Qwen2-VL's ViT uses quick_gelu")
    channels = vision.get("in_channels", vision.get("in_chans", 3))
    if channels != 3:
        raise SourceError(f"{where}: {channels} input channels, cameras give 3 (RGB)")
    out_dim = vision.get("hidden_size", language_hidden)
    if out_dim != language_hidden:
        raise SourceError(f"{where}: the merger outputs {out_dim}, the language model's hidden size is {language_hidden}")
    rope = vision.get("rope_parameters") or {}
    try:
        return replace(
            like,
            depth=_field(vision, "depth", where),
            width=_field(vision, "embed_dim", where),
            heads=_field(vision, "num_heads", where),
            mlp_ratio=float(_field(vision, "mlp_ratio", where, float)),
            patch_size=_field(vision, "patch_size", where),
            temporal_patch_size=_field(vision, "temporal_patch_size", where),
            spatial_merge_size=_field(vision, "spatial_merge_size", where),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
        )
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None


def _vision_fills(cfg: VisionConfig) -> list[Fill]:
    fills = [Fill("vision.patch_embed.weight", lambda load: load("visual.patch_embed.proj.weight").flatten(1),
                  ("visual.patch_embed.proj.weight",), "qwen2vl", "the Conv3d kernel flattened")]
    renames = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
               "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}
    for i in range(cfg.depth):
        for ours, theirs in renames.items():
            for part in ("weight", "bias"):
                source = f"visual.blocks.{i}.{theirs}.{part}"
                fills.append(Fill(f"vision.blocks.{i}.{ours}.{part}", copy(source), (source,), "qwen2vl"))
    for ours, theirs in {"norm": "ln_q", "mlp.0": "mlp.0", "mlp.2": "mlp.2"}.items():
        for part in ("weight", "bias"):
            source = f"visual.merger.{theirs}.{part}"
            fills.append(Fill(f"vision.merger.{ours}.{part}", copy(source), (source,), "qwen2vl"))
    return fills


def _repeated(name: str, experts: int):
    return lambda load: load(name).unsqueeze(0).expand(experts, -1, -1).contiguous()


def _router(shape: tuple[int, ...], std: float, seed: int):
    return lambda load: torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std


def _language_fills(cfg: LanguageConfig, std: float, seed: int) -> list[Fill]:
    fills = [Fill("language.embed_tokens.weight", copy("model.embed_tokens.weight"), ("model.embed_tokens.weight",), "qwen2vl"),
             Fill("language.norm.weight", copy("model.norm.weight"), ("model.norm.weight",), "qwen2vl")]
    if not cfg.tie_word_embeddings:
        fills.append(Fill("language.lm_head.weight", copy("lm_head.weight"), ("lm_head.weight",), "qwen2vl"))
    attention = [f"{p}_proj.{part}" for p in "qkv" for part in ("weight", "bias")] + ["o_proj.weight"]
    for i in range(cfg.layers):
        theirs, ours = f"model.layers.{i}", f"language.layers.{i}"
        for a, b in (("input_layernorm", "input_norm"), ("post_attention_layernorm", "post_attention_norm")):
            fills.append(Fill(f"{ours}.{b}.weight", copy(f"{theirs}.{a}.weight"), (f"{theirs}.{a}.weight",), "qwen2vl"))
        for name in attention:
            fills.append(Fill(f"{ours}.attn.{name}", copy(f"{theirs}.self_attn.{name}"), (f"{theirs}.self_attn.{name}",), "qwen2vl"))
        for proj in ("gate_proj", "up_proj", "down_proj"):
            source = f"{theirs}.mlp.{proj}.weight"
            if cfg.moe.applies_to(i):
                fills.append(Fill(f"{ours}.mlp.{proj}", _repeated(source, cfg.moe.num_experts), (source,), "qwen2vl",
                                  f"upcycled: the dense MLP repeated for {cfg.moe.num_experts} experts"))
            else:
                fills.append(Fill(f"{ours}.mlp.{proj}.weight", copy(source), (source,), "qwen2vl"))
        if cfg.moe.applies_to(i):
            fills.append(Fill(f"{ours}.mlp.router.weight", _router((cfg.moe.num_experts, cfg.hidden), std, seed + i),
                              note=f"router: N(0, {std}) seeded {seed}+{i}"))
    return fills


def qwen2vl_fills(vision: VisionConfig, language: LanguageConfig, std: float, seed: int) -> list[Fill]:
    return _vision_fills(vision) + _language_fills(language, std, seed)


def tied_head_accounted(source: WeightSource, language: LanguageConfig) -> dict[str, str]:
    """Source tensors read by no fill on purpose. A tied model's lm_head.weight, if the files hold
    one, must equal the embeddings (else the config and the weights disagree)."""
    if not language.tie_word_embeddings or "lm_head.weight" not in source:
        return {}
    if not torch.equal(source.load("lm_head.weight"), source.load("model.embed_tokens.weight")):
        raise SourceError(
            f"{source.directory}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight"
        )
    return {"lm_head.weight": "tied: equal to model.embed_tokens.weight (checked), stored once"}
