"""ScaleDP: the diffusion-transformer action head, with ChatVLA-2's reasoning-following conditioning.

A DiT over the action chunk (docs/reference/model.md, point 3): non-causal self-attention over the chunk's steps,
conditioned by AdaLN-Zero (Peebles & Xie 2023, "DiT"), not by cross-attention. The condition
(docs/reference/model.md, point 4): o = the VLM's mean hidden state over the prompt and image tokens, r = its mean
over the generated reasoning tokens, each through a Linear-GELU-Linear projector, then

    c_obs    = t_emb + Linear_obs([LayerNorm(o_proj); state])
    c_reason = t_emb + Linear_reason([LayerNorm(r_proj); state])

Blocks i < reason_start take c_obs, the later blocks and the final layer take c_reason. With
reason_start == depth every block and the final layer take c_obs: the paper's ablation "o in all
layers" (no reasoning following), for which r is computed but unused.

The `combine` condition form is the conditioning of DexVLA's released ScaleDP heads (c = t_emb +
Linear(MLP([o; state]))), with a mirrored r path, so that those weights load as they are
(models/import_scaledp.py).

Real-time chunking by prefix conditioning (Black et al. 2025, arXiv 2506.07339, do it at training
time): the first `prefix_len` actions of a chunk are the ones already committed to the arm while
the chunk is computed. They enter the head clean, in place of the noisy actions at every denoising
step, marked by a learned embedding (`prefix_embedding`, only when the head was trained for it:
`max_prefix` > 0), and the output holds them exactly; the rest is denoised to continue them.
prefix_len 0 is the head without a prefix, value for value (a selection and an added zero).

Attention is written out with matmul and softmax so it exports to plain ONNX ops.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.contract.config import ActionHeadConfig, SchedulerConfig
from chatvla2.models.ddim import DDIMScheduler

# DiT: the LayerNorms before attention, MLP and output have no affine parameters, eps 1e-6.
_NORM_EPS = 1e-6


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: x * (1 + scale) + shift; x (B, T, W), shift and scale (B, W)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps (int or float) -> (B, dim) float32, [cos | sin] (DiT)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.to(torch.float32).unsqueeze(-1) * freqs
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class TimestepEmbedding(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear to the head width."""

    def __init__(self, frequency_dim: int, width: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.fc1 = nn.Linear(frequency_dim, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        x = timestep_sinusoid(timesteps, self.frequency_dim).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(x)))


