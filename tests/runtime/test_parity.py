"""The runtime against the PyTorch reference: preprocessing, prompt, and the whole policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import get_config
from models.preprocess import preprocess_images as torch_side_preprocess
from models.prompt import mrope_position_ids as ref_mrope
from models.prompt import prompt_token_ids as ref_prompt_ids
from models.sample_observation import sample_observation
from models.tokenizer import character_tokenizer
from runtime.preprocess import ImageSpec, preprocess_images
from runtime.prompt import PromptTokenizer, merged_grid, mrope_position_ids, prompt_token_ids


@pytest.mark.parametrize("size", [(240, 320), (56, 84), (13, 200), (300, 17)])
def test_preprocess_matches_models(size):
    cfg = get_config("tiny").vision
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(cfg.num_views)]
    ours = preprocess_images(frames, ImageSpec(cfg.num_views, cfg.image_height, cfg.image_width))
    np.testing.assert_array_equal(ours, torch_side_preprocess(frames, cfg))


def test_prompt_and_positions_match_models(tiny_bundle):
    cfg = get_config("tiny")
    ref_tok = character_tokenizer()
    ours_tok = PromptTokenizer.from_file(tiny_bundle / "tokenizer.json")
    assert merged_grid(cfg.to_dict()) == cfg.vision.merged_grid
    for text in ["", "pick the card", "56-42=?\nx"]:
        ours = prompt_token_ids(ours_tok, text, cfg.vision.num_views, cfg.vision.tokens_per_view)
        ref = ref_prompt_ids(ref_tok, text, cfg.vision.num_views, cfg.vision.tokens_per_view)
        assert ours == ref
        np.testing.assert_array_equal(
            mrope_position_ids(ours, ours_tok.image_pad_id, cfg.vision.merged_grid),
            ref_mrope(ref, ref_tok.image_pad_id, cfg.vision.merged_grid),
        )


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


def test_reused_reasoning_skips_decoding(policy):
    frames, instruction, state, noise = _observation(2)
    obs = {"images": frames, "instruction": instruction, "state": state, "noise": noise}
    first = policy.infer(obs)
    again = policy.infer(obs, reuse=first)
    assert again["reused_reasoning"] and again["reasoning_ids"] == first["reasoning_ids"]
    np.testing.assert_allclose(again["action_chunk"], first["action_chunk"], atol=1e-5)


def test_bundle_hashes_are_verified(tiny_bundle, tmp_path):
    import shutil

    from export.manifest import BundleError
    from runtime.policy import Policy

    copy = tmp_path / "tampered"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "normalization.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="normalization.json does not match"):
        Policy.from_bundle(copy, backend="onnxruntime")
