"""`chatvla2 export`: a model (preset or checkpoint) to a verified ONNX bundle."""

from __future__ import annotations

import dataclasses
import time

from chatvla2.contract.errors import InvalidInput
from chatvla2.export.bundle import export_bundle, prepare_target
from chatvla2.export.calibration_data import expected_inputs, load_engine_inputs
from chatvla2.export.cpu_target import check_parity_measurable, parse_cpu_plan, resolve_cpu_isa
from chatvla2.export.export_config import ExportConfig
from chatvla2.export.precision import parse_plan
from chatvla2.models.loading import load_model
from chatvla2.models.vla import ChatVLA2


def _with_cache_length(model: ChatVLA2, length: int) -> ChatVLA2:
    language = model.cfg.language
    needed = model.cfg.vision.num_views * (model.cfg.vision.tokens_per_view + 2) + 2
    if length <= needed:
        raise InvalidInput(f"--max-seq {length} leaves no room for the prompt ({needed}+ tokens)")
    cfg = dataclasses.replace(model.cfg, language=dataclasses.replace(language, max_cache_len=length))
    model.cfg = cfg
    model.language.cfg = cfg.language
    return model


def export_main(config: ExportConfig) -> int:
    target = config.target
    # bad plans, lengths and targets fail before any work
    plan = parse_cpu_plan(config.precision) if target == "cpu" else parse_plan(config.precision or "fp32")
    # --cpu-isa: the class of CPU a cpu bundle is for (export.cpu_target.CPU_ISAS; default generic).
    cpu_isa = resolve_cpu_isa(config.cpu_isa) if target == "cpu" else None
    if cpu_isa is not None:
        check_parity_measurable(cpu_isa)
    prepare_target(config.out, replace=config.force)
    model = load_model(config.preset, config.checkpoint, seed=config.seed)
    if config.max_seq is not None:
        model = _with_cache_length(model, config.max_seq)
    calibration = None
    if config.calibration:
        calibration = load_engine_inputs(config.calibration, expected_inputs(model))
    started = time.perf_counter()
    shown = {k: "|".join(v) if isinstance(v, tuple) else v for k, v in plan.items()}
    print(
        f"exporting ChatVLA-2 {model.cfg.name} to {config.out} for {target}: plan {shown}, moe {'ort' if target == 'cpu' else config.moe}"
    )
    manifest = export_bundle(
        model,
        config.out,
        plan,
        moe=config.moe,
        calibration=calibration,
        seed=config.seed,
        replace=config.force,
        target=target,
        cpu_isa=cpu_isa,
    )
    rule = f" ({manifest['plan_rule']}; for {manifest['cpu_isa']} CPUs)" if "plan_rule" in manifest else ""
    print(
        f"bundle written: {config.out} ({len(manifest['engines'])} engines, plan {manifest['plan']}{rule}, "
        f"targets {', '.join(manifest['targets'])}, "
        f"{time.perf_counter() - started:.0f} s)"
    )
    return 0
