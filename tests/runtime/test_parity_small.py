"""Parity at the `small` preset's widths: the ONNX Runtime fp32 policy against `ChatVLA2.act` on
the same observation and noise. The widths are small's (vision 384, language 512 with 8 experts of
1024, head 384: where float accumulation differs from the tiny preset's 64), the depths cut to two
layers each (four head blocks, so the o and r halves are both there): every kind of layer is
checked at that width, and the export takes ~40 s instead of the full preset's 2-3 minutes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from chatvla2.contract.config import get_config
from chatvla2.contract.scene import sample_observation

pytestmark = pytest.mark.slow


def small_widths_config():
    small = get_config("small")
    return dataclasses.replace(
        small,
        name="small-shallow",
        vision=dataclasses.replace(small.vision, depth=2),
        language=dataclasses.replace(small.language, layers=2),
        action_head=dataclasses.replace(small.action_head, depth=4),
    )


@pytest.fixture(scope="module")
def small_model():
    from chatvla2.models.vla import ChatVLA2

    torch.manual_seed(0)  # as models.loading.load_model builds a preset
    model = ChatVLA2(small_widths_config())
    model.action_head.perturb_zero_init_(generator=torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture(scope="module")
def small_policy(small_model, tmp_path_factory):
    from chatvla2.export.bundle import export_bundle
    from chatvla2.export.precision import parse_plan
    from chatvla2.runtime.policy import Policy

    bundle = tmp_path_factory.mktemp("bundles") / "small-fp32"
    export_bundle(small_model, bundle, parse_plan("fp32"), log=lambda *a, **k: None)
    policy = Policy.from_bundle(bundle, backend="onnxruntime")
    assert policy.config == small_model.cfg
    yield policy
    policy.close()


def test_small_policy_matches_reference_act(small_policy, small_model):
    frames, instruction, state = sample_observation(small_policy.num_views)
    rng = np.random.default_rng(3)
    state = (state + rng.normal(0, 0.3, state.shape)).astype(np.float32)
    noise = rng.standard_normal((small_policy.config.action_head.chunk_size, small_policy.config.action_head.action_dim)).astype(np.float32)
    with torch.inference_mode():
        ref = small_model.act(frames, instruction, state, noise=torch.from_numpy(noise))
    ours = small_policy.infer({"images": frames, "instruction": instruction, "state": state, "noise": noise})
    assert len(ref.reasoning_ids) > 0  # the comparison covers decoding, not only the action head
    assert ours["reasoning_ids"] == ref.reasoning_ids
    np.testing.assert_allclose(ours["action_chunk"], ref.actions, atol=1e-4, rtol=0)
