"""`chatvla2 export`: a model (preset or checkpoint) to a verified ONNX bundle."""

from __future__ import annotations

import argparse
import dataclasses
import time

from chatvla2.export.bundle import export_bundle, prepare_target
from chatvla2.export.calibration_data import expected_inputs, load_engine_inputs
from chatvla2.export.cpu_target import parse_cpu_plan
from chatvla2.export.precision import parse_plan
from chatvla2.models.loading import load_model
from chatvla2.models.vla import ChatVLA2


def _with_cache_length(model: ChatVLA2, length: int) -> ChatVLA2:
    language = model.cfg.language
    needed = model.cfg.vision.num_views * (model.cfg.vision.tokens_per_view + 2) + 2
    if length <= needed:
        raise ValueError(f"--max-seq {length} leaves no room for the prompt ({needed}+ tokens)")
    cfg = dataclasses.replace(model.cfg, language=dataclasses.replace(language, max_cache_len=length))
    model.cfg = cfg
    model.language.cfg = cfg.language
    return model


def export_main(args: argparse.Namespace) -> int:
    target = getattr(args, "target", "tensorrt")
    # bad plans, lengths and targets fail before any work
    plan = parse_cpu_plan(args.precision) if target == "cpu" else parse_plan(args.precision or "fp32")
    if args.max_seq is not None and args.max_seq < 1:
        raise ValueError(f"--max-seq must be a positive number of positions, got {args.max_seq}")
    prepare_target(args.out, replace=args.force)
    model = load_model(args.config, args.checkpoint, seed=args.seed)
    if args.max_seq is not None:
        model = _with_cache_length(model, args.max_seq)
    calibration = None
    if args.calibration:
        calibration = load_engine_inputs(args.calibration, expected_inputs(model))
    started = time.perf_counter()
    shown = {k: "|".join(v) if isinstance(v, tuple) else v for k, v in plan.items()}
    print(f"exporting ChatVLA-2 {model.cfg.name} to {args.out} for {target}: plan {shown}, moe {'ort' if target == 'cpu' else args.moe}")
    manifest = export_bundle(model, args.out, plan, moe=args.moe, calibration=calibration, seed=args.seed,
                             replace=args.force, target=target)
    print(f"bundle written: {args.out} ({len(manifest['engines'])} engines, plan {manifest['plan']}, "
          f"targets {', '.join(manifest['targets'])}, "
          f"{time.perf_counter() - started:.0f} s)")
    return 0
