"""ScaleDP: shapes, AdaLN-Zero init, reasoning-following conditioning, sampling, the masked loss, sizes.

Non-trivial outputs need the AdaLN-Zero layers (every modulation and the output Linear) off zero:
those tests build the head with the standard init and then call `ScaleDP.perturb_zero_init_`.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from chatvla2.contract.config import ActionHeadConfig, get_config
from chatvla2.models.action_head import ScaleDP

TINY = get_config("tiny")
BATCH = 2


def make_head(seed: int = 0, perturb: bool = True, **overrides: object) -> ScaleDP:
    cfg = dataclasses.replace(TINY.action_head, **overrides)
    torch.manual_seed(seed)
    head = ScaleDP(cfg, TINY.scheduler, TINY.language.hidden)
    head.init_weights(generator=torch.Generator().manual_seed(seed))
    if perturb:
        head.perturb_zero_init_(std=0.02, generator=torch.Generator().manual_seed(seed + 1))
    return head.eval()


def make_inputs(head: ScaleDP, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg, gen = head.cfg, torch.Generator().manual_seed(seed)
    return {
        "noisy_actions": torch.randn(BATCH, cfg.chunk_size, cfg.action_dim, generator=gen),
        "timesteps": torch.tensor([7, 63]),
        "o": torch.randn(BATCH, head.condition_dim, generator=gen),
        "r": torch.randn(BATCH, head.condition_dim, generator=gen),
        "state": torch.randn(BATCH, cfg.state_dim, generator=gen),
    }


@pytest.fixture(scope="module")
def head() -> ScaleDP:
    return make_head()


def test_forward_shape_and_float_timesteps_match_int(head: ScaleDP) -> None:
    inputs = make_inputs(head)
    with torch.no_grad():
        eps = head(**inputs)
        eps_float = head(**{**inputs, "timesteps": inputs["timesteps"].to(torch.float32)})
    assert eps.shape == (BATCH, head.cfg.chunk_size, head.cfg.action_dim)
    assert torch.isfinite(eps).all() and eps.abs().max() > 0
    assert torch.equal(eps, eps_float)


def test_standard_init_is_adaln_zero() -> None:
    head = make_head(perturb=False)
    for linear in head.zero_init_layers():
        assert not linear.weight.any() and not linear.bias.any()
    assert {id(m) for m in head.zero_init_layers()} == {
        id(m) for name, m in head.named_modules() if name.endswith("modulation") or name == "final.linear"
    }
    with torch.no_grad():
        assert not head(**make_inputs(head)).any()  # eps = 0 exactly until trained or perturbed


def test_zero_init_head_still_gets_a_training_signal() -> None:
    head = make_head(perturb=False).train()
    cfg = head.cfg
    inputs = make_inputs(head)
    actions = torch.rand(BATCH, cfg.chunk_size, cfg.action_dim) * 2 - 1
    is_pad = torch.zeros(BATCH, cfg.chunk_size, dtype=torch.bool)
    head.loss(inputs["o"], inputs["r"], inputs["state"], actions, is_pad,
              generator=torch.Generator().manual_seed(0)).backward()
    assert head.final.linear.weight.grad.abs().sum() > 0


def test_changing_r_keeps_first_half_blocks_bit_identical(head: ScaleDP) -> None:
    inputs = make_inputs(head)
    other_r = inputs["r"] + torch.randn(inputs["r"].shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        eps_a, blocks_a = head(**inputs, return_block_outputs=True)
        eps_b, blocks_b = head(**{**inputs, "r": other_r}, return_block_outputs=True)
    start = head.cfg.reason_start
    assert len(blocks_a) == head.cfg.depth and 0 < start < head.cfg.depth
    for i in range(start):
        assert torch.equal(blocks_a[i], blocks_b[i]), f"block {i} (< reason_start) saw r"
    for i in range(start, head.cfg.depth):
        assert not torch.equal(blocks_a[i], blocks_b[i]), f"block {i} (>= reason_start) ignored r"
    assert not torch.allclose(eps_a, eps_b)


def test_changing_o_changes_first_half_blocks(head: ScaleDP) -> None:
    inputs = make_inputs(head)
    other_o = inputs["o"] + torch.randn(inputs["o"].shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        eps_a, blocks_a = head(**inputs, return_block_outputs=True)
        eps_b, blocks_b = head(**{**inputs, "o": other_o}, return_block_outputs=True)
    for i in range(head.cfg.reason_start):
        assert not torch.allclose(blocks_a[i], blocks_b[i]), f"block {i} (< reason_start) ignored o"
    assert not torch.allclose(eps_a, eps_b)


@pytest.mark.parametrize("reason_start", [0, 2, 4])
def test_reason_start_at_the_ends(reason_start: int) -> None:
    # 0: every block follows r (o is unused); depth (4): the paper's ablation "o in all layers",
    # the final layer included, so r is unused.
    head = make_head(reason_start_layer=reason_start)
    assert head.cfg.depth == 4
    inputs = make_inputs(head)
    with torch.no_grad():
        eps_a, blocks_a = head(**inputs, return_block_outputs=True)
        eps_b, blocks_b = head(**{**inputs, "r": -inputs["r"]}, return_block_outputs=True)
        eps_c = head(**{**inputs, "o": -inputs["o"]})
    changed = [not torch.equal(a, b) for a, b in zip(blocks_a, blocks_b)]
    assert changed == [i >= reason_start for i in range(head.cfg.depth)]
    assert torch.equal(eps_a, eps_b) == (reason_start == 4)
    assert torch.equal(eps_a, eps_c) == (reason_start == 0)


def test_sample_is_deterministic_and_clipped(head: ScaleDP) -> None:
    inputs = make_inputs(head)
    noise = torch.randn(BATCH, head.cfg.chunk_size, head.cfg.action_dim, generator=torch.Generator().manual_seed(3))
    first = head.sample(inputs["o"], inputs["r"], inputs["state"], noise)
    second = head.sample(inputs["o"], inputs["r"], inputs["state"], noise.clone())
    assert first.shape == noise.shape
    assert torch.equal(first, second)
    assert first.abs().max() <= head.scheduler.cfg.clip_sample_range
    assert not torch.equal(first, head.sample(inputs["o"], -inputs["r"], inputs["state"], noise))


def test_sample_traces_without_branching_on_tensor_values(head: ScaleDP) -> None:
    class Sample(nn.Module):
        def __init__(self, head: ScaleDP) -> None:
            super().__init__()
            self.head = head

        def forward(self, o, r, state, noise):  # noqa: ANN001, ANN201
            return self.head.sample(o, r, state, noise)

    def args(seed: int) -> tuple[torch.Tensor, ...]:
        x = make_inputs(head, seed)
        return x["o"], x["r"], x["state"], x["noisy_actions"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace is deprecated, still fine here
        warnings.simplefilter("error", torch.jit.TracerWarning)  # raised on a data-dependent Python branch
        traced = torch.jit.trace(Sample(head), args(0), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(*args(1)), head.sample(*args(1)), atol=1e-6, rtol=0)


def _loss_inputs(head: ScaleDP, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg, gen = head.cfg, torch.Generator().manual_seed(seed)
    x = make_inputs(head, seed)
    is_pad = torch.zeros(BATCH, cfg.chunk_size, dtype=torch.bool)
    is_pad[0, 30:] = True
    is_pad[1, 45:] = True
    return {
        "o": x["o"], "r": x["r"], "state": x["state"],
        "actions": torch.rand(BATCH, cfg.chunk_size, cfg.action_dim, generator=gen) * 2 - 1,
        "is_pad": is_pad,
        "noise": torch.randn(BATCH, cfg.chunk_size, cfg.action_dim, generator=gen),
        "timesteps": torch.tensor([12, 77]),
    }


def test_padded_steps_do_not_affect_the_loss(head: ScaleDP) -> None:
    inputs = _loss_inputs(head)
    pad = inputs["is_pad"].unsqueeze(-1)
    changed = inputs["actions"].masked_fill(pad, 5.0)
    with torch.no_grad():
        base = head.loss(**inputs)
        assert torch.equal(base, head.loss(**{**inputs, "actions": changed}))
        real = inputs["actions"].clone()
        real[0, 0] += 0.5
        assert not torch.equal(base, head.loss(**{**inputs, "actions": real}))


def test_loss_is_the_mean_over_real_steps_and_action_dims(head: ScaleDP) -> None:
    inputs = _loss_inputs(head)
    with torch.no_grad():
        no_pad = {**inputs, "is_pad": torch.zeros_like(inputs["is_pad"])}
        noisy = head.scheduler.add_noise(inputs["actions"], inputs["noise"], inputs["timesteps"])
        eps = head(noisy, inputs["timesteps"], inputs["o"], inputs["r"], inputs["state"])
        torch.testing.assert_close(head.loss(**no_pad), torch.mean((eps - inputs["noise"]) ** 2))

        actions = inputs["actions"].masked_fill(inputs["is_pad"].unsqueeze(-1), 0.0)
        noisy = head.scheduler.add_noise(actions, inputs["noise"], inputs["timesteps"])
        eps = head(noisy, inputs["timesteps"], inputs["o"], inputs["r"], inputs["state"])
        real = ~inputs["is_pad"]
        torch.testing.assert_close(head.loss(**inputs), ((eps - inputs["noise"]) ** 2)[real].mean())


def test_loss_draws_noise_and_timesteps_from_the_generator(head: ScaleDP) -> None:
    inputs = {k: v for k, v in _loss_inputs(head).items() if k not in ("noise", "timesteps")}
    with torch.no_grad():
        a = head.loss(**inputs, generator=torch.Generator().manual_seed(5))
        b = head.loss(**inputs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.isfinite(a)


def test_gradient_reaches_every_parameter() -> None:
    head = make_head().train()
    head.loss(**_loss_inputs(head)).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_parameter_names_are_stable(head: ScaleDP) -> None:
    names = set(head.state_dict())
    expected = {
        "action_in.weight", "position_embedding",
        "timestep_embed.fc1.weight", "timestep_embed.fc2.weight",
        "projector_o.fc1.weight", "projector_o.fc2.weight", "projector_r.fc1.weight", "projector_r.fc2.weight",
        "cond_obs.norm.weight", "cond_obs.linear.weight", "cond_reason.norm.weight", "cond_reason.linear.weight",
        "final.modulation.weight", "final.linear.weight", "final.linear.bias",
    }
    for i in range(head.cfg.depth):
        expected |= {f"blocks.{i}.{n}.weight" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "modulation")}
    assert expected <= names
    assert not any("scheduler" in n for n in names)
    assert head.position_embedding.shape == (1, head.cfg.chunk_size, head.cfg.width)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_scaledp_h_is_about_one_billion_parameters() -> None:
    paper = get_config("paper")
    with torch.device("meta"):
        head = ScaleDP(paper.action_head, paper.scheduler, paper.language.hidden)
    assert (head.cfg.depth, head.cfg.width, head.cfg.heads) == (32, 1280, 16)
    assert 0.95e9 <= _count(head) <= 1.1e9
    # docs/reference/model.md: per block attention 6.6M, MLP 13.1M, AdaLN modulation 9.8M.
    block = head.blocks[0]
    assert _count(block.attn) == pytest.approx(6.6e6, rel=0.01)
    assert _count(block.mlp) == pytest.approx(13.1e6, rel=0.01)
    assert _count(block.modulation) == pytest.approx(9.8e6, rel=0.01)


def test_scaledp_s_is_about_33_million_parameters() -> None:
    cfg = ActionHeadConfig(depth=12, width=384, heads=6)
    with torch.device("meta"):
        head = ScaleDP(cfg, TINY.scheduler, condition_dim=get_config("small").language.hidden)
    assert 31e6 <= _count(head) <= 35e6
