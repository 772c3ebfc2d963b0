"""An auxiliary reading-attention loss: while the language model writes a character it copies from the
image, one of its attention heads looks at the visual token whose cell holds that character.

Measured on the reader preset (docs/training-and-demo-model.md): after 3,600 steps of stage 0 the
vision side named most characters in its cells (the reading probe, training/reading_probe.py), yet
the answers were the same for every image, and the attention of the first answer token over the 80
visual tokens was nearly flat. The language model has to find, from the text it has written so far,
where the next character is; through the answer's cross-entropy alone that is a weak signal. The
renderer knows where every character is (sim/tasks/reading.py `answer_boxes`), so the head is told:
for each copied character, the cross-entropy of head `head` of layer `layer`'s attention, at the
position that predicts the character, against the visual token of the merged cell (patch_size x
spatial_merge_size pixels) holding the centre of its box.

Only for training: nothing here is part of the model, its checkpoint or the exported graphs. The
other heads and layers are free. Samples without answer boxes add nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.prompt import prompt_token_ids
from chatvla2.contract.tokenizer import TextTokenizer


class ReadingAttention:
    def __init__(self, cfg: ModelConfig, tokenizer: TextTokenizer, layer: int = -1, head: int = 0):
        language, vision = cfg.language, cfg.vision
        self.layer = layer % language.layers
        if not 0 <= head < language.heads:
            raise InvalidInput(f"--reading-attention-head {head}: the language model has {language.heads} heads (0..{language.heads - 1})")
        groups = language.heads // language.kv_heads
        self.kv_head, self.group = divmod(head, groups)
        self.cfg, self.tokenizer = cfg, tokenizer
        self.cell = vision.patch_size * vision.spatial_merge_size
        self.rows, self.cols = vision.merged_grid

    def attention(self, model) -> object:
        """The attention module whose probabilities the loss reads (set its keep_probabilities)."""
        return model.language.layers[self.layer].attn

    def targets(self, examples) -> np.ndarray:
        """(N, 3) int64 rows (sample, query position, key position) of the batch built from `examples`
        by models/training_batch.make_batch: the query is the token before each copied character's
        token, the key the first view's visual token of the cell holding the character."""
        rows = []
        for i, example in enumerate(examples):
            if not example.answer_boxes:
                continue
            vision = self.cfg.vision
            prompt = prompt_token_ids(self.tokenizer, example.instruction, vision.num_views, vision.tokens_per_view, self.cfg.prompt_format)
            first_visual = prompt.index(self.tokenizer.image_pad_id)
            offsets = self.tokenizer.backend.encode(example.reasoning, add_special_tokens=False).offsets
            # The token that starts at each character (a token of several characters: its first one).
            token_at = {start: t for t, (start, _) in enumerate(offsets)}
            height, width = np.asarray(example.frames[0]).shape[:2]
            for char_index, (u1, v1, u2, v2) in example.answer_boxes:
                token = token_at.get(char_index)
                if token is None:
                    continue
                u = (u1 + u2) / 2 * vision.image_width / width
                v = (v1 + v2) / 2 * vision.image_height / height
                row, col = min(self.rows - 1, int(v // self.cell)), min(self.cols - 1, int(u // self.cell))
                rows.append((i, len(prompt) + token - 1, first_visual + row * self.cols + col))
        return np.asarray(rows, np.int64).reshape(-1, 3)

    def loss(self, probabilities: torch.Tensor, targets: np.ndarray) -> tuple[torch.Tensor, float] | None:
        """(the mean negative log attention on the targets' keys, the share of targets that get the
        head's most attention among all keys: a curve of where the language model looks); None when
        there are none. probabilities: (B, kv_heads, groups, S, S), the layer's attention in the batch's forward."""
        if len(targets) == 0:
            return None
        index = torch.from_numpy(targets).to(probabilities.device)
        rows = probabilities[index[:, 0], self.kv_head, self.group, index[:, 1]]  # (N, S)
        chosen = rows.gather(1, index[:, 2:3]).squeeze(1)
        hit = float((rows.detach().argmax(-1) == index[:, 2]).float().mean())
        return -torch.log(chosen.float().clamp(min=1e-6)).mean(), hit
