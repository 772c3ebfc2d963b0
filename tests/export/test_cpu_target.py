"""The `cpu` export target: ONNX Runtime's own CPU operators (MoE/QMoE, dynamic int8, MatMulNBits),
never handed to TensorRT; parity, the runtime's bad-input errors, and the refusals."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import onnx
import pytest
import torch

from chatvla2.cli import main as cli
from chatvla2.contract.bundle import BundleError, load_manifest
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import sample_observation
from chatvla2.export.bundle import export_bundle
from chatvla2.export.cpu_target import (
    AUTO_RULE,
    CANDIDATES,
    CPU_ISAS,
    check_parity_measurable,
    cpu_quantize,
    parse_cpu_plan,
    plan_rule,
    resolve_cpu_isa,
)
from chatvla2.export.thresholds import budget_for
from chatvla2.runtime.policy import Policy

CLOCKS = ("perf_counter", "monotonic", "time", "process_time")
CLOCKS_NS = ("perf_counter_ns", "monotonic_ns", "time_ns", "process_time_ns")


def _busy_clock(patch: pytest.MonkeyPatch, seed: int = 0) -> None:
    """Every clock of the time module advances by anything from a microsecond to an hour between two
    reads: a machine as fast, slow or busy as it likes."""
    rng = random.Random(seed)
    now = [time.time()]

    def tick() -> float:
        now[0] += 10 ** rng.uniform(-6, 3.5)
        return now[0]

    for name in CLOCKS:
        patch.setattr(time, name, tick)
    for name in CLOCKS_NS:
        patch.setattr(time, name, lambda: int(tick() * 1e9))


@pytest.fixture(scope="module")
def cpu_bundles(tmp_path_factory, trace_cache):
    """tiny exported for the cpu target (the default CPU class, generic): `auto` (each engine's
    first candidate within budget), exported under a clock that reads anything, fp32, int4, and
    `split` (prefill and decode at different precisions: a graph each)."""
    from chatvla2.models.loading import load_model

    root = tmp_path_factory.mktemp("cpu")
    for name, plan in (("auto", "auto"), ("fp32", "fp32"), ("split", SPLIT_PLAN), ("int4", "int4")):
        with pytest.MonkeyPatch.context() as patch:
            if name == "auto":
                _busy_clock(patch)
            export_bundle(
                load_model("tiny"), root / name, parse_cpu_plan(plan), log=lambda line: None, target="cpu", trace_cache=trace_cache
            )
    return root


SPLIT_PLAN = "vision=int8,prefill=int8,decode=int4,action_head=int8"
# The manifest's engines -> the plan's candidate lists (prefill and decode: the shared language graph's).
AUTO = {
    "vision": CANDIDATES["vision"],
    "prefill": CANDIDATES["language"],
    "decode": CANDIDATES["language"],
    "action_head": CANDIDATES["action_head"],
}


def _expert_bits(path) -> set[int]:
    graph = onnx.load(str(path))
    qmoe = [n for n in graph.graph.node if n.op_type == "QMoE"]
    assert qmoe
    return {next(a.i for a in n.attribute if a.name == "expert_weight_bits") for n in qmoe}


def test_quantized_experts_follow_the_engine_precision(cpu_bundles):
    assert _expert_bits(cpu_bundles / "auto" / "language.onnx") == {8}  # auto: int8 language (prefill + decode)
    assert _expert_bits(cpu_bundles / "int4" / "language.onnx") == {4}
    assert _expert_bits(cpu_bundles / "split" / "decode.onnx") == {4}
    assert _expert_bits(cpu_bundles / "split" / "prefill.onnx") == {8}


def _observation(seed: int):
    frames, instruction, state = sample_observation(2)
    rng = np.random.default_rng(seed)
    state = (state + rng.normal(0, 0.3, state.shape)).astype(np.float32)
    return frames, instruction, state, rng.standard_normal((50, 14)).astype(np.float32)


def test_plan_parsing():
    assert parse_cpu_plan(None) == parse_cpu_plan("auto") == AUTO
    assert parse_cpu_plan("int8") == dict.fromkeys(AUTO, "int8")
    assert parse_cpu_plan("decode=int4")["decode"] == "int4" and parse_cpu_plan("decode=int4")["vision"] == "fp32"
    assert parse_cpu_plan("vision=int8,language=int4") == {"vision": "int8", "prefill": "int4", "decode": "int4", "action_head": "fp32"}
    with pytest.raises(ValueError, match="no precision .fp16. for language"):
        parse_cpu_plan("language=fp16")
    for bad, message in (
        ("fp8", "no precision 'fp8'"),
        ("vision=fp16", "no precision 'fp16' for vision"),
        ("eyes=int8", "unknown engine 'eyes'"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_cpu_plan(bad)


def test_auto_keeps_each_engines_first_candidate_within_budget(cpu_bundles):
    manifest = load_manifest(cpu_bundles / "auto")
    assert manifest["target"] == "cpu" and manifest["targets"] == ["cpu"]
    for name, entry in manifest["engines"].items():
        assert entry["targets"] == ["cpu"]
        # int8 on every machine: the tiny model's engines all meet the first candidate, whatever the
        # clock read while they were exported (the fixture's busy clock)
        assert AUTO[name][0] == "int8" and entry["precision"] == "int8"
        assert entry["parity"]["within_budget"]
        assert entry["parity"]["cosine"] >= budget_for(entry["precision"], name).cosine_min


def test_graphs_use_onnxruntime_cpu_operators(cpu_bundles):
    ops = {}
    for name in CANDIDATES:
        graph = onnx.load(str(cpu_bundles / "auto" / f"{name}.onnx"))
        ops[name] = {(n.domain or "ai.onnx", n.op_type) for n in graph.graph.node}
    assert ("com.microsoft", "QMoE") in ops["language"]
    assert not any(op == "MoE" for _, op in ops["language"])  # every expert quantized
    int4 = {(n.domain or "ai.onnx", n.op_type) for n in onnx.load(str(cpu_bundles / "int4" / "language.onnx")).graph.node}
    assert ("com.microsoft", "MatMulNBits") in int4  # int4 weights
    assert ("ai.onnx", "SimplifiedLayerNormalization") in int4 & ops["language"]  # RMSNorm as one fused node
    assert not any(op == "ReduceMean" for _, op in int4)
    split = {(n.domain or "ai.onnx", n.op_type) for n in onnx.load(str(cpu_bundles / "split" / "prefill.onnx")).graph.node}
    for name, graph_ops in (
        ("vision", ops["vision"]),
        ("language", ops["language"]),
        ("split prefill", split),
        ("action_head", ops["action_head"]),
    ):
        assert any(op in graph_ops for op in (("com.microsoft", "DynamicQuantizeMatMul"), ("ai.onnx", "MatMulInteger"))), name
    assert not any(op == "QuantizeLinear" for _, op in ops["vision"] | ops["action_head"])  # no TensorRT-style Q/DQ


def test_fp32_cpu_plan_matches_the_reference(cpu_bundles):
    from chatvla2.models.loading import load_model

    model = load_model("tiny")
    policy = Policy.from_bundle(cpu_bundles / "fp32", backend="onnxruntime")
    frames, instruction, state, noise = _observation(3)
    reference = model.act(frames, instruction, state, noise=torch.from_numpy(noise))
    got = policy.infer({"images": frames, "instruction": instruction, "state": state, "noise": noise})
    assert got["reasoning_ids"] == reference.reasoning_ids
    np.testing.assert_allclose(got["action_chunk"], reference.actions, atol=1e-4, rtol=0)


@pytest.mark.parametrize("plan", ["auto", "split", "int4"])
def test_quantized_cpu_plan_stays_close_to_the_reference(cpu_bundles, plan):
    from chatvla2.models.loading import load_model

    model = load_model("tiny")
    policy = Policy.from_bundle(cpu_bundles / plan, backend="onnxruntime")
    agreements = []
    for seed in range(3):
        frames, instruction, state, noise = _observation(seed)
        reference = model.act(frames, instruction, state, noise=torch.from_numpy(noise))
        got = policy.infer({"images": frames, "instruction": instruction, "state": state, "noise": noise})
        common = next(
            (i for i, (a, b) in enumerate(zip(got["reasoning_ids"], reference.reasoning_ids)) if a != b),
            min(len(got["reasoning_ids"]), len(reference.reasoning_ids)),
        )
        agreements.append(common / max(len(got["reasoning_ids"]), len(reference.reasoning_ids), 1))
    assert np.mean(agreements) >= 0.5  # export/thresholds.py POLICY_BUDGETS["int8"/"int4"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"images": sample_observation(2)[0][:1]}, r"expected 2 camera view\(s\), got 1"),
        ({"state": np.zeros(7, np.float32)}, r"state has shape \(7,\), expected \(14,\)"),
        ({"state": np.full(14, np.nan, np.float32)}, r"state has non-finite values"),
    ],
)
def test_bad_observations_are_named_as_for_other_bundles(cpu_bundles, change, message):
    policy = Policy.from_bundle(cpu_bundles / "auto", backend="onnxruntime")
    frames, instruction, state = sample_observation(2)
    with pytest.raises(ValueError, match=message):
        policy.infer({"images": frames, "instruction": instruction, "state": state, "seed": 0, **change})


def test_tensorrt_paths_refuse_a_cpu_bundle(cpu_bundles, capsys):
    with pytest.raises(BundleError, match="exported for the cpu target"):
        Policy.from_bundle(cpu_bundles / "auto", backend="tensorrt")
    assert cli(["lint", str(cpu_bundles / "auto")]) == 2
    err = capsys.readouterr().err
    assert "lint and build apply to TensorRT bundles" in err and len(err.strip().splitlines()) == 1


def test_cpu_bundle_manifest_records_the_plan(cpu_bundles):
    manifest = json.loads((cpu_bundles / "auto" / "manifest.json").read_text())
    assert manifest["plan"] == {name: candidates[0] for name, candidates in AUTO.items()}
    assert manifest["moe_implementation"] == {"prefill": "ort", "decode": "ort"}


def _int8_weights(path) -> list[np.ndarray]:
    """The int8 weights of a graph's integer matrix products (quantize_dynamic's)."""
    graph = onnx.load(str(path))
    initializers = {t.name: t for t in graph.graph.initializer}
    return [
        onnx.numpy_helper.to_array(initializers[n.input[1]])
        for n in graph.graph.node
        if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
        and n.input[1] in initializers
        and initializers[n.input[1]].data_type == onnx.TensorProto.INT8
    ]


def test_the_plan_rule_and_the_cpu_class_are_in_the_manifest(cpu_bundles):
    auto = load_manifest(cpu_bundles / "auto")
    assert auto["plan_rule"] == AUTO_RULE and "int8, fp32" in AUTO_RULE and "no timing" in AUTO_RULE
    assert auto["cpu_isa"] == "generic" and auto["int8_weight_bits"] == CPU_ISAS["generic"] == 7
    # generic: 7-bit weights, so no CPU's int8 products saturate (x86 without VNNI sums pairs in int16)
    weights = [w for name in ("vision", "language", "action_head") for w in _int8_weights(cpu_bundles / "auto" / f"{name}.onnx")]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    split = load_manifest(cpu_bundles / "split")  # a plan as given is recorded as given
    assert split["plan_rule"] == "cpu: vision int8, prefill int8, decode int4, action_head int8"
    assert load_manifest(cpu_bundles / "fp32")["cpu_isa"] == "generic"


def test_the_choice_reads_no_clock_and_reproduces_the_manifest(cpu_bundles, tmp_path, monkeypatch):
    """What auto's choice is made of (the plan, its rule, the CPU class, the int8 graph, its parity
    on seeded inputs, the budget) with every clock raising: the same graph and the same parity as the
    exported bundle's, to the last bit."""
    from chatvla2.export.calibration_data import record_engine_inputs
    from chatvla2.export.onnx_export import engine_specs
    from chatvla2.export.parity import compare, onnx_outputs, torch_outputs
    from chatvla2.models.loading import load_model
    from chatvla2.runtime.onnxruntime_session import create_session

    model = load_model("tiny")
    spec = engine_specs(model)[0]
    assert spec.name == "vision"
    feed = record_engine_inputs(model, samples=1, seed=0 + 1_000_003, decode_steps=1)["vision"]  # the export's parity inputs

    def no_clock(*args):
        raise AssertionError("the cpu plan's choice read a clock")

    for name in CLOCKS + CLOCKS_NS:
        monkeypatch.setattr(time, name, no_clock)
    plan = parse_cpu_plan("auto")
    assert plan_rule(plan) == AUTO_RULE and resolve_cpu_isa(None) == "generic"
    reference = torch_outputs(spec.module, feed, spec.input_names, spec.output_names)
    graph, _ = cpu_quantize(cpu_bundles / "fp32" / "vision.onnx", plan["vision"][0])  # the traced fp32 graph
    result = compare(reference, onnx_outputs(create_session(graph.SerializeToString()), feed))
    monkeypatch.undo()
    exported = load_manifest(cpu_bundles / "auto")["engines"]["vision"]["parity"]
    assert budget_for("int8", "vision").admits(result)
    assert (result.cosine, result.relative_error) == (exported["cosine"], exported["relative_error"])
    onnx.save(graph, str(tmp_path / "vision.onnx"))
    again = [w.tobytes() for w in _int8_weights(tmp_path / "vision.onnx")]
    assert again and again == [w.tobytes() for w in _int8_weights(cpu_bundles / "auto" / "vision.onnx")]


