"""ChatVLA2 end to end: reference inference, reasoning-following through the whole model, training."""

from __future__ import annotations

import numpy as np
import torch

from chatvla2.contract.scene import sample_observation
from chatvla2.models.training_batch import Example, make_batch
from chatvla2.models.vla import ChatVLA2


def test_act_runs_end_to_end_on_tiny(tiny_config):
    """Shapes, finiteness, reasoning and per-stage timings of one `act`. How long it takes is a
    benchmark figure, not a test: `benchmarks/reference_act.py`."""
    model = ChatVLA2(tiny_config).eval()
    frames, instruction, state = sample_observation(tiny_config.vision.num_views)
    out = model.act(frames, instruction, state, seed=0)
    head = tiny_config.action_head
    assert out.actions.shape == (head.chunk_size, head.action_dim)
    assert np.all(np.isfinite(out.actions))
    assert 0 < len(out.reasoning_ids) <= tiny_config.language.max_reasoning_tokens
    assert out.reasoning == model.tokenizer.decode(out.reasoning_ids)
    assert {"preprocess", "vision", "prefill", "decode", "action_head", "total"} <= set(out.timings)


def test_act_is_deterministic_given_the_noise_and_depends_on_it(tiny_model, tiny_config):
    frames, instruction, state = sample_observation(tiny_config.vision.num_views)
    head = tiny_config.action_head
    noise = torch.randn(head.chunk_size, head.action_dim, generator=torch.Generator().manual_seed(5))
    first = tiny_model.act(frames, instruction, state, noise=noise)
    second = tiny_model.act(frames, instruction, state, noise=noise.clone())
    assert first.reasoning_ids == second.reasoning_ids
    assert np.array_equal(first.actions, second.actions)
    other = tiny_model.act(frames, instruction, state, noise=torch.randn_like(noise))
    assert not np.array_equal(first.actions, other.actions)


def test_act_reasoning_matches_greedy_decoding_without_cache(tiny_model, tiny_config):
    """The reasoning tokens are the argmax of a full-sequence forward at every step."""
    frames, instruction, state = sample_observation(tiny_config.vision.num_views)
    out = tiny_model.act(frames, instruction, state, max_new_tokens=12)
    from chatvla2.contract.preprocess import preprocess_images
    from chatvla2.contract.prompt import mrope_position_ids, prompt_token_ids

    tokenizer = tiny_model.tokenizer
    ids = prompt_token_ids(tokenizer, instruction, tiny_config.vision.num_views, tiny_config.vision.tokens_per_view)
    pixels = torch.from_numpy(preprocess_images(frames, tiny_config.vision)).unsqueeze(0)
    with torch.no_grad():
        for expected in out.reasoning_ids:
            positions = torch.from_numpy(mrope_position_ids(ids, tokenizer.image_pad_id, tiny_config.vision.merged_grid))
            hidden, _, _ = tiny_model.language(tiny_model.embed(torch.tensor([ids]), pixels), positions.unsqueeze(1))
            assert int(tiny_model.language.logits(hidden[0, -1]).argmax()) == expected
            ids.append(expected)


def test_the_action_chunk_follows_the_reasoning(tiny_model, tiny_config):
    """Through the whole model: the same observation and noise with the reasoning and without it
    (no token decoded, r = zeros) give different chunks. Which of the action head's blocks take r
    (only those from reason_start on) is tested on the head itself, tests/models/test_action_head.py."""
    frames, instruction, state = sample_observation(tiny_config.vision.num_views)
    head = tiny_config.action_head
    noise = torch.randn(head.chunk_size, head.action_dim, generator=torch.Generator().manual_seed(7))
    reasoned = tiny_model.act(frames, instruction, state, noise=noise)
    unreasoned = tiny_model.act(frames, instruction, state, noise=noise, max_new_tokens=0)
    assert reasoned.reasoning_ids and not unreasoned.reasoning_ids
    assert not np.allclose(reasoned.actions, unreasoned.actions)


def _batch(model, config, reasoning=("On the whiteboard is 56-42. First, pick 1 from right.", "Pick 4.")):
    frames, instruction, _ = sample_observation(config.vision.num_views)
    rng = np.random.default_rng(0)
    examples = [
        Example(frames, instruction, text, rng.normal(size=14).astype(np.float32), rng.uniform(-1, 1, size=(steps, 14)))
        for text, steps in zip(reasoning, (50, 30))
    ]
    return make_batch(examples, config, model.tokenizer, model.stats)


def test_training_forward_gives_both_losses_and_gradients_everywhere(tiny_model, tiny_config):
    tiny_model.train()
    batch = _batch(tiny_model, tiny_config)
    losses = tiny_model(**batch)
    assert set(losses) == {"loss", "lm_loss", "action_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["lm_loss"] + losses["action_loss"])
    losses["loss"].backward()
    no_grad = [n for n, p in tiny_model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # Only unchosen experts may get no gradient.
    assert all(".mlp." in n for n in no_grad), no_grad


def test_padding_does_not_change_a_sequences_loss(tiny_model, tiny_config):
    """The shorter example alone and padded inside a batch give the same losses."""
    head = tiny_config.action_head
    noise = torch.randn(2, head.chunk_size, head.action_dim, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 60])
    batch = _batch(tiny_model, tiny_config)
    single = _batch(tiny_model, tiny_config, reasoning=("On the whiteboard is 56-42. First, pick 1 from right.",))
    with torch.no_grad():
        both = tiny_model(**batch, noise=noise, timesteps=t)
        alone = tiny_model(**single, noise=noise[:1], timesteps=t[:1])
        assert both["lm_loss"] != alone["lm_loss"]
        hidden_both, _, _ = tiny_model.language(
            tiny_model.embed(batch["input_ids"], batch["pixel_values"]), batch["position_ids"], batch["attention_mask"]
        )
        hidden_alone, _, _ = tiny_model.language(
            tiny_model.embed(single["input_ids"], single["pixel_values"]), single["position_ids"]
        )
    n = single["input_ids"].shape[1]
    torch.testing.assert_close(hidden_both[0, :n], hidden_alone[0], atol=1e-5, rtol=1e-5)


def test_load_balancing_loss_is_added_when_configured(tiny_config):
    import dataclasses

    moe = dataclasses.replace(tiny_config.language.moe, load_balancing_weight=0.01)
    config = dataclasses.replace(tiny_config, language=dataclasses.replace(tiny_config.language, moe=moe))
    model = ChatVLA2(config)
    losses = model(**_batch(model, config))
    assert losses["load_balancing_loss"] >= 2.0 - 1e-4  # k = 2 is its minimum
    expected = losses["lm_loss"] + losses["action_loss"] + 0.01 * losses["load_balancing_loss"]
    torch.testing.assert_close(losses["loss"], expected)


def test_stage_two_freezes_the_vlm_and_trains_only_the_action_head(tiny_model, tiny_config):
    tiny_model.freeze_vlm()
    trainable = {n.split(".")[0] for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"action_head"}
    tiny_model(**_batch(tiny_model, tiny_config))["loss"].backward()
    assert all(p.grad is None for p in tiny_model.language.parameters())
