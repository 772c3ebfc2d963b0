"""`chatvla2 import`'s options (models/import_checkpoint.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.command_config import check_integer
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
    qwen2vl: str = field(
        metadata={"metavar": "DIR", "help": "a Hugging Face Qwen2-VL directory (config.json, safetensors, tokenizer.json)"}
    )
    head: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "a ScaleDP head in DexVLA's layout (safetensors; optional config.json)"}
    )
    experts: int = field(default=field_default(MoEConfig, "num_experts"), metadata={"help": "experts per MoE layer (default %(default)s)"})
    top_k: int = field(default=field_default(MoEConfig, "top_k"), metadata={"help": "experts per token (default %(default)s)"})
    out: str = field(metadata={"metavar": "CHECKPOINT", "help": "the checkpoint directory to write"})
    dtype: str = field(default="auto", metadata={"choices": DTYPE_NAMES, "help": "weights' dtype (default: the source's)"})
    like: str = field(
        default="paper",
        metadata={
            "choices": tuple(PRESETS),
            "help": "preset for what Qwen2-VL's config does not hold: image size, views, KV cache, head when none is "
            "given (default %(default)s)",
        },
    )
    image_size: str | None = field(
        default=None, metadata={"metavar": "HxW", "help": "camera images' size after resizing (default: the preset's)"}
    )
    views: int | None = field(default=None, metadata={"help": "camera views (default: the preset's)"})
    normalization: str | None = field(
        default=None, metadata={"metavar": "FILE", "help": "a normalization.json (default: the ARX bimanual ranges)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the routers' (and a fresh head's) initialisation"})
    force: bool = field(default=False, metadata={"help": "replace an existing --out"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

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
