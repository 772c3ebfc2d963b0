"""The engine contract: every feed checked, errors naming the tensor, expected and received."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chatvla2.runtime.engine import EngineSpec, FeedError, check_feed


@pytest.fixture(scope="module")
def specs(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    return {name: EngineSpec.from_manifest(name, entry) for name, entry in manifest["engines"].items()}


def _prefill_feed(n=10):
    return {"embeddings": np.zeros((1, n, 64), np.float32), "position_ids": np.zeros((3, 1, n), np.int64)}


def test_good_feed_returns_dynamic_dims(specs):
    assert check_feed(specs["prefill"], _prefill_feed(7)) == {"prompt_length": 7}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("position_ids"), r"engine 'prefill': missing input\(s\) position_ids"),
        (lambda f: f.update(extra=np.zeros(1)), r"unexpected input\(s\) extra"),
        (lambda f: f.update(position_ids=f["position_ids"].astype(np.int32)),
         r"input 'position_ids': expected int64 \(3, 1, 10\), received int32 \(3, 1, 10\)"),
        (lambda f: f.update(embeddings=np.zeros((1, 10, 32), np.float32)),
         r"input 'embeddings': axis 2 expected 64 in float32 \(1, 10, 64\), received float32 \(1, 10, 32\)"),
        (lambda f: f.update(embeddings=np.zeros((10, 64), np.float32)), r"input 'embeddings': expected rank 3"),
        (lambda f: f.update(position_ids=np.zeros((3, 1, 9), np.int64)),
         r"input 'position_ids': dimension 'prompt_length' \(axis 2\) is 9, but an earlier input set it to 10"),
        (lambda f: f.update(embeddings=[[0.0]]), r"input 'embeddings': expected a numpy array"),
        (lambda f: f.update(embeddings=np.zeros((1, 64, 10), np.float32).transpose(0, 2, 1)), r"not C-contiguous"),
    ],
)
def test_bad_feeds_are_named(specs, change, message):
    feed = _prefill_feed()
    change(feed)
    with pytest.raises(FeedError, match=message):
        check_feed(specs["prefill"], feed)


def test_profile_limits(specs):
    with pytest.raises(FeedError, match=r"input 'embeddings': shape \(1, 192, 64\) is outside the engine's profile"):
        check_feed(specs["prefill"], _prefill_feed(192))


def test_onnxruntime_engine_checks_and_runs(policy):
    vision = policy.engines["vision"]
    with pytest.raises(FeedError, match="engine 'vision' input 'pixels'"):
        vision.run({"pixels": np.zeros((2, 3, 56, 84), np.float64)})
    out = vision.run({"pixels": np.zeros((2, 3, 56, 84), np.float32)})
    assert out["visual_embeddings"].shape == (12, 64)


def test_decode_step_writes_the_cache_in_place(policy):
    language = policy.language
    ids, positions = policy.prompt("go")
    embeddings = np.ascontiguousarray(policy.token_embedding[np.asarray(ids)][None])
    hidden, logits = language.prefill(embeddings, np.ascontiguousarray(positions[:, None, :]))
    n = len(ids)
    cache_before = language.key_cache
    assert np.any(language.key_cache[:, :, :, n - 1] != 0) and not np.any(language.key_cache[:, :, :, n] != 0)
    step_logits, step_hidden = language.step(5, n, n)
    assert language.key_cache is cache_before  # never reallocated
    np.testing.assert_array_equal(language.key_cache[:, :, :, n], language._outputs["new_keys"][:, :, :, 0])
    assert np.any(language.key_cache[:, :, :, n] != 0)
    with pytest.raises(FeedError, match=rf"'cache_position': expected {n + 1}"):
        language.step(5, n + 1, n + 5)
    with pytest.raises(FeedError, match=r"'token': expected an id in \[0, 128\)"):
        language.step(500, n + 1, n + 1)


def test_backend_selection(tiny_bundle, tmp_path):
    from chatvla2.runtime.policy import resolve_backend

    assert resolve_backend("auto", tmp_path) == "onnxruntime"  # no engines.json here
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve_backend("cuda", tmp_path)


def test_tensorrt_engine_checks_without_tensorrt():
    from chatvla2.runtime.tensorrt_identity import EngineMismatch, check_engine_sources, check_engines_match

    record = {"gpu_name": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0",
              "engines": {"decode": {"source_sha256": "abc"}}}
    check_engines_match(record, "10.3.0", "Orin", "8.7")
    with pytest.raises(EngineMismatch, match="rebuild with chatvla2 build"):
        check_engines_match(record, "10.3.0", "Thor", "11.0")
    manifest = {"engines": {"decode": {"file": "decode.onnx"}}, "files": {"decode.onnx": "def"}}
    with pytest.raises(EngineMismatch, match="built from another decode.onnx"):
        check_engine_sources(record, manifest)


@pytest.mark.tensorrt
def test_tensorrt_policy_matches_onnxruntime(tiny_bundle, tmp_path, policy):
    pytest.importorskip("tensorrt", reason="needs the tensorrt Python package (a Jetson or a GPU workstation)")
    from chatvla2.export.build_config import BuildConfig
    from chatvla2.export.tensorrt_build import main as build
    from chatvla2.runtime.policy import Policy

    engines = tmp_path / "engines"
    build(BuildConfig(bundle=str(tiny_bundle), out=str(engines), workspace=1.0))
    trt_policy = Policy.from_bundle(tiny_bundle, backend="tensorrt", engines_dir=engines)
    from chatvla2.runtime.camera import StaticCamera

    obs = {"images": StaticCamera(2).read(), "instruction": "go", "state": np.zeros(14, np.float32), "seed": 0}
    a, b = trt_policy.infer(obs), policy.infer(obs)
    assert a["reasoning_ids"] == b["reasoning_ids"]
    np.testing.assert_allclose(a["action_chunk"], b["action_chunk"], atol=1e-3)
