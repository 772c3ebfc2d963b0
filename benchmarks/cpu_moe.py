"""One mixture-of-experts layer in ONNX Runtime on the CPU, every form: our exported `dense` and
`gather` forms (models/moe.py) against ONNX Runtime's com.microsoft MoE (fp32) and QMoE (int8 and
int4 experts), at a preset's shapes (default `small`: H=512, I=1024, E=8, k=2), for a prefill
(--tokens, default 120) and a decode step (1 token).

    python benchmarks/cpu_moe.py [--config small] [--tokens 120] [--runs 50] [--threads 2] [--sweep] [--graphs]

`grouped` is export.cpu_moe.GroupedMoE: standard ONNX operators that do top-k work (per expert:
NonZero + Gather of its tokens, three Gemms on its own weights, ScatterND add). Each graph is
traced from the same random layer with `export.onnx_export.trace_to_onnx` (what a
bundle's engines go through) and run in a session from `runtime.onnxruntime_session`. Columns:
the median (and p90) latency; the routed-expert GFLOP/s (2 * tokens * k * 3 * H * I FLOPs over
the median, the work the routing needs, whatever the form does); the relative error
||y - y_torch|| / ||y_torch|| against DynamicMoE in PyTorch fp32 (the worst input). One layer's
experts (50 MB fp32 at `small`, 13 MB int8, 7 MB int4) are near or within this CPU's 32 MB L3, so
its decode rows are partly cache-warm even though each run routes another token; `--graphs`
decode (every layer's experts) is the memory-bound one. `--sweep` adds QMoE at every block size
(16..128, and 0: one scale per row) and accuracy level (0: fp32 activations, 4: int8 activations).
`--graphs` adds the preset's whole prefill and decode graphs (the robot's prompt, as
benchmarks/moe_forms.py feeds them), the exported forms against the MoE operator, the rest of each
graph fp32. Prints a Markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from export_table import time_session  # benchmarks/export_table.py: this script's directory is on sys.path

from chatvla2.contract.config import PRESETS
from chatvla2.evaluation.timing import time_runs
from chatvla2.export.calibration_data import record_engine_inputs
from chatvla2.export.cpu_moe import (
    CUSTOM_TRANSLATIONS,
    GroupedMoE,
    OrtMoE,
    grouped_moe_layers,
    ort_moe_layers,
    quantize_moe,
)
from chatvla2.export.onnx_export import TraceSpec, engine_specs, trace_to_onnx
from chatvla2.models.loading import load_model
from chatvla2.models.moe import DynamicMoE
from chatvla2.runtime.onnxruntime_session import create_session


def layer_spec(module: torch.nn.Module, hidden: int) -> TraceSpec:
    return TraceSpec("moe", module.eval(), (torch.randn(16, hidden),), ("x",), ("y",),
                     {"x": {0: "tokens"}, "y": {0: "tokens"}})


def graph_rows(args) -> list[dict]:
    """The preset's whole prefill and decode graphs: the exported forms against the MoE operator."""
    model = load_model(args.config).eval()
    inputs = record_engine_inputs(model, samples=1, seed=7, decode_steps=1)
    graphs: dict[tuple[str, str], object] = {}
    for form in ("dense", "gather"):
        model.set_moe_implementation(form)
        for spec in engine_specs(model):
            if spec.name in ("prefill", "decode"):
                graphs[spec.name, f"{form} fp32"] = trace_to_onnx(spec)
    with grouped_moe_layers(model):
        for spec in engine_specs(model):
            if spec.name in ("prefill", "decode"):
                graphs[spec.name, "grouped fp32"] = trace_to_onnx(spec)
    with ort_moe_layers(model):
        for spec in engine_specs(model):
            if spec.name in ("prefill", "decode"):
                fp32 = trace_to_onnx(spec, CUSTOM_TRANSLATIONS)
                graphs[spec.name, "MoE fp32"] = fp32
                for bits in (8, 4):
                    graphs[spec.name, f"QMoE int{bits} b32 acc4 (rest fp32)"] = quantize_moe(
                        copy.deepcopy(fp32), bits=bits, block_size=32, accuracy_level=4)
    rows = []
    for (stage, form), graph in graphs.items():
        feed = {k: np.ascontiguousarray(v) for k, v in inputs[stage].items()}
        session = create_session(graph.SerializeToString(), threads=args.threads)
        median, p90 = time_session(session, feed, args.runs)
        tokens = int(feed["embeddings"].shape[1]) if stage == "prefill" else 1
        rows.append({"stage": f"{stage} graph", "tokens": tokens, "form": form, "median_ms": median, "p90_ms": p90,
                     "routed_gflops": None, "relative_error": None, "graph_mb": graph.ByteSize() / 1e6})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--graphs", action="store_true")
    args = parser.parse_args()
    language = PRESETS[args.config].language
    hidden, intermediate = language.hidden, language.intermediate
    experts, top_k = language.moe.num_experts, language.moe.top_k
    torch.manual_seed(0)
    moe = DynamicMoE(hidden, intermediate, experts, top_k).eval()

    graphs = {}
    for form in ("dense", "gather"):
        moe.implementation = form
        graphs[f"{form} fp32"] = trace_to_onnx(layer_spec(moe, hidden))
    graphs["grouped fp32"] = trace_to_onnx(layer_spec(GroupedMoE(moe), hidden))
    graphs["MoE fp32"] = trace_to_onnx(layer_spec(OrtMoE(moe), hidden), CUSTOM_TRANSLATIONS)
    quantized = [(8, 32, 4), (4, 32, 4), (4, 32, 0)]
    if args.sweep:
        quantized = [(bits, block, level) for bits in (8, 4) for block in (0, 16, 32, 64, 128) for level in (0, 4)
                     # block-wise int8 experts use int8 activations at every level
                     if not (bits == 8 and level == 0 and block)]
    for bits, block, level in quantized:
        graph = quantize_moe(copy.deepcopy(graphs["MoE fp32"]), bits=bits, block_size=block, accuracy_level=level)
        graphs[f"QMoE int{bits} b{block} acc{level}"] = graph

    rows = []
    generator = torch.Generator().manual_seed(1)
    for stage, tokens in (("prefill", args.tokens), ("decode", 1)):
        # Decode cycles through 64 different tokens, so that each run routes to other experts (one
        # token repeated would keep its two experts' weights in the cache).
        feeds = [torch.randn(tokens, hidden, generator=generator) for _ in range(1 if tokens > 1 else 64)]
        with torch.no_grad():
            references = [moe(x).numpy() for x in feeds]
        routed_flops = 2 * tokens * top_k * 3 * hidden * intermediate
        for name, graph in graphs.items():
            session = create_session(graph.SerializeToString(), threads=args.threads)
            outputs = [session.run(None, {"x": x.numpy()})[0] for x in feeds]
            error = max(float(np.linalg.norm(o - r) / np.linalg.norm(r)) for o, r in zip(outputs, references))
            cycle = iter(range(10**9))
            samples = time_runs(lambda: session.run(None, {"x": feeds[next(cycle) % len(feeds)].numpy()}), 3, args.runs)
            median, p90 = float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3)
            rows.append({
                "stage": stage, "tokens": tokens, "form": name, "median_ms": median, "p90_ms": p90,
                "routed_gflops": routed_flops / median / 1e6, "relative_error": error,
                "graph_mb": graph.ByteSize() / 1e6,
            })

    if args.graphs:
        rows += graph_rows(args)

    print(f"{args.config}: H={hidden} I={intermediate} E={experts} k={top_k}, ONNX Runtime CPU, "
          f"{args.threads} threads, median of {args.runs}")
    print("| stage | tokens | form | ms (median / p90) | routed GFLOP/s | rel. error vs torch | graph MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gflops = "-" if r["routed_gflops"] is None else f"{r['routed_gflops']:.1f}"
        error = "-" if r["relative_error"] is None else f"{r['relative_error']:.2e}"
        print(f"| {r['stage']} | {r['tokens']} | {r['form']} | {r['median_ms']:.3f} / {r['p90_ms']:.3f} | "
              f"{gflops} | {error} | {r['graph_mb']:.1f} |")
    print(json.dumps({"config": args.config, "hidden": hidden, "intermediate": intermediate, "experts": experts,
                      "top_k": top_k, "threads": args.threads, "runs": args.runs, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
