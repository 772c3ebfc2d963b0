"""The prompt layout and its M-RoPE position ids, in numpy; the same as `models/prompt.py`.

    per camera view: <|vision_start|> <|image_pad|> x tokens_per_view <|vision_end|>
    then the instruction and a newline; the reasoning follows, ended by <|im_end|>.
A text token's (temporal, height, width) ids are equal, one more than the largest id before it;
an image's tokens share the temporal id and take their (row, column) in the merged grid, offset
by the position where the image starts (Qwen2-VL, arXiv 2409.12191).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

EOS = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"


class PromptTokenizer:
    """A bundle's tokenizer.json and the ids of the special tokens the prompt needs."""

    def __init__(self, backend: Tokenizer):
        self.backend = backend
        ids = {}
        for token in (EOS, VISION_START, VISION_END, IMAGE_PAD):
            token_id = backend.token_to_id(token)
            if token_id is None:
                raise ValueError(f"tokenizer has no special token {token!r}")
            ids[token] = token_id
        self.eos_id = ids[EOS]
        self.vision_start_id = ids[VISION_START]
        self.vision_end_id = ids[VISION_END]
        self.image_pad_id = ids[IMAGE_PAD]

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)


def prompt_token_ids(tokenizer: PromptTokenizer, instruction: str, num_views: int, tokens_per_view: int) -> list[int]:
    ids: list[int] = []
    for _ in range(num_views):
        ids += [tokenizer.vision_start_id] + [tokenizer.image_pad_id] * tokens_per_view + [tokenizer.vision_end_id]
    return ids + tokenizer.encode(instruction + "\n")


def mrope_position_ids(token_ids, image_pad_id: int, merged_grid: tuple[int, int]) -> np.ndarray:
    """(3, S) int64 position ids; each run of `image_pad_id` is one image of `merged_grid` tokens."""
    rows, cols = merged_grid
    per_image = rows * cols
    token_ids = np.asarray(token_ids)
    positions = np.zeros((3, len(token_ids)), dtype=np.int64)
    image_rows = np.repeat(np.arange(rows), cols)
    image_cols = np.tile(np.arange(cols), rows)
    next_position = 0
    i = 0
    while i < len(token_ids):
        if token_ids[i] == image_pad_id:
            if i + per_image > len(token_ids) or np.any(token_ids[i : i + per_image] != image_pad_id):
                raise ValueError(f"image at token {i} does not have {per_image} image tokens")
            positions[0, i : i + per_image] = next_position
            positions[1, i : i + per_image] = next_position + image_rows
            positions[2, i : i + per_image] = next_position + image_cols
            next_position += max(rows, cols)
            i += per_image
        else:
            positions[:, i] = next_position
            next_position += 1
            i += 1
    return positions


def next_text_position(positions: np.ndarray) -> int:
    return int(positions.max()) + 1 if positions.size else 0


def merged_grid(model_config: dict) -> tuple[int, int]:
    """(rows, cols) of language tokens per image, as models.config.VisionConfig.merged_grid."""
    v = model_config["vision"]
    merge = int(v["spatial_merge_size"])
    return (int(v["image_height"]) // int(v["patch_size"])) // merge, (int(v["image_width"]) // int(v["patch_size"])) // merge