def test_the_cpu_class_sets_the_int8_weights_and_is_never_guessed(cpu_bundles, tmp_path, monkeypatch):
    from chatvla2.export import cpu_target
    from chatvla2.models.loading import load_model

    fp32_vision = cpu_bundles / "fp32" / "vision.onnx"
    widest = {}
    for isa in ("generic", "x86-avx2", "x86-vnni", "arm64-dotprod"):
        graph, report = cpu_quantize(fp32_vision, "int8", isa)
        onnx.save(graph, str(tmp_path / f"{isa}.onnx"))
        widest[isa] = max(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(tmp_path / f"{isa}.onnx"))
        assert f"{CPU_ISAS[isa]}-bit weights for {isa}" in report.method
    assert widest["generic"] <= 64 and widest["x86-avx2"] <= 64  # 255 x 64 x 2 fits VPMADDUBSW's int16
    assert widest["x86-vnni"] > 64 and widest["arm64-dotprod"] > 64  # the full 8 bits where sums are int32
    # The default is documented, not detected; `native` is this machine's class, asked for.
    monkeypatch.setattr(cpu_target, "native_cpu_isa", lambda: "x86-avx2")
    assert resolve_cpu_isa(None) == "generic" and resolve_cpu_isa("native") == "x86-avx2"
    with pytest.raises(ValueError, match="unknown CPU class 'avx512'"):
        resolve_cpu_isa("avx512")
    # 8-bit weights measured on a CPU whose products saturate would make the plan the exporter's:
    # refused before any work, nothing written.
    check_parity_measurable("generic")
    check_parity_measurable("x86-vnni", "x86-vnni")
    check_parity_measurable("arm64-dotprod", "arm64-dotprod")
    with pytest.raises(InvalidInput, match="has no VNNI"):
        export_bundle(load_model("tiny"), tmp_path / "b", parse_cpu_plan("auto"), target="cpu", cpu_isa="x86-vnni")
    assert not (tmp_path / "b").exists()


