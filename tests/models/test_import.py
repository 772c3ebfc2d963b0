"""`chatvla2 import` on tiny Qwen2-VL checkpoints that transformers itself writes (sharded
safetensors, its tokenizer with Qwen2-VL's chat template) and on a DexVLA-layout ScaleDP head
written here: equivalence with transformers, export and the runtime, and every bad source a
one-line error that leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers", reason="the dev extra's transformers writes the Qwen2-VL checkpoints")

from chatvla2.cli import main as cli  # noqa: E402
from chatvla2.contract.preprocess import preprocess_images  # noqa: E402
from chatvla2.contract.prompt import build_prompt, prompt_token_ids  # noqa: E402
from chatvla2.models.checkpoint import load_checkpoint, read_safetensors_header  # noqa: E402
from tests.models.hf_qwen2vl import expand_image_pads, write_dexvla_head, write_tiny_qwen2vl  # noqa: E402

IMAGE = (56, 84)  # multiples of 28: 4 x 6 patches, 2 x 3 = 6 visual tokens
INSTRUCTIONS = ["Pick up the card that shows the answer.", "On the whiteboard is 56-42. Put the toy in the basket!"]


def _import(source: Path, out: Path, *extra: str) -> int:
    return cli(["import", "--qwen2vl", str(source), "--out", str(out), "--like", "tiny", "--views", "1",
                "--image-size", f"{IMAGE[0]}x{IMAGE[1]}", "--quiet", *extra])


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf") / "qwen2vl"
    model, tokenizer, images = write_tiny_qwen2vl(directory)
    return directory, model, tokenizer, images


@pytest.fixture(scope="module")
def imported(hf_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ours") / "checkpoint"
    assert _import(hf_source[0], out) == 0
    return out


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*IMAGE, 3), dtype=np.uint8)


def _hf_inputs(hf_source, instruction: str, views: int = 1, seed: int = 0):
    from PIL import Image

    _, model, tokenizer, images = hf_source
    frames = [_image(seed + v) for v in range(views)]
    messages = [{"role": "user", "content": [{"type": "image"}] * views + [{"type": "text", "text": instruction}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pixels = images(images=[Image.fromarray(f) for f in frames], return_tensors="pt")
    per_image = int(pixels["image_grid_thw"][0].prod()) // images.merge_size**2
    ids = tokenizer(expand_image_pads(text, per_image), add_special_tokens=False)["input_ids"]
    return frames, ids, pixels


def test_the_source_is_sharded_as_on_the_hub(hf_source):
    directory = hf_source[0]
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("model-*-of-*.safetensors"))) > 3


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_prompt_layout_reproduces_the_chat_template(hf_source, imported, instruction, views):
    ours = load_checkpoint(imported)
    _, expected, pixels = _hf_inputs(hf_source, instruction, views)
    per_view = int(pixels["image_grid_thw"][0].prod()) // 4
    assert per_view == ours.cfg.vision.tokens_per_view
    got = prompt_token_ids(ours.tokenizer, instruction, views, per_view, "qwen2vl-chat")
    assert got == expected


def test_patches_match_qwen2vl_image_processor(hf_source, imported):
    ours = load_checkpoint(imported)
    frames, _, pixels = _hf_inputs(hf_source, INSTRUCTIONS[0])
    patches = ours.vision.patchify(torch.from_numpy(preprocess_images(frames, ours.cfg.vision)))[0]
    torch.testing.assert_close(patches, pixels["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("moe", ["gather", "dense"])
def test_vision_and_logits_equal_transformers(hf_source, imported, moe):
    hf_model = hf_source[1]
    ours = load_checkpoint(imported)
    ours.set_moe_implementation(moe)
    instruction = INSTRUCTIONS[1]
    frames, ids, pixels = _hf_inputs(hf_source, instruction, seed=3)
    our_ids, positions = build_prompt(ours.tokenizer, instruction, ours.cfg)
    assert our_ids == ids
    our_pixels = torch.from_numpy(preprocess_images(frames, ours.cfg.vision))
    with torch.no_grad():
        theirs_visual = hf_model.model.get_image_features(pixels["pixel_values"], pixels["image_grid_thw"]).pooler_output
        theirs_visual = theirs_visual[0] if isinstance(theirs_visual, (list, tuple)) else theirs_visual
        torch.testing.assert_close(ours.vision(our_pixels), theirs_visual, atol=1e-5, rtol=0)
        input_ids = torch.tensor([ids])
        theirs = hf_model(input_ids=input_ids, pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"],
                          mm_token_type_ids=(input_ids == hf_model.config.image_token_id).int()).logits
        embeddings = ours.embed(input_ids, our_pixels.unsqueeze(0))
        hidden, _, _ = ours.language(embeddings, torch.from_numpy(positions).unsqueeze(1))
        logits = ours.language.logits(hidden)
    assert logits.shape == theirs.shape
    assert (logits - theirs).abs().max().item() < 1e-4  # M-RoPE positions included
    assert theirs.abs().max().item() > 0.1  # not a vacuous comparison


def test_experts_are_the_dense_mlp_and_routers_are_seeded(hf_source, imported, tmp_path):
    ours = load_checkpoint(imported)
    dense = hf_source[1].model.language_model.layers[1].mlp.gate_proj.weight
    stack = ours.language.layers[1].mlp.gate_proj
    assert stack.shape[0] == 8 and all(torch.equal(stack[e], dense) for e in range(8))
    router = ours.language.layers[1].mlp.router.weight
    assert 0.01 < router.std().item() < 0.03  # N(0, 0.02), not zero: the experts must diverge
    assert _import(hf_source[0], tmp_path / "again") == 0
    assert torch.equal(load_checkpoint(tmp_path / "again").language.layers[1].mlp.router.weight, router)
    assert _import(hf_source[0], tmp_path / "other", "--seed", "5") == 0
    assert not torch.equal(load_checkpoint(tmp_path / "other").language.layers[1].mlp.router.weight, router)
    report = json.loads((imported / "IMPORT.json").read_text())
    assert set(report["initialised"]) >= {"language.layers.0.mlp.router.weight", "language.layers.1.mlp.router.weight"}
    assert (imported / "chat_template.jinja").read_text().startswith("{% set image_count")


def test_info_prints_the_breakdown_without_reading_weights(imported, capsys):
    assert cli(["info", "--checkpoint", str(imported)]) == 0
    out = capsys.readouterr().out
    ours = load_checkpoint(imported)
    total = sum(p.numel() for p in ours.parameters())
    assert f"{total:,}" in out and "weights F32" in out and "moe_experts" in out


def test_bf16_import_keeps_the_sources_precision(hf_source, imported, tmp_path):
    out = tmp_path / "bf16"
    assert _import(hf_source[0], out, "--dtype", "bfloat16") == 0
    header = read_safetensors_header(out / "model.safetensors")
    assert {entry["dtype"] for entry in header.values()} == {"BF16"}
    assert (out / "model.safetensors").stat().st_size < 0.55 * (imported / "model.safetensors").stat().st_size
    fp32, bf16 = load_checkpoint(imported), load_checkpoint(out)  # loads as float32
    weight = bf16.language.embed_tokens.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, fp32.language.embed_tokens.weight.bfloat16().float(), atol=0, rtol=0)


# ---- a DexVLA-layout ScaleDP head ------------------------------------------------------------
@pytest.fixture(scope="module")
def with_head(hf_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    head = write_dexvla_head(root / "scaledp", cond_dim=64)
    out = root / "checkpoint"
    assert _import(hf_source[0], out, "--head", str(root / "scaledp")) == 0
    return out, head


def test_dexvla_head_maps_onto_ours(with_head):
    out, theirs = with_head
    ours = load_checkpoint(out)
    head = ours.action_head
    cfg = ours.cfg.action_head
    assert (cfg.depth, cfg.width, cfg.heads, cfg.chunk_size, cfg.condition, cfg.projector_hidden) == (3, 32, 4, 16, "combine", 48)
    assert ours.cfg.scheduler.inference_steps == 8
    assert torch.equal(head.position_embedding, theirs["pos_embed"])
    assert torch.equal(head.blocks[2].modulation.weight, theirs["blocks.2.adaLN_modulation.1.weight"])
    assert torch.equal(head.final.linear.bias, theirs["final_layer.linear.bias"])
    assert torch.equal(head.timestep_embed.fc2.weight, theirs["t_embedder.mlp.2.weight"])
    # The reasoning path starts as the observation path, and the import says so.
    for a, b in zip(head.combine_r.parameters(), head.combine_o.parameters()):
        assert torch.equal(a, b)
    derived = json.loads((out / "IMPORT.json").read_text())["derived"]
    assert any("reasoning path" in note for note in derived.values())
    # DexVLA's condition: c = t_emb + cond_obs_emb(combine([o; state])).
    o, state = torch.randn(1, 64), torch.randn(1, 14)
    x = torch.cat([o, state], dim=-1)
    for i in (0, 2):
        x = torch.relu(x @ theirs[f"combine.{i}.weight"].T + theirs[f"combine.{i}.bias"])
    x = x @ theirs["combine.4.weight"].T + theirs["combine.4.bias"]
    expected = x @ theirs["cond_obs_emb.weight"].T + theirs["cond_obs_emb.bias"]
    with torch.no_grad():
        base_obs, base_reason = head.condition_bases(o, o, state)
    torch.testing.assert_close(base_obs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(base_reason, expected, atol=1e-5, rtol=0)


def test_imported_checkpoint_exports_and_runs_through_the_runtime(with_head, tmp_path):
    from chatvla2.runtime.policy import Policy

    out, _ = with_head
    bundle = tmp_path / "bundle"
    assert cli(["export", "--checkpoint", str(out), "--out", str(bundle)]) == 0
    policy = Policy.from_bundle(bundle, backend="onnxruntime")
    model = load_checkpoint(out)
    rng = np.random.default_rng(4)
    frames, state = [_image(9)], rng.normal(0, 0.3, 14).astype(np.float32)
    noise = rng.standard_normal((16, 14)).astype(np.float32)
    reference = model.act(frames, INSTRUCTIONS[0], state, noise=torch.from_numpy(noise), max_new_tokens=12)
    policy.max_reasoning_tokens = 12
    got = policy.infer({"images": frames, "instruction": INSTRUCTIONS[0], "state": state, "noise": noise})
    assert got["reasoning_ids"] == reference.reasoning_ids and len(got["reasoning_ids"]) > 0
    np.testing.assert_allclose(got["action_chunk"], reference.actions, atol=1e-4, rtol=0)
    assert np.abs(reference.actions).max() > 0


# ---- bad sources: one line, exit 2, nothing written ------------------------------------------
def _copy(hf_source, tmp_path) -> Path:
    return Path(shutil.copytree(hf_source[0], tmp_path / "source"))


def _first_shard(directory: Path) -> Path:
    return sorted(directory.glob("model-*-of-*.safetensors"))[0]


def _corrupt_header(d: Path):
    shard = _first_shard(d)
    data = bytearray(shard.read_bytes())
    data[8:16] = b"\x00garbage"
    shard.write_bytes(bytes(data))
    return "corrupt header"


def _truncate(d: Path):
    shard = _first_shard(d)
    shard.write_bytes(shard.read_bytes()[:-100])
    return "truncated: tensor"


def _remove_shard(d: Path):
    shard = _first_shard(d)
    shard.unlink()
    return f"missing shard {shard.name}"


def _wrong_hidden(d: Path):
    config = json.loads((d / "config.json").read_text())
    config["text_config"].update(hidden_size=96, num_attention_heads=6)  # head_dim 16 still fits M-RoPE
    config["vision_config"]["hidden_size"] = 96
    (d / "config.json").write_text(json.dumps(config))
    return "tensor 'visual.merger.mlp.2.weight' has shape (64, 128), our 'vision.merger.mlp.2.weight' needs (96, 128)"


def _extra_tensor(d: Path):
    shard = _first_shard(d)
    tensors = load_file(str(shard))
    tensors["model.layers.0.mlp.extra_proj.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(shard))
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.mlp.extra_proj.weight"] = shard.name
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return "tensor 'model.layers.0.mlp.extra_proj.weight' maps onto nothing of ours"


def _missing_tensor(d: Path):
    index = json.loads((d / "model.safetensors.index.json").read_text())
    name = "model.language_model.layers.1.self_attn.k_proj.bias"
    name = name if name in index["weight_map"] else "model.layers.1.self_attn.k_proj.bias"
    del index["weight_map"][name]
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return "no qwen2vl tensor 'model.layers.1.self_attn.k_proj.bias' to fill our 'language.layers.1.attn.k_proj.bias'"


def _pickle_only(d: Path):
    for f in d.glob("model*"):
        f.unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    return "only pickle weights (pytorch_model.bin); they are never unpickled"


def _other_model(d: Path):
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "qwen2_5_vl"
    (d / "config.json").write_text(json.dumps(config))
    return "model_type 'qwen2_5_vl' is not Qwen2-VL"


def _no_tokenizer(d: Path):
    (d / "tokenizer.json").unlink()
    return "tokenizer file not found"


@pytest.mark.parametrize("damage", [_corrupt_header, _truncate, _remove_shard, _wrong_hidden, _extra_tensor,
                                    _missing_tensor, _pickle_only, _other_model, _no_tokenizer])
def test_bad_source_is_a_one_line_error_and_writes_nothing(hf_source, tmp_path, capsys, damage):
    source = _copy(hf_source, tmp_path)
    expected = damage(source)
    out = tmp_path / "out" / "checkpoint"
    assert _import(source, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no partial directory left


def test_dexvla_head_of_another_width_is_refused(hf_source, tmp_path, capsys):
    write_dexvla_head(tmp_path / "head", cond_dim=1536)
    assert _import(hf_source[0], tmp_path / "out", "--head", str(tmp_path / "head")) == 2
    assert "conditioned on 1536-D features, the language model's hidden size is 64" in capsys.readouterr().err


def test_existing_output_needs_force(hf_source, imported, capsys):
    assert _import(hf_source[0], imported) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_streamed_safetensors_read_back(tmp_path):
    from chatvla2.models.safetensors_stream import SafetensorsStream

    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).bfloat16(), "c": torch.arange(6, dtype=torch.int64).view(2, 3)}
    path = tmp_path / "x.safetensors"
    with SafetensorsStream(path, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], {"format": "pt"}) as out:
        for name, t in tensors.items():
            out.write(name, t)
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header_length % 8 == 0
    with pytest.raises(ValueError, match="expected 'a' next"):
        with SafetensorsStream(tmp_path / "y.safetensors", [("a", torch.float32, (1,))]) as out:
            out.write("b", torch.zeros(1))