class Projector(nn.Module):
    """The small MLP that maps o or r from the VLM width to the head width: Linear-GELU-Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConditionEmbedding(nn.Module):
    """Linear([LayerNorm(projected condition); state]) -> (B, width); t_emb is added by the caller."""

    def __init__(self, width: int, state_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width + state_dim, width)

    def forward(self, projected: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([self.norm(projected), state.to(projected.dtype)], dim=-1))


class CombineCondition(nn.Module):
    """DexVLA's conditioning (its released ScaleDP heads): Linear([condition; state]) -> ReLU ->
    Linear -> ReLU -> Linear back to the condition's width ("combine"), then Linear to the head
    width ("cond_obs_emb"); t_emb is added by the caller. The `combine` condition form."""

    def __init__(self, condition_dim: int, state_dim: int, hidden: int, width: int) -> None:
        super().__init__()
        self.combine = nn.Sequential(
            nn.Linear(condition_dim + state_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, condition_dim),
        )
        self.embed = nn.Linear(condition_dim, width)

    def forward(self, condition: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.embed(self.combine(torch.cat([condition, state.to(condition.dtype)], dim=-1)))


class Attention(nn.Module):
    """Non-causal multi-head self-attention over the chunk, as explicit matmul + softmax."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        qkv = self.qkv(x).reshape(batch, steps, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, T, head_dim)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim**-0.5)
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(batch, steps, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """x += gate_msa * attn(modulate(norm1(x))); x += gate_mlp * mlp(modulate(norm2(x))) (DiT)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=_NORM_EPS)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=_NORM_EPS)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.modulation = nn.Linear(width, 6 * width)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.modulation(F.silu(c)).chunk(6, dim=-1)
        )
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """LayerNorm, AdaLN (shift, scale) from c_reason (c_obs in the o-only ablation), Linear to the action dimension."""

    def __init__(self, width: int, action_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=_NORM_EPS)
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, action_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(c)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class ScaleDP(nn.Module):
    """The action head: predicts the noise in a noisy, normalised action chunk.

    Built with the AdaLN-Zero init of DiT (`init_weights`): every modulation Linear and the output
    Linear are zero, so an untrained head predicts eps = 0 exactly. `perturb_zero_init_` fills
    those layers with small random values for tests and untrained demos.
    """

    def __init__(self, cfg: ActionHeadConfig, scheduler_cfg: SchedulerConfig, condition_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition_dim = condition_dim
        self.scheduler = DDIMScheduler(scheduler_cfg)
        width = cfg.width
        projector_hidden = cfg.projector_hidden or width

        self.action_in = nn.Linear(cfg.action_dim, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, cfg.chunk_size, width))
        self.timestep_embed = TimestepEmbedding(cfg.timestep_embedding_dim, width)
        if cfg.condition == "combine":
            # DexVLA's form; the reasoning half mirrors it (ChatVLA-2 adds the r path).
            self.combine_o = CombineCondition(condition_dim, cfg.state_dim, projector_hidden, width)
            self.combine_r = CombineCondition(condition_dim, cfg.state_dim, projector_hidden, width)
        else:
            self.projector_o = Projector(condition_dim, projector_hidden, width)
            self.projector_r = Projector(condition_dim, projector_hidden, width)
            self.cond_obs = ConditionEmbedding(width, cfg.state_dim)
            self.cond_reason = ConditionEmbedding(width, cfg.state_dim)
        self.blocks = nn.ModuleList(DiTBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(width, cfg.action_dim)
        # Added to the committed steps' tokens: which steps are given, not noisy (max_prefix > 0).
        self.prefix_embedding = nn.Parameter(torch.zeros(1, 1, width)) if cfg.max_prefix > 0 else None
        self.init_weights()

    # ----------------------------------------------------------------------------------- init
    def zero_init_layers(self) -> list[nn.Linear]:
        """The Linears that AdaLN-Zero starts at zero: every modulation and the output projection."""
        return [block.modulation for block in self.blocks] + [self.final.modulation, self.final.linear]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """DiT's init: Xavier-uniform Linears with zero bias, N(0, 0.02) for the timestep MLP and the
        position embedding, and zero for the AdaLN modulations and the output Linear (AdaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position_embedding, std=0.02, generator=generator)
        for linear in (self.timestep_embed.fc1, self.timestep_embed.fc2):
            nn.init.normal_(linear.weight, std=0.02, generator=generator)
        if self.cfg.condition == "combine":  # as DexVLA initialises cond_obs_emb
            for condition in (self.combine_o, self.combine_r):
                nn.init.normal_(condition.embed.weight, std=0.02, generator=generator)
        for linear in self.zero_init_layers():
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def enable_prefix(self, max_prefix: int) -> None:
        """Train this head to continue committed prefixes up to `max_prefix` steps: the config says
        so and a zero prefix embedding is added if it has none (its other weights are unchanged)."""
        self.cfg = replace(self.cfg, max_prefix=max_prefix)
        if max_prefix > 0 and self.prefix_embedding is None:
            self.prefix_embedding = nn.Parameter(torch.zeros(1, 1, self.cfg.width, device=self.position_embedding.device))

    @torch.no_grad()
    def perturb_zero_init_(self, std: float = 0.02, generator: torch.Generator | None = None) -> ScaleDP:
        """Fill the AdaLN-Zero layers with N(0, std) so an untrained head gives non-trivial outputs.

        For tests and untrained demos only; a trained checkpoint overwrites these weights anyway.
        """
        for linear in self.zero_init_layers():
            nn.init.normal_(linear.weight, std=std, generator=generator)
            nn.init.normal_(linear.bias, std=std, generator=generator)
        return self

    # -------------------------------------------------------------------------------- forward
    def condition_bases(
        self, o: torch.Tensor, r: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The timestep-independent parts of c_obs and c_reason, (B, width) each.

        c_obs's part is None when no block takes it (reason_start == 0). Computed once per chunk
        in `sample`; only t_emb changes from one denoising step to the next.
        """
        base_obs = None
        if self.cfg.condition == "combine":
            if self.cfg.reason_start > 0:
                base_obs = self.combine_o(o, state)
            return base_obs, self.combine_r(r, state)
        if self.cfg.reason_start > 0:
            base_obs = self.cond_obs(self.projector_o(o), state)
        base_reason = self.cond_reason(self.projector_r(r), state)
        return base_obs, base_reason

    def prefix_mask(self, prefix_len: torch.Tensor) -> torch.Tensor:
        """(B, chunk_size, 1) bool: the steps before each sample's prefix_len (B,) int64."""
        steps = torch.arange(self.cfg.chunk_size, device=prefix_len.device)
        return (steps.view(1, -1) < prefix_len.view(-1, 1)).unsqueeze(-1)

    def denoise(
        self,
        noisy_actions: torch.Tensor,
        timesteps: torch.Tensor,
        base_obs: torch.Tensor | None,
        base_reason: torch.Tensor,
        return_block_outputs: bool = False,
        prefix_actions: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict the noise given precomputed condition bases (see `condition_bases`). With
        prefix_actions (B, T, action_dim) and `prefix` (`prefix_mask`), the masked steps enter clean."""
        t_emb = self.timestep_embed(timesteps)
        c_obs = None if base_obs is None else t_emb + base_obs
        c_reason = t_emb + base_reason

        if prefix is not None:
            noisy_actions = torch.where(prefix, prefix_actions.to(noisy_actions.dtype), noisy_actions)
        x = self.action_in(noisy_actions) + self.position_embedding
        if prefix is not None and self.prefix_embedding is not None:
            x = x + prefix.to(x.dtype) * self.prefix_embedding
        block_outputs = []
        for i, block in enumerate(self.blocks):
            # ChatVLA-2's reasoning-following enhancement: o conditions the first blocks, r the rest.
            x = block(x, c_obs if i < self.cfg.reason_start else c_reason)
            if return_block_outputs:
                block_outputs.append(x)
        eps = self.final(x, c_reason if self.cfg.reason_start < self.cfg.depth else c_obs)
        return (eps, block_outputs) if return_block_outputs else eps

    def forward(
        self,
        noisy_actions: torch.Tensor,
        timesteps: torch.Tensor,
        o: torch.Tensor,
        r: torch.Tensor,
        state: torch.Tensor,
        return_block_outputs: bool = False,
        prefix_actions: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Predicted noise (B, T, action_dim).

        noisy_actions: (B, chunk_size, action_dim); timesteps: (B,) int64 or float;
        o, r: (B, condition_dim); state: (B, state_dim), normalised.
        With return_block_outputs, also the list of every block's output (B, T, width).
        prefix_actions and prefix (`prefix_mask`): the committed steps, entered clean (`denoise`).
        """
        base_obs, base_reason = self.condition_bases(o, r, state)
        return self.denoise(noisy_actions, timesteps, base_obs, base_reason, return_block_outputs, prefix_actions, prefix)

    @torch.no_grad()
    def sample(
        self,
        o: torch.Tensor,
        r: torch.Tensor,
        state: torch.Tensor,
        noise: torch.Tensor,
        prefix_actions: torch.Tensor | None = None,
        prefix_len: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise `noise` (B, chunk_size, action_dim) into a normalised action chunk with DDIM.

        With prefix_actions (B, chunk_size, action_dim, normalised; only the first prefix_len
        steps are read) and prefix_len (B,) int64, the chunk starts with those steps exactly and
        the rest continues them (module docstring).

        Deterministic given the noise; no Python branch on tensor values, so it traces into one
        graph with the inference steps unrolled.
        """
        base_obs, base_reason = self.condition_bases(o, r, state)
        prefix = None if prefix_len is None else self.prefix_mask(prefix_len)
        chunk = self.scheduler.sample(
            lambda x, t: self.denoise(x, t, base_obs, base_reason, prefix_actions=prefix_actions, prefix=prefix), noise
        )
        return chunk if prefix is None else torch.where(prefix, prefix_actions.to(chunk.dtype), chunk)

    def loss(
        self,
        o: torch.Tensor,
        r: torch.Tensor,
        state: torch.Tensor,
        actions: torch.Tensor,
        is_pad: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        prefix_len: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Epsilon-prediction MSE over the real (not padded) steps of the chunk, a scalar.

        actions: (B, T, action_dim) normalised; is_pad: (B, T) bool, True on padded steps. noise and
        timesteps are drawn from `generator` when not given. prefix_len (B,) int64: the first steps
        of each chunk are given clean as a committed prefix and not learned (module docstring).
        """
        batch = actions.shape[0]
        draw_on = generator.device if generator is not None else actions.device
        if noise is None:
            noise = torch.randn(actions.shape, generator=generator, dtype=actions.dtype, device=draw_on)
            noise = noise.to(actions.device)
        if timesteps is None:
            train_steps = self.scheduler.cfg.train_steps
            timesteps = torch.randint(0, train_steps, (batch,), generator=generator, device=draw_on)
            timesteps = timesteps.to(actions.device)
        pad = is_pad.to(torch.bool).unsqueeze(-1)
        # Attention mixes the chunk's steps, so whatever values sit at padded steps would reach the
        # real steps' predictions: set them to 0 so the loss depends on the real steps only.
        actions = actions.masked_fill(pad, 0.0)
        noisy = self.scheduler.add_noise(actions, noise, timesteps)
        prefix = None if prefix_len is None else self.prefix_mask(prefix_len)
        eps = self.forward(noisy, timesteps, o, r, state, prefix_actions=actions, prefix=prefix)
        if prefix is not None:
            pad = pad | prefix  # the committed steps are given, not predicted
        squared = (eps - noise).pow(2).masked_fill(pad, 0.0)
        # Mean over the real steps and action dims (DexVLA's code divides by all steps instead).
        count = (~pad).sum() * actions.shape[-1]
        return squared.sum() / count.clamp(min=1)
