"""Parity at the `small` preset (127M parameters): the ONNX Runtime fp32 policy against
`ChatVLA2.act` on the same observation and noise. The slowest test of the suite (exporting the
bundle takes 2-3 minutes on 2 cores); set CHATVLA2_SMALL_BUNDLE to a `small` fp32 bundle exported
with seed 0 to reuse one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chatvla2.contract.scene import sample_observation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_model():
    from chatvla2.models.loading import load_model

    return load_model("small")


@pytest.fixture(scope="module")
def small_policy(small_model, tmp_path_factory):
    from chatvla2.export.bundle import export_bundle
    from chatvla2.export.precision import parse_plan
    from chatvla2.runtime.policy import Policy

    existing = os.environ.get("CHATVLA2_SMALL_BUNDLE")
    if existing:
        bundle = Path(existing)
    else:
        bundle = tmp_path_factory.mktemp("bundles") / "small-fp32"
        export_bundle(small_model, bundle, parse_plan("fp32"), log=lambda *a, **k: None)
    policy = Policy.from_bundle(bundle, backend="onnxruntime")
    assert policy.config.name == "small"
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
