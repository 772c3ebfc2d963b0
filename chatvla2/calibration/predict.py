"""`chatvla2 calibrate predict`: a lower bound on a bundle's latency on a target (Orin, Thor, H100),
counted from its graphs, beside the latency measured on this machine, and the control-rate budget.

Per engine:
- bytes read and FLOPs of one call of its ONNX graph at the manifest's "opt" input shapes, each
  product classed by the precision it runs in, as calibration/graph_count.py counts them
  (`count_graph`; intermediate activations left out: a lower bound may only count what every
  implementation must move).
- the bound on a target = max(bytes / bandwidth, sum over classes of FLOPs / peak of that class)
  (calibration/targets.py), or none where the target cannot run the engine's precision.
A policy step = vision + prefill + T x decode + action_head (T reasoning tokens, `--tokens`); with
the reasoning reused between queries (the runtime's cadence) the step has no decode.
The control budget: a chunk of `chunk_size` actions at 50 Hz, executed `--query-every K` steps
before the next query, gives K/50 s of horizon; the margin is that horizon minus the step.

`--config NAME` (no bundle) counts the same quantities analytically from the ModelConfig, for a
precision plan (`--precision`, default fp16): this is how the `paper` preset, which cannot be
exported on a 2-core CPU, is predicted. The analytic count mirrors what the exporter writes
(which weights each quantizer leaves in float, stored fp16: see `_quantizes`) and is checked
against the graph count on the tiny preset by the tests (bytes within 3%, FLOPs equal; by hand:
the small preset within 0.03%, tiny fp16/int8/fp8/int4 bundles within ~3% but for the int8/fp8
prefill, whose uncalibrated experts modelopt leaves fp16: the graph reads 12% more there). For `paper` the output compares the bound with the
GR00T N1.6 measurements in docs/reference/deploy.md (4 denoising steps).

Accuracy measured here (parity at export) holds for a TensorRT engine built from the same graphs;
the latency measured here (ONNX Runtime on this CPU) does not carry to a target: the bounds do.

No torch; onnx and onnxruntime are imported inside the functions that need them (`chatvla2
calibrate` imports this module to build its parser).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chatvla2.calibration.graph_count import count_graph, opt_shapes
from chatvla2.calibration.targets import MATMUL_CLASSES, Target, parse_targets
from chatvla2.contract.bundle import ENGINE_NAMES, bundle_model_config, load_manifest
from chatvla2.contract.config import ModelConfig, get_config
from chatvla2.contract.embodiment import CONTROL_HZ as _ROBOT_HZ
from chatvla2.contract.errors import InvalidInput
from chatvla2.evaluation.timing import latency_stats, time_runs

if TYPE_CHECKING:  # it reads this module's defaults
    from chatvla2.calibration.predict_config import PredictConfig

# The decode plans whose MoE is the routed form (export/routed_experts.py): quantized weights, read only when routed.
ROUTED_PRECISIONS = ("int8", "fp8", "int4")
CONTROL_HZ = float(_ROBOT_HZ)  # the arms' control rate (contract/embodiment.py): 50 Hz
DEFAULT_TOKENS = 32
DEFAULT_QUERY_EVERY = 20
DEFAULT_RUNS = 10
WARMUP = 2
# GR00T N1.6 with 4 denoising steps, action head in TensorRT, backbone in PyTorch (docs/reference/deploy.md).
GR00T_N16 = {
    "denoising_steps": 4,
    "orin": {"backbone_ms": 95.0, "action_head_ms": 72.0, "step_ms": 173.0},
    "thor": {"backbone_ms": 38.0, "action_head_ms": 49.0, "step_ms": 92.0},
}
TRANSFER_NOTE = ("Accuracy measured here (parity at export) holds for a TensorRT engine built from these same graphs; "
                 "the latency measured here is ONNX Runtime on this machine's CPU and does not carry to a target: "
                 "use the bounds for the target.")

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


# ------------------------------------------------------------------------------ analytic count
@dataclasses.dataclass(frozen=True)
class _Matrix:
    """A weight matrix (in x out) as the exporter writes it: read `reads` times per call, applied
    to `rows` rows each time; gemm: a 2-D Linear (ONNX Gemm) rather than a batched MatMul."""

    inputs: int
    outputs: int
    reads: float = 1
    rows: int = 1
    gemm: bool = False
    role: str = "linear"  # linear | router | tied_lm_head | gathered_expert | routed_expert


def default_prompt_length(cfg: ModelConfig) -> int:
    """The prefill's opt length, as `chatvla2 export` sets it: the views' image tokens and the
    instruction. The character tokenizer's count exactly; for a Hugging Face tokenizer (paper)
    the instruction at ~4 characters a token (English BPE), not its exact count, plus the chat
    template's 19 tokens around it (system turn, role names) in the qwen2vl-chat layout."""
    from chatvla2.contract.prompt import prompt_token_ids
    from chatvla2.contract.scene import INSTRUCTION
    from chatvla2.contract.tokenizer import character_tokenizer

    vision = cfg.vision
    if cfg.tokenizer == "char":
        return len(prompt_token_ids(character_tokenizer(), INSTRUCTION, vision.num_views, vision.tokens_per_view))
    chat = 19 if cfg.prompt_format == "qwen2vl-chat" else 0
    return vision.num_views * (vision.tokens_per_view + 2) + math.ceil(len(INSTRUCTION + "\n") / 4) + chat


