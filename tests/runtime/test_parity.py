"""The runtime's policy against the independent PyTorch reference (`ChatVLA2.act`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import sample_observation


def _observation(seed: int):
    frames, instruction, state = sample_observation(2)
    rng = np.random.default_rng(seed)
    state = (state + rng.normal(0, 0.3, state.shape)).astype(np.float32)
    noise = rng.standard_normal((50, 14)).astype(np.float32)
    return frames, instruction, state, noise


@pytest.mark.parametrize("max_tokens", [None, 5, 0])
def test_policy_matches_reference_act(policy, tiny_model, max_tokens):
    frames, instruction, state, noise = _observation(1)
    ref = tiny_model.act(frames, instruction, state, noise=torch.from_numpy(noise), max_new_tokens=max_tokens)
    saved = policy.max_reasoning_tokens
    if max_tokens is not None:
        policy.max_reasoning_tokens = max_tokens
    try:
        ours = policy.infer({"images": frames, "instruction": instruction, "state": state, "noise": noise})
    finally:
        policy.max_reasoning_tokens = saved
    assert ours["reasoning_ids"] == ref.reasoning_ids
    assert ours["reasoning"] == ref.reasoning
    assert ours["action_chunk"].shape == ref.actions.shape == (50, 14)
    np.testing.assert_allclose(ours["action_chunk"], ref.actions, atol=1e-4, rtol=0)
    assert set(ours["timings"]) >= {"preprocess", "vision", "prefill", "decode", "action_head", "total"}


def test_a_committed_prefix_starts_the_chunk_exactly_and_matches_the_reference(policy, tiny_model):
    frames, instruction, state, noise = _observation(3)
    observation = {"images": frames, "instruction": instruction, "state": state, "noise": noise}
    plain = policy.infer(observation)
    prefix = plain["action_chunk"][:12] + np.float32(0.05)  # committed actions the plain chunk did not have
    ours = policy.infer({**observation, "prefix": prefix}, reuse=plain)
    ref = tiny_model.act(frames, instruction, state, noise=torch.from_numpy(noise), prefix=prefix)
    np.testing.assert_array_equal(ours["action_chunk"][:12], prefix)
    np.testing.assert_allclose(ours["action_chunk"], ref.actions, atol=1e-4, rtol=0)
    assert not np.allclose(ours["action_chunk"][12:], plain["action_chunk"][12:], atol=1e-4)
    # an empty prefix is no prefix
    empty = policy.infer({**observation, "prefix": np.zeros((0, 14), np.float32)}, reuse=plain)
    np.testing.assert_array_equal(empty["action_chunk"], plain["action_chunk"])
    with pytest.raises(InvalidInput, match="prefix of 50 actions: at most 49"):
        policy.infer({**observation, "prefix": np.zeros((50, 14), np.float32)}, reuse=plain)


def test_reused_reasoning_skips_decoding(policy):
    frames, instruction, state, noise = _observation(2)
    obs = {"images": frames, "instruction": instruction, "state": state, "noise": noise}
    first = policy.infer(obs)
    again = policy.infer(obs, reuse=first)
    assert again["reused_reasoning"] and again["reasoning_ids"] == first["reasoning_ids"]
    np.testing.assert_allclose(again["action_chunk"], first["action_chunk"], atol=1e-5)


def test_bundle_hashes_are_verified(tiny_bundle, tmp_path):
    import shutil

    from chatvla2.contract.bundle import BundleError
    from chatvla2.runtime.policy import Policy

    copy = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "normalization.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="normalization.json does not match"):
        Policy.from_bundle(copy, backend="onnxruntime")
