"""The bundle's normalization.json (numpy): actions min-max scaled to [-1, 1], the state
mean/std normalised; the same arithmetic as `models/normalization.py`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPSILON = 1e-6


@dataclass(frozen=True)
class Normalizer:
    action_min: np.ndarray
    action_max: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> "Normalizer":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in ("action_min", "action_max", "state_mean", "state_std")}
        except FileNotFoundError:
            raise FileNotFoundError(f"normalization statistics not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid normalization statistics ({exc!r})") from None
        for name, value in arrays.items():
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise ValueError(f"{path}: {name} must be a finite 1-D array")
        return cls(**arrays)

    @property
    def state_dim(self) -> int:
        return self.state_mean.shape[0]

    @property
    def action_dim(self) -> int:
        return self.action_min.shape[0]

    def normalize_state(self, state) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(f"state has shape {state.shape}, expected ({self.state_dim},)")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"state has non-finite values: {state.tolist()}")
        return (state - self.state_mean) / np.maximum(self.state_std, EPSILON)

    def unnormalize_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        span = np.maximum(self.action_max - self.action_min, EPSILON)
        return (actions + 1.0) * 0.5 * span + self.action_min
