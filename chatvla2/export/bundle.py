"""Write an engine bundle: trace, convert to the planned precision, check parity and TensorRT
compatibility, record everything in the manifest, then rename the finished directory into place.

A bundle is complete or absent: it is assembled in a hidden staging directory beside the target,
and a failure (a missed parity budget, a lint error, Ctrl-C) removes the staging directory.

An existing target is replaced only if it is a bundle and the caller asked (`replace=True`,
`chatvla2 export --force`), and only if it holds nothing but its manifest and the files that
manifest lists: anything else (`engines/` built by `chatvla2 build`, notes, sources) is never
deleted; the export refuses instead, naming it. (Keeping `engines/` inside the new bundle was
the alternative: it would sit beside graphs it was not built from, and `--backend auto` would pick
it; moving it aside is the user's call.) An empty directory is used as is. Checked before any
work and again just before the swap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
from safetensors.numpy import save_file

import chatvla2.models as models_package
from chatvla2.contract.bundle import (
    EMBEDDINGS_FILE,
    MANIFEST_FILE,
    NORMALIZATION_FILE,
    PROMPT_TEMPLATE,
    TOKENIZER_FILE,
    BundleError,
    load_manifest,
    write_manifest,
)
from chatvla2.contract.names import UnknownChoice
from chatvla2.contract.prompt import prompt_token_ids
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.contract.staging import staged_directory
from chatvla2.export.calibration_data import EngineInputs, record_engine_inputs
from chatvla2.export.cpu_target import CPU_ISAS, check_parity_measurable, cpu_quantize, plan_rule, resolve_cpu_isa, shares_language
from chatvla2.export.lint import assert_tensorrt_compatible
from chatvla2.export.onnx_export import OPSET, cache_input_names, engine_specs, language_feeds, language_spec, save_onnx, trace_to_onnx
from chatvla2.export.parity import check_budget, compare, onnx_outputs, torch_outputs
from chatvla2.export.precision import (
    LANGUAGE_ENGINES,
    ConversionReport,
    fp32_weights,
    low_precision_weight_fraction,
    plan_targets,
    quantize,
    to_fp16,
    weight_bytes_by_dtype,
)
from chatvla2.export.routed_experts import routed_experts
from chatvla2.export.thresholds import budget_for
from chatvla2.models.vla import ChatVLA2
from chatvla2.runtime.onnxruntime_session import create_session

CALIBRATION_SAMPLES = 8
EXPORT_TARGETS = ("tensorrt", "cpu")
# The MoE graph form of the cpu target: ONNX Runtime's com.microsoft MoE / QMoE (export/cpu_moe.py).
CPU_MOE_FORM = "ort"
# The TensorRT target's MoE form with quantized experts read only when routed (export/routed_experts.py).
ROUTED_MOE_FORM = "routed"

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


def decode_moe_form(precision: str) -> str:
    """The MoE form for the decode step that reads the fewest expert bytes per token. The gather
    form reads the k chosen experts, stored fp16 in a quantized graph (TensorRT's Gather takes no
    INT8/INT4); the dense form reads all E in the graph's precision; the routed form
    (export/routed_experts.py: each expert an If, run only when chosen) reads the k chosen ones,
    stored weight-only quantized. With 8 experts, top-2, bytes per expert element per token:
    gather 2 x 4 at fp32 and 2 x 2 at fp16, int8, fp8, int4; dense 8 x 4, 8 x 2, 8 x 1 at int8/fp8,
    8 x 0.5 at int4; routed 2 x 1 at int8/fp8 (int8 weights) and 2 x 0.5 at int4. So routed for the
    quantized plans, gather for fp32/fp16 (the same bytes as routed there, without the If nodes)."""
    return ROUTED_MOE_FORM if precision in ("int8", "fp8", "int4") else "gather"


def describe_io(values) -> list[dict]:
    described = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        described.append({"name": value.name, "shape": shape, "dtype": _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))})
    return described


def _profiles(engine: str, model: ChatVLA2) -> dict[str, dict[str, list[int]]]:
    """Optimisation profiles (min/opt/max) of the dynamic inputs."""
    cfg = model.cfg
    if engine == "vision":
        v = cfg.vision
        pixels = lambda views: [views, 3, v.image_height, v.image_width]  # noqa: E731
        return {"pixels": {"min": pixels(1), "opt": pixels(v.num_views), "max": pixels(max(v.num_views, 4))}}
    if engine == "prefill":
        typical = len(prompt_token_ids(model.tokenizer, INSTRUCTION, cfg.vision.num_views, cfg.vision.tokens_per_view, cfg.prompt_format))
        longest = cfg.language.max_cache_len - 1
        hidden = cfg.language.hidden
        lengths = {"min": 1, "opt": min(typical, longest), "max": longest}
        return {
            "embeddings": {k: [1, n, hidden] for k, n in lengths.items()},
            "position_ids": {k: [3, 1, n] for k, n in lengths.items()},
        }
    return {}


def _language_profiles(engine: str, model: ChatVLA2) -> dict[str, dict[str, list[int]]]:
    """The shared language graph's shapes as each engine feeds it: a prefill (the prompt after an
    empty cache, 0 slots) or a decode step (one token against the whole static cache)."""
    language = model.cfg.language
    caches = cache_input_names(language.layers)
    fixed = lambda shape: {k: list(shape) for k in ("min", "opt", "max")}  # noqa: E731
    if engine == "prefill":
        return {**_profiles("prefill", model), **{name: fixed((1, language.kv_heads, 0, language.head_dim)) for name in caches}}
    step = {"embeddings": (1, 1, language.hidden), "position_ids": (3, 1, 1),
            **dict.fromkeys(caches, (1, language.kv_heads, language.max_cache_len, language.head_dim))}
    return {name: fixed(shape) for name, shape in step.items()}


def _tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("chatvla2-edge", "torch", "onnx", "onnxruntime", "nvidia-modelopt"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def prepare_target(out: str | Path, replace: bool = False) -> Path:
    """Refuse a target we cannot write or must not replace, before any work is done (see the
    module docstring). Returns the absolute path."""
    out = Path(out).absolute()
    existing = next(p for p in out.parents if p.exists())  # created when the bundle is written, not now
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write the bundle: {existing} is not a directory")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"cannot write the bundle: {existing} is not writable")
    check_replaceable(out, replace)
    return out


def check_replaceable(out: Path, replace: bool) -> None:
    """An existing `out` may be replaced only if it is an empty directory, or a bundle holding
    nothing but what its manifest lists and `replace` is set."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a bundle: refusing to replace it")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if MANIFEST_FILE not in entries:
        raise FileExistsError(f"{out} exists and is not a bundle: refusing to replace it")
    try:
        manifest = load_manifest(out, verify_hashes=False)
    except BundleError as exc:
        raise FileExistsError(f"{out} exists and is not a bundle ({exc}): refusing to replace it") from None
    if not replace:
        raise FileExistsError(f"{out} is an existing bundle: pass --force to replace it")
    foreign = [name for name in entries if name != MANIFEST_FILE and not (name in manifest["files"] and (out / name).is_file())]
    if foreign:
        shown = ", ".join(n + ("/" if (out / n).is_dir() else "") for n in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(f"{out} holds {shown}, not written by chatvla2 export (not in its manifest): "
                              "refusing to replace the bundle and delete them; move them away first")


def export_bundle(
    model: ChatVLA2,
    out: str | Path,
    plan: dict[str, str],
    moe: str = "auto",
    calibration: EngineInputs | None = None,
    seed: int = 0,
    log=print,
    calibration_samples: int = CALIBRATION_SAMPLES,
    trace_cache: str | Path | None = None,
    replace: bool = False,
    enforce_budgets: bool = True,
    target: str = "tensorrt",
    cpu_isa: str | None = None,
) -> dict:
    """Export `model` to the bundle directory `out` following `plan` ({engine: precision}).
    target: "tensorrt" (Q/DQ graphs TensorRT parses, linted) or "cpu" (ONNX Runtime's CPU
    operators, `export.cpu_target`; a plan entry may then be a tuple of precisions, cheapest first:
    the first that meets the engine's parity budget is kept, a rule recorded as the manifest's
    `plan_rule`). cpu_isa (cpu target): the class of CPU the bundle is for (`cpu_target.CPU_ISAS`,
    `native`, None: `generic`), which sets the int8 weights' bits; recorded as `cpu_isa`.
    Returns the manifest. Raises ParityError / LintError without leaving anything behind.
    replace: an existing bundle at `out` may be replaced (see the module docstring).

    trace_cache: a directory where traced fp32 graphs are kept and reused by later exports of
    the same weights (tracing is the slow step; a precision sweep or a test suite traces once).
    enforce_budgets=False: a missed parity budget is recorded in the manifest, not raised
    (`chatvla2 calibrate sweep` measures every plan and marks the ones that miss; the budget's
    verdict is in each engine's "parity" entry, "within_budget")."""
    if target == "cpu":  # an unknown class, or one whose parity this CPU cannot measure, fails before any work
        cpu_isa = resolve_cpu_isa(cpu_isa)
        check_parity_measurable(cpu_isa)
    out = prepare_target(out, replace)
    model = model.eval()
    with staged_directory(out, before_swap=lambda target: check_replaceable(target, replace)) as staging:
        manifest = _assemble(model, staging, plan, moe, calibration, seed, log, calibration_samples, trace_cache,
                             enforce_budgets, target, cpu_isa)
        write_manifest(staging, manifest)
    return manifest


# The export-side sources a traced graph also depends on (its wrappers and operator replacements).
TRACE_SOURCES = ("graphs.py", "onnx_export.py", "graph_passes.py", "cpu_moe.py", "cpu_fused.py", "routed_experts.py")


def _weights_fingerprint(model: ChatVLA2) -> str:
    """The trace cache's key: the config, the weights and the modules' source (a changed forward
    traces a different graph from the same weights), with the export's own `TRACE_SOURCES`."""
    digest = hashlib.sha256(model.cfg.to_json().encode())
    here = Path(__file__).parent
    for source in [*sorted(Path(models_package.__file__).parent.glob("*.py")), *(here / name for name in TRACE_SOURCES)]:
        digest.update(source.read_bytes())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _traced(spec, form: str, destination: Path, cache: Path | None, fingerprint: str | None, model=None) -> None:
    """Trace one engine to `destination`, or copy it from the trace cache. The `ort` MoE form
    (cpu target) traces with the mixture as ONNX Runtime's MoE operator and RMSNorm as its fused
    kernel (`export.cpu_moe`, `export.cpu_fused`)."""
    if cache is not None:
        cached = cache / fingerprint[:16] / f"{spec.name}-{form}.onnx"
        if cached.is_file():
            shutil.copyfile(cached, destination)
            return
    if form == CPU_MOE_FORM:
        from chatvla2.export.cpu_fused import ort_fused_norms
        from chatvla2.export.cpu_moe import CUSTOM_TRANSLATIONS, ort_moe_layers

        with ort_moe_layers(model), ort_fused_norms(model):
            save_onnx(trace_to_onnx(spec, CUSTOM_TRANSLATIONS), destination)
    elif form == ROUTED_MOE_FORM:  # traced with ONNX Runtime's MoE node, which the rewrite replaces
        from chatvla2.export.cpu_moe import CUSTOM_TRANSLATIONS, ort_moe_layers

        with ort_moe_layers(model):
            traced = trace_to_onnx(spec, CUSTOM_TRANSLATIONS)
        routed_experts(traced)
        save_onnx(traced, destination)
    else:
        save_onnx(trace_to_onnx(spec), destination)
    if cache is not None and not destination.with_name(destination.name + ".data").exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(destination, cached)


def _assemble(model, staging: Path, plan, moe, calibration, seed, log, calibration_samples, trace_cache,
              enforce_budgets: bool = True, target: str = "tensorrt", cpu_isa: str | None = None) -> dict:
    if target not in EXPORT_TARGETS:
        raise UnknownChoice(f"unknown export target {target!r}; choose from {', '.join(EXPORT_TARGETS)}")
    cpu = target == "cpu"
    if cpu:  # the rule is read from the plan as given, before its candidates are resolved below
        cpu_isa = resolve_cpu_isa(cpu_isa)
        rule = plan_rule(plan)
        log(f"plan rule: {rule}; for {cpu_isa} CPUs (int8 weights in {CPU_ISAS[cpu_isa]} bits)")
    # The cpu target's int8/int4 need no calibration: activations are quantized per call (dynamic).
    needs_calibration = not cpu and any(p in ("int8", "fp8", "int4") for p in plan.values())
    if calibration is None and needs_calibration:
        log(f"recording calibration inputs: the PyTorch policy on {calibration_samples} sample observations")
        calibration = record_engine_inputs(model, calibration_samples, seed=seed)
    # Parity inputs: a held-out observation (another seed) with fresh random state and noise.
    parity_inputs = record_engine_inputs(model, samples=1, seed=seed + 1_000_003, decode_steps=1)

    cache = Path(trace_cache) if trace_cache is not None else None
    fingerprint = _weights_fingerprint(model) if cache is not None else None
    scratch = staging / ".fp32"
    scratch.mkdir()
    engines: dict[str, dict] = {}
    moe_forms: dict[str, str] = {}
    specs = engine_specs(model)
    if cpu and shares_language(plan):
        # Prefill and decode as one graph: one copy of the language model's weights in memory.
        specs = [spec for spec in specs if spec.name not in LANGUAGE_ENGINES]
        specs.insert(1, language_spec(model))
        parity_inputs = {**parity_inputs, **language_feeds(model, parity_inputs)}
    for spec in specs:
        name = spec.name
        # The manifest's engines this graph serves: the language graph serves prefill and decode,
        # each checked on its own feed against its own budget.
        served = LANGUAGE_ENGINES if name == "language" else (name,)
        form = "-"
        if name in ("prefill", "decode", "language"):
            if cpu:
                form = CPU_MOE_FORM
            else:
                form = moe if moe != "auto" else ("dense" if name == "prefill" else decode_moe_form(plan[name]))
                if form != ROUTED_MOE_FORM:  # the routed form is traced from OrtMoE (`_traced`)
                    model.set_moe_implementation(form)
            moe_forms.update(dict.fromkeys(served, form))
        started = time.perf_counter()
        fp32_path = scratch / f"{name}.onnx"
        _traced(spec, form, fp32_path, cache, fingerprint, model)
        feeds = {engine: {k: np.ascontiguousarray(v) for k, v in parity_inputs[engine].items()} for engine in served}
        references = {engine: torch_outputs(spec.module, feed, spec.input_names, spec.output_names) for engine, feed in feeds.items()}

        def parities(candidate: onnx.ModelProto | Path) -> dict:
            """Every served engine's parity, from one session of the candidate graph."""
            session = create_session(str(candidate) if isinstance(candidate, Path) else candidate.SerializeToString())
            return {engine: compare(references[engine], onnx_outputs(session, feeds[engine])) for engine in served}

        def parity_of(candidate: onnx.ModelProto | Path):  # the conversions' own checks (one engine)
            return parities(candidate)[served[0]]

        final_path = staging / f"{name}.onnx"
        # A cpu plan entry may list candidates, cheapest first: the first within its budget(s) is kept.
        candidates = plan[served[0]] if isinstance(plan[served[0]], (tuple, list)) else (plan[served[0]],)
        for precision in candidates:
            budgets = {engine: budget_for(precision, engine) for engine in served}
            budget = budgets[served[0]]
            if cpu:
                graph, report = cpu_quantize(fp32_path, precision, cpu_isa)
            elif precision == "fp32":
                graph, report = onnx.load(str(fp32_path)), ConversionReport(method="traced fp32")
            elif precision == "fp16":
                graph, report = to_fp16(fp32_path, parity_of, budget)
            else:
                graph, report = quantize(fp32_path, final_path, precision, calibration[name], parity_of, budget)
            if not cpu:
                assert_tensorrt_compatible(graph, name)
            files = save_onnx(graph, final_path)
            results = parities(final_path)
            within = {engine: budgets[engine].admits(results[engine]) for engine in served}
            if all(within.values()) or precision == candidates[-1]:
                break
            for engine in served:
                log(f"{engine:<12} {precision:<5} cosine {results[engine].cosine:.6f}  rel.err {results[engine].relative_error:.2e}"
                    + ("" if within[engine] else f": outside its budget, trying {candidates[candidates.index(precision) + 1]}"))
            for written in files:
                written.unlink()
        # What describes the graph, once; then each served engine's own parity and shapes.
        graph_entry = {
            "file": final_path.name,
            "data_files": [f.name for f in files[1:]],
            "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), OPSET),
            "precision": precision,
            "inputs": describe_io(graph.graph.input),
            "outputs": describe_io(graph.graph.output),
            "kept_fp32": report.kept_fp32,
            "conversion": report.method,
            "low_precision_weight_fraction": round(low_precision_weight_fraction(graph), 6),
            # Stored bytes of every initializer by type and, below fp32, each weight still fp32 with
            # its reason (a kept group and the parity that kept it).
            "weight_bytes_by_dtype": weight_bytes_by_dtype(graph),
            "fp32_weights": fp32_weights(graph, report) if precision != "fp32" else [],
        }
        if report.not_quantized:  # left out of quantization by design; stored fp16 unless kept_fp32 says otherwise
            graph_entry["not_quantized"] = report.not_quantized
        for engine in served:
            if enforce_budgets:
                check_budget(engine, precision, results[engine], budgets[engine])
            plan = {**plan, engine: precision}
            engines[engine] = {
                **graph_entry,
                "targets": ["cpu"] if cpu else plan_targets({engine: precision}),
                "profiles": _language_profiles(engine, model) if name == "language" else _profiles(engine, model),
                "parity": {**results[engine].to_dict(), "budget": dataclasses.asdict(budgets[engine]),
                           "within_budget": within[engine]},
            }
            log(
                f"{engine:<12} {precision:<5} cosine {results[engine].cosine:.6f}  rel.err {results[engine].relative_error:.2e}  "
                f"low-precision weights {engines[engine]['low_precision_weight_fraction']:.0%}"
                + (f" (kept fp32: {', '.join(report.kept_fp32)})" if report.kept_fp32 else "")
                + (f"  [{final_path.name}, shared with {', '.join(e for e in served if e != engine)}]" if len(served) > 1 else "")
                + f"  ({time.perf_counter() - started:.1f} s)"
            )
    shutil.rmtree(scratch)

    save_file({"token_embedding": model.language.embed_tokens.weight.detach().float().numpy()}, str(staging / EMBEDDINGS_FILE))
    model.tokenizer.save(staging / TOKENIZER_FILE)
    model.stats.save(staging / NORMALIZATION_FILE)
    return {
        "model_config": model.cfg.to_dict(),
        "moe_implementation": moe_forms,
        "plan": dict(plan),
        "target": target,
        # cpu: how the plan was chosen (a rule, no timing) and the CPU class it was chosen for.
        **({"plan_rule": rule, "cpu_isa": cpu_isa, "int8_weight_bits": CPU_ISAS[cpu_isa]} if cpu else {}),
        "targets": ["cpu"] if cpu else plan_targets(plan),
        "engines": engines,
        "embeddings": EMBEDDINGS_FILE,
        "tokenizer": TOKENIZER_FILE,
        "normalization": NORMALIZATION_FILE,
        "prompt_template": PROMPT_TEMPLATE,
        # Real-time chunking: the action head takes a committed prefix (prefix_actions, prefix_len)
        # and was trained to continue one of up to max_prefix steps (0: it only reproduces it).
        "max_prefix": model.cfg.action_head.max_prefix,
        "tools": _tool_versions(),
    }

