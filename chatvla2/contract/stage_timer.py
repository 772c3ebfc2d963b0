"""The stages of one policy step and the timer that reports them.

The reference model (`models.vla.ChatVLA2.act`), the runtime's `Policy` and the benchmarks report
the same stage names, so their timings line up column for column:
preprocess, vision, prefill, decode (all reasoning tokens), action_head, then total.
"""

from __future__ import annotations

import time

STAGES = ("preprocess", "vision", "prefill", "decode", "action_head")


class StageTimer:
    """`lap(stage)` records the seconds since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = now - self._clock
        self._clock = now

    def finish(self, reasoning_tokens: int, decoded: bool = True) -> dict[str, float]:
        """Adds decode_per_token (0 when the reasoning was reused, not decoded) and total."""
        self.timings["decode_per_token"] = self.timings.get("decode", 0.0) / max(reasoning_tokens, 1) if decoded else 0.0
        self.timings["total"] = time.perf_counter() - self._start
        return self.timings
