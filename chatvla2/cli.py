"""`chatvla2 SUBCOMMAND ...`: argument parsing and lazy dispatch.

Each subcommand names the function that runs it as "package.module:function"; that module is
imported only when the subcommand runs, and a subcommand's arguments (whose defaults and choices
come from the packages' own dataclasses and constants) are built only when it is the one given,
so `chatvla2 --help` imports nothing of ours and needs neither torch nor onnx. Nothing imports
this package.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from typing import Callable

# Optional dependencies and the extra that installs each.
EXTRA_FOR_MODULE = {
    "torch": "export",
    "onnx": "export",
    "onnxscript": "export",
    "modelopt": "export",
    "tensorrt": "tensorrt",
    "gymnasium": "sim",
    "PIL": "sim",
    "pyarrow": "sim",
    "tqdm": "sim",
    "cv2": "camera",
    "pytest": "dev",
    "hypothesis": "dev",
}

# Errors a user can cause (bad paths, names, files, devices): printed as one line, exit code 2.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, LookupError, OSError)


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    from chatvla2.contract.config import PRESETS

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="NAME", help=f"a named preset: {', '.join(PRESETS)}")
    source.add_argument("--checkpoint", metavar="DIR", help="a checkpoint directory")


def _add_profile(parser: argparse.ArgumentParser) -> None:
    from chatvla2.contract.config import field_default
    from chatvla2.drivers.arm import ArmConfig
    from chatvla2.drivers.profiles import PROFILES

    parser.add_argument("--profile", default=field_default(ArmConfig, "profile"), help=f"arm profile: {', '.join(PROFILES)}")


def _info(p: argparse.ArgumentParser) -> None:
    _add_model_source(p)


def _import(p: argparse.ArgumentParser) -> None:
    importlib.import_module("chatvla2.models.import_checkpoint").add_arguments(p)


def _demo(p: argparse.ArgumentParser) -> None:
    from chatvla2.evaluation.demo import BOTH, default

    p.add_argument("--checkpoint", metavar="DIR", help="the model (default: the shipped checkpoints/chatvla2-demo)")
    p.add_argument("--task", default=default("task"), help="math_game or toy_placement (default %(default)s)")
    p.add_argument("--split", default=default("split"), help=f"{BOTH}, in_domain or open_world (default %(default)s)")
    p.add_argument("--episodes", type=int, default=default("episodes"), help="episodes per split (default %(default)s)")
    p.add_argument("--seed", type=int, default=default("seed"), help="first episode seed (default %(default)s)")
    p.add_argument("--plan", default=default("plan"), metavar="PLAN",
                   help="auto: without TensorRT the cpu target's fastest plan within the parity budgets, else fp32; "
                        "cpu or cpu:PLAN (cpu target); or a TensorRT plan: fp32, fp16, int8, ... or one per engine (default %(default)s)")
    p.add_argument("--backend", default=default("backend"), help="auto, onnxruntime or tensorrt (default %(default)s)")
    p.add_argument("--mode", default=default("mode"),
                   help="driver (simulated arms on ptys through the drivers, real time) or fast (default %(default)s)")
    p.add_argument("--query-every", type=int, default=default("query_every"), metavar="K",
                   help="query the policy every K control steps (default %(default)s)")
    p.add_argument("--gif", default=default("gif"), metavar="FILE", help="where the episode GIF goes (default %(default)s)")
    p.add_argument("--cache", metavar="DIR", help="exported bundles' cache (default $CHATVLA2_CACHE or ~/.cache/chatvla2-edge)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")


def _sim_arm(p: argparse.ArgumentParser) -> None:
    _add_profile(p)
    p.add_argument(
        "--faults",
        default="",
        help="comma-separated faults to inject, e.g. drop=0.01,corrupt=0.001,latency=0.002,"
        "silent=4,overcurrent=2,overtemp=5,unplug=10 (see `sim/faults.py`)",
    )
    p.add_argument("--seed", type=int, default=0)


def _sim(p: argparse.ArgumentParser) -> None:
    from chatvla2.sim.tasks.env import DEFAULT_SIZE, TASKS
    from chatvla2.sim.tasks.splits import SPLITS

    p.add_argument("action", choices=["generate", "show"],
                   help="generate: expert episodes (+ image-text samples) as a dataset; show: one scene as a PNG")
    p.add_argument("--task", choices=list(TASKS), default=next(iter(TASKS)))
    p.add_argument("--split", choices=SPLITS, default=SPLITS[0])
    p.add_argument("--seed", type=int, default=0, help="the (first) episode's seed: any seed gives a fresh episode of the split")
    p.add_argument("--episodes", type=int, default=10, help="generate: how many episodes")
    p.add_argument("--image-text", type=int, default=0, metavar="N", help="generate: also N image-text samples of the split")
    p.add_argument("--image-text-kinds", choices=("all", "math", "toy"), default="all",
                   help="generate: the image-text kinds drawn (math: whiteboard, arithmetic, cards)")
    p.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", metavar="HxW", help="camera image size")
    p.add_argument("--out", required=True, help="generate: the dataset directory; show: a .png file")
    p.add_argument("--force", action="store_true", help="generate: replace an existing dataset")


def _arm(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the SLCAN adapter (or a pyserial URL)")
    where.add_argument("--sim", action="store_true", help="start a simulated arm and use it")
    _add_profile(p)
    p.add_argument("action", choices=["status", "enable", "home", "damp"])


def _export(p: argparse.ArgumentParser) -> None:
    from chatvla2.contract.config import MOE_FORMS
    from chatvla2.export.thresholds import PRECISIONS

    _add_model_source(p)
    p.add_argument("--out", required=True, metavar="BUNDLE", help="the bundle directory to write")
    p.add_argument("--target", choices=["tensorrt", "cpu"], default="tensorrt",
                   help="tensorrt: Q/DQ graphs TensorRT parses (linted); cpu: ONNX Runtime's CPU operators "
                        "(MoE/QMoE, dynamic int8, MatMulNBits int4), never handed to TensorRT")
    p.add_argument(
        "--precision",
        default=None,
        metavar="PLAN",
        help=f"{', '.join(PRECISIONS)}, or one per engine: vision=fp16,prefill=int4,decode=int4,action_head=int8 "
             "(default fp32; with --target cpu: auto, each engine's fastest of int8/fp32 within its parity budget, "
             "prefill and decode as one language graph; language=P sets both)",
    )
    p.add_argument(
        "--moe",
        choices=["auto", *MOE_FORMS],
        default="auto",
        help="MoE graph form; auto: dense for prefill, and for decode whichever reads fewer expert bytes per token",
    )
    p.add_argument("--calibration", metavar="FILE", help="an .npz of recorded engine inputs (default: made by running the model)")
    p.add_argument("--max-seq", type=int, metavar="N", help="KV cache length (default: the model's max_cache_len)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    p.add_argument("--force", action="store_true",
                   help="replace an existing bundle at --out (refused if the folder holds anything the bundle's manifest "
                        "does not list, e.g. engines/ from chatvla2 build: those are never deleted)")


def _lint(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle directory written by `chatvla2 export`")


def _build(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle directory written by `chatvla2 export`")
    p.add_argument("--out", required=True, metavar="ENGINES", help="the engines directory to write")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GB", help="TensorRT workspace limit")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache, reused across builds")


def _add_backend(p: argparse.ArgumentParser) -> None:
    from chatvla2.runtime.engine import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--engines", metavar="DIR", help="TensorRT engines from `chatvla2 build` (default BUNDLE/engines)")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime intra-op threads")
    p.add_argument("--spin", action="store_true",
                   help="ONNX Runtime's threads spin while waiting for work: faster decoding where the inference has "
                        "its cores to itself; off by default (on shared cores it starves the arm controllers)")


def _run(p: argparse.ArgumentParser) -> None:
    from chatvla2.contract.config import field_default
    from chatvla2.contract.scene import INSTRUCTION
    from chatvla2.drivers.controller import ControllerConfig
    from chatvla2.runtime.loop import CHUNK_MODES, REASONING_CADENCES, LoopConfig
    from chatvla2.runtime.robots import MAX_FEEDBACK_TIMEOUT_S
    from chatvla2.runtime.safety import DEFAULT_JOINT_SPEED
    from chatvla2.sim.robot import DEFAULT_EPISODE_SEED, DEFAULT_SPLIT, SIM_FEEDBACK_TIMEOUT_S, SIM_TASKS
    from chatvla2.sim.tasks.splits import SPLITS

    class TaskOrInstruction(argparse.Action):
        """--instruction TEXT and --task TEXT: the instruction. --task NAME, NAME a simulated task:
        that task (its scene is the camera, its instruction the instruction); such a run is always
        sim.robot's, which refuses --robot arx in one line (by `_run_target`, arx would run the
        real arms with the default instruction)."""

        def __call__(self, parser, namespace, value, option_string=None):
            if option_string == "--task" and value in SIM_TASKS:
                namespace.task = value
                namespace._target = "chatvla2.sim.robot:run_main"
            else:
                namespace.instruction = value
                namespace.instruction_given = True

    loop = functools.partial(field_default, LoopConfig)
    p.add_argument("bundle", nargs="?", help="a bundle directory written by `chatvla2 export` (or --bundle)")
    p.add_argument("--bundle", dest="bundle_option", metavar="DIR", help="the bundle, as an option")
    _add_backend(p)
    p.add_argument("--robot", choices=["sim", "arx"], default="sim", help="sim: two simulated arms on ptys; arx: real arms")
    p.add_argument("--port", action="append", default=[], metavar="PORT",
                   help="--robot arx: an SLCAN adapter, given twice (left, then right)")
    p.add_argument("--left-port", help="left arm's SLCAN adapter (--robot arx)")
    p.add_argument("--right-port", help="right arm's SLCAN adapter (--robot arx)")
    _add_profile(p)
    p.add_argument("--feedback-timeout", type=float, metavar="S",
                   help="no reply from a motor for S seconds is a communication fault (the arm damps); default "
                        f"{field_default(ControllerConfig, 'feedback_timeout_s'):g} s for --robot arx (the drivers' ControllerConfig), "
                        f"{SIM_FEEDBACK_TIMEOUT_S:g} s for --robot sim (a loaded machine runs the simulators late); "
                        f"at most {MAX_FEEDBACK_TIMEOUT_S:g} s")
    p.add_argument("--sim-faults", action="append", default=[], metavar="SIDE:SPEC",
                   help="--robot sim: faults for one simulated arm, e.g. 'left:unplug=5' (see chatvla2 sim-arm --help)")
    p.set_defaults(task=None, instruction_given=False)
    p.add_argument("--task", "--instruction", dest="instruction", default=INSTRUCTION, action=TaskOrInstruction,
                   metavar="NAME|TEXT",
                   help=f"--task NAME, a simulated task ({', '.join(SIM_TASKS)}), with --robot sim: the task's scene is "
                        "every camera view (rendered from the arms' measured state) and its instruction the instruction; "
                        "the outcome and the reasoning's scores are printed at the end. Any other --task TEXT, and "
                        "--instruction TEXT, is the instruction text (default: the math game's instruction)")
    p.add_argument("--split", choices=SPLITS, help=f"--task NAME: the scene's split (default {DEFAULT_SPLIT})")
    p.add_argument("--episode-seed", type=int, metavar="N",
                   help=f"--task NAME: the scene's seed (default {DEFAULT_EPISODE_SEED}); (task, split, seed) is "
                        "always the same scene")
    from chatvla2.runtime.camera import CAMERA_SPEC_HELP, DEFAULT_MAX_AGE_S

    p.add_argument("--camera", action="append", default=[], metavar="SPEC",
                   help=f"one per camera view, in the model's order (default: static per view). {CAMERA_SPEC_HELP}")
    p.add_argument("--camera-max-age", type=float, default=DEFAULT_MAX_AGE_S, metavar="S",
                   help="a view whose newest frame is older (or frozen this long) holds the plan")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=loop("rate_hz"), metavar="HZ", help="control rate of the execution thread")
    p.add_argument("--chunk-mode", choices=CHUNK_MODES, default=loop("chunk_mode"))
    p.add_argument("--ensemble-decay", type=float, default=loop("ensemble_decay"), metavar="M",
                   help="temporal ensembling weight exp(-M i)")
    # "hold" / --reasoning-hold: this cadence's names before 0.2 ("hold" now means only the watchdog's).
    p.add_argument("--reasoning", choices=REASONING_CADENCES, default=loop("reasoning"),
                   type=lambda value: "reuse" if value == "hold" else value,
                   help="every: new reasoning each inference; reuse: reuse it for --reasoning-reuse seconds")
    p.add_argument("--reasoning-reuse", "--reasoning-hold", dest="reasoning_reuse", type=float,
                   default=loop("reasoning_reuse_s"), metavar="S")
    p.add_argument("--max-tokens", type=int, metavar="N", help="cap the reasoning at N tokens (default: the model's max_reasoning_tokens)")
    p.add_argument("--hold", type=float, default=loop("hold_s"), metavar="S",
                   help="watchdog: hold the last action this long without new actions, then damp and stop")
    p.add_argument("--latency-margin", type=float, default=loop("latency_margin_s"), metavar="S",
                   help="start inference this much earlier than the latency estimate")
    p.add_argument("--latency-headroom", type=float, default=loop("latency_headroom"), metavar="X",
                   help="latency estimate = X times the largest recent latency")
    p.add_argument("--max-joint-speed", type=float, default=DEFAULT_JOINT_SPEED, metavar="RAD_S", help="policy-side rate limit per joint")
    p.add_argument("--telemetry", metavar="FILE", help="JSON lines (default runs/run-YYYYmmdd-HHMMSS.jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (numpy)")


def _bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle directories (or --bundle, repeatable)")
    p.add_argument("--bundle", dest="bundle_options", action="append", default=[], metavar="DIR", help="a bundle, as an option")
    _add_backend(p)
    p.add_argument("--runs", type=int, default=10, help="timed inferences per bundle (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reference", action="store_true",
                   help="also time the PyTorch eager reference (needs torch; built like `chatvla2 export --config NAME`)")
    p.add_argument("--config", metavar="NAME", help="the reference's preset (default: the bundle's model_config name)")
    p.add_argument("--checkpoint", metavar="DIR", help="the reference's checkpoint instead of a preset")
    p.add_argument("--tokens", type=int, default=32, metavar="N",
                   help="reasoning length of the whole-step figure (stages + N decode tokens); default 32, a sentence like the paper's")
    p.add_argument("--bandwidth", type=float, metavar="GB_S", help="memory bandwidth for the roofline (default: measured BLAS GEMV)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON line to FILE")


def _train(p: argparse.ArgumentParser) -> None:
    from chatvla2.training.cli import add_train_arguments

    add_train_arguments(p)


def _eval(p: argparse.ArgumentParser) -> None:
    from chatvla2.evaluation.task_eval import add_eval_arguments

    add_eval_arguments(p)


# `chatvla2 calibrate STEP`: step -> (help, the module with add_arguments(parser) and main(args)).
CALIBRATE_STEPS = {
    "capture": ("record each engine's real inputs and the fp32 reference outputs over observations", "chatvla2.calibration.capture"),
    "sweep": ("latency and accuracy of every precision plan; report.md, pareto.png, report.json", "chatvla2.calibration.sweep"),
    "select": ("the fastest plan of a sweep within an accuracy budget that a target can run", "chatvla2.calibration.selection"),
    "predict": ("a bundle's lower-bound latency on Orin, Thor or H100, from its graphs", "chatvla2.calibration.predict"),
}


def _calibrate(p: argparse.ArgumentParser) -> None:
    # The step modules import nothing heavy at the top (torch, onnx and modelopt inside functions).
    steps = p.add_subparsers(dest="calibrate_step", metavar="STEP", required=True)
    for name, (help_text, module) in CALIBRATE_STEPS.items():
        step = steps.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(step)


def _calibrate_target(args: argparse.Namespace) -> str:
    return f"{CALIBRATE_STEPS[args.calibrate_step][1]}:main"


def _run_target(args: argparse.Namespace) -> str:
    # Simulated arms are started by sim/, which then runs the runtime's loop on them.
    return "chatvla2.sim.robot:run_main" if args.robot == "sim" else "chatvla2.runtime.run:main"


def _arm_target(args: argparse.Namespace) -> str:
    return "chatvla2.sim.cli:arm_with_sim_main" if args.sim else "chatvla2.drivers.cli:arm_main"


# name -> (help, argument builder, what runs it: "module:function", or a function of the parsed
# arguments that names it)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str | Callable[[argparse.Namespace], str]]] = {
    "info": ("parameters per component of a model", _info, "chatvla2.models.info:main"),
    "import": ("Hugging Face Qwen2-VL (+ a DexVLA ScaleDP head) weights -> a checkpoint", _import, "chatvla2.models.import_checkpoint:main"),
    "demo": ("the shipped model, exported, driving simulated ARX arms on the math game", _demo, "chatvla2.evaluation.demo:main"),
    "export": ("export a model to a verified ONNX bundle", _export, "chatvla2.export.cli:export_main"),
    "lint": ("check a bundle's graphs against TensorRT's ONNX parser rules", _lint, "chatvla2.export.lint:main"),
    "build": ("build TensorRT engines from a bundle", _build, "chatvla2.export.tensorrt_build:main"),
    "run": ("run a bundle on the robot (or simulated arms)", _run, _run_target),
    "bench": ("time the policy step per stage, against the PyTorch reference", _bench, "chatvla2.calibration.bench:main"),
    "train": ("train a model by the paper's two-stage recipe on simulated data", _train, "chatvla2.training.cli:main"),
    "calibrate": ("accuracy against latency: capture, sweep, select, predict", _calibrate, _calibrate_target),
    "eval": ("the paper's task scores of a checkpoint or bundle on simulated episodes", _eval, "chatvla2.evaluation.task_eval:main"),
    "sim": ("the simulated tasks: generate demonstrations, show a scene", _sim, "chatvla2.sim.task_cli:main"),
    "sim-arm": ("a simulated ARX arm behind a pseudo-terminal", _sim_arm, "chatvla2.sim.cli:sim_arm_main"),
    "arm": ("read, enable, home or damp an ARX arm", _arm, _arm_target),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the arguments of that one command ("" none: the others are listed
    but their argument builders, which import the defaults from the packages, are not run)."""
    parser = argparse.ArgumentParser(prog="chatvla2", description="Run ChatVLA-2 policies on robots.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, target) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            add_arguments(command)
        command.set_defaults(_target=target)
    return parser


def _load(target: str) -> Callable[[argparse.Namespace], int | None]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _missing_extra(exc: ModuleNotFoundError, prefix: str) -> int:
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_FOR_MODULE:
        raise exc
    print(f"{prefix} needs the '{top}' package: pip install 'chatvla2-edge[{EXTRA_FOR_MODULE[top]}]'", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    prefix = f"chatvla2 {chosen}: error:"
    try:
        args = build_parser(only=chosen if chosen in COMMANDS else "").parse_args(argv)
        target = args._target if isinstance(args._target, str) else args._target(args)
        run = _load(target)
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, prefix)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt as exc:
        # Ctrl-C, or a stop signal the command turned into an exception (e.g. `run` before the arms
        # connect): 128 + the signal's number, as the shell reports a process a signal ended.
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"{prefix} interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + int(signum)
    except USER_ERRORS as exc:
        if os.environ.get("CHATVLA2_DEBUG"):
            raise
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
