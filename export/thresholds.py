"""Parity budgets: how close each engine must stay to its PyTorch module, per precision.

Read by export (a missed budget fails the export), by calibration and by the tests: one place.
Cosine similarity and relative error ||onnx - torch|| / ||torch|| are taken over each output
tensor flattened; the worst output of an engine counts.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8", "int4", "fp8")


@dataclass(frozen=True)
class ParityBudget:
    cosine_min: float
    relative_error_max: float


# fp32 is the same arithmetic reordered: cosine >= 0.99999 (issue #3). The low-precision budgets
# were set from what the tiny and small presets measure (README, "Export"), with headroom; a
# trained model's activations are better conditioned than random weights', not worse.
BUDGETS: dict[str, ParityBudget] = {
    "fp32": ParityBudget(cosine_min=0.99999, relative_error_max=1e-3),
    "fp16": ParityBudget(cosine_min=0.999, relative_error_max=0.05),
    "int8": ParityBudget(cosine_min=0.98, relative_error_max=0.2),
    "fp8": ParityBudget(cosine_min=0.98, relative_error_max=0.2),
    "int4": ParityBudget(cosine_min=0.95, relative_error_max=0.35),
}


def budget_for(precision: str, engine: str) -> ParityBudget:
    """The budget of one engine at one precision (the same for every engine for now)."""
    try:
        return BUDGETS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}") from None