def default_moe_forms(plan: dict[str, str]) -> dict[str, str]:
    """The MoE forms `chatvla2 export --moe auto` picks (export.bundle.decode_moe_form): the prefill
    dense; the decode step routed (each expert an If, weights quantized) at int8/fp8/int4, gather
    at fp32/fp16."""
    return {"prefill": "dense", "decode": "routed" if plan["decode"] in ROUTED_PRECISIONS else "gather"}


def _float_bytes(precision: str) -> int:
    """What the exporter stores float tensors in: fp32 in an fp32 graph; fp16 in an fp16 graph and
    in the float part of a quantized one (export/precision.py converts it)."""
    return 4 if precision == "fp32" else 2


def _float_class(precision: str) -> str:
    return "fp32" if precision == "fp32" else "fp16"


def _quantizes(matrix: _Matrix, precision: str) -> bool:
    """Whether the exporter stores this weight below float at `precision` (export/precision.py,
    checked on tiny bundles at every precision): routers never; the decode step's tied lm_head
    (also the embedding Gather's table) never; gathered experts never (quantizers skip weights
    reached through Gather, and TensorRT's Gather takes no INT8); modelopt's int8/fp8 leave a
    Gemm on a single row in float, its int4 (weight-only AWQ) takes it. What is not quantized is
    stored fp16 (`_float_bytes`). Not modelled: experts that no calibration token reached, which
    modelopt's int8/fp8 leave in float (the tiny prefill reads 12% more than this count)."""
    if precision in ("fp32", "fp16") or matrix.role in ("router", "tied_lm_head", "gathered_expert"):
        return False
    if matrix.role == "routed_expert":  # weight-only, by export/routed_experts.py (int8 for int8 and fp8 plans)
        return True
    if precision in ("int8", "fp8"):
        return not (matrix.gemm and matrix.rows == 1)
    return True


def _stored_bytes(matrix: _Matrix, precision: str) -> float:
    """Bytes of one matrix as stored: a per-channel scale (fp16) and zero point for int8/fp8,
    an fp16 scale per block of 128 input elements for int4; a float weight at `_float_bytes`."""
    k, n = matrix.inputs, matrix.outputs
    if _quantizes(matrix, precision) and matrix.role == "routed_expert" and precision != "int4":
        return k * n + n * 2  # int8 per output channel, fp16 scales, no zero point
    if _quantizes(matrix, precision):
        if precision == "int4":
            return k * n / 2 + math.ceil(k / 128) * n * 2
        return k * n + n * 3
    return k * n * _float_bytes(precision)


def _matmul_class(matrix: _Matrix, precision: str) -> str:
    """int8/fp8 where both operands are quantized (weights and activations); otherwise the
    activations' float type (a weight-only int4 product included)."""
    if _quantizes(matrix, precision) and precision in ("int8", "fp8") and matrix.role != "routed_expert":
        return precision
    return _float_class(precision)