def test_a_candidate_outside_its_budget_falls_back_to_the_next(tmp_path, monkeypatch, trace_cache):
    import chatvla2.export.bundle as bundle_module
    from chatvla2.export.thresholds import ParityBudget
    from chatvla2.models.loading import load_model

    real = bundle_module.budget_for

    def strict_int8(precision, engine):  # an int8 budget no quantized graph meets
        return ParityBudget(cosine_min=1.1, relative_error_max=0.0) if precision == "int8" else real(precision, engine)

    monkeypatch.setattr(bundle_module, "budget_for", strict_int8)
    lines = []
    plan = {"vision": ("int8", "fp32"), "prefill": "fp32", "decode": "fp32", "action_head": "fp32"}
    manifest = bundle_module.export_bundle(
        load_model("tiny"), tmp_path / "b", plan, log=lines.append, target="cpu", trace_cache=trace_cache
    )
    assert manifest["plan"]["vision"] == "fp32" and manifest["engines"]["vision"]["precision"] == "fp32"
    assert any("vision" in line and "outside its budget, trying fp32" in line for line in lines)
    assert manifest["plan_rule"] == ("cpu: vision first of int8|fp32 within its parity budget, prefill fp32, decode fp32, action_head fp32")
    assert sorted(p.name for p in (tmp_path / "b").glob("vision*")) == ["vision.onnx"]  # the int8 graph is gone


