"""Model configuration: frozen dataclasses and the named presets.

The `paper` preset holds the numbers of docs/reference/model.md (Qwen2-VL-2B, 8 experts / top-2 in
all 28 decoder layers, ScaleDP-H, 14-D state and actions, chunks of 50). `tiny` is for tests,
`small` for CPU benchmarks. One place defines the sizes; everything else reads them from here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from chatvla2.contract.embodiment import ACTION_DIM, STATE_DIM
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import unknown_name


@dataclass(frozen=True)
class VisionConfig:
    """Qwen2-VL's ViT: patch 14, 2-D rotary positions, and a 2x2 patch merger to the LM width."""

    depth: int = 32
    width: int = 1280
    heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    # Qwen2-VL embeds patches of 2 frames; a still image is repeated to fill both.
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    # Camera frames are resized to this size (multiples of patch_size * spatial_merge_size).
    # 320x240 robot frames become 308x252: 22x18 patches, 99 tokens after the merger (docs/reference/model.md).
    image_height: int = 252
    image_width: int = 308
    num_views: int = 1
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        unit = self.patch_size * self.spatial_merge_size
        if self.image_height % unit or self.image_width % unit:
            raise InvalidInput(
                f"image size {self.image_height}x{self.image_width} must be a multiple of patch_size * spatial_merge_size = {unit}"
            )
        if self.width % self.heads:
            raise InvalidInput(f"vision width {self.width} is not divisible by {self.heads} heads")

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per image, (rows, columns)."""
        return self.image_height // self.patch_size, self.image_width // self.patch_size

    @property
    def merged_grid(self) -> tuple[int, int]:
        """Language tokens per image after the merger, (rows, columns)."""
        rows, cols = self.grid
        return rows // self.spatial_merge_size, cols // self.spatial_merge_size

    @property
    def tokens_per_view(self) -> int:
        rows, cols = self.merged_grid
        return rows * cols


# The two graph forms of the mixture (models/moe.py): "gather" computes each token's top_k experts,
# "dense" every expert, masked by the routing weights. Bundles record which form each graph has.
MOE_FORMS = ("gather", "dense")


@dataclass(frozen=True)
class MoEConfig:
    """Dynamic mixture of experts replacing the decoder MLPs (docs/reference/model.md, point 2)."""

    num_experts: int = 8
    top_k: int = 2
    # Decoder layers whose MLP is a mixture; None means every layer (the paper's choice).
    layers: tuple[int, ...] | None = None
    # Weight of the optional Switch-style load-balancing loss in training (0 = off, as the paper).
    load_balancing_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.num_experts:
            raise InvalidInput(f"top_k={self.top_k} must be between 1 and num_experts={self.num_experts}")

    def applies_to(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers


@dataclass(frozen=True)
class LanguageConfig:
    """Qwen2-style decoder: RMSNorm, qkv bias, grouped-query attention, SwiGLU, M-RoPE."""

    hidden: int = 1536
    layers: int = 28
    heads: int = 12
    kv_heads: int = 2
    intermediate: int = 8960
    vocab_size: int = 151936
    rope_theta: float = 1_000_000.0
    # M-RoPE: how many of the head_dim/2 rotary frequencies go to (temporal, height, width).
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    # The static KV cache's length: images + prompt + reasoning must fit.
    max_cache_len: int = 512
    max_reasoning_tokens: int = 256
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise InvalidInput(f"hidden {self.hidden} is not divisible by {self.heads} heads")
        if self.heads % self.kv_heads:
            raise InvalidInput(f"{self.heads} query heads cannot share {self.kv_heads} key/value heads")
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise InvalidInput(f"mrope_section {self.mrope_section} must add up to head_dim/2 = {self.head_dim // 2}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


CONDITION_FORMS = ("projector", "combine")


@dataclass(frozen=True)
class ActionHeadConfig:
    """ScaleDP: a diffusion transformer over the action chunk, AdaLN-Zero conditioned (docs/reference/model.md, 3-4)."""

    depth: int = 32
    width: int = 1280
    heads: int = 16
    mlp_ratio: float = 4.0
    chunk_size: int = 50
    action_dim: int = ACTION_DIM  # the robot's (contract/embodiment.py): 14
    state_dim: int = STATE_DIM
    # Blocks i >= reason_start_layer (and the final layer) take c_reason; earlier blocks take c_obs.
    # None means depth // 2, the paper's choice.
    reason_start_layer: int | None = None
    # Width of the o / r projectors' hidden layer (Linear-GELU-Linear); None means the head width.
    projector_hidden: int | None = None
    timestep_embedding_dim: int = 256
    # How o and r (and the state) become the AdaLN condition (models/action_head.py):
    # "projector": Linear-GELU-Linear, LayerNorm, Linear([.; state]) (this project's form);
    # "combine": DexVLA's released ScaleDP heads, Linear([.; state])-ReLU-Linear-ReLU-Linear then
    # Linear to the width (`projector_hidden` is the MLP's hidden width; DexVLA's is 1024).
    condition: str = "projector"
    # Real-time chunking by prefix conditioning (models/action_head.py): the longest prefix of
    # committed actions, in control steps, the head was trained to continue (0: never trained to;
    # a prefix is still reproduced, but the rest does not follow it). 30 = 600 ms at 50 Hz.
    max_prefix: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_prefix < self.chunk_size:
            raise InvalidInput(
                f"action head max_prefix {self.max_prefix} is outside 0..{self.chunk_size - 1} (the chunk has {self.chunk_size} steps)"
            )
        if self.width % self.heads:
            raise InvalidInput(f"action head width {self.width} is not divisible by {self.heads} heads")
        if not 0 <= self.reason_start <= self.depth:
            raise InvalidInput(f"reason_start_layer {self.reason_start} is outside 0..{self.depth}")
        if self.condition not in CONDITION_FORMS:
            raise InvalidInput(f"unknown action head condition {self.condition!r}; choose from {CONDITION_FORMS}")

    @property
    def reason_start(self) -> int:
        return self.depth // 2 if self.reason_start_layer is None else self.reason_start_layer


@dataclass(frozen=True)
class SchedulerConfig:
    """DDIM as in the DexVLA code: 100 training steps, squaredcos_cap_v2, epsilon, clipped samples."""

    train_steps: int = 100
    inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0

    def __post_init__(self) -> None:
        if self.beta_schedule != "squaredcos_cap_v2":
            raise InvalidInput(f"unsupported beta_schedule {self.beta_schedule!r}: only squaredcos_cap_v2")
        if self.prediction_type != "epsilon":
            raise InvalidInput(f"unsupported prediction_type {self.prediction_type!r}: only epsilon")
        if not 1 <= self.inference_steps <= self.train_steps:
            raise InvalidInput(f"inference_steps must be in 1..{self.train_steps}")


PROMPT_FORMATS = ("plain", "qwen2vl-chat")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vision: VisionConfig
    language: LanguageConfig
    action_head: ActionHeadConfig
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # "char" = the built-in character tokenizer; "hf" = a Hugging Face tokenizer.json.
    tokenizer: str = "char"
    # The prompt layout (contract/prompt.py): "plain" (images, the instruction, a newline) or
    # "qwen2vl-chat" (Qwen2-VL's chat template: system turn, user turn with the images and the
    # instruction, then the assistant's turn, which is the reasoning).
    prompt_format: str = "plain"

    def __post_init__(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise InvalidInput(f"unknown prompt_format {self.prompt_format!r}; choose from {PROMPT_FORMATS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from `to_dict` output. Errors are ValueErrors naming the field: an
        unknown or missing field, a section that is not an object, a value of the wrong type (a
        string or a bool for an int, a non-finite float), a size that is not positive."""
        if not isinstance(data, dict):
            raise InvalidInput(f"model config must be a JSON object, found {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InvalidInput(f"model config: unknown field {unknown[0]}")
        for section in ("vision", "language", "action_head"):
            if section not in data:
                raise InvalidInput(f"model config is missing the section {section!r}")
        language = _section(data["language"], "language")
        language["moe"] = _build(MoEConfig, _section(language.get("moe", {}), "language.moe"), "language.moe")
        for name in ("name", "tokenizer", "prompt_format"):
            if name in data and not isinstance(data[name], str):
                raise InvalidInput(f"model config: {name} must be a string, got {data[name]!r}")
        if "name" not in data:
            raise InvalidInput("model config is missing the field 'name'")
        return cls(
            name=data["name"],
            vision=_build(VisionConfig, _section(data["vision"], "vision"), "vision"),
            language=_build(LanguageConfig, language, "language"),
            action_head=_build(ActionHeadConfig, _section(data["action_head"], "action_head"), "action_head"),
            scheduler=_build(SchedulerConfig, _section(data.get("scheduler", {}), "scheduler"), "scheduler"),
            tokenizer=data.get("tokenizer", "char"),
            prompt_format=data.get("prompt_format", "plain"),
        )


# Integer fields that may be 0; every other integer field is a size or a count and must be >= 1.
# (List elements, e.g. mrope_section or the MoE layer indices, may be 0.)
_MAY_BE_ZERO = {"max_reasoning_tokens", "reason_start_layer", "max_prefix", "[]"}
# Float fields that may be 0; the others must be positive.
_FLOAT_MAY_BE_ZERO = {"load_balancing_weight"}


def _section(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise InvalidInput(f"model config: {where} must be an object, found {type(values).__name__}")
    return dict(values)


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInput(f"model config: unknown field {where}.{unknown[0]}")
    hints = typing.get_type_hints(kind)
    checked = {}
    for name, value in values.items():
        checked[name] = value if isinstance(value, MoEConfig) else _typed(value, hints[name], f"{where}.{name}", name)
    try:
        return kind(**checked)
    except (TypeError, ArithmeticError) as exc:  # belt and braces: a combination __post_init__ cannot use
        raise InvalidInput(f"model config: invalid {where} ({exc})") from None


def _typed(value: Any, hint: Any, where: str, name: str) -> Any:
    """`value` (from JSON) as the annotated type, or a ValueError naming the field."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"model config: {where} must be a list of integers, got {value!r}")
        if not (len(args) == 2 and args[1] is Ellipsis) and len(value) != len(args):
            raise InvalidInput(f"model config: {where} must have {len(args)} values, got {len(value)}")
        return tuple(_typed(v, args[0], f"{where}[{i}]", "[]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"model config: {where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"model config: {where} must be an integer, got {value!r}")
        if value < (0 if name in _MAY_BE_ZERO else 1):
            raise InvalidInput(f"model config: {where} must be {'>= 0' if name in _MAY_BE_ZERO else 'a positive integer'}, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInput(f"model config: {where} must be a finite number, got {value!r}")
        if value < 0 or (value == 0 and name not in _FLOAT_MAY_BE_ZERO):
            raise InvalidInput(f"model config: {where} must be {'>= 0' if name in _FLOAT_MAY_BE_ZERO else 'positive'}, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidInput(f"model config: {where} must be a string, got {value!r}")
        return value
    return value


PRESETS: dict[str, ModelConfig] = {
    # Under 5M parameters: fast tests on a 2-core CPU. Two camera views to exercise concatenation.
    "tiny": ModelConfig(
        name="tiny",
        vision=VisionConfig(depth=2, width=64, heads=2, image_height=56, image_width=84, num_views=2),
        language=LanguageConfig(
            hidden=64,
            layers=2,
            heads=4,
            kv_heads=2,
            intermediate=128,
            vocab_size=128,  # the built-in character tokenizer's ids fit below 128
            mrope_section=(2, 3, 3),
            max_cache_len=192,
            max_reasoning_tokens=48,
            moe=MoEConfig(num_experts=8, top_k=2),
        ),
        action_head=ActionHeadConfig(depth=4, width=64, heads=4),
    ),
    # Roughly 100M parameters: CPU benchmarks at a shape that behaves like the real thing.
    "small": ModelConfig(
        name="small",
        vision=VisionConfig(depth=6, width=384, heads=6),
        language=LanguageConfig(
            hidden=512,
            layers=6,
            heads=8,
            kv_heads=2,
            intermediate=1024,
            vocab_size=128,
            mrope_section=(8, 12, 12),
            max_cache_len=512,
            max_reasoning_tokens=128,
            moe=MoEConfig(num_experts=8, top_k=2),
        ),
        # ScaleDP-S: 12 layers, width 384, 6 heads (docs/reference/model.md, point 3).
        action_head=ActionHeadConfig(depth=12, width=384, heads=6),
    ),
    # The shipped demo model, trained on a 2-core CPU (training/; checkpoints/chatvla2-demo).
    # Images 112x140 (height x width, multiples of 28): 8x10 patches, 4x5 = 20 visual tokens. At
    # that size the math game's whiteboard digits and operator and the three cards' digits are
    # legible to a person (the cards' digits ~8 px tall); 56x84 (tiny) blurs the cards. One view:
    # the datasets' top camera. The shape of the real thing (MoE 8/top-2 in every layer, ScaleDP
    # with o/r halves, chunks of 50 x 14-D) at 2.3 million parameters.
    "demo": ModelConfig(
        name="demo",
        vision=VisionConfig(depth=2, width=96, heads=2, image_height=112, image_width=140, num_views=1),
        language=LanguageConfig(
            hidden=96,
            layers=2,
            heads=4,
            kv_heads=2,
            intermediate=192,
            vocab_size=128,  # the built-in character tokenizer
            mrope_section=(2, 5, 5),
            # 22 image tokens + the instruction (~60 characters) + reasoning (<= 170 characters).
            max_cache_len=320,
            max_reasoning_tokens=200,
            moe=MoEConfig(num_experts=8, top_k=2),
        ),
        action_head=ActionHeadConfig(depth=4, width=96, heads=4),
    ),
    # The paper: Qwen2-VL-2B + 8 experts / top-2 in all 28 layers + ScaleDP-H (docs/reference/model.md).
    "paper": ModelConfig(
        name="paper",
        vision=VisionConfig(),
        language=LanguageConfig(),
        action_head=ActionHeadConfig(),
        tokenizer="hf",
        prompt_format="qwen2vl-chat",
    ),
}


# The reading demo model (issue 22), trained on a 2-core CPU from stage 0 (training/). The demo
# preset's 112x140 images, cut into 7-pixel patches: 16x20 patches, 8x10 = 80 visual tokens,
# each a 14-pixel cell that holds about one handwritten board character. Measured (a ViT with
# a linear probe on its tokens naming the characters in each cell, 2,000 steps of 32 images):
# 7-pixel patches at 112x140 reached 65% of the characters, 14-pixel ones 57%, 14-pixel ones on
# 224x280 images 66% at four times the rendering cost. Vision and language one layer deeper
# and a third wider than `demo` (the ViT was the slow learner); 8 experts / top-2 in every layer.
_demo = PRESETS["demo"]
PRESETS["reader"] = dataclasses.replace(
    _demo,
    name="reader",
    vision=dataclasses.replace(_demo.vision, depth=3, width=128, patch_size=7),
    # 80 image tokens + the instruction (~60 characters) + reasoning (<= 200 characters).
    language=dataclasses.replace(_demo.language, hidden=128, layers=3, intermediate=256, mrope_section=(4, 6, 6), max_cache_len=384),
    action_head=dataclasses.replace(_demo.action_head, width=128),
)


def get_config(name: str) -> ModelConfig:
    """A named preset; an unknown name is an error that suggests the closest one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_name(name, PRESETS, "model preset", "presets") from None


def field_default(cls: type, name: str) -> Any:
    """A dataclass field's default (its factory's value for a list or dict field): command-line
    options show and use the configuration's own value instead of a copy of it."""
    field_ = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field_.default_factory() if field_.default_factory is not dataclasses.MISSING else field_.default
