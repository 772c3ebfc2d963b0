"""Parity: an engine in ONNX Runtime against its PyTorch module on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnxruntime import InferenceSession

from chatvla2.contract.errors import InvalidInput
from chatvla2.export.thresholds import ParityBudget


@dataclass(frozen=True)
class ParityResult:
    cosine: float  # the worst output's
    relative_error: float  # the worst output's ||onnx - torch|| / ||torch||
    max_abs: float
    worst_output: str

    def to_dict(self) -> dict:
        return {
            "cosine": self.cosine,
            "relative_error": self.relative_error,
            "max_abs": self.max_abs,
            "worst_output": self.worst_output,
        }


class ParityError(InvalidInput):
    pass


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> ParityResult:
    """Cosine and relative error of every output; the engine's figures are its worst output's."""
    cosines, relatives, max_abs = {}, {}, 0.0
    for name, expected in reference.items():
        expected = expected.astype(np.float64).ravel()
        actual = candidate[name].astype(np.float64).ravel()
        norms = np.linalg.norm(expected) * np.linalg.norm(actual)
        cosines[name] = float(actual @ expected / norms) if norms > 0 else float(np.array_equal(actual, expected))
        relatives[name] = float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))
        max_abs = max(max_abs, float(np.abs(actual - expected).max(initial=0.0)))
    worst = min(cosines, key=cosines.get)
    return ParityResult(cosines[worst], max(relatives.values()), max_abs, worst)


def torch_outputs(module: torch.nn.Module, feed: dict[str, np.ndarray], input_names, output_names) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names])
    out = out if isinstance(out, (tuple, list)) else (out,)
    return {name: o.float().numpy() for name, o in zip(output_names, out)}


def onnx_outputs(session: InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def check_budget(engine: str, precision: str, result: ParityResult, budget: ParityBudget) -> None:
    if result.cosine < budget.cosine_min:
        raise ParityError(
            f"{engine} ({precision}): cosine {result.cosine:.6f} of output {result.worst_output!r} "
            f"is below the budget {budget.cosine_min}"
        )
    if result.relative_error > budget.relative_error_max:
        raise ParityError(
            f"{engine} ({precision}): relative error {result.relative_error:.4g} exceeds the budget "
            f"{budget.relative_error_max}"
        )