class _Engine:
    """Accumulates one engine's analytic count."""

    def __init__(self, precision: str):
        self.precision = precision
        self.weight_bytes = 0.0
        self.io_bytes = 0.0
        self.flops = dict.fromkeys(MATMUL_CLASSES, 0.0)

    def matrix(self, matrix: _Matrix, bias: bool = False, read_fraction: float = 1.0, flop_copies: float = 1.0) -> None:
        """A Linear: its weight read `reads` x read_fraction times, 2*rows*in*out FLOPs per read
        x flop_copies (a gathered expert stack: k experts computed per token)."""
        self.weight_bytes += _stored_bytes(matrix, self.precision) * matrix.reads * read_fraction
        if bias:
            self.vector(matrix.outputs, matrix.reads)
        self.flops[_matmul_class(matrix, self.precision)] += 2 * matrix.rows * matrix.inputs * matrix.outputs * matrix.reads * flop_copies

    def vector(self, elements: float, reads: float = 1) -> None:
        """Biases, norm weights, position embeddings: float, read in full."""
        self.weight_bytes += elements * _float_bytes(self.precision) * reads

    def attention(self, flops: float, reads: float = 1) -> None:
        """q k^T and p v: in float at every precision (the quantizers leave them, disable_mha_qdq)."""
        self.flops[_float_class(self.precision)] += flops * reads

    def io(self, *shapes: tuple[int, ...], itemsize: int = 4) -> None:
        for s in shapes:
            self.io_bytes += int(np.prod(s)) * itemsize

    def result(self) -> dict:
        flops = {k: int(v) for k, v in self.flops.items() if v}
        return {"precision": self.precision, "weight_bytes": int(self.weight_bytes), "io_bytes": int(self.io_bytes),
                "bytes": int(self.weight_bytes + self.io_bytes), "flops": int(sum(flops.values())), "flops_by_class": flops}


def analytic_counts(cfg: ModelConfig, plan: dict[str, str], moe_forms: dict[str, str] | None = None,
                    prompt_length: int | None = None, ddim_steps: int | None = None) -> dict[str, dict]:
    """Per engine, from the configuration alone, what `count_graph` counts on the exported graph:
    weight_bytes, io_bytes, bytes, flops, flops_by_class. plan: {engine: precision};
    moe_forms: {"prefill"/"decode": "dense"/"gather"/"routed"} (default: the export's choice);
    prompt_length: the prefill's tokens (default: the export's opt length); ddim_steps: the
    action head's unrolled steps (default: cfg.scheduler.inference_steps)."""
    missing = [e for e in ENGINE_NAMES if e not in plan]
    if missing:
        raise ValueError(f"precision plan: no precision for {', '.join(missing)}")
    forms = {**default_moe_forms(plan), **(moe_forms or {})}
    seq = prompt_length or default_prompt_length(cfg)
    steps = ddim_steps or cfg.scheduler.inference_steps
    if seq < 1 or steps < 1:
        raise ValueError(f"prompt length and DDIM steps must be >= 1, got {seq} and {steps}")
    return {
        "vision": _vision(cfg, plan["vision"]).result(),
        "prefill": _language(cfg, plan["prefill"], forms["prefill"], seq, decode=False).result(),
        "decode": _language(cfg, plan["decode"], forms["decode"], 1, decode=True).result(),
        "action_head": _action_head(cfg, plan["action_head"], steps).result(),
    }


