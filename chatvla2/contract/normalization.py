"""Normalisation statistics (numpy, no torch), as in the DexVLA code (docs/reference/model.md): actions are
min-max scaled to [-1, 1]; the robot state is mean/std normalised. Checkpoints and bundles carry
them as `normalization.json`; training, the reference model and the runtime all use this class."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatvla2.contract.embodiment import DIM
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.drivers.profiles import get_profile

# Smallest range / standard deviation used, so a constant dimension does not divide by zero.
EPSILON = 1e-6



@dataclass(frozen=True)
class NormalizationStats:
    action_min: np.ndarray
    action_max: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray

    def __post_init__(self) -> None:
        for name in ("action_min", "action_max", "state_mean", "state_std"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise InvalidInput(f"normalization: {name} must be a finite 1-D array")
            object.__setattr__(self, name, value)
        if self.action_min.shape != self.action_max.shape:
            raise InvalidInput("normalization: action_min and action_max differ in length")
        if self.state_mean.shape != self.state_std.shape:
            raise InvalidInput("normalization: state_mean and state_std differ in length")

    @property
    def action_dim(self) -> int:
        return self.action_min.shape[0]

    @property
    def state_dim(self) -> int:
        return self.state_mean.shape[0]

    def normalize_state(self, state) -> np.ndarray:
        """(..., state_dim) -> the same shape, normalised; a wrong last dimension or a non-finite
        value is an error naming it (a NaN joint reading must never reach the policy)."""
        state = np.asarray(state, dtype=np.float32)
        if state.ndim == 0 or state.shape[-1] != self.state_dim:
            raise InvalidInput(f"state has shape {state.shape}, expected (..., {self.state_dim})")
        if not np.all(np.isfinite(state)):
            raise InvalidInput(f"state has non-finite values: {state.tolist()}")
        return (state - self.state_mean) / np.maximum(self.state_std, EPSILON)

    def normalize_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        span = np.maximum(self.action_max - self.action_min, EPSILON)
        return 2.0 * (actions - self.action_min) / span - 1.0

    def unnormalize_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        span = np.maximum(self.action_max - self.action_min, EPSILON)
        return (actions + 1.0) * 0.5 * span + self.action_min

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("action_min", "action_max", "state_mean", "state_std")}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NormalizationStats:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in ("action_min", "action_max", "state_mean", "state_std")})
        except FileNotFoundError:
            raise MissingFile(f"normalization statistics not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{path}: invalid normalization statistics ({exc!r})") from None

    @classmethod
    def arx_bimanual(cls, dim: int = DIM, profile: str = "x5") -> NormalizationStats:
        """Defaults for an untrained model on ARX arms: actions span the profile's joint limits and
        gripper width (drivers/profiles.py), the state is centred on the middle of the range with a
        quarter of it as its deviation."""
        arm = get_profile(profile)
        per_arm = len(arm.action_low)
        arms = dim // per_arm
        if arms * per_arm != dim:
            raise InvalidInput(f"{dim} is not a whole number of {per_arm}-D ARX arms")
        low = np.tile(arm.action_low, arms)
        high = np.tile(arm.action_high, arms)
        return cls(low, high, (low + high) / 2, (high - low) / 4)
