"""`chatvla2 SUBCOMMAND ...`: argument parsing and lazy dispatch.

Each subcommand names the function that runs it as "package.module:function"; that module is
imported only when the subcommand runs, so `chatvla2 --help` needs neither torch nor onnx.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

# Optional dependencies and the extra that installs each.
EXTRA_FOR_MODULE = {
    "torch": "export",
    "onnx": "export",
    "onnxscript": "export",
    "modelopt": "export",
    "tensorrt": "tensorrt",
    "pytest": "dev",
    "hypothesis": "dev",
}

# Errors a user can cause (bad paths, names, files, devices): printed as one line, exit code 2.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, LookupError, OSError)


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="NAME", help="a named preset: tiny, small or paper")
    source.add_argument("--checkpoint", metavar="DIR", help="a checkpoint directory")


def _info(p: argparse.ArgumentParser) -> None:
    _add_model_source(p)


def _demo(p: argparse.ArgumentParser) -> None:
    _add_model_source(p)
    p.add_argument("--prompt", default=None, help="the instruction (default: the math game's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial diffusion noise")


def _sim_arm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="x5", help="arm profile: x5, l5 or r5")
    p.add_argument(
        "--faults",
        default="",
        help="comma-separated faults to inject, e.g. drop=0.01,corrupt=0.001,latency=0.002,"
        "silent=4,overcurrent=2,overtemp=5,unplug=10 (see `sim/faults.py`)",
    )
    p.add_argument("--seed", type=int, default=0)


def _arm(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the SLCAN adapter (or a pyserial URL)")
    where.add_argument("--sim", action="store_true", help="start a simulated arm and use it")
    p.add_argument("--profile", default="x5", help="arm profile: x5, l5 or r5")
    p.add_argument("action", choices=["status", "enable", "home", "damp"])


def _export(p: argparse.ArgumentParser) -> None:
    _add_model_source(p)
    p.add_argument("--out", required=True, metavar="BUNDLE", help="the bundle directory to write")
    p.add_argument(
        "--precision",
        default="fp32",
        metavar="PLAN",
        help="fp32, fp16, int8, int4 or fp8, or one per engine: vision=fp16,prefill=int4,decode=int4,action_head=int8",
    )
    p.add_argument(
        "--moe",
        choices=["auto", "gather", "dense"],
        default="auto",
        help="MoE graph form; auto: dense for prefill, and for decode whichever reads fewer expert bytes per token",
    )
    p.add_argument("--calibration", metavar="FILE", help="an .npz of recorded engine inputs (default: made by running the model)")
    p.add_argument("--max-seq", type=int, metavar="N", help="KV cache length (default: the model's max_cache_len)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")


def _lint(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle directory written by `chatvla2 export`")


def _build(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle directory written by `chatvla2 export`")
    p.add_argument("--out", required=True, metavar="ENGINES", help="the engines directory to write")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="TensorRT workspace limit")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache, reused across builds")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", nargs="?", help="a bundle directory written by `chatvla2 export` (or --bundle)")
    p.add_argument("--bundle", dest="bundle_option", metavar="DIR", help="the bundle, as an option")
    p.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime"], default="auto")
    p.add_argument("--engines", metavar="DIR", help="TensorRT engines from `chatvla2 build` (default BUNDLE/engines)")
    p.add_argument("--robot", choices=["sim", "arx"], default="sim", help="sim: two simulated arms on ptys; arx: real arms")
    p.add_argument("--port", action="append", default=[], metavar="PORT",
                   help="--robot arx: an SLCAN adapter, given twice (left, then right)")
    p.add_argument("--left-port", help="left arm's SLCAN adapter (--robot arx)")
    p.add_argument("--right-port", help="right arm's SLCAN adapter (--robot arx)")
    p.add_argument("--profile", default="x5", help="arm profile: x5, l5 or r5")
    p.add_argument("--sim-faults", action="append", default=[], metavar="SIDE:SPEC",
                   help="--robot sim: faults for one simulated arm, e.g. 'left:unplug=5' (see chatvla2 sim-arm --help)")
    p.add_argument("--task", "--instruction", dest="instruction",
                   default="Answer the question and pick the card with the correct answer.", help="the instruction")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=50.0, metavar="HZ", help="control rate of the execution thread")
    p.add_argument("--chunk-mode", choices=["switch", "ensemble"], default="switch")
    p.add_argument("--ensemble-decay", type=float, default=0.1, metavar="M", help="temporal ensembling weight exp(-M i)")
    p.add_argument("--reasoning", choices=["every", "hold"], default="every",
                   help="every: new reasoning each inference; hold: keep it for --reasoning-hold seconds")
    p.add_argument("--reasoning-hold", type=float, default=5.0, metavar="S")
    p.add_argument("--max-tokens", type=int, metavar="N", help="cap the reasoning at N tokens (default: the model's max_reasoning_tokens)")
    p.add_argument("--hold", type=float, default=0.5, metavar="S", help="watchdog: hold this long without actions, then damp and stop")
    p.add_argument("--latency-margin", type=float, default=0.02, metavar="S", help="start inference this much earlier than the latency estimate")
    p.add_argument("--latency-headroom", type=float, default=1.5, metavar="X", help="latency estimate = X times the largest recent latency")
    p.add_argument("--max-joint-speed", type=float, default=1.5, metavar="RAD_S", help="policy-side rate limit per joint")
    p.add_argument("--telemetry", metavar="FILE", help="JSON lines (default runs/run-YYYYmmdd-HHMMSS.jsonl)")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (numpy)")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle directories (or --bundle, repeatable)")
    p.add_argument("--bundle", dest="bundle_options", action="append", default=[], metavar="DIR", help="a bundle, as an option")
    p.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime"], default="auto")
    p.add_argument("--engines", metavar="DIR", help="TensorRT engines (default BUNDLE/engines)")
    p.add_argument("--runs", type=int, default=10, help="timed inferences per bundle (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads")
    p.add_argument("--reference", action="store_true",
                   help="also time the PyTorch eager reference (needs torch; built like `chatvla2 export --config NAME`)")
    p.add_argument("--config", metavar="NAME", help="the reference's preset (default: the bundle's model_config name)")
    p.add_argument("--checkpoint", metavar="DIR", help="the reference's checkpoint instead of a preset")
    p.add_argument("--tokens", type=int, default=32, metavar="N",
                   help="reasoning length of the whole-step figure (stages + N decode tokens); default 32, a sentence like the paper's")
    p.add_argument("--bandwidth", type=float, metavar="GB_S", help="memory bandwidth for the roofline (default: measured BLAS GEMV)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON line to FILE")


# name -> (help, argument builder, "module:function" that runs it)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str]] = {
    "info": ("parameters per component of a model", _info, "models.info:main"),
    "demo": ("reference inference on a sample observation", _demo, "models.demo:main"),
    "export": ("export a model to a verified ONNX bundle", _export, "export.cli:export_main"),
    "lint": ("check a bundle's graphs against TensorRT's ONNX parser rules", _lint, "export.lint:main"),
    "build": ("build TensorRT engines from a bundle", _build, "export.tensorrt_build:main"),
    "run": ("run a bundle on the robot (or simulated arms)", add_run_arguments, "runtime.cli:run_main"),
    "bench": ("time the policy step per stage, against the PyTorch reference", add_bench_arguments, "runtime.cli:bench_main"),
    "sim-arm": ("a simulated ARX arm behind a pseudo-terminal", _sim_arm, "sim.cli:sim_arm_main"),
    "arm": ("read, enable, home or damp an ARX arm", _arm, "drivers.cli:arm_main"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatvla2", description="Run ChatVLA-2 policies on robots.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, target) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(_target=target)
    return parser


def _load(target: str) -> Callable[[argparse.Namespace], int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"chatvla2 {args.command}: error:"
    try:
        run = _load(args._target)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in EXTRA_FOR_MODULE:
            print(
                f"{prefix} needs the '{top}' package: pip install 'chatvla2-edge[{EXTRA_FOR_MODULE[top]}]'",
                file=sys.stderr,
            )
            return 2
        raise
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("CHATVLA2_DEBUG"):
            raise
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
