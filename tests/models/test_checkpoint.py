"""Checkpoints round-trip bit-exactly and fail clearly, naming the offending file or tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from chatvla2.contract.scene import sample_observation
from chatvla2.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tiny_model, tmp_path):
    return save_checkpoint(tiny_model, tmp_path / "ckpt")


def test_round_trip_is_bit_exact(tiny_model, saved, tiny_config):
    loaded = load_checkpoint(saved)
    original, restored = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    assert loaded.cfg == tiny_config
    frames, instruction, state = sample_observation(tiny_config.vision.num_views)
    a = tiny_model.act(frames, instruction, state, seed=3)
    b = loaded.act(frames, instruction, state, seed=3)
    assert a.reasoning_ids == b.reasoning_ids and np.array_equal(a.actions, b.actions)


def test_saving_is_atomic_and_leaves_no_staging_directory(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_truncated_weights_name_the_first_tensor_cut_off(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"truncated: tensor '[\w.]+'"):
        load_checkpoint(saved)


def test_corrupt_header_is_reported(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[10:20] = b"\xff" * 10
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(saved)


def test_shape_mismatch_names_the_tensor(saved):
    weights = saved / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["language.norm.weight"] = torch.ones(3)
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"'language.norm.weight' has shape \(3,\)"):
        load_checkpoint(saved)


def test_dtype_mismatch_names_the_tensor(saved):
    weights = saved / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["vision.patch_embed.weight"] = tensors["vision.patch_embed.weight"].half()
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match="'vision.patch_embed.weight' has dtype F16"):
        load_checkpoint(saved)


def test_missing_and_unexpected_tensors_are_named(saved):
    weights = saved / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["action_head.final.linear.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match="missing tensor 'action_head.final.linear.bias'"):
        load_checkpoint(saved)


def test_missing_file_is_named(saved):
    (saved / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json"):
        load_checkpoint(saved)


def test_config_that_does_not_match_the_weights(saved):
    config = json.loads((saved / "config.json").read_text())
    config["language"]["intermediate"] = 96
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(saved)


def test_unknown_config_field_is_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["action_head"]["depthh"] = 3
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="action_head.depthh"):
        load_checkpoint(saved)


def test_weights_file_is_never_unpickled(saved):
    """A pickle renamed to model.safetensors is refused, not executed."""
    import pickle

    (saved / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda c: [], r"config.json: expected a JSON object, found list"),
    (lambda c: "tiny", r"config.json: expected a JSON object, found str"),
    (lambda c: {**c, "language": {**c["language"], "hidden": "64"}}, r"language.hidden must be an integer, got '64'"),
    (lambda c: {**c, "vision": {**c["vision"], "heads": True}}, r"vision.heads must be an integer, got True"),
    (lambda c: {**c, "vision": {**c["vision"], "heads": 0}}, r"vision.heads must be a positive integer, got 0"),
    (lambda c: {**c, "action_head": [4, 64]}, r"action_head must be an object, found list"),
    (lambda c: {**c, "language": {**c["language"], "mrope_section": [2, 3]}}, r"language.mrope_section must have 3 values"),
    (lambda c: {**c, "language": {**c["language"], "rope_theta": "big"}}, r"language.rope_theta must be a finite number"),
    (lambda c: {**c, "scheduler": {**c["scheduler"], "clip_sample": "yes"}}, r"scheduler.clip_sample must be true or false"),
    (lambda c: {**c, "name": 7}, r"name must be a string"),
])
def test_a_malformed_config_is_a_checkpoint_error_naming_the_field(saved, edit, message):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved)


def _rewrite_header(weights, change):
    import struct

    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = change(json.loads(data[8:8 + length]))
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("change, message", [
    (lambda h: [h], r"corrupt header \(a JSON list, expected an object\)"),
    (lambda h: {**h, _first_tensor(h): {k: v for k, v in h[_first_tensor(h)].items() if k != "data_offsets"}},
     r"corrupt header: tensor '[\w.]+' has no valid data_offsets \(got None\)"),
    (lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "data_offsets": [10, 2]}}, r"has no valid data_offsets"),
    (lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "shape": "3x4"}}, r"has no valid shape"),
    (lambda h: {**h, _first_tensor(h): 5}, r"tensor '[\w.]+' is a int, expected an object"),
])
def test_a_header_that_is_json_but_not_a_tensor_table_is_named(saved, change, message):
    """Before: `error: 'data_offsets'` (a KeyError) for a header entry without offsets."""
    _rewrite_header(saved / "model.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved)


@pytest.mark.parametrize("dtype, name", [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_sixteen_bit_storage_loads_as_the_rounded_float32_weights(tiny_model, tmp_path, dtype, name):
    from chatvla2.models.checkpoint import weights_dtype

    directory = save_checkpoint(tiny_model, tmp_path / name, dtype=dtype)
    assert weights_dtype(directory) == name
    loaded = load_checkpoint(directory).state_dict()
    for key, tensor in tiny_model.state_dict().items():
        expected = tensor.to(dtype).to(tensor.dtype) if tensor.dtype.is_floating_point else tensor
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], expected), key
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        save_checkpoint(tiny_model, tmp_path / "int8", dtype=torch.int8)
