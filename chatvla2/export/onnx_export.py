"""Trace the four engines of a ChatVLA2 to fp32 ONNX graphs with torch's (dynamo) exporter.

Dynamic dimensions only where needed: the prompt length (prefill) and the number of camera views
(vision). Everything else is static, so TensorRT needs one optimisation profile at most and the
decode step and the action head can be captured in CUDA graphs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from chatvla2.export.graph_passes import fold_constant_weights, untranspose_gemm_weights
from chatvla2.export.graphs import ActionHeadGraph, DecodeGraph, LanguageGraph, PrefillGraph, VisionGraph
from chatvla2.models.vla import ChatVLA2

# Opset 21: the lowest with blocked INT4 DequantizeLinear (docs/reference/deploy.md); TensorRT 10.3 parses it.
OPSET = 21
# Larger graphs keep their weights in a side file: protobuf cannot hold more than 2 GB.
EXTERNAL_DATA_ABOVE_BYTES = 1_500_000_000


@dataclass(frozen=True)
class TraceSpec:
    """What to trace for one engine: its module, example inputs, input/output names, dynamic axes
    (the runtime's `EngineSpec` is the other side: the I/O a bundle's manifest records)."""

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    # torch.export's own form (named Dims per positional input), used instead of `dynamic_axes` when given:
    # torch 2.13's conversion of dynamic_axes fixes the language graph's cache slots at the example's
    # length ("tracing inferred a static shape of 512"); named Dims keep them dynamic.
    dynamic_shapes: dict | None = None


def engine_specs(model: ChatVLA2, prompt_length: int = 16) -> list[TraceSpec]:
    cfg = model.cfg
    vision, language, head = cfg.vision, cfg.language, cfg.action_head
    hidden = language.hidden
    cache_shape = (language.layers, 1, language.kv_heads, language.max_cache_len, language.head_dim)
    positions = torch.arange(prompt_length).view(1, 1, -1).expand(3, 1, -1).contiguous()
    return [
        TraceSpec(
            "vision",
            VisionGraph(model),
            (torch.randn(vision.num_views, 3, vision.image_height, vision.image_width),),
            ("pixels",),
            ("visual_embeddings",),
            {"pixels": {0: "views"}, "visual_embeddings": {0: "visual_tokens"}},
        ),
        TraceSpec(
            "prefill",
            PrefillGraph(model),
            (torch.randn(1, prompt_length, hidden), positions),
            ("embeddings", "position_ids"),
            ("hidden", "logits", "key_cache", "value_cache"),
            {
                "embeddings": {1: "prompt_length"},
                "position_ids": {2: "prompt_length"},
                "hidden": {1: "prompt_length"},
            },
        ),
        TraceSpec(
            "decode",
            DecodeGraph(model),
            (
                torch.tensor([[1]]),
                torch.tensor([prompt_length]),
                torch.tensor([prompt_length]),
                torch.randn(cache_shape),
                torch.randn(cache_shape),
            ),
            ("token", "position", "cache_position", "key_cache", "value_cache"),
            ("logits", "hidden", "new_keys", "new_values"),
            {},
        ),
        TraceSpec(
            "action_head",
            ActionHeadGraph(model),
            (
                torch.randn(1, hidden),
                torch.randn(1, hidden),
                torch.randn(1, head.state_dim),
                torch.randn(1, head.chunk_size, head.action_dim),
                torch.randn(1, head.chunk_size, head.action_dim),
                torch.tensor([min(3, head.chunk_size - 1)]),
            ),
            ("o", "r", "state", "noise", "prefix_actions", "prefix_len"),
            ("actions",),
            {},
        ),
    ]


def cache_input_names(layers: int) -> tuple[str, ...]:
    """The shared language graph's cache inputs: every layer's keys, then every layer's values."""
    return tuple(f"key_cache_{i}" for i in range(layers)) + tuple(f"value_cache_{i}" for i in range(layers))