@pytest.mark.parametrize("plan", ["auto", "fp32", "int4"])
def test_prefill_and_decode_share_one_graph_one_session_one_copy_of_the_weights(cpu_bundles, plan):
    from chatvla2.models.loading import load_model

    bundle = cpu_bundles / plan
    manifest = load_manifest(bundle)
    assert manifest["engines"]["prefill"]["file"] == manifest["engines"]["decode"]["file"] == "language.onnx"
    assert not (bundle / "prefill.onnx").exists() and not (bundle / "decode.onnx").exists()
    policy = Policy.from_bundle(bundle, backend="onnxruntime")
    assert policy.engines["prefill"] is policy.engines["decode"]
    assert type(policy.language).__name__ == "OnnxRuntimeSharedLanguage"
    if plan == "fp32":
        # The language model's weights stored once (a prefill and a decode graph held two copies):
        # the shared graph's initializers are the language model's parameters, no more.
        graph = onnx.load(str(bundle / "language.onnx"))
        stored = sum(4 * int(np.prod(t.dims)) for t in graph.graph.initializer)
        parameters = 4 * sum(t.numel() for t in load_model("tiny").language.parameters())
        assert parameters * 0.99 <= stored <= parameters * 1.01, (stored, parameters)


def test_prefill_and_decode_at_different_precisions_get_a_graph_each(cpu_bundles):
    manifest = load_manifest(cpu_bundles / "split")
    assert manifest["engines"]["prefill"]["file"] == "prefill.onnx" and manifest["engines"]["decode"]["file"] == "decode.onnx"
    assert not (cpu_bundles / "split" / "language.onnx").exists()
    policy = Policy.from_bundle(cpu_bundles / "split", backend="onnxruntime")
    assert policy.engines["prefill"] is not policy.engines["decode"]


