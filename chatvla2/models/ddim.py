"""DDIM: the diffusion scheduler of the action head, in plain torch.

Settings as in the DexVLA code (docs/reference/model.md, point 3): 100 training steps, 10 inference steps,
`squaredcos_cap_v2` betas, the network predicts the noise (epsilon), clipped samples, eta = 0,
"leading" timestep spacing, and the final alpha cumprod set to one.

Every per-step coefficient is a Python float fixed at construction, and `step` takes the step index
as a Python int: a traced `sample` unrolls into one graph with constant coefficients and no
data-dependent control flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from chatvla2.contract.config import SchedulerConfig

# Nichol & Dhariwal 2021 ("Improved DDPM", eq. 17): the offset s and the cap on beta.
_COSINE_OFFSET = 0.008
_MAX_BETA = 0.999


def cosine_alpha_bar(t: float) -> float:
    """alpha_bar(t) = cos((t + s) / (1 + s) * pi / 2)^2 for t in [0, 1] (Nichol & Dhariwal 2021)."""
    return math.cos((t + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * math.pi / 2) ** 2


def squaredcos_cap_v2_betas(train_steps: int) -> torch.Tensor:
    """beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), 0.999), float64, shape (T,)."""
    betas = [
        min(1.0 - cosine_alpha_bar((i + 1) / train_steps) / cosine_alpha_bar(i / train_steps), _MAX_BETA)
        for i in range(train_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64, device="cpu")


class DDIMScheduler:
    """Deterministic DDIM (eta = 0) with epsilon prediction.

    Attributes:
        alphas_cumprod: (train_steps,) float32, alpha_bar_t for every training timestep t.
        final_alpha_cumprod: 1.0, the alpha used after the last inference step ("set_alpha_to_one").
        step_ratio: train_steps // inference_steps.
        timesteps: (inference_steps,) int64, the timestep of each inference step, descending
            (90, 80, ..., 0 for 100/10).
        prev_timesteps: (inference_steps,) int64, t - step_ratio for each step; negative means the
            step lands on final_alpha_cumprod.
        alphas_t, alphas_prev: (inference_steps,) float32, alpha_bar at t and at the previous
            timestep for each inference step.
    """

    def __init__(self, cfg: SchedulerConfig) -> None:
        # The tables live on the CPU (even under `with torch.device("meta")`); add_noise moves what
        # it needs to the data's device.
        self.cfg = cfg
        betas = squaredcos_cap_v2_betas(cfg.train_steps)
        self.betas = betas.to(torch.float32)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
        # DexVLA's DDIMScheduler(set_alpha_to_one=True): the step past t = 0 lands on a clean sample.
        self.final_alpha_cumprod = 1.0

        # "leading" spacing with steps_offset = 0: t_i = (inference_steps - 1 - i) * step_ratio.
        self.step_ratio = cfg.train_steps // cfg.inference_steps
        steps = range(cfg.inference_steps)
        timesteps = [(cfg.inference_steps - 1 - i) * self.step_ratio for i in steps]
        prev_timesteps = [t - self.step_ratio for t in timesteps]
        self.timesteps = torch.tensor(timesteps, dtype=torch.int64, device="cpu")
        self.prev_timesteps = torch.tensor(prev_timesteps, dtype=torch.int64, device="cpu")

        # Python floats taken from the float32 table, so the coefficients match alphas_cumprod.
        table = self.alphas_cumprod.tolist()
        self._alpha_t = [table[t] for t in timesteps]
        self._alpha_prev = [table[p] if p >= 0 else self.final_alpha_cumprod for p in prev_timesteps]
        self.alphas_t = torch.tensor(self._alpha_t, dtype=torch.float32, device="cpu")
        self.alphas_prev = torch.tensor(self._alpha_prev, dtype=torch.float32, device="cpu")

    @property
    def num_inference_steps(self) -> int:
        return self.cfg.inference_steps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward process: sqrt(a_t) x0 + sqrt(1 - a_t) noise, with a_t per batch element.

        x0, noise: (B, ...); timesteps: (B,) integer training timesteps in [0, train_steps).
        """
        alpha = self.alphas_cumprod.to(device=x0.device)[timesteps.to(device=x0.device, dtype=torch.long)]
        alpha = alpha.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
        return alpha.sqrt() * x0 + (1.0 - alpha).sqrt() * noise

    def step(self, eps: torch.Tensor, i: int, x_t: torch.Tensor) -> torch.Tensor:
        """One DDIM step (eta = 0) from inference step i's timestep to the previous one.

        eps: the model's noise prediction at x_t. The update re-uses eps as predicted; it is not
        re-derived from the clipped x0 (as in the DexVLA / diffusers DDIM step).
        """
        if not 0 <= i < self.cfg.inference_steps:
            raise IndexError(f"inference step {i} is outside 0..{self.cfg.inference_steps - 1}")
        alpha_t, alpha_prev = self._alpha_t[i], self._alpha_prev[i]
        # Song et al. 2021 (DDIM), eq. 12 with sigma = 0.
        x0_pred = (x_t - math.sqrt(1.0 - alpha_t) * eps) / math.sqrt(alpha_t)
        if self.cfg.clip_sample:
            limit = self.cfg.clip_sample_range
            x0_pred = x0_pred.clamp(-limit, limit)
        return math.sqrt(alpha_prev) * x0_pred + math.sqrt(1.0 - alpha_prev) * eps

    def sample(
        self,
        denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """Run every inference step from pure noise; `denoise(x, t)` returns epsilon, t is (B,) int64.

        Deterministic given `noise` (eta = 0 draws no randomness).
        """
        x = noise
        for i, t in enumerate(self.timesteps.tolist()):
            t_batch = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
            x = self.step(denoise(x, t_batch), i, x)
        return x
