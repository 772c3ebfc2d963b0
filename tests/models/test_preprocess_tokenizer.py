from __future__ import annotations

import numpy as np
import pytest

from chatvla2.contract.config import get_config
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.preprocess import IMAGE_MEAN, IMAGE_STD, preprocess_images, resize_bilinear
from chatvla2.contract.tokenizer import TextTokenizer, character_tokenizer


def test_character_tokenizer_round_trips_text_and_survives_a_file(tmp_path):
    tokenizer = character_tokenizer()
    text = "On the whiteboard is 56-42. 56-42=14.\nFirst, pick 1 from right."
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert loaded.encode(text) == ids
    assert loaded.eos_id == tokenizer.eos_id and loaded.image_pad_id == tokenizer.image_pad_id
    assert tokenizer.vocab_size <= get_config("tiny").language.vocab_size


def test_decode_drops_special_tokens():
    tokenizer = character_tokenizer()
    assert tokenizer.decode([tokenizer.vision_start_id, *tokenizer.encode("ok"), tokenizer.eos_id]) == "ok"


def test_bad_tokenizer_file_is_a_clear_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        TextTokenizer.from_file(path)


def test_resize_keeps_a_constant_image_and_matches_exact_downsampling():
    constant = np.full((240, 320, 3), 77, dtype=np.uint8)
    assert np.allclose(resize_bilinear(constant, 252, 308), 77)
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    # Halving with half-pixel centres averages each 2x2 block.
    expected = image.reshape(2, 2, 2, 2, 1).mean(axis=(1, 3))
    assert np.allclose(resize_bilinear(image, 2, 2), expected)


def test_preprocess_shapes_and_normalisation():
    config = get_config("tiny").vision
    frames = [np.full((240, 320, 3), 255, dtype=np.uint8)] * config.num_views
    out = preprocess_images(frames, config)
    assert out.shape == (config.num_views, 3, config.image_height, config.image_width)
    assert np.allclose(out[0, :, 0, 0], (1 - IMAGE_MEAN) / IMAGE_STD)
    with pytest.raises(ValueError, match="camera view"):
        preprocess_images(frames[:1], config)


def test_normalisation_round_trip_and_range():
    stats = NormalizationStats.arx_bimanual(14)
    actions = np.random.default_rng(0).uniform(stats.action_min, stats.action_max, size=(50, 14))
    normalised = stats.normalize_actions(actions)
    assert normalised.min() >= -1 - 1e-6 and normalised.max() <= 1 + 1e-6
    assert np.allclose(stats.unnormalize_actions(normalised), actions, atol=1e-5)
    with pytest.raises(ValueError, match=r"state has shape \(7,\), expected \(\.\.\., 14\)"):
        stats.normalize_state(np.zeros(7))
