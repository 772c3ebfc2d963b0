"""The DDIM scheduler: schedule values, timestep spacing, the exact inverse step, clipping, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from chatvla2.contract.config import SchedulerConfig
from chatvla2.models.ddim import DDIMScheduler, cosine_alpha_bar


@pytest.fixture(scope="module")
def scheduler() -> DDIMScheduler:
    return DDIMScheduler(SchedulerConfig())  # 100 training / 10 inference steps, clipped at 1


def test_leading_timesteps_for_100_over_10(scheduler: DDIMScheduler) -> None:
    assert scheduler.step_ratio == 10
    assert scheduler.timesteps.dtype == torch.int64
    assert scheduler.timesteps.tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert scheduler.prev_timesteps.tolist() == [80, 70, 60, 50, 40, 30, 20, 10, 0, -10]


@pytest.mark.parametrize(("train", "infer", "expected"), [(100, 7, [84, 70, 56, 42, 28, 14, 0]), (50, 50, None)])
def test_leading_timesteps_other_counts(train: int, infer: int, expected: list[int] | None) -> None:
    sched = DDIMScheduler(SchedulerConfig(train_steps=train, inference_steps=infer))
    assert sched.timesteps.tolist() == (expected or list(range(train - 1, -1, -1)))


def test_step_alphas_follow_the_table_and_end_at_one(scheduler: DDIMScheduler) -> None:
    table = scheduler.alphas_cumprod
    assert torch.equal(scheduler.alphas_t, table[scheduler.timesteps])
    assert torch.equal(scheduler.alphas_prev[:-1], table[scheduler.prev_timesteps[:-1]])
    assert scheduler.final_alpha_cumprod == 1.0 and scheduler.alphas_prev[-1].item() == 1.0


def test_alphas_cumprod_decreasing_in_unit_interval(scheduler: DDIMScheduler) -> None:
    a = scheduler.alphas_cumprod
    assert a.shape == (100,) and a.dtype == torch.float32
    assert bool((a > 0).all()) and bool((a <= 1).all())
    assert bool((a[1:] < a[:-1]).all())


def test_alphas_cumprod_match_the_cosine_closed_form(scheduler: DDIMScheduler) -> None:
    # Uncapped betas telescope: alpha_cumprod_i = alpha_bar((i+1)/T) / alpha_bar(0).
    for i in (0, 1, 10, 50, 90, 98):
        expected = cosine_alpha_bar((i + 1) / 100) / cosine_alpha_bar(0.0)
        assert scheduler.alphas_cumprod[i].item() == pytest.approx(expected, rel=1e-5)
    # alpha_bar(1) = 0, so the last beta is capped at 0.999.
    assert scheduler.alphas_cumprod[99].item() == pytest.approx(scheduler.alphas_cumprod[98].item() * 1e-3, rel=1e-4)
    assert scheduler.betas[99].item() == pytest.approx(0.999)
    # The first value written out: cos(0.018/1.008 * pi/2)^2 / cos(0.008/1.008 * pi/2)^2.
    first = (math.cos(0.018 / 1.008 * math.pi / 2) / math.cos(0.008 / 1.008 * math.pi / 2)) ** 2
    assert scheduler.alphas_cumprod[0].item() == pytest.approx(first, rel=1e-6)


def test_add_noise_uses_each_batch_elements_timestep(scheduler: DDIMScheduler) -> None:
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    t = torch.tensor([0, 42, 99])
    out = scheduler.add_noise(x0, noise, t)
    for b in range(3):
        a = scheduler.alphas_cumprod[t[b]]
        torch.testing.assert_close(out[b], a.sqrt() * x0[b] + (1 - a).sqrt() * noise[b])


def test_step_with_the_true_noise_is_exact(scheduler: DDIMScheduler) -> None:
    # |x0| < 1: clipping does not bind, so each step lands exactly on the forward process at the
    # previous timestep, and the last one (to alpha = 1) returns x0.
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 50, 14, generator=gen) * 1.8 - 0.9
    eps = torch.randn(4, 50, 14, generator=gen)
    for i, (t, prev) in enumerate(zip(scheduler.timesteps, scheduler.prev_timesteps)):
        x_t = scheduler.add_noise(x0, eps, t.repeat(4))
        x_prev = scheduler.step(eps, i, x_t)
        expected = x0 if prev < 0 else scheduler.add_noise(x0, eps, prev.repeat(4))
        torch.testing.assert_close(x_prev, expected, atol=1e-5, rtol=0)


def test_clipping_binds_at_plus_minus_one(scheduler: DDIMScheduler) -> None:
    x0 = torch.tensor([[-3.0, -1.5, 0.25, 2.0, 7.0]])
    eps = torch.tensor([[0.3, -0.2, 0.1, 1.0, -0.5]])
    last = scheduler.num_inference_steps - 1  # t = 0 -> alpha_prev = 1: x_prev is the clipped x0
    x_t = scheduler.add_noise(x0, eps, scheduler.timesteps[last].repeat(1))
    out = scheduler.step(eps, last, x_t)
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0, 0.25, 1.0, 1.0]]), atol=1e-5, rtol=0)
    assert out.abs().max().item() == 1.0
    # A middle step: x_prev = sqrt(a_prev) * clip(x0) + sqrt(1 - a_prev) * eps, eps unchanged.
    x_t = scheduler.add_noise(x0, eps, scheduler.timesteps[3].repeat(1))
    a_prev = scheduler.alphas_prev[3]
    expected = a_prev.sqrt() * x0.clamp(-1, 1) + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(scheduler.step(eps, 3, x_t), expected, atol=1e-5, rtol=0)


def test_without_clipping_the_step_is_unbounded() -> None:
    sched = DDIMScheduler(SchedulerConfig(clip_sample=False))
    x0, eps = torch.tensor([[-3.0, 7.0]]), torch.tensor([[0.3, -0.5]])
    last = sched.num_inference_steps - 1
    out = sched.step(eps, last, sched.add_noise(x0, eps, sched.timesteps[last].repeat(1)))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_step_rejects_an_unknown_index(scheduler: DDIMScheduler) -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(IndexError):
        scheduler.step(x, scheduler.num_inference_steps, x)


def test_sample_is_deterministic_and_visits_every_timestep(scheduler: DDIMScheduler) -> None:
    seen: list[list[int]] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.int64 and t.shape == (x.shape[0],)
        seen.append(t.tolist())
        return torch.tanh(x * 0.7 + t.to(x.dtype).unsqueeze(-1).unsqueeze(-1) * 1e-3)

    noise = torch.randn(2, 50, 14, generator=torch.Generator().manual_seed(2))
    first = scheduler.sample(denoise, noise)
    second = scheduler.sample(denoise, noise.clone())
    assert torch.equal(first, second)
    assert [ts[0] for ts in seen[:10]] == scheduler.timesteps.tolist()
    assert all(ts[0] == ts[1] for ts in seen)
    assert first.abs().max().item() <= 1.0  # the last step returns the clipped x0 prediction
