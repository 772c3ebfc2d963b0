"""`chatvla2 bench`: per-stage timings of a bundle's policy, against the PyTorch eager reference.

For each bundle: every stage's median and p99 over `--runs` inferences after `--warmup`; the whole
step at a fixed reasoning length (`--tokens`) and with the reasoning reused; with `--reference`
the same `Policy` code on the PyTorch backend (`calibration.reference_timing`); the decode
step against its memory roofline (`calibration.roofline`); and the compute-bound stages (vision,
prefill, action head) against their compute roofline (`calibration.compute_roofline`): the FLOPs
each graph must do (routed experts only) over this machine's GEMM rate at the precision of each
product, measured in ONNX Runtime's CPU provider at the bench's thread count, and the fraction of
that rate each stage reached. Prints a table, then one JSON line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chatvla2.calibration.bench_config import BenchConfig
from chatvla2.calibration.compute_roofline import COMPUTE_STAGES, faster_rates, measure_gemm_rates, stage_rooflines
from chatvla2.calibration.roofline import decode_traffic, measure_bandwidth
from chatvla2.contract.bundle import bundle_model_config, load_manifest
from chatvla2.contract.config import ModelConfig, get_config
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.contract.stage_timer import STAGES
from chatvla2.evaluation.timing import latency_stats
from chatvla2.runtime.camera import StaticCamera
from chatvla2.runtime.policy import Policy


def bench_policy(bundle: Path, config: BenchConfig) -> dict:
    policy = Policy.from_bundle(bundle, backend=config.backend, engines_dir=config.engines, threads=config.threads,
                                spin=config.spin)
    observation = {"images": StaticCamera(policy.num_views).read(), "instruction": INSTRUCTION,
                   "state": np.zeros(policy.state_dim, np.float32), "seed": 0}
    policy.warmup(observation, config.warmup)
    runs = [policy.infer(observation) for _ in range(config.runs)]
    stages = {k: latency_stats([r["timings"][k] for r in runs]) for k in runs[0]["timings"]}
    prompt_tokens = len(policy.prompt(INSTRUCTION)[0])
    policy.close()
    return {"backend": policy.backend, "providers": sorted(set(policy.providers.values())), "tokens": runs[0]["tokens"],
            "prompt_tokens": prompt_tokens, "stages": stages}


def bench_shapes(manifest: dict, prompt_tokens: int) -> dict[str, dict[str, list[int]]]:
    """Per engine, the input shapes of the bench's own prompt: a dimension the manifest declares
    as "prompt_length" (or, for the prefill of the cpu target's shared language graph, "tokens")
    at the prompt's length, the others at the manifest's opt shapes."""
    from chatvla2.calibration.graph_count import opt_shapes

    out = {}
    for name, entry in manifest["engines"].items():
        shapes = opt_shapes(entry)
        prompt_dims = ("prompt_length", "tokens") if name == "prefill" else ("prompt_length",)
        for spec in entry["inputs"]:
            if any(d in spec["shape"] for d in prompt_dims):
                shapes[spec["name"]] = [prompt_tokens if d in prompt_dims else s for d, s in zip(spec["shape"], shapes[spec["name"]])]
        out[name] = shapes
    return out


def compute_rooflines(bundle: Path, manifest: dict, runtime: dict, rates: dict) -> dict:
    """The compute roofline of the compute-bound stages, where they ran on this CPU (ONNX
    Runtime's CPU provider; the rates are this CPU's)."""
    if runtime["providers"] != ["CPUExecutionProvider"]:
        return {"unavailable": f"the stages ran on {', '.join(runtime['providers']) or runtime['backend']}, "
                               "the GEMM rates are this CPU's (ONNX Runtime CPU provider)"}
    return stage_rooflines(bundle, manifest, runtime["stages"], rates, bench_shapes(manifest, runtime["prompt_tokens"]))


def reference_config(model_name: str, config: BenchConfig) -> tuple[ModelConfig, str]:
    """The configuration `--reference` builds (calibration.reference_timing), without torch for a
    preset; and how to name it."""
    if config.checkpoint:
        from chatvla2.models.checkpoint import read_checkpoint_config  # the reference needs models/ anyway

        return read_checkpoint_config(config.checkpoint), f"--checkpoint {config.checkpoint}"
    name = config.preset or model_name
    return get_config(name), f"--config {name}" if config.preset else f"the preset {name!r} (the bundle's model name)"


def check_reference_matches(bundle: Path, config: BenchConfig) -> None:
    """The reference must be the bundle's model: the same configuration, field for field (timing
    another model's eager reference against this bundle would be a meaningless speed-up)."""
    manifest = load_manifest(bundle, verify_hashes=False)
    ours = bundle_model_config(bundle, manifest)
    theirs, source = reference_config(ours.name, config)
    if theirs != ours:
        differences = _config_differences(ours.to_dict(), theirs.to_dict())
        shown = "; ".join(f"{k}: bundle {a!r}, reference {b!r}" for k, a, b in differences[:3])
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise InvalidInput(f"{bundle}: the reference ({source}) is not the bundle's model: {shown}{more}")


def _config_differences(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out.extend(_config_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def composed_step_ms(stages: dict, tokens: int) -> dict:
    """The policy step at a fixed reasoning length, from the per-stage medians: untrained (or
    differently quantized) models stop reasoning at different lengths, so whole-step figures are
    compared at the same N. every = stages + N decode tokens; reuse = no decoding (reasoning reused)."""
    reuse = sum(stages[k]["p50_ms"] for k in STAGES if k != "decode")
    return {"every": round(reuse + tokens * stages["decode_per_token"]["p50_ms"], 3), "reuse": round(reuse, 3)}


def main(config: BenchConfig) -> int:
    bundles = config.bundle_paths  # the options checked themselves (bench_config.py)
    if config.reference:
        for bundle in bundles:
            check_reference_matches(bundle, config)
    bandwidth = measure_bandwidth()
    if config.bandwidth:
        bandwidth["given"] = config.bandwidth
    roof_gbs = config.bandwidth or bandwidth["gemv"]
    gemm_rates = measure_gemm_rates(config.threads)
    results, references, manifests = [], {}, []
    for bundle in bundles:
        manifest = load_manifest(bundle)
        entry = {"bundle": str(bundle), "model": manifest["model_config"]["name"], "plan": manifest.get("plan"),
                 "runtime": bench_policy(bundle, config)}
        entry["runtime"]["step_ms"] = composed_step_ms(entry["runtime"]["stages"], config.tokens)
        if config.reference:
            # The PyTorch reference needs torch and models/ (the export extra); one per model.
            from chatvla2.calibration.reference_timing import time_reference

            key = (config.preset or entry["model"], config.checkpoint)
            if key not in references:
                references[key] = time_reference(entry["model"], config)
                references[key]["step_ms"] = composed_step_ms(references[key]["stages"], config.tokens)
            entry["reference"] = references[key]
            entry["speedup"] = {k: round(entry["reference"]["step_ms"][k] / v, 3) for k, v in entry["runtime"]["step_ms"].items()}
        roof = decode_traffic(bundle, manifest)
        per_token_s = entry["runtime"]["stages"]["decode_per_token"]["p50_ms"] / 1000
        roof["bandwidth_gbs"] = roof_gbs
        roof["roofline_ms"] = round(roof["total_bytes"] / (roof_gbs * 1e9) * 1000, 4)
        roof["measured_ms"] = round(per_token_s * 1000, 4)
        roof["achieved_gbs"] = round(roof["total_bytes"] / per_token_s / 1e9, 3) if per_token_s else None
        roof["times_roofline"] = round(roof["measured_ms"] / roof["roofline_ms"], 3) if per_token_s else None
        entry["decode_roofline"] = roof
        results.append(entry)
        manifests.append((bundle, manifest))
    # the GEMM rates again after the bundles (the faster of the two per precision), then the
    # compute roofline of each bundle's compute-bound stages against them
    gemm_rates = faster_rates(gemm_rates, measure_gemm_rates.__wrapped__(config.threads))
    for entry, (bundle, manifest) in zip(results, manifests):
        entry["compute_roofline"] = compute_rooflines(bundle, manifest, entry["runtime"], gemm_rates)
    print(format_bench(results, config.tokens, gemm_rates))
    line = json.dumps({"bench": results, "tokens": config.tokens, "spin": config.spin, "bandwidth_gbs": bandwidth, "gemm_gflops": gemm_rates})
    if config.json_out:
        Path(config.json_out).write_text(line + "\n")
    print(line, flush=True)
    return 0


def format_bench(results: list[dict], tokens: int, rates: dict | None = None) -> str:
    lines = []
    if rates and "unavailable" not in rates:
        measured = ", ".join(f"{k} {v['gflops']:.0f}" if v.get("gflops") else f"{k} n/a"
                             for k, v in rates.items() if isinstance(v, dict))
        lines.append(f"GEMM rates here (GFLOP/s, {rates['library']}, {rates['threads'] or 'default'} threads, best of "
                     f"{rates['repeats']} at {len(rates['shapes_mkn'])} shapes M x K x N"
                     + (", the faster of before and after the bundles" if rates.get("measurements") == 2 else "") + f"): {measured}")
    elif rates:
        lines.append(f"GEMM rates: not measured ({rates['unavailable']})")
    for r in results:
        plan = r["plan"] or {}
        precision = ",".join(f"{k}={v}" for k, v in sorted(plan.items())) if plan else "?"
        lines.append(f"{r['bundle']} ({r['model']}: {precision}); {r['runtime']['backend']} "
                     f"[{', '.join(r['runtime']['providers'])}], {r['runtime']['tokens']} reasoning tokens")
        has_ref = "reference" in r
        compute = r.get("compute_roofline") or {}
        has_roof = bool(compute) and "unavailable" not in compute
        header = f"  {'stage':<22}{'runtime p50':>13}{'p99':>12}" + (f"{'torch p50':>13}{'p99':>12}{'speed-up':>10}" if has_ref else "")
        if has_roof:
            header += f"{'GFLOP':>10}{'roof':>11}{'GFLOP/s':>9}{'of rate':>9}"
        lines.append(header)
        for stage, s in r["runtime"]["stages"].items():
            row = f"  {stage:<22}{s['p50_ms']:>11.2f}ms{s['p99_ms']:>10.2f}ms"
            if has_ref:
                if stage in r["reference"]["stages"]:
                    ref = r["reference"]["stages"][stage]
                    speed = ref["p50_ms"] / s["p50_ms"] if s["p50_ms"] else float("nan")
                    ref_p99 = f"{ref['p99_ms']:>10.2f}ms" if ref.get("p99_ms") is not None else f"{'-':>12}"
                    row += f"{ref['p50_ms']:>11.2f}ms{ref_p99}{speed:>9.2f}x"
                elif has_roof and stage in compute:
                    row += f"{'':>35}"
            if has_roof and stage in compute:
                row += _compute_cells(compute[stage])
            lines.append(row)
        if has_ref and r["reference"].get("moe_form_per_stage"):
            forms = r["reference"]["moe_form_per_stage"]
            lines.append(f"  (torch: the faster MoE form per stage: prefill {forms.get('prefill')}, decode {forms.get('decode')}; total = sum of stages)")
        for cadence, label in (("every", f"step, {tokens} tokens"), ("reuse", "step, reasoning reused")):
            row = f"  {label:<22}{r['runtime']['step_ms'][cadence]:>11.2f}ms{'':>12}"
            if has_ref:
                row += f"{r['reference']['step_ms'][cadence]:>11.2f}ms{'':>12}{r['speedup'][cadence]:>9.2f}x"
            lines.append(row)
        roof = r["decode_roofline"]
        lines.append(f"  decode roofline: {roof['total_bytes'] / 1e6:.2f} MB/token (weights {roof['weight_bytes'] / 1e6:.2f} MB "
                     f"[{roof['precision']}, moe {roof['moe_form']}, from the {roof['counted_from']}], KV cache {roof['cache_bytes'] / 1e6:.2f} MB) "
                     f"at {roof['bandwidth_gbs']} GB/s -> {roof['roofline_ms']:.3f} ms; measured {roof['measured_ms']:.3f} ms "
                     f"= {roof['times_roofline']:.2f}x the roofline ({roof['achieved_gbs']} GB/s)")
        if has_roof:
            lines.append("  compute roofline: the FLOPs each graph must do (routed experts only) / this machine's GEMM rate "
                         "at its products' precision; 'of rate' = roof / runtime p50")
            for stage in COMPUTE_STAGES:
                c = compute[stage]
                used = " + ".join(f"{k} at the {u['rate']} rate" for k, u in sorted(c["rates"].items())) or "no rate"
                moe = c["moe"]
                routed = ""
                if moe["all_experts_flops"]:
                    routed = (f"; experts {moe['top_k']} of {moe['num_experts']} per token: {moe['routed_flops'] / 1e9:.3f} of "
                              f"{moe['all_experts_flops'] / 1e9:.3f} GFLOP")
                    if c["graph_gflop"] != c["required_gflop"]:
                        routed += (f" (the {moe['form']} form computes {c['graph_gflop']:.3f} GFLOP in all"
                                   + (f": {c['graph_achieved_gflops']} GFLOP/s" if c.get("graph_achieved_gflops") else "") + ")")
                unshaped = f"; {c['unshaped_products']} products without a shape not counted" if c["unshaped_products"] else ""
                lines.append(f"    {stage} ({c['target']} graph, {c['precision']}): {c['required_gflop']:.3f} GFLOP, "
                             f"{used}, {c['rate_gflops']} GFLOP/s{routed}{unshaped}")
        elif compute:
            lines.append(f"  compute roofline: {compute['unavailable']}")
    return "\n".join(lines)


def _compute_cells(c: dict) -> str:
    roof = f"{c['roofline_ms']:>9.2f}ms" if c["roofline_ms"] is not None else f"{'n/a':>11}"
    achieved = f"{c['achieved_gflops']:>9.1f}" if c["achieved_gflops"] is not None else f"{'-':>9}"
    fraction = f"{c['fraction_of_rate']:>9.0%}" if c["fraction_of_rate"] is not None else f"{'-':>9}"
    return f"{c['required_gflop']:>10.3f}{roof}{achieved}{fraction}"
