"""Export of the tiny model: every precision, a per-engine plan, parity, determinism, bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from chatvla2.calibration.graph_count import count_graph
from chatvla2.calibration.predict import analytic_counts
from chatvla2.contract.bundle import BundleError, load_manifest, parse_routed_expert_name
from chatvla2.export import thresholds
from chatvla2.export.bundle import decode_moe_form, export_bundle
from chatvla2.export.calibration_data import load_engine_inputs, record_engine_inputs, save_engine_inputs
from chatvla2.export.lint import lint_bundle
from chatvla2.export.parity import ParityError
from chatvla2.export.precision import all_initializers, parse_plan
from chatvla2.models.loading import load_model
from chatvla2.runtime.onnxruntime_session import create_session

ENGINES = {"vision", "prefill", "decode", "action_head"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "chatvla2", *args], capture_output=True, text=True, timeout=900)


def assert_lint_clean(bundle):
    findings = lint_bundle(bundle)
    errors = {e: [f for f in fs if f.severity == "error"] for e, fs in findings.items()}
    assert not any(errors.values()), errors


QUANTIZED = {onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.FLOAT8E4M3FN}


def assert_no_unexplained_fp32(bundle, manifest):
    """Every engine below fp32 stores its float weights fp16: an fp32 initializer of 1024 elements
    or more must be listed in the manifest's fp32_weights with the kept group and the parity that
    kept it; graph inputs and outputs stay fp32; the byte counts by type match the graph."""
    for name, engine in manifest["engines"].items():
        if engine["precision"] == "fp32":
            continue
        graph = onnx.load(str(bundle / engine["file"]))
        initializers = all_initializers(graph)  # the routed form's experts sit in If branches
        fp32 = {t.name: int(np.prod(t.dims)) for t in initializers if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) >= 1024}
        listed = {w["name"]: w for w in engine["fp32_weights"]}
        assert listed.keys() == fp32.keys(), (name, sorted(fp32))
        for weight in listed.values():
            assert weight["elements"] == fp32[weight["name"]]
            group, _, why = weight["why"].partition(": ")
            assert group in engine["kept_fp32"] and why.startswith("parity needed it"), (name, weight)
        stored_fp32 = sum(4 * int(np.prod(t.dims)) for t in initializers if t.data_type == onnx.TensorProto.FLOAT)
        assert engine["weight_bytes_by_dtype"].get("float32", 0) == stored_fp32
        assert engine["weight_bytes_by_dtype"].get("float16", 0) == sum(
            2 * int(np.prod(t.dims)) for t in initializers if t.data_type == onnx.TensorProto.FLOAT16
        )
        for value in [*graph.graph.input, *graph.graph.output]:
            assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), (name, value.name)
        if engine["precision"] in ("int8", "int4", "fp8") and not engine["kept_fp32"]:
            scales = {t.name: t.data_type for t in initializers}
            dequantize = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
            assert dequantize and all(scales[n.input[1]] == onnx.TensorProto.FLOAT16 for n in dequantize), name


def quantized_fraction(graph):
    """Weight elements (initializers of 1024 or more) stored int8/int4/fp8 / all of them."""
    sizes = [(int(np.prod(t.dims)), t.data_type in QUANTIZED) for t in graph.graph.initializer if np.prod(t.dims) >= 1024]
    return sum(n for n, q in sizes if q) / sum(n for n, _ in sizes)


def standard_ops_only(bundle, manifest):
    for engine in manifest["engines"].values():
        graph = onnx.load(str(bundle / engine["file"]))
        domains = {n.domain for n in graph.graph.node}
        assert domains <= {"", "ai.onnx"}, domains
        ops = {n.op_type for n in graph.graph.node}
        assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "MatMulNBits", "QLinearMatMul"}


# ---- fp32 through the real command ---------------------------------------------------------
def test_fp32_bundle_is_complete_verified_and_lint_clean(fp32_bundle):
    manifest = load_manifest(fp32_bundle)
    assert set(manifest["engines"]) == ENGINES
    assert {"tokenizer.json", "normalization.json", "embeddings.safetensors"} <= set(manifest["files"])
    assert manifest["moe_implementation"] == {"prefill": "dense", "decode": "gather"}
    for engine in manifest["engines"].values():
        assert engine["precision"] == "fp32" and engine["opset"] == 21
        assert engine["parity"]["cosine"] >= thresholds.BUDGETS["fp32"].cosine_min
        assert engine["targets"] == ["hopper", "orin", "thor"]
    prefill = manifest["engines"]["prefill"]
    assert prefill["inputs"][0] == {"name": "embeddings", "shape": [1, "prompt_length", 64], "dtype": "float32"}
    assert prefill["profiles"]["embeddings"]["max"][1] == 191
    assert manifest["engines"]["vision"]["inputs"][0]["shape"][0] == "views"
    decode = manifest["engines"]["decode"]
    assert all(isinstance(d, int) for spec in decode["inputs"] for d in spec["shape"]), "decode must be static"
    assert {o["name"] for o in decode["outputs"]} == {"logits", "hidden", "new_keys", "new_values"}
    assert_lint_clean(fp32_bundle)
    standard_ops_only(fp32_bundle, manifest)


def test_lint_command_on_the_bundle(fp32_bundle):
    result = run_cli("lint", str(fp32_bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vision: ok" in result.stdout


def test_fp32_export_is_deterministic(fp32_bundle, tmp_path):
    """The same weights exported again (fresh trace, no cache) give byte-identical files."""
    manifest = export_bundle(load_model("tiny"), tmp_path / "again", parse_plan("fp32"), log=lambda *_: None)
    first = load_manifest(fp32_bundle)["files"]
    assert load_manifest(tmp_path / "again")["files"] == first
    assert manifest["engines"]["action_head"]["parity"] == load_manifest(fp32_bundle)["engines"]["action_head"]["parity"]


def test_tampering_with_one_byte_is_detected(fp32_bundle, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, copy)
    data = bytearray((copy / "prefill.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "prefill.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="prefill.onnx does not match the manifest"):
        load_manifest(copy)
    result = run_cli("lint", str(copy))
    assert result.returncode == 2
    assert "prefill.onnx does not match the manifest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---- every precision and the plan form (trace cache shared) --------------------------------
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4", "fp8"])
def test_export_at_each_precision_meets_its_budget(precision, trace_cache, tmp_path):
    bundle = tmp_path / precision
    manifest = export_bundle(
        load_model("tiny"), bundle, parse_plan(precision), log=lambda *_: None, calibration_samples=2, trace_cache=trace_cache
    )
    load_manifest(bundle)
    assert_lint_clean(bundle)
    standard_ops_only(bundle, manifest)
    for name, engine in manifest["engines"].items():
        budget = thresholds.budget_for(engine["precision"], name)
        assert engine["parity"]["cosine"] >= budget.cosine_min
        assert engine["parity"]["relative_error"] <= budget.relative_error_max
    engines = manifest["engines"]
    if precision == "fp16":
        assert all(e["precision"] == "fp16" and e["low_precision_weight_fraction"] > 0.9 for e in engines.values())
        graph = onnx.load(str(bundle / "vision.onnx"))
        assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept fp32
    assert_no_unexplained_fp32(bundle, manifest)
    if precision != "fp16":
        assert engines["prefill"]["not_quantized"] == ["router"] + (["graph inputs (the prompt embeddings)"] if precision != "int4" else [])
        graph = onnx.load(str(bundle / "prefill.onnx"))
        inputs = {i.name for i in graph.graph.input}
        inputs |= {n.output[0] for n in graph.graph.node if n.op_type == "Cast" and n.input[0] in inputs}  # the fp16 casts
        assert not [n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inputs]  # embeddings in float
    if precision in ("int8", "fp8"):
        graph = onnx.load(str(bundle / "vision.onnx"))
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
        assert engines["vision"]["low_precision_weight_fraction"] == 1.0
        # The routed form (each expert an If) stores the decode step's experts int8, weight-only:
        # the decode graph about a third of its traced fp32 size.
        assert manifest["moe_implementation"]["decode"] == "routed"
        assert_routed_experts(bundle / "decode.onnx", onnx.TensorProto.INT8)
        assert (bundle / "decode.onnx").stat().st_size < 0.4 * traced_size(trace_cache, "decode-routed")
    if precision == "fp8":
        assert manifest["targets"] == ["hopper", "thor"]  # Orin has no FP8
    if precision == "int4":
        assert {e: engines[e]["precision"] for e in ENGINES} == {"vision": "int8", "prefill": "int4", "decode": "int4", "action_head": "fp16"}
        assert manifest["moe_implementation"]["decode"] == "routed"
        assert_routed_experts(bundle / "decode.onnx", onnx.TensorProto.INT4)
        # calibrate predict's analytic count of the routed decode (the paper-scale figures) agrees with the graph's
        cfg = load_model("tiny").cfg
        counted = count_graph(bundle / "decode.onnx", engines["decode"], cfg.language.moe.num_experts, cfg.language.moe.top_k)
        analytic = analytic_counts(cfg, manifest["plan"], manifest["moe_implementation"])["decode"]
        assert counted["bytes"] == pytest.approx(analytic["bytes"], rel=0.02)
        assert counted["flops"] == pytest.approx(analytic["flops"], rel=0.02)
        graph = onnx.load(str(bundle / "prefill.onnx"))
        int4 = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT4]
        assert int4, "no INT4 weights in the int4 prefill graph"
        assert engines["prefill"]["low_precision_weight_fraction"] > 0.9
        assert (bundle / "prefill.onnx").stat().st_size < 0.4 * traced_size(trace_cache, "prefill-dense")


def assert_routed_experts(path, weight_type):
    """Every MoE layer's 8 experts are If nodes whose branches hold the expert's three weights at
    `weight_type`, dequantized with fp16 scales (W8A16 / W4A16)."""
    graph = onnx.load(str(path))
    routed = [n for n in graph.graph.node if n.op_type == "If" and parse_routed_expert_name(n.name)]
    assert len(routed) == 8 * 2  # the tiny preset's 2 MoE layers
    for node in routed:
        branch = next(a.g for a in node.attribute if a.name == "then_branch")
        types = sorted(t.data_type for t in branch.initializer)
        assert types == sorted([weight_type] * 3 + [onnx.TensorProto.FLOAT16] * 3), node.name


def traced_size(cache, name):
    return next(cache.rglob(f"{name}.onnx")).stat().st_size


def test_plan_form_and_both_moe_forms(trace_cache, tmp_path):
    plan = parse_plan("vision=fp16,prefill=int4,decode=int8,action_head=fp32")
    for moe in ("gather", "dense"):
        manifest = export_bundle(
            load_model("tiny"), tmp_path / moe, plan, moe=moe, log=lambda *_: None, calibration_samples=2, trace_cache=trace_cache
        )
        assert manifest["moe_implementation"] == {"prefill": moe, "decode": moe}
        assert {n: e["precision"] for n, e in manifest["engines"].items()} == plan
        assert manifest["plan"] == plan
    # Only the dense form's experts are quantized (the gather form's are fp16): measured, not assumed.
    gather = quantized_fraction(onnx.load(str(tmp_path / "gather" / "prefill.onnx")))
    dense = quantized_fraction(onnx.load(str(tmp_path / "dense" / "prefill.onnx")))
    assert dense > 0.9 > 0.5 > gather
    assert load_manifest(tmp_path / "gather")["engines"]["prefill"]["low_precision_weight_fraction"] == 1.0  # fp16


def test_exported_graphs_run_the_reference_pipeline(fp32_bundle):
    """The bundle's graphs, chained by hand with ONNX Runtime (vision -> splice into the token
    embeddings -> prefill -> greedy decode over the KV cache -> o/r pooling -> action head),
    reproduce `ChatVLA2.act`: the same reasoning tokens and the same action chunk."""
    import torch
    from safetensors.numpy import load_file

    from chatvla2.contract.preprocess import preprocess_images
    from chatvla2.contract.prompt import mrope_position_ids, next_text_position, prompt_token_ids
    from chatvla2.contract.scene import sample_observation

    model = load_model("tiny")
    cfg, tokenizer = model.cfg, model.tokenizer
    head = cfg.action_head
    frames, instruction, state = sample_observation(cfg.vision.num_views)
    noise = torch.randn(head.chunk_size, head.action_dim, generator=torch.Generator().manual_seed(5))
    expected = model.act(frames, instruction, state, noise=noise)

    sessions = {name: create_session(fp32_bundle / f"{name}.onnx") for name in ENGINES}
    token_embedding = load_file(str(fp32_bundle / "embeddings.safetensors"))["token_embedding"]

    # vision, spliced into the prompt's token embeddings at the <|image_pad|> positions
    pixels = preprocess_images(frames, cfg.vision)
    (visual,) = sessions["vision"].run(["visual_embeddings"], {"pixels": pixels})
    ids = prompt_token_ids(tokenizer, instruction, cfg.vision.num_views, cfg.vision.tokens_per_view)
    positions = mrope_position_ids(ids, tokenizer.image_pad_id, cfg.vision.merged_grid)
    embeddings = token_embedding[np.asarray(ids)]
    image_positions = np.asarray(ids) == tokenizer.image_pad_id
    assert image_positions.sum() == visual.shape[0] > 0
    embeddings[image_positions] = visual

    # prefill: the prompt's hidden states, the first token's logits, the padded KV cache
    hidden, logits, key_cache, value_cache = sessions["prefill"].run(
        ["hidden", "logits", "key_cache", "value_cache"],
        {"embeddings": embeddings[None].astype(np.float32), "position_ids": positions[:, None, :].astype(np.int64)},
    )
    o = hidden.mean(axis=1)

    # greedy decode, each step's keys/values written into the cache at cache_position
    reasoning_ids, reasoning_hidden = [], []
    cache_position, text_position = len(ids), next_text_position(positions)
    token = int(logits.argmax())
    while (
        token != tokenizer.eos_id
        and len(reasoning_ids) < cfg.language.max_reasoning_tokens
        and cache_position < cfg.language.max_cache_len
    ):
        reasoning_ids.append(token)
        logits, token_hidden, new_keys, new_values = sessions["decode"].run(
            ["logits", "hidden", "new_keys", "new_values"],
            {
                "token": np.array([[token]], np.int64),
                "position": np.array([text_position], np.int64),
                "cache_position": np.array([cache_position], np.int64),
                "key_cache": key_cache,
                "value_cache": value_cache,
            },
        )
        key_cache[:, :, :, cache_position] = new_keys[:, :, :, 0]
        value_cache[:, :, :, cache_position] = new_values[:, :, :, 0]
        reasoning_hidden.append(token_hidden)
        cache_position, text_position, token = cache_position + 1, text_position + 1, int(logits.argmax())
    r = np.mean(reasoning_hidden, axis=0) if reasoning_hidden else np.zeros_like(o)

    # the action head on the pooled states, the normalised state and the same noise
    (normalised,) = sessions["action_head"].run(
        ["actions"],
        {
            "o": o.astype(np.float32),
            "r": r.astype(np.float32),
            "state": model.stats.normalize_state(state)[None].astype(np.float32),
            "noise": noise.numpy()[None],
            # no committed prefix: the head as it was before real-time chunking
            "prefix_actions": np.zeros((1, head.chunk_size, head.action_dim), np.float32),
            "prefix_len": np.zeros(1, np.int64),
        },
    )
    actions = model.stats.unnormalize_actions(normalised[0])

    assert len(expected.reasoning_ids) > 1, "the reference must decode past the first step to test the cache"
    assert reasoning_ids == expected.reasoning_ids
    assert actions.shape == expected.actions.shape == (head.chunk_size, head.action_dim)
    np.testing.assert_allclose(actions, expected.actions, rtol=1e-4, atol=1e-4)


# ---- bad input ------------------------------------------------------------------------------
def test_unknown_precision_and_plan_errors():
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        parse_plan("int3")
    with pytest.raises(ValueError, match="unknown engine 'llm'"):
        parse_plan("llm=int4")
    with pytest.raises(ValueError, match="unknown precision 'bf8' for decode"):
        parse_plan("decode=bf8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "tiny", "--precision", "int3"], "unknown precision 'int3'"),
        (["--config", "tinyy"], "did you mean 'tiny'"),
        (["--checkpoint", "/nonexistent/ckpt"], "checkpoint directory not found"),
    ],
)
def test_command_refuses_bad_input_in_one_line(args, message, tmp_path):
    result = run_cli("export", *args, "--out", str(tmp_path / "bundle"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bundle").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("export", "--config", "tiny", "--out", str(blocker / "bundle"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    existing = tmp_path / "precious"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    result = run_cli("export", "--config", "tiny", "--out", str(existing))
    assert result.returncode == 2 and "is not a bundle" in result.stderr
    assert (existing / "notes.txt").read_text() == "keep me"


def test_max_seq_must_be_positive(tmp_path):
    for value in ("0", "-5"):
        result = run_cli("export", "--config", "tiny", "--max-seq", value, "--out", str(tmp_path / "bundle"))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"--max-seq must be a positive number of positions, got {value}" in result.stderr
    assert not (tmp_path / "bundle").exists()


def _tree(directory):
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None) for p in sorted(directory.rglob("*"))}


def test_an_existing_output_is_never_deleted_without_being_a_bundle_and_asked(fp32_bundle, tmp_path):
    """A folder with a manifest.json that is not a bundle (a web project: src/ inside) used to be
    wiped (exit 0); an existing bundle was replaced without asking, and its engines/ (TensorRT
    engines built into it) deleted. Now: refused, one line, exit 2, every file kept."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.js").write_text("keep me")
    (project / "manifest.json").write_text('{"name": "my-app", "version": "1.0.0"}')
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    with_engines = tmp_path / "with-engines"
    shutil.copytree(fp32_bundle, with_engines)
    (with_engines / "engines").mkdir()
    (with_engines / "engines" / "vision.engine").write_bytes(b"hours of TensorRT")
    cases = [
        ((project, "--force"), "exists and is not a bundle"),
        ((project,), "exists and is not a bundle"),
        ((bundle,), "is an existing bundle: pass --force to replace it"),
        ((with_engines, "--force"), "holds engines/, not written by chatvla2 export"),
    ]
    for (out, *force), message in cases:
        before = _tree(out)
        result = run_cli("export", "--config", "tiny", "--out", str(out), *force)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr
        assert _tree(out) == before, f"{out} changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "project", "with-engines"]  # no staging left


