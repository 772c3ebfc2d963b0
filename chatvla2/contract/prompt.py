"""The prompt layout and its M-RoPE position ids (numpy, no torch): written once, read by the
reference model, the export and the runtime.

Two layouts (the config's `prompt_format`), both laying out images before text as Qwen2-VL does:
- "plain" (the small presets' character tokenizer):
    per camera view: <|vision_start|> <|image_pad|> x tokens_per_view <|vision_end|>
    then the instruction and a newline; the reasoning follows, ended by <|im_end|>.
- "qwen2vl-chat" (imported Qwen2-VL checkpoints): the token ids that Qwen2-VL-2B-Instruct's chat
  template gives for one user message holding the views and then the instruction, with
  add_generation_prompt (its default system turn included):
    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n
    [views as above]instruction<|im_end|>\n<|im_start|>assistant\n
  The reasoning is the assistant's reply, ended by <|im_end|>. Text between special tokens is
  encoded piece by piece, as a Hugging Face tokenizer splits on its added tokens first.
Position ids (Qwen2-VL's rule, arXiv 2409.12191): a text token has equal (temporal, height, width)
ids, one more than the largest id before it; the tokens of an image share the temporal id and
take their (row, column) in the merged grid, all offset by the position where the image starts.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.tokenizer import TextTokenizer

# Qwen2-VL-2B-Instruct's chat template (its chat_template.json) adds this system turn when the
# conversation has none.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
IM_START = "<|im_start|>"


def _image_ids(tokenizer: TextTokenizer, num_views: int, tokens_per_view: int) -> list[int]:
    ids: list[int] = []
    for _ in range(num_views):
        ids += [tokenizer.vision_start_id] + [tokenizer.image_pad_id] * tokens_per_view + [tokenizer.vision_end_id]
    return ids


def prompt_token_ids(
    tokenizer: TextTokenizer, instruction: str, num_views: int, tokens_per_view: int, prompt_format: str = "plain"
) -> list[int]:
    """The prompt's token ids in `prompt_format` (see the module docstring)."""
    images = _image_ids(tokenizer, num_views, tokens_per_view)
    if prompt_format == "plain":
        return images + tokenizer.encode(instruction + "\n")
    if prompt_format != "qwen2vl-chat":
        raise ValueError(f"unknown prompt_format {prompt_format!r}")
    im_start = tokenizer.backend.token_to_id(IM_START)
    if im_start is None:
        raise InvalidInput(f"prompt_format qwen2vl-chat needs the special token {IM_START!r}; the tokenizer has none")
    im_end, text = tokenizer.eos_id, tokenizer.encode
    return (
        [im_start] + text("system\n" + DEFAULT_SYSTEM_PROMPT) + [im_end] + text("\n")
        + [im_start] + text("user\n") + images + text(instruction) + [im_end] + text("\n")
        + [im_start] + text("assistant\n")
    )


def mrope_position_ids(token_ids, image_pad_id: int, merged_grid: tuple[int, int]) -> np.ndarray:
    """(3, S) int64 position ids for a sequence whose images are runs of `image_pad_id`, each run
    one image of `merged_grid` (rows, cols) tokens in row-major order."""
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
    """The position id of the token that follows a sequence."""
    return int(positions.max()) + 1 if positions.size else 0


def build_prompt(tokenizer: TextTokenizer, instruction: str, cfg: ModelConfig) -> tuple[list[int], np.ndarray]:
    """(token ids, (3, S) position ids) of the prompt for `cfg`'s cameras; a prompt that leaves no
    room in the KV cache is an error."""
    vision = cfg.vision
    ids = prompt_token_ids(tokenizer, instruction, vision.num_views, vision.tokens_per_view, cfg.prompt_format)
    if len(ids) >= cfg.language.max_cache_len:
        raise InvalidInput(f"the prompt takes {len(ids)} tokens, the KV cache holds {cfg.language.max_cache_len}")
    return ids, mrope_position_ids(ids, tokenizer.image_pad_id, vision.merged_grid)
