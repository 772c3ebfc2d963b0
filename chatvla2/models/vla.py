"""ChatVLA2: the vision encoder, the MoE language model and the ScaleDP action head composed.

Inference (`act`): camera frames + instruction -> visual tokens spliced into the prompt -> prefill
-> greedy reasoning with the KV cache until EOS or the maximum -> `o` (mean last-layer hidden state
over the prompt and image positions) and `r` (mean over the reasoning tokens' positions) -> the
action head denoises a chunk conditioned on them (docs/reference/model.md, point 4) -> unnormalised actions.

Training (`forward`): cross-entropy on the reasoning tokens plus the action head's masked
diffusion loss, `o` and `r` pooled the same way from a teacher-forced full-sequence forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.embodiment import ARM_DIM
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.preprocess import preprocess_images
from chatvla2.contract.prompt import build_prompt, next_text_position
from chatvla2.contract.stage_timer import StageTimer
from chatvla2.contract.tokenizer import TextTokenizer, character_tokenizer
from chatvla2.models.action_head import ScaleDP
from chatvla2.models.language import LanguageModel, write_cache
from chatvla2.models.moe import load_balancing_loss
from chatvla2.models.vision import VisionEncoder

IGNORE_INDEX = -100


@dataclass
class ActOutput:
    reasoning: str
    reasoning_ids: list[int]
    actions: np.ndarray  # (chunk_size, action_dim), unnormalised
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (B, S, H) over the positions where mask (B, S) is set; zeros where none is."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class ChatVLA2(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        tokenizer: TextTokenizer | None = None,
        stats: NormalizationStats | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        if tokenizer is None and cfg.tokenizer == "char":
            tokenizer = character_tokenizer()
        if tokenizer is not None and tokenizer.vocab_size > cfg.language.vocab_size:
            raise InvalidInput(f"tokenizer has {tokenizer.vocab_size} tokens, the model's vocabulary only {cfg.language.vocab_size}")
        self.tokenizer = tokenizer
        head = cfg.action_head
        if stats is None and head.action_dim == head.state_dim and head.action_dim % ARM_DIM == 0:  # whole ARX arms
            stats = NormalizationStats.arx_bimanual(head.action_dim)
        if stats is not None and (stats.action_dim, stats.state_dim) != (head.action_dim, head.state_dim):
            raise InvalidInput(
                f"normalization statistics are for {stats.action_dim}-D actions and {stats.state_dim}-D "
                f"state, the model has {head.action_dim} and {head.state_dim}"
            )
        self.stats = stats
        self.vision = VisionEncoder(cfg.vision, cfg.language.hidden)
        self.language = LanguageModel(cfg.language)
        self.action_head = ScaleDP(cfg.action_head, cfg.scheduler, cfg.language.hidden)
        self._init_backbone()

    def _init_backbone(self) -> None:
        """Normal(0, 0.02) weights and zero biases for the VLM (Qwen2's initializer_range).
        The action head keeps its own AdaLN-Zero initialisation."""
        for module in (self.vision, self.language):
            for name, parameter in module.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(parameter)
                elif parameter.dim() >= 2:
                    nn.init.normal_(parameter, std=0.02)

    # ---- shared pieces -------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, visual: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image placeholder positions replaced by visual embeddings.
        input_ids (B, S); pixel_values (B, views, 3, H, W); visual: the vision encoder's output for
        them when the caller already has it (training reads it too: training/reading_probe.py)."""
        embeddings = self.language.embed_tokens(input_ids)
        if visual is None:
            visual = self.vision(pixel_values.flatten(0, 1))
        visual = visual.to(embeddings.dtype)
        image_positions = input_ids == self.tokenizer.image_pad_id
        if int(image_positions.sum()) != visual.shape[0]:
            raise ValueError(f"{int(image_positions.sum())} image tokens in the prompt, {visual.shape[0]} visual embeddings")
        return embeddings.masked_scatter(image_positions.unsqueeze(-1), visual)

    def set_moe_implementation(self, name: str) -> None:
        self.language.set_moe_implementation(name)

    # ---- training -----------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        observation_mask: torch.Tensor,
        reasoning_mask: torch.Tensor,
        state: torch.Tensor,
        actions: torch.Tensor,
        is_pad: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        prefix_len: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch (see `models.training_batch.make_batch`). All inputs normalised.
        visual: `self.vision`'s output for pixel_values, if the caller computed it already.
        prefix_len: (B,) int64, each chunk's committed prefix for the head (real-time chunking)."""
        moe = self.cfg.language.moe
        router_logits: list[torch.Tensor] | None = [] if moe.load_balancing_weight > 0 else None
        embeddings = self.embed(input_ids, pixel_values, visual)
        hidden, _, _ = self.language(embeddings, position_ids, attention_mask, router_logits)
        logits = self.language.logits(hidden)
        lm_loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
        o = masked_mean(hidden, observation_mask)
        r = masked_mean(hidden, reasoning_mask)
        if bool(is_pad.all()):  # image-text samples only: no action to learn, the head's loss is 0 (skip its work)
            action_loss = hidden.new_zeros((), dtype=torch.float32)
        else:
            action_loss = self.action_head.loss(o, r, state, actions, is_pad, noise=noise, timesteps=timesteps, prefix_len=prefix_len)
        losses = {"lm_loss": lm_loss, "action_loss": action_loss}
        total = lm_loss + action_loss
        if router_logits:
            balance = torch.stack([load_balancing_loss(x, moe.top_k) for x in router_logits]).mean()
            losses["load_balancing_loss"] = balance
            total = total + moe.load_balancing_weight * balance
        losses["loss"] = total
        return losses

    def set_reason_start_layer(self, layer: int) -> None:
        """Condition head blocks >= `layer` on r, the earlier ones on o (the weights do not change
        shape). `layer` == the head's depth is the paper's ablation: o in all layers."""
        head = replace(self.cfg.action_head, reason_start_layer=layer)
        self.cfg = replace(self.cfg, action_head=head)
        self.action_head.cfg = head

    def enable_prefix(self, max_prefix: int) -> None:
        """Train the head to continue committed prefixes of up to `max_prefix` steps (real-time
        chunking, models/action_head.py); the config, and so the checkpoint, records it."""
        self.action_head.enable_prefix(max_prefix)
        self.cfg = replace(self.cfg, action_head=self.action_head.cfg)

    def freeze_vlm(self) -> None:
        """Stage 2 of the paper's recipe: only the action expert trains."""
        for module in (self.vision, self.language):
            module.requires_grad_(False)

    # ---- reference inference -------------------------------------------------------------
    @torch.no_grad()
    def act(
        self,
        images,
        prompt: str,
        state,
        noise: torch.Tensor | np.ndarray | None = None,
        seed: int = 0,
        max_new_tokens: int | None = None,
        prefix: np.ndarray | None = None,
    ) -> ActOutput:
        """images: `num_views` RGB frames (H, W, 3) uint8; state: unnormalised (state_dim,);
        noise: the initial diffusion noise (chunk_size, action_dim), else drawn with `seed`;
        prefix: (k, action_dim) unnormalised committed actions the chunk starts with and continues."""
        if self.tokenizer is None or self.stats is None:
            raise ValueError("act needs a tokenizer and normalization statistics (load a checkpoint)")
        cfg, tokenizer = self.cfg, self.tokenizer
        head = cfg.action_head
        device = self.language.embed_tokens.weight.device
        dtype = self.language.embed_tokens.weight.dtype
        max_new_tokens = cfg.language.max_reasoning_tokens if max_new_tokens is None else max_new_tokens
        timer = StageTimer()
        lap = timer.lap
        pixels = torch.from_numpy(preprocess_images(images, cfg.vision)).to(device, dtype)
        prompt_ids, positions = build_prompt(tokenizer, prompt, cfg)
        state_normalised = torch.from_numpy(self.stats.normalize_state(state)).to(device, dtype).view(1, -1)
        lap("preprocess")

        input_ids = torch.tensor([prompt_ids], device=device)
        embeddings = self.embed(input_ids, pixels.unsqueeze(0))
        lap("vision")

        hidden, logits, keys, values = self.language.prefill(embeddings, torch.from_numpy(positions).to(device).unsqueeze(1))
        key_cache, value_cache = self.language.new_cache(1, dtype, device)
        write_cache(key_cache, keys, 0)
        write_cache(value_cache, values, 0)
        o = hidden.mean(dim=1)
        lap("prefill")

        reasoning_ids: list[int] = []
        reasoning_hidden: list[torch.Tensor] = []
        cache_position = len(prompt_ids)
        text_position = next_text_position(positions)
        token = int(logits.argmax(dim=-1))
        while token != tokenizer.eos_id and len(reasoning_ids) < max_new_tokens and cache_position < cfg.language.max_cache_len:
            reasoning_ids.append(token)
            logits, token_hidden, keys, values = self.language.decode_step(
                self.language.embed_tokens(torch.tensor([[token]], device=device)),
                torch.full((3, 1, 1), text_position, device=device),
                torch.tensor(cache_position, device=device),
                key_cache,
                value_cache,
            )
            write_cache(key_cache, keys, cache_position)
            write_cache(value_cache, values, cache_position)
            reasoning_hidden.append(token_hidden)
            cache_position += 1
            text_position += 1
            token = int(logits.argmax(dim=-1))
        if reasoning_hidden:
            r = torch.stack(reasoning_hidden).mean(dim=0)
        else:
            r = torch.zeros_like(o)
        lap("decode")

        if noise is None:
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn(1, head.chunk_size, head.action_dim, generator=generator)
        noise = torch.as_tensor(noise, dtype=dtype).reshape(1, head.chunk_size, head.action_dim).to(device)
        given = length = None
        if prefix is not None:
            prefix = np.asarray(prefix, np.float32).reshape(-1, head.action_dim)
            given = torch.zeros(1, head.chunk_size, head.action_dim, dtype=dtype)
            given[0, : len(prefix)] = torch.from_numpy(self.stats.normalize_actions(prefix))
            given, length = given.to(device), torch.tensor([len(prefix)], device=device)
        normalised_actions = self.action_head.sample(o, r, state_normalised, noise, given, length)
        actions = self.stats.unnormalize_actions(normalised_actions[0].float().cpu().numpy())
        if prefix is not None:
            actions[: len(prefix)] = prefix  # exactly the committed actions (the round trip is not exact)
        lap("action_head")
        return ActOutput(tokenizer.decode(reasoning_ids), reasoning_ids, actions, timer.finish(len(reasoning_ids)))