def test_shared_language_session_checks_what_it_is_fed(cpu_bundles):
    from chatvla2.runtime.engine import FeedError

    policy = Policy.from_bundle(cpu_bundles / "auto", backend="onnxruntime")
    language, hidden = policy.language, policy.config.language.hidden
    too_long = language.max_cache_len
    with pytest.raises(FeedError, match="outside the engine's profile"):
        language.prefill(np.zeros((1, too_long, hidden), np.float32), np.zeros((3, 1, too_long), np.int64))
    with pytest.raises(FeedError, match="expected float32"):
        language.prefill(np.zeros((1, 4, hidden), np.float64), np.zeros((3, 1, 4), np.int64))
    language.prefill(np.zeros((1, 4, hidden), np.float32), np.zeros((3, 1, 4), np.int64))
    with pytest.raises(FeedError, match=r"expected an id in \[0, "):
        language.step(language.vocab_size, 4, 4)
    with pytest.raises(FeedError, match="expected 4"):
        language.step(1, 5, 5)  # not the next free position


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("precision", "fp32", "share language.onnx but their 'precision' differ"),
        ("inputs", [], "share language.onnx but their 'inputs' differ"),
    ],
)
def test_shared_graph_entries_that_disagree_are_refused(cpu_bundles, tmp_path, key, value, message):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(cpu_bundles / "auto", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"]["decode"][key] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message) as caught:
        Policy.from_bundle(bundle, backend="onnxruntime")
    assert "\n" not in str(caught.value)


def test_the_language_falls_back_when_either_stage_misses_its_budget(tmp_path, monkeypatch, trace_cache):
    """Prefill and decode share a graph, so they share its precision: an int4 graph whose decode
    misses the int4 budget (its prefill meets it) falls back to int8 for both."""
    import chatvla2.export.bundle as bundle_module
    from chatvla2.export.thresholds import ParityBudget
    from chatvla2.models.loading import load_model

    real = bundle_module.budget_for

    def strict_int4_decode(precision, engine):
        if (precision, engine) == ("int4", "decode"):
            return ParityBudget(cosine_min=1.1, relative_error_max=0.0)
        return real(precision, engine)

    monkeypatch.setattr(bundle_module, "budget_for", strict_int4_decode)
    lines = []
    plan = {"vision": "fp32", "prefill": ("int4", "int8"), "decode": ("int4", "int8"), "action_head": "fp32"}
    manifest = bundle_module.export_bundle(
        load_model("tiny"), tmp_path / "b", plan, log=lines.append, target="cpu", trace_cache=trace_cache
    )
    assert manifest["plan"]["prefill"] == manifest["plan"]["decode"] == "int8"
    assert manifest["engines"]["prefill"]["file"] == manifest["engines"]["decode"]["file"] == "language.onnx"
    assert any(line.startswith("decode") and "outside its budget, trying int8" in line for line in lines)
    assert _expert_bits(tmp_path / "b" / "language.onnx") == {8}
