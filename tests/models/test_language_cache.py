"""The KV-cache path (prefill + static-cache decode steps) against the full-sequence forward."""

from __future__ import annotations

import numpy as np
import torch

from chatvla2.contract.prompt import mrope_position_ids, next_text_position, prompt_token_ids
from chatvla2.models.language import LanguageModel, write_cache


def _prompt_and_tokens(model, cfg, new_tokens):
    tokenizer = model.tokenizer
    prompt = prompt_token_ids(tokenizer, "pick the card", cfg.vision.num_views, cfg.vision.tokens_per_view)
    sequence = prompt + tokenizer.encode(new_tokens)
    positions = mrope_position_ids(sequence, tokenizer.image_pad_id, cfg.vision.merged_grid)
    return prompt, sequence, positions


def test_decode_with_cache_matches_full_forward_step_after_step(tiny_model, tiny_config):
    language: LanguageModel = tiny_model.language
    prompt, sequence, positions = _prompt_and_tokens(tiny_model, tiny_config, "56-42=14. First, pick 1")
    # Image embeddings as real visual features, so M-RoPE's image rows/cols matter.
    pixels = torch.randn(1, tiny_config.vision.num_views, 3, tiny_config.vision.image_height, tiny_config.vision.image_width)
    ids = torch.tensor([sequence])
    embeddings = tiny_model.embed(ids, pixels)
    position_ids = torch.from_numpy(positions).unsqueeze(1)

    with torch.no_grad():
        full_hidden, _, _ = language(embeddings, position_ids)
        full_logits = language.logits(full_hidden)[0]

        n = len(prompt)
        hidden, last_logits, keys, values = language.prefill(embeddings[:, :n], position_ids[:, :, :n])
        assert torch.allclose(last_logits[0], full_logits[n - 1], atol=1e-5, rtol=0)
        key_cache, value_cache = language.new_cache()
        write_cache(key_cache, keys, 0)
        write_cache(value_cache, values, 0)
        worst = 0.0
        for i in range(n, len(sequence)):
            logits, token_hidden, k, v = language.decode_step(
                embeddings[:, i : i + 1], position_ids[:, :, i : i + 1], torch.tensor(i), key_cache, value_cache
            )
            write_cache(key_cache, k, i)
            write_cache(value_cache, v, i)
            error = (logits[0] - full_logits[i]).abs().max().item()
            worst = max(worst, error)
            assert error <= 1e-5, f"step {i}: max abs logit error {error}"
            assert torch.allclose(token_hidden[0], full_hidden[0, i], atol=1e-5, rtol=0)
    assert len(sequence) - n >= 20


def test_extend_serves_prefill_and_chunks_after_a_cache(tiny_model, tiny_config):
    """`extend` (the cpu target's one language graph): after an empty cache it is the prefill; a
    chunk of several tokens after a filled cache equals the full forward over those positions."""
    language: LanguageModel = tiny_model.language
    prompt, sequence, positions = _prompt_and_tokens(tiny_model, tiny_config, "7+7=14. pick")
    pixels = torch.randn(1, tiny_config.vision.num_views, 3, tiny_config.vision.image_height, tiny_config.vision.image_width)
    embeddings = tiny_model.embed(torch.tensor([sequence]), pixels)
    position_ids = torch.from_numpy(positions).unsqueeze(1)
    n = len(prompt)
    with torch.no_grad():
        full_hidden, _, _ = language(embeddings, position_ids)
        hidden, logits, keys, values = language.prefill(embeddings[:, :n], position_ids[:, :, :n])
        empty = torch.zeros(*keys.shape[:3], 0, keys.shape[-1])
        e_hidden, e_logits, e_keys, e_values = language.extend(embeddings[:, :n], position_ids[:, :, :n], torch.tensor([0]), empty, empty)
        for ours, theirs in ((e_hidden, hidden), (e_logits, logits), (e_keys, keys), (e_values, values)):
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
        key_cache, value_cache = language.new_cache()
        write_cache(key_cache, keys, 0)
        write_cache(value_cache, values, 0)
        key_cache[..., n:, :] = 1e3  # stale entries past the filled ones are masked
        chunk = slice(n, n + 5)
        c_hidden, c_logits, c_keys, _ = language.extend(embeddings[:, chunk], position_ids[:, :, chunk], torch.tensor([n]), key_cache, value_cache)
    assert c_keys.shape[-2] == 5
    assert torch.allclose(c_hidden[0], full_hidden[0, chunk], atol=1e-5, rtol=0)
    assert torch.allclose(c_logits[0], language.logits(full_hidden)[0, n + 4], atol=1e-5, rtol=0)


def test_decode_ignores_stale_cache_entries(tiny_model, tiny_config):
    """Entries at and after cache_position are masked: garbage there changes nothing."""
    language = tiny_model.language
    hidden = tiny_config.language.hidden
    embedding = torch.randn(1, 1, hidden)
    position = torch.full((3, 1, 1), 7)
    key_cache, value_cache = language.new_cache()
    key_cache[..., :5, :] = torch.randn_like(key_cache[..., :5, :])
    value_cache[..., :5, :] = torch.randn_like(value_cache[..., :5, :])
    with torch.no_grad():
        clean = language.decode_step(embedding, position, torch.tensor(5), key_cache, value_cache)[0]
        key_cache[..., 5:, :] = 1e3
        value_cache[..., 5:, :] = -1e3
        dirty = language.decode_step(embedding, position, torch.tensor(5), key_cache, value_cache)[0]
    assert torch.equal(clean, dirty)


def test_write_cache_refuses_overflow(tiny_model):
    key_cache, _ = tiny_model.language.new_cache()
    length = key_cache.shape[-2]
    entries = torch.zeros(*key_cache.shape[:-2], 2, key_cache.shape[-1])
    try:
        write_cache(key_cache, entries, length - 1)
    except ValueError as exc:
        assert "overflow" in str(exc)
    else:
        raise AssertionError("writing past the cache's end must fail")


def test_mrope_positions_follow_qwen2_vl_rule(tiny_model, tiny_config):
    tokenizer = tiny_model.tokenizer
    rows, cols = tiny_config.vision.merged_grid
    ids = [tokenizer.vision_start_id] + [tokenizer.image_pad_id] * (rows * cols) + [tokenizer.vision_end_id] + tokenizer.encode("ab")
    positions = mrope_position_ids(ids, tokenizer.image_pad_id, (rows, cols))
    assert positions[:, 0].tolist() == [0, 0, 0]
    image = positions[:, 1 : 1 + rows * cols]
    assert np.all(image[0] == 1)  # one temporal id for a still image
    assert image[1].reshape(rows, cols)[:, 0].tolist() == list(range(1, 1 + rows))
    assert image[2].reshape(rows, cols)[0].tolist() == list(range(1, 1 + cols))
    after = positions[:, 1 + rows * cols]
    assert after.tolist() == [1 + max(rows, cols)] * 3
    assert next_text_position(positions) == 1 + max(rows, cols) + 3