def language_spec(model: ChatVLA2, prompt_length: int = 16) -> TraceSpec:
    """The cpu target's shared language graph (`export.graphs.LanguageGraph`): prefill and decode
    in one graph, the new tokens' count T ("tokens") and the cache's slots dynamic."""
    language = model.cfg.language
    layer_cache = (1, language.kv_heads, language.max_cache_len, language.head_dim)
    positions = torch.arange(prompt_length).view(1, 1, -1).expand(3, 1, -1).contiguous()
    caches = cache_input_names(language.layers)
    tokens, slots = torch.export.Dim("tokens"), torch.export.Dim("cache_slots")
    return TraceSpec(
        "language",
        LanguageGraph(model),
        (torch.randn(1, prompt_length, language.hidden), positions, torch.tensor([0]),
         *(torch.randn(layer_cache) for _ in caches)),
        ("embeddings", "position_ids", "cache_position", *caches),
        ("hidden", "logits", "new_keys", "new_values"),
        {"embeddings": {1: "tokens"}, "position_ids": {2: "tokens"}, "hidden": {1: "tokens"},
         "new_keys": {3: "tokens"}, "new_values": {3: "tokens"}, **{name: {2: "cache_slots"} for name in caches}},
        # The cache's slots are dynamic so that a prefill passes an empty cache (0 slots) and pays
        # nothing for it; a decode step passes the runtime's whole static cache, read in place.
        ({1: tokens}, {2: tokens}, None, tuple({2: slots} for _ in caches)),  # *caches: one vararg
    )


def language_feeds(model: ChatVLA2, engine_inputs: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """The language graph's feeds for a prefill and a decode step, from the prefill and decode
    engines' recorded inputs (`export.calibration_data`), as the runtime builds them: the prompt
    after an empty cache (0 slots); the step's token embedding looked up in the table and its text
    position on all three M-RoPE axes, against the whole static cache, one input per layer."""
    prefill, decode = engine_inputs["prefill"], engine_inputs["decode"]
    keys, values = decode["key_cache"], decode["value_cache"]
    names = cache_input_names(keys.shape[0])
    empty = np.zeros((1, keys.shape[2], 0, keys.shape[4]), keys.dtype)
    token = int(decode["token"].reshape(-1)[0])
    row = model.language.embed_tokens.weight[token].detach().float().numpy()
    return {
        "prefill": {"embeddings": prefill["embeddings"], "position_ids": prefill["position_ids"],
                    "cache_position": np.zeros(1, np.int64), **dict.fromkeys(names, empty)},
        "decode": {"embeddings": row.reshape(1, 1, -1).astype(prefill["embeddings"].dtype),
                   "position_ids": np.broadcast_to(decode["position"].reshape(1, 1, 1), (3, 1, 1)).astype(np.int64),
                   "cache_position": decode["cache_position"], **dict(zip(names, (*keys, *values)))},
    }


def trace_to_onnx(spec: TraceSpec, custom_translations: dict | None = None) -> onnx.ModelProto:
    """One engine to an fp32 ONNX model (in memory), weight data movement folded (see
    `export.graph_passes`). Gelu stays one node: TensorRT 10.3 parses it (onnx-tensorrt operators.md)."""
    spec.module.eval()
    # The exporter narrates every stage on stdout and warns about torchvision: keep it quiet.
    quiet = io.StringIO()
    exporter_log = logging.getLogger("torch.onnx")
    previous_level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                spec.module,
                spec.example_inputs,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes=None if spec.dynamic_shapes else (spec.dynamic_axes or None),
                dynamic_shapes=spec.dynamic_shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
                custom_translation_table=custom_translations,
            )
    finally:
        exporter_log.setLevel(previous_level)
    model = program.model_proto
    fold_constant_weights(model)
    untranspose_gemm_weights(model)
    model.producer_name = "chatvla2-edge"
    return model


def save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write a model; returns the files written (the .onnx and, for large models, its data)."""
    if model.ByteSize() > EXTERNAL_DATA_ABOVE_BYTES:
        data = path.with_name(path.name + ".data")
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
        return [path, data]
    onnx.save(model, str(path))
    return [path]
