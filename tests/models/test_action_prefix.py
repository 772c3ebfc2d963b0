"""Real-time chunking in ScaleDP (models/action_head.py): a committed prefix enters clean, comes out
exactly, and the rest continues it; prefix length 0 is the head without a prefix, value for value."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from chatvla2.contract.config import ActionHeadConfig
from chatvla2.contract.errors import InvalidInput

from .test_action_head import BATCH, _loss_inputs, make_head, make_inputs


def _prefixed(head, seed: int = 0):
    x = make_inputs(head, seed)
    cfg = head.cfg
    noise = torch.randn(BATCH, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(seed + 9))
    prefix = torch.rand(BATCH, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(seed + 10)) * 2 - 1
    return x["o"], x["r"], x["state"], noise, prefix


@pytest.fixture(scope="module")
def rtc_head():
    head = make_head(max_prefix=20)
    with torch.no_grad():
        head.prefix_embedding.normal_(std=0.5, generator=torch.Generator().manual_seed(4))  # as if trained
    return head


@pytest.mark.parametrize("max_prefix", [0, 20])
def test_prefix_length_zero_is_the_head_without_a_prefix_exactly(max_prefix, rtc_head):
    head = rtc_head if max_prefix else make_head()
    o, r, state, noise, prefix = _prefixed(head)
    plain = head.sample(o, r, state, noise)
    assert torch.equal(head.sample(o, r, state, noise, prefix, torch.zeros(BATCH, dtype=torch.int64)), plain)


def test_a_given_prefix_is_reproduced_exactly_and_the_rest_follows_it(rtc_head):
    o, r, state, noise, prefix = _prefixed(rtc_head)
    lengths = torch.tensor([7, 15])
    chunk = rtc_head.sample(o, r, state, noise, prefix, lengths)
    plain = rtc_head.sample(o, r, state, noise)
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(chunk[i, :n], prefix[i, :n])
        assert not torch.allclose(chunk[i, n:], plain[i, n:])  # the rest is conditioned on it
    # what lies beyond prefix_len in prefix_actions is never read
    scrambled = prefix.clone()
    scrambled[0, 7:] = 3.0
    scrambled[1, 15:] = -3.0
    assert torch.equal(rtc_head.sample(o, r, state, noise, scrambled, lengths), chunk)


def test_the_loss_learns_only_the_steps_after_the_prefix(rtc_head):
    inputs = _loss_inputs(rtc_head)
    lengths = torch.tensor([10, 0])
    with torch.no_grad():
        base = rtc_head.loss(**inputs, prefix_len=lengths)
        # the committed steps enter clean: their noise does not matter
        noise = inputs["noise"].clone()
        noise[0, :10] = 7.0
        assert torch.equal(base, rtc_head.loss(**{**inputs, "noise": noise}, prefix_len=lengths))
        # but their actions do, as the condition of the rest
        actions = inputs["actions"].clone()
        actions[0, :10] += 0.5
        assert not torch.equal(base, rtc_head.loss(**{**inputs, "actions": actions}, prefix_len=lengths))
        assert torch.equal(rtc_head.loss(**inputs, prefix_len=torch.zeros(BATCH, dtype=torch.int64)), rtc_head.loss(**inputs))


def test_training_with_a_prefix_reaches_the_prefix_embedding():
    head = make_head().train()
    assert head.prefix_embedding is None
    head.enable_prefix(12)
    assert head.cfg.max_prefix == 12 and torch.equal(head.prefix_embedding, torch.zeros(1, 1, head.cfg.width))
    head.loss(**_loss_inputs(head), prefix_len=torch.tensor([5, 12])).backward()
    assert head.prefix_embedding.grad is not None and head.prefix_embedding.grad.abs().sum() > 0
    assert "prefix_embedding" in head.state_dict()


def test_max_prefix_must_leave_steps_to_generate():
    with pytest.raises(InvalidInput, match="max_prefix 50 is outside 0..49"):
        ActionHeadConfig(depth=2, width=32, heads=2, chunk_size=50, max_prefix=50)


def test_sample_with_a_prefix_traces_without_branching(rtc_head):
    class Sample(nn.Module):
        def __init__(self, head) -> None:
            super().__init__()
            self.head = head

        def forward(self, o, r, state, noise, prefix, lengths):  # noqa: ANN001, ANN201
            return self.head.sample(o, r, state, noise, prefix, lengths)

    args = (*_prefixed(rtc_head), torch.tensor([3, 9]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(Sample(rtc_head), args, check_trace=False)
    other = (*_prefixed(rtc_head, 1), torch.tensor([0, 19]))
    with torch.no_grad():
        torch.testing.assert_close(traced(*other), rtc_head.sample(*other), atol=1e-6, rtol=0)
