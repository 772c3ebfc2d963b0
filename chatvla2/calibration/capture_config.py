"""`chatvla2 calibrate capture`'s options (calibration/capture.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option
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
    preset: str | None = option(
        "a preset, initialised from --seed (tests, untrained)", None, metavar="NAME", flag="--config", exclusive="model"
    )
    checkpoint: str | None = option("a trained checkpoint", None, metavar="DIR", exclusive="model")
    observations: str = option("sim:TASK:SPLIT:FIRST-LAST, a dataset directory, or several joined by '+'", metavar="SOURCE")
    out: str = option("the .npz to write", metavar="FILE")
    decode_calls: int = option(
        "decode steps kept per observation for quantization, spread over its reasoning (default %(default)s)",
        DEFAULT_DECODE_CALLS,
        metavar="N",
    )
    min_tokens: int = option(
        "no end of reasoning before N tokens (an untrained model would stop at once; default %(default)s)", 0, metavar="N"
    )
    max_tokens: int | None = option("reasoning token cap (default: the model's)", None, metavar="N")
    stride: int = option("a dataset's frames: every S-th (default %(default)s)", 25)
    seed: int = option("the preset's initialisation and the diffusion noise", 0)

    def __post_init__(self) -> None:
        if bool(self.preset) == bool(self.checkpoint):
            raise InvalidInput("give --config NAME or --checkpoint DIR (one of them)")
        check_reasoning_tokens(self.decode_calls, self.min_tokens, self.max_tokens)
        if self.stride < 1:
            raise InvalidInput(f"--stride must be >= 1, got {self.stride}")
