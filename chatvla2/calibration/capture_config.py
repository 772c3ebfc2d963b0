"""`chatvla2 calibrate capture`'s options (calibration/capture.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.errors import InvalidInput

DEFAULT_DECODE_CALLS = 8


def check_reasoning_tokens(decode_calls: int, min_tokens: int, max_tokens: int | None) -> None:
    """The decode calls kept per observation and the reasoning's length range (a capture's, a sweep's)."""
    if decode_calls < 1:
        raise InvalidInput(f"--decode-calls must be >= 1, got {decode_calls}")
    if min_tokens < 0 or (max_tokens is not None and max_tokens < max(1, min_tokens)):
        raise InvalidInput(f"reasoning tokens: --min-tokens {min_tokens} and --max-tokens {max_tokens} make no range")


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    preset: str | None = field(
        default=None,
        metadata={
            "flag": "--config",
            "metavar": "NAME",
            "exclusive": "model",
            "help": "a preset, initialised from --seed (tests, untrained)",
        },
    )
    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR", "exclusive": "model", "help": "a trained checkpoint"})
    observations: str = field(
        metadata={"metavar": "SOURCE", "help": "sim:TASK:SPLIT:FIRST-LAST, a dataset directory, or several joined by '+'"}
    )
    out: str = field(metadata={"metavar": "FILE", "help": "the .npz to write"})
    decode_calls: int = field(
        default=DEFAULT_DECODE_CALLS,
        metadata={
            "metavar": "N",
            "help": "decode steps kept per observation for quantization, spread over its reasoning (default %(default)s)",
        },
    )
    min_tokens: int = field(
        default=0,
        metadata={
            "metavar": "N",
            "help": "no end of reasoning before N tokens (an untrained model would stop at once; default %(default)s)",
        },
    )
    max_tokens: int | None = field(default=None, metadata={"metavar": "N", "help": "reasoning token cap (default: the model's)"})
    stride: int = field(default=25, metadata={"help": "a dataset's frames: every S-th (default %(default)s)"})
    seed: int = field(default=0, metadata={"help": "the preset's initialisation and the diffusion noise"})

    def __post_init__(self) -> None:
        if bool(self.preset) == bool(self.checkpoint):
            raise InvalidInput("give --config NAME or --checkpoint DIR (one of them)")
        check_reasoning_tokens(self.decode_calls, self.min_tokens, self.max_tokens)
        if self.stride < 1:
            raise InvalidInput(f"--stride must be >= 1, got {self.stride}")
