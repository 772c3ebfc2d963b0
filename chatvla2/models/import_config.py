"""`chatvla2 import`'s options (models/import_checkpoint.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.config import PRESETS, MoEConfig, field_default
from chatvla2.contract.errors import InvalidInput

# The weights' dtype choices (models/import_checkpoint.py maps them to torch's); auto: the source's.
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def parse_image_size(text: str) -> tuple[int, int]:
    """ "252x308" -> (height, width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InvalidInput(f"--image-size must be HxW, e.g. 252x308, got {text!r}") from None
    return height, width


@dataclass(frozen=True, kw_only=True)
class ImportConfig:
    qwen2vl: str = option("a Hugging Face Qwen2-VL directory (config.json, safetensors, tokenizer.json)", metavar="DIR")
    head: str | None = option("a ScaleDP head in DexVLA's layout (safetensors; optional config.json)", None, metavar="DIR")
    experts: int = option("experts per MoE layer (default %(default)s)", field_default(MoEConfig, "num_experts"))
    top_k: int = option("experts per token (default %(default)s)", field_default(MoEConfig, "top_k"))
    out: str = option("the checkpoint directory to write", metavar="CHECKPOINT")
    dtype: str = option("weights' dtype (default: the source's)", "auto", choices=DTYPE_NAMES)
    like: str = option(
        "preset for what Qwen2-VL's config does not hold: image size, views, KV cache, head when none is given (default %(default)s)",
        "paper",
        choices=tuple(PRESETS),
    )
    image_size: str | None = option("camera images' size after resizing (default: the preset's)", None, metavar="HxW")
    views: int | None = option("camera views (default: the preset's)", None)
    normalization: str | None = option("a normalization.json (default: the ARX bimanual ranges)", None, metavar="FILE")
    seed: int = option("seed of the routers' (and a fresh head's) initialisation", 0)
    force: bool = option("replace an existing --out", False)
    quiet: bool = option("no progress bar", False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise InvalidInput(f"--dtype {self.dtype}: expected one of {', '.join(DTYPE_NAMES)}")
        if self.image_size is not None:
            parse_image_size(self.image_size)
        if self.views is not None:
            check_integer("--views", self.views, 1)

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """--image-size as (height, width); None: the preset's."""
        return None if self.image_size is None else parse_image_size(self.image_size)
