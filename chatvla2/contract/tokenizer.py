"""Tokenizers, both served by the `tokenizers` library from a `tokenizer.json` (no torch: the
runtime loads a bundle's tokenizer with this class too).

- Real checkpoints carry a Hugging Face `tokenizer.json` (Qwen2-VL's byte-level BPE).
- The small presets use a built-in character-level tokenizer, built in code here (no download)
  and saved as an ordinary `tokenizer.json`, so the robot loads both kinds the same way.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from chatvla2.contract.errors import InvalidInput, MissingFile

# Special tokens, named as in Qwen2-VL so the same prompt layout serves both tokenizers.
PAD = "<|endoftext|>"
EOS = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
UNKNOWN = "<unk>"
SPECIAL_TOKENS = (PAD, EOS, VISION_START, VISION_END, IMAGE_PAD)

# The character set: printable ASCII (letters, digits, punctuation, space) and newline.
CHARACTERS = "\n" + "".join(c for c in string.printable if c.isprintable())


@dataclass(frozen=True)
class TextTokenizer:
    """A `tokenizers.Tokenizer` and the ids of the special tokens the model relies on."""

    backend: Tokenizer

    @property
    def pad_id(self) -> int:
        return self._id(PAD)

    @property
    def eos_id(self) -> int:
        return self._id(EOS)

    @property
    def vision_start_id(self) -> int:
        return self._id(VISION_START)

    @property
    def vision_end_id(self) -> int:
        return self._id(VISION_END)

    @property
    def image_pad_id(self) -> int:
        return self._id(IMAGE_PAD)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def _id(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise InvalidInput(f"tokenizer has no special token {token!r}")
        return token_id

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise MissingFile(f"tokenizer file not found: {path}")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception type on bad JSON
            raise InvalidInput(f"{path}: not a valid tokenizer.json ({exc})") from None
        tokenizer = cls(backend)
        for token in SPECIAL_TOKENS:
            tokenizer._id(token)
        return tokenizer


def character_tokenizer() -> TextTokenizer:
    """The built-in tokenizer of the small presets: one id per character, specials first."""
    vocab = {token: i for i, token in enumerate((UNKNOWN,) + SPECIAL_TOKENS)}
    for character in CHARACTERS:
        vocab.setdefault(character, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    # [\s\S] matches any character, newline included: every character becomes its own piece.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return TextTokenizer(backend)