def _vision(cfg: ModelConfig, precision: str) -> _Engine:
    v, hidden = cfg.vision, cfg.language.hidden
    e = _Engine(precision)
    patches = v.grid[0] * v.grid[1]
    rows = v.num_views * patches
    width, mlp = v.width, int(v.width * v.mlp_ratio)
    grouped = width * v.spatial_merge_size**2
    merged = rows // v.spatial_merge_size**2
    e.matrix(_Matrix(3 * v.temporal_patch_size * v.patch_size**2, width, rows=rows))
    for _ in range(v.depth):
        e.vector(4 * width)  # two LayerNorms
        e.matrix(_Matrix(width, 3 * width, rows=rows), bias=True)
        e.matrix(_Matrix(width, width, rows=rows), bias=True)
        e.matrix(_Matrix(width, mlp, rows=rows), bias=True)
        e.matrix(_Matrix(mlp, width, rows=rows), bias=True)
        e.attention(2 * 2 * v.num_views * patches * patches * width)
    e.vector(2 * width)
    e.matrix(_Matrix(grouped, grouped, rows=merged), bias=True)
    e.matrix(_Matrix(grouped, hidden, rows=merged), bias=True)
    # the rotary angle table (patches x head_dim/2), read once (the exporter folds small cos/sin
    # tables into constants that every block re-reads: tiny reads 24 KB more than this)
    e.vector(patches * (width // v.heads // 2))
    e.io((v.num_views, 3, v.image_height, v.image_width), (merged, hidden))
    return e


def _language(cfg: ModelConfig, precision: str, form: str, tokens: int, decode: bool) -> _Engine:
    lm = cfg.language
    e = _Engine(precision)
    h, kv = lm.hidden, lm.kv_heads * lm.head_dim
    moe = lm.moe
    for layer in range(lm.layers):
        e.vector(2 * h)  # the two RMSNorms
        e.matrix(_Matrix(h, h, rows=tokens), bias=True)
        e.matrix(_Matrix(h, kv, rows=tokens), bias=True)
        e.matrix(_Matrix(h, kv, rows=tokens), bias=True)
        e.matrix(_Matrix(h, h, rows=tokens))
        # q k^T and p v over the whole prompt (masked) or the whole static cache and the token itself
        # (decode: `LanguageModel.extend` attends to the cache, then to the new token's own key)
        keys = lm.max_cache_len + 1 if decode else tokens
        e.attention(2 * 2 * tokens * keys * h)
        if moe.applies_to(layer):
            e.matrix(_Matrix(h, moe.num_experts, rows=tokens, gemm=True, role="router"))
            experts = (_Matrix(h, lm.intermediate), _Matrix(h, lm.intermediate), _Matrix(lm.intermediate, h))
            if form == "routed":
                # each expert an If: run (its weights read, all the rows computed) when a token chose it
                fraction = min(1.0, tokens * moe.top_k / moe.num_experts)
                for m in experts:
                    m = dataclasses.replace(m, reads=moe.num_experts, rows=tokens, role="routed_expert")
                    e.matrix(m, read_fraction=fraction, flop_copies=fraction)
            elif form == "gather":
                # each token's k experts gathered: the distinct experts read, k computed per token
                fraction = min(1.0, tokens * moe.top_k / moe.num_experts)
                for m in experts:
                    m = dataclasses.replace(m, reads=moe.num_experts, rows=tokens, role="gathered_expert")
                    e.matrix(m, read_fraction=fraction, flop_copies=moe.top_k / moe.num_experts)
            else:
                for m in experts:
                    e.matrix(dataclasses.replace(m, reads=moe.num_experts, rows=tokens, gemm=True))
        else:
            e.matrix(_Matrix(h, lm.intermediate, rows=tokens))
            e.matrix(_Matrix(h, lm.intermediate, rows=tokens))
            e.matrix(_Matrix(lm.intermediate, h, rows=tokens))
    e.vector(h)  # the final norm
    e.vector(lm.head_dim // 2)  # rotary inverse frequencies
    cache = (lm.layers, 1, lm.kv_heads, lm.max_cache_len, lm.head_dim)
    if decode:
        # the tied table: one row gathered (the token's embedding) and read whole as the lm_head; a
        # int4 plan unties the head (export/graph_passes.py untie_output_head) and quantizes it
        if lm.tie_word_embeddings and precision != "int4":
            e.matrix(_Matrix(h, lm.vocab_size, gemm=True, role="tied_lm_head"))
        else:
            e.matrix(_Matrix(h, lm.vocab_size, gemm=not lm.tie_word_embeddings))
        e.vector(h)
        e.io((1, 1), (1,), (1,), itemsize=8)
        e.io(cache, cache, (1, lm.vocab_size), (1, h), (lm.layers, 1, lm.kv_heads, 1, lm.head_dim),
             (lm.layers, 1, lm.kv_heads, 1, lm.head_dim))
    else:
        e.matrix(_Matrix(h, lm.vocab_size, gemm=True))  # the lm_head on the last position
        e.io((3, 1, tokens), itemsize=8)
        e.io((1, tokens, h), (1, tokens, h), (1, lm.vocab_size), cache, cache)
    return e


def _action_head(cfg: ModelConfig, precision: str, steps: int) -> _Engine:
    a, hidden = cfg.action_head, cfg.language.hidden
    e = _Engine(precision)
    w, mlp, projector = a.width, int(a.width * a.mlp_ratio), a.projector_hidden or a.width
    chunk = a.chunk_size
    # once per call: the o / r projectors and the two condition embeddings
    for used in (a.reason_start > 0, True):
        if used:
            e.matrix(_Matrix(hidden, projector, gemm=True), bias=True)
            e.matrix(_Matrix(projector, w, gemm=True), bias=True)
            e.vector(2 * w)  # LayerNorm
            e.matrix(_Matrix(w + a.state_dim, w, gemm=True), bias=True)
    # every unrolled DDIM step reads the denoiser's weights again
    n = steps
    e.matrix(_Matrix(a.timestep_embedding_dim, w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(w, w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(a.action_dim, w, reads=n, rows=chunk), bias=True)
    e.vector(chunk * w, reads=n)  # the position embedding
    if a.max_prefix > 0:
        e.vector(w, reads=n)  # the committed prefix's marker (real-time chunking)
    for _ in range(a.depth):
        e.matrix(_Matrix(w, 6 * w, reads=n, gemm=True), bias=True)
        e.matrix(_Matrix(w, 3 * w, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(w, w, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(w, mlp, reads=n, rows=chunk), bias=True)
        e.matrix(_Matrix(mlp, w, reads=n, rows=chunk), bias=True)
        e.attention(2 * 2 * chunk * chunk * w, reads=n)
    e.matrix(_Matrix(w, 2 * w, reads=n, gemm=True), bias=True)
    e.matrix(_Matrix(w, a.action_dim, reads=n, rows=chunk), bias=True)
    # o, r, state, noise, the committed prefix (and its length, int64) in; the chunk out
    e.io((1, hidden), (1, hidden), (1, a.state_dim), (1, chunk, a.action_dim), (1, chunk, a.action_dim), (1, chunk, a.action_dim))
    e.io((1,), itemsize=8)
    return e


# ---------------------------------------------------------------------------------- the bounds
def engine_bound(count: dict, target: Target, precision: str) -> dict:
    """max(bytes / bandwidth, FLOPs / peak per class) on `target`, in ms, and what limits it; none
    where the target cannot run `precision`."""
    if not target.runs(precision):
        return {"ms": None, "limit": "unsupported", "why": f"{precision} does not run on {target.name} (runs {', '.join(target.precisions)})"}
    memory_s = count["bytes"] / (target.bandwidth_gbs * 1e9)
    compute_s = sum(f / (target.matmul_peak_tflops(k) * 1e12) for k, f in count["flops_by_class"].items())
    return {"ms": _sig(max(memory_s, compute_s) * 1e3), "memory_ms": _sig(memory_s * 1e3),
            "compute_ms": _sig(compute_s * 1e3), "limit": "memory" if memory_s >= compute_s else "compute"}


def _sig(value: float, digits: int = 6) -> float:
    """Rounded to significant digits: a tiny model's bounds are microseconds."""
    return float(f"{value:.{digits}g}")


def step_ms(per_engine: dict[str, float | None], tokens: int) -> dict[str, float | None]:
    """every: vision + prefill + tokens x decode + action_head; reuse: the reasoning reused
    (no decode)."""
    if any(per_engine.get(e) is None for e in ENGINE_NAMES):
        return {"every": None, "reuse": None}
    reuse = per_engine["vision"] + per_engine["prefill"] + per_engine["action_head"]
    return {"every": _sig(reuse + tokens * per_engine["decode"]), "reuse": _sig(reuse)}


def control_budget(cfg: ModelConfig, query_every: int, steps: dict[str, dict], hz: float = CONTROL_HZ) -> dict:
    """A chunk of chunk_size actions at `hz`, executed query_every steps before the next query:
    query_every / hz of horizon for the step to fit in. steps: {name: {"every", "reuse"}}."""
    horizon = query_every / hz * 1e3
    margins = {}
    for name, s in steps.items():
        margins[name] = {cadence: (None if v is None else _sig(horizon - v)) for cadence, v in s.items()}
    return {"hz": hz, "chunk_size": cfg.action_head.chunk_size, "query_every": query_every,
            "horizon_ms": round(horizon, 3), "margin_ms": margins,
            "fits": {n: {c: (None if m is None else m >= 0) for c, m in ms.items()} for n, ms in margins.items()}}


def _check_common(targets, tokens: int, query_every: int, cfg: ModelConfig | None = None) -> list[Target]:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise InvalidInput(f"--tokens must be an integer >= 1, got {tokens!r}")
    if isinstance(query_every, bool) or not isinstance(query_every, int) or query_every < 1:
        raise InvalidInput(f"--query-every must be an integer >= 1, got {query_every!r}")
    if cfg is not None and query_every > cfg.action_head.chunk_size:
        raise InvalidInput(f"--query-every {query_every} is longer than the action chunk ({cfg.action_head.chunk_size} steps)")
    if isinstance(targets, (str, Target)):
        targets = [targets]
    return parse_targets(None if targets is None else [t.name if isinstance(t, Target) else t for t in targets])


def _assemble(cfg: ModelConfig, counts: dict[str, dict], precisions: dict[str, str], targets: list[Target],
              tokens: int, query_every: int) -> dict:
    engines = {}
    for name in ENGINE_NAMES:
        c = counts[name]
        engines[name] = {**c, "precision": precisions[name],
                         "bounds": {t.name: engine_bound(c, t, precisions[name]) for t in targets}}
    steps = {t.name: step_ms({e: engines[e]["bounds"][t.name]["ms"] for e in ENGINE_NAMES}, tokens) for t in targets}
    return {"model": cfg.name, "engines": engines, "tokens": tokens, "step_ms": steps,
            "control": control_budget(cfg, query_every, steps), "targets": {t.name: t.to_dict() for t in targets}}


def predict_bundle(bundle: str | Path, targets=None, tokens: int = DEFAULT_TOKENS, query_every: int = DEFAULT_QUERY_EVERY,
                   *, runs: int = 0, threads: int | None = None) -> dict:
    """Bounds per engine and per step on each target, counted from the bundle's graphs; with
    runs > 0 also each engine's median ONNX Runtime latency on this machine (after warm-up)."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify_hashes=False)
    cfg = bundle_model_config(bundle, manifest)
    targets = _check_common(targets, tokens, query_every, cfg)
    missing = [e for e in ENGINE_NAMES if e not in manifest["engines"]]
    if missing:
        raise InvalidInput(f"{bundle}: the manifest has no engine {missing[0]!r}")
    moe = cfg.language.moe
    counts = {e: count_graph(bundle / manifest["engines"][e]["file"], manifest["engines"][e], moe.num_experts, moe.top_k)
              for e in ENGINE_NAMES}
    precisions = {e: manifest["engines"][e].get("precision", "fp32") for e in ENGINE_NAMES}
    result = _assemble(cfg, counts, precisions, targets, tokens, query_every)
    result.update({"source": f"bundle {bundle}", "bundle": str(bundle), "plan": precisions,
                   "moe_implementation": manifest.get("moe_implementation", {}),
                   "ddim_steps": cfg.scheduler.inference_steps,
                   "prompt_length": counts["prefill"]["shapes"].get("embeddings", [0, 0])[1]})
    if runs:
        measured = measure_bundle(bundle, manifest, runs, threads)
        for name in ENGINE_NAMES:
            result["engines"][name]["measured"] = measured[name]
        result["measured_step_ms"] = step_ms({e: measured[e]["p50_ms"] for e in ENGINE_NAMES}, tokens)
        result["control"]["margin_ms"]["here"] = {c: _sig(result["control"]["horizon_ms"] - v)
                                                  for c, v in result["measured_step_ms"].items()}
        result["measured_on"] = f"ONNX Runtime CPU, {threads or 'default'} threads, median of {runs} after {WARMUP} warm-up"
    return result


def predict_config(cfg: ModelConfig | str, precision_plan: dict[str, str] | str = "fp16", targets=None,
                   tokens: int = DEFAULT_TOKENS, query_every: int = DEFAULT_QUERY_EVERY, *,
                   prompt_length: int | None = None, ddim_steps: int | None = None,
                   moe_forms: dict[str, str] | None = None) -> dict:
    """The same prediction from the configuration alone (analytic count), for a precision plan
    ("fp16", "vision=int8,...", or {engine: precision}); for the paper preset also the comparison
    with GR00T N1.6 at 4 denoising steps."""
    from chatvla2.export.precision import parse_plan  # a plan is read as `chatvla2 export --precision` reads it

    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    plan = parse_plan(precision_plan) if isinstance(precision_plan, str) else {**dict.fromkeys(ENGINE_NAMES, "fp32"), **precision_plan}
    targets = _check_common(targets, tokens, query_every, cfg)
    steps = ddim_steps or cfg.scheduler.inference_steps
    seq = prompt_length or default_prompt_length(cfg)
    forms = {**default_moe_forms(plan), **(moe_forms or {})}
    counts = analytic_counts(cfg, plan, forms, seq, steps)
    result = _assemble(cfg, counts, plan, targets, tokens, query_every)
    result.update({"source": f"config {cfg.name} (analytic count)", "plan": plan, "moe_implementation": forms,
                   "ddim_steps": steps, "prompt_length": seq})
    if cfg == get_config("paper") or cfg.name == "paper":
        result["gr00t_n1_6"] = gr00t_comparison(cfg, plan, forms, seq, [t for t in targets if t.name in GR00T_N16], tokens)
    return result


def gr00t_comparison(cfg: ModelConfig, plan: dict[str, str], forms: dict[str, str], prompt_length: int,
                     targets: list[Target], tokens: int) -> dict:
    """ChatVLA-2's bound at GR00T N1.6's 4 denoising steps against its measured step (docs/reference/deploy.md):
    the action head alone against GR00T's TensorRT action head, vision + prefill + head (the
    reasoning reused) and with `tokens` reasoning tokens against its whole step. A lower bound
    above a measurement of a smaller model is no contradiction; below it, it must be."""
    steps = GR00T_N16["denoising_steps"]
    counts = analytic_counts(cfg, plan, forms, prompt_length, steps)
    out = {"denoising_steps": steps, "source": "docs/reference/deploy.md: GR00T N1.6, action head in TensorRT, backbone in PyTorch"}
    for t in targets:
        bounds = {e: engine_bound(counts[e], t, plan[e])["ms"] for e in ENGINE_NAMES}
        measured = GR00T_N16[t.name]
        if any(v is None for v in bounds.values()):
            out[t.name] = {"unsupported": f"the plan does not run on {t.name}"}
            continue
        step = step_ms(bounds, tokens)
        out[t.name] = {
            "gr00t_measured_ms": measured,
            "action_head_bound_ms": bounds["action_head"],
            "backbone_bound_ms": round(bounds["vision"] + bounds["prefill"], 3),
            "backbone_gb_read": round((counts["vision"]["bytes"] + counts["prefill"]["bytes"]) / 1e9, 3),
            "step_reuse_bound_ms": step["reuse"], "step_every_bound_ms": step["every"],
            "action_head_below_gr00t": bounds["action_head"] <= measured["action_head_ms"],
            "step_reuse_below_gr00t": step["reuse"] <= measured["step_ms"],
        }
    return out


# ------------------------------------------------------------------------------------ measuring
def engine_feed(entry: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs at the opt shapes (benchmarks/export_table.py's feed): random floats, and integer
    ids/positions of a mid-sequence decode step."""
    feed = {}
    for spec in entry["inputs"]:
        shape = opt_shapes(entry)[spec["name"]]
        dtype = _NUMPY_DTYPES.get(spec["dtype"], np.float32)
        if np.issubdtype(dtype, np.integer):
            feed[spec["name"]] = np.full(shape, 20, dtype=dtype)
        else:
            feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
    return feed


def measure_bundle(bundle: Path, manifest: dict, runs: int, threads: int | None = None) -> dict[str, dict]:
    """Each engine's ONNX Runtime latency on this machine: {p50_ms, p99_ms} over `runs` after
    WARMUP runs, one engine at a time."""
    from chatvla2.runtime.onnxruntime_session import create_session

    rng = np.random.default_rng(0)
    measured = {}
    for name in ENGINE_NAMES:
        entry = manifest["engines"][name]
        session = create_session(bundle / entry["file"], threads=threads)
        feed = engine_feed(entry, rng)
        measured[name] = latency_stats(time_runs(functools.partial(session.run, None, feed), WARMUP, runs))
        del session
    return measured


# ------------------------------------------------------------------------------------ the report
def format_prediction(result: dict) -> str:
    targets = list(result["targets"])
    measured = "measured" in result["engines"]["vision"]
    plan = ",".join(f"{k}={v}" for k, v in result["plan"].items())
    moe = ", ".join(f"{k} {v}" for k, v in result.get("moe_implementation", {}).items())
    lines = [f"ChatVLA-2 {result['model']}, {result['source']}: plan {plan}; MoE {moe}; prompt {result['prompt_length']} tokens, "
             f"{result['ddim_steps']} DDIM steps in the action head; lower bounds = max(bytes / bandwidth, FLOPs / peak)"]
    header = f"  {'engine':<13}{'precision':<10}{'MB read':>10}{'GFLOP':>10}" + "".join(f"{t + ' ms':>20}" for t in targets)
    if measured:
        header += f"{'here ms':>12}"
    lines.append(header)
    for name, e in result["engines"].items():
        label = name if name != "decode" else "decode/token"
        row = f"  {label:<13}{e['precision']:<10}{e['bytes'] / 1e6:>10.2f}{e['flops'] / 1e9:>10.3f}"
        for t in targets:
            b = e["bounds"][t]
            row += f"{'n/a (' + e['precision'] + ')':>20}" if b["ms"] is None else f"{_ms(b['ms']):>12} {b['limit'][:7]:>7}"
        if measured:
            row += f"{e['measured']['p50_ms']:>12.3f}"
        lines.append(row)
    for cadence, label in (("every", f"step, {result['tokens']} tokens"), ("reuse", "step, reused")):
        row = f"  {label:<33}" + "".join(f"{_ms(result['step_ms'][t][cadence]):>20}" for t in targets)
        if measured:
            row += f"{result['measured_step_ms'][cadence]:>12.3f}"
        lines.append(row)
    c = result["control"]
    lines.append(f"  control: a chunk of {c['chunk_size']} actions at {c['hz']:g} Hz, queried every {c['query_every']} steps = "
                 f"{c['horizon_ms']:g} ms of horizon per step; margin (horizon - step):")
    for name, margins in c["margin_ms"].items():
        parts = [f"{cadence} {'n/a' if m is None else f'{m:+.1f} ms'} ({'n/a' if m is None else ('fits' if m >= 0 else 'does not fit')})"
                 for cadence, m in margins.items()]
        lines.append(f"    {name:<6} " + "; ".join(parts) + (" [bound: the real margin is smaller]" if name != "here" else " [measured here]"))
    if "gr00t_n1_6" in result:
        g = result["gr00t_n1_6"]
        lines.append(f"  against GR00T N1.6 ({g['denoising_steps']} denoising steps; action head TensorRT, backbone PyTorch; docs/reference/deploy.md):")
        for t, v in g.items():
            if not isinstance(v, dict) or t not in GR00T_N16:
                continue
            if "unsupported" in v:
                lines.append(f"    {t}: {v['unsupported']}")
                continue
            m = v["gr00t_measured_ms"]
            lines.append(
                f"    {t}: ChatVLA-2 action head (ScaleDP, {g['denoising_steps']} steps) >= {v['action_head_bound_ms']:.1f} ms vs GR00T's "
                f"{m['action_head_ms']:g} ms measured ({'below' if v['action_head_below_gr00t'] else 'ABOVE'}); vision + prefill + head, "
                f"reasoning reused >= {v['step_reuse_bound_ms']:.1f} ms vs GR00T's whole step {m['step_ms']:g} ms ("
                + ("below" if v["step_reuse_below_gr00t"] else
                   f"above: not a contradiction, ChatVLA-2's vision + prefill read {v['backbone_gb_read']:.1f} GB, the prefill all 8 experts")
                + f"); with {result['tokens']} reasoning tokens >= {v['step_every_bound_ms']:.1f} ms")
    lines.append(f"  {TRANSFER_NOTE}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    """Three significant digits (at least one decimal, at most five)."""
    if value is None:
        return "n/a"
    if value <= 0:
        return "0"
    return f"{value:.{min(5, max(1, 2 - math.floor(math.log10(value))))}f}"


# ------------------------------------------------------------------------------------ the command
def main(config: PredictConfig) -> int:
    """The options checked themselves (calibration/predict_config.py)."""
    targets = parse_targets(config.targets)
    if config.bundle:
        result = predict_bundle(config.bundle, targets, config.tokens, config.query_every,
                                runs=0 if config.no_measure else config.runs, threads=config.threads)
    else:
        result = predict_config(config.preset, config.precision, targets, config.tokens, config.query_every,
                                prompt_length=config.prompt_length, ddim_steps=config.ddim_steps)
    print(format_prediction(result))
    print(json.dumps({"predict": result}), flush=True)
    return 0
