"""Presets, their sizes, and the paper-scale breakdown against docs/reference/model.md (meta device: no memory)."""

from __future__ import annotations

import pytest

from chatvla2.contract.config import PRESETS, ModelConfig, get_config
from chatvla2.models.info import build_for_counting, parameter_breakdown


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'small'"):
        get_config("smal")


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_round_trips_through_a_dict(name):
    config = get_config(name)
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_tiny_is_under_five_million_and_small_is_fifty_to_one_fifty():
    assert parameter_breakdown(build_for_counting("tiny"))["total"] < 5e6
    assert 50e6 <= parameter_breakdown(build_for_counting("small"))["total"] <= 150e6


def test_paper_breakdown_within_five_percent_of_model_md():
    counts = parameter_breakdown(build_for_counting("paper"))
    # docs/reference/model.md, "Sizes at a glance".
    expected = {
        "vision": 0.67e9,
        "moe_experts": 9.25e9,
        "action_head": 1.0e9,
        "total": 11.3e9,
        "active_per_token": 4.4e9,
    }
    for key, value in expected.items():
        assert abs(counts[key] - value) / value <= 0.05, (key, counts[key])
    language_outside_mlps = counts["embedding"] + counts["attention"]
    assert abs(language_outside_mlps - 0.39e9) / 0.39e9 <= 0.05
    config = get_config("paper")
    assert config.language.moe.num_experts == 8 and config.language.moe.top_k == 2
    assert config.vision.tokens_per_view == 99  # 308x252 -> 22x18 patches -> 99 tokens
    assert config.action_head.reason_start == 16


def test_invalid_sizes_are_refused():
    import dataclasses

    with pytest.raises(ValueError, match="multiple of"):
        dataclasses.replace(get_config("tiny").vision, image_height=50)
    with pytest.raises(ValueError, match="top_k"):
        dataclasses.replace(get_config("tiny").language.moe, top_k=9)
