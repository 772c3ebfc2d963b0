"""The dynamic MoE: both export forms agree with a slow per-expert loop, k experts per token."""

from __future__ import annotations

import pytest
import torch

from chatvla2.models.moe import DynamicMoE, SwiGLU, load_balancing_loss


@pytest.fixture
def moe():
    torch.manual_seed(3)
    layer = DynamicMoE(hidden=32, intermediate=48, num_experts=8, top_k=2)
    torch.nn.init.normal_(layer.router.weight, std=0.5)
    return layer


def test_gather_equals_dense_equals_reference_loop(moe):
    x = torch.randn(3, 7, 32)
    reference = moe.forward_reference(x)
    moe.implementation = "gather"
    gathered = moe(x)
    moe.implementation = "dense"
    dense = moe(x)
    assert gathered.shape == x.shape
    torch.testing.assert_close(gathered, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, reference, atol=1e-5, rtol=1e-5)


def test_grouped_training_form_equals_dense_in_outputs_and_gradients(moe):
    x = torch.randn(3, 7, 32)
    results = {}
    for form in ("dense", "grouped"):
        moe.implementation = form
        moe.zero_grad()
        inputs = x.clone().requires_grad_(True)
        out = moe(inputs)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results[form] = (out.detach(), inputs.grad, [p.grad.clone() for p in moe.parameters()])
    torch.testing.assert_close(results["grouped"][0], results["dense"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results["grouped"][1], results["dense"][1], atol=1e-5, rtol=1e-5)
    for grouped, dense in zip(results["grouped"][2], results["dense"][2]):
        torch.testing.assert_close(grouped, dense, atol=1e-5, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in results["grouped"][2])


def test_exactly_k_distinct_experts_per_token_with_weights_summing_to_one(moe):
    weights, indices, logits = moe.route(torch.randn(50, 32))
    assert indices.shape == (50, 2)
    assert all(len(set(row.tolist())) == 2 for row in indices)
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))
    # The chosen experts are the two largest logits.
    assert torch.equal(indices.sort(-1).values, logits.topk(2, -1).indices.sort(-1).values)


def test_unchosen_experts_do_not_affect_the_output(moe):
    x = torch.randn(1, 32)
    _, indices, _ = moe.route(x)
    before = moe(x)
    unused = [e for e in range(8) if e not in indices[0].tolist()]
    with torch.no_grad():
        moe.gate_proj[unused] = torch.randn_like(moe.gate_proj[unused])
        moe.down_proj[unused] = 0
    moe.implementation = "dense"
    torch.testing.assert_close(moe(x), before, atol=1e-6, rtol=1e-6)


def test_from_dense_reproduces_the_dense_mlp():
    torch.manual_seed(4)
    mlp = SwiGLU(32, 48)
    moe = DynamicMoE.from_dense(mlp, num_experts=8, top_k=2)
    torch.nn.init.normal_(moe.router.weight, std=1.0)  # whatever the routing
    x = torch.randn(10, 32)
    for implementation in ("gather", "dense"):
        moe.implementation = implementation
        torch.testing.assert_close(moe(x), mlp(x), atol=1e-5, rtol=1e-5)


def test_unknown_implementation_is_refused(moe):
    with pytest.raises(ValueError, match="unknown MoE implementation"):
        moe.implementation = "sparse"


def test_load_balancing_loss_is_k_when_uniform_and_larger_when_skewed():
    uniform = torch.zeros(64, 8)
    uniform[torch.arange(64), torch.arange(64) % 8] = 1.0  # each expert equally often on top
    skewed = torch.zeros(64, 8)
    skewed[:, 0] = 5.0
    skewed[:, 1] = 4.0
    assert load_balancing_loss(skewed, 2) > load_balancing_loss(uniform, 2) + 0.5
    assert load_balancing_loss(torch.zeros(64, 8), 2).item() == pytest.approx(2.0, rel=1e-5)