def test_force_replaces_a_bundle_and_checks_again_before_the_swap(fp32_bundle, trace_cache, tmp_path):
    """--force (replace=True) replaces a bundle that holds only its own files; a file that appears
    in it during the export (e.g. `chatvla2 build` into BUNDLE/engines) is caught at the swap."""
    import os

    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    os.utime(bundle / "manifest.json", (0, 0))
    export_bundle(load_model("tiny"), bundle, parse_plan("fp32"), log=lambda *_: None, trace_cache=trace_cache, replace=True)
    assert (bundle / "manifest.json").stat().st_mtime > 0  # written anew
    assert load_manifest(bundle)["files"] == load_manifest(fp32_bundle)["files"]  # deterministic: the same files

    def build_engines_meanwhile(*_):
        (bundle / "engines").mkdir(exist_ok=True)

    before = _tree(bundle)
    with pytest.raises(FileExistsError, match="holds engines/"):
        export_bundle(load_model("tiny"), bundle, parse_plan("fp32"), log=build_engines_meanwhile, trace_cache=trace_cache,
                      replace=True)
    assert _tree(bundle) == {**before, "engines": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the staging directory is gone


def test_a_missed_budget_fails_and_leaves_nothing(monkeypatch, trace_cache, tmp_path):
    impossible = thresholds.ParityBudget(cosine_min=1.5, relative_error_max=0.0)
    monkeypatch.setitem(thresholds.BUDGETS, "fp32", impossible)
    with pytest.raises(ParityError, match=r"vision \(fp32\): cosine .* below the budget 1.5"):
        export_bundle(load_model("tiny"), tmp_path / "bundle", parse_plan("fp32"), log=lambda *_: None, trace_cache=trace_cache)
    assert list(tmp_path.iterdir()) == [], "the staging directory was left behind"


def test_calibration_file_round_trip_and_errors(tmp_path):
    model = load_model("tiny")
    inputs = record_engine_inputs(model, samples=2, seed=1)
    assert inputs["prefill"]["embeddings"].shape[0] == 2  # two samples along axis 0
    assert inputs["decode"]["key_cache"].shape[0] == 2 * 3 * model.cfg.language.layers
    path = tmp_path / "calibration.npz"
    save_engine_inputs(path, inputs)
    expected = {e: {n: a.shape for n, a in arrays.items()} for e, arrays in record_engine_inputs(model, 1, 0).items()}
    loaded = load_engine_inputs(path, expected)
    assert np.array_equal(loaded["vision"]["pixels"], inputs["vision"]["pixels"])
    np.savez(tmp_path / "partial.npz", **{"vision.pixels": inputs["vision"]["pixels"]})
    with pytest.raises(ValueError, match="missing 'prefill.embeddings'"):
        load_engine_inputs(tmp_path / "partial.npz", expected)


def test_decode_moe_form_follows_bytes_per_token():
    assert decode_moe_form("fp32") == "gather" and decode_moe_form("fp16") == "gather"  # routed reads the same bytes there
    assert decode_moe_form("int8") == "routed" and decode_moe_form("fp8") == "routed"  # 2 x 1 byte vs gather 2 x 2, dense 8 x 1
    assert decode_moe_form("int4") == "routed"  # 2 x 0.5 byte vs gather 2 x 2, dense 8 x 0.5
