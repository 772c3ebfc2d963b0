"""`chatvla2 SUBCOMMAND ...`: argument parsing and lazy dispatch.

Each subcommand names its options, a frozen dataclass in its own package ("module:ConfigClass"),
and the function that runs it ("module:function"). Only the given subcommand's config module is
imported, and its options built from the dataclass's fields (contract/command_config.py), so
`chatvla2 --help` imports nothing of ours and needs neither torch nor onnx; the command's module is
imported when it runs, and its function called once with the config. Errors a user can cause
(contract/errors.py's USER_ERRORS) print as one line with exit code 2; any other error keeps its
traceback. Nothing imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    "ray": "serve",
    "starlette": "serve",
    "pytest": "dev",
    "hypothesis": "dev",
}


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, its options ("module:ConfigClass", a frozen dataclass:
    contract/command_config.py), and what runs it ("module:function", called with the config; or a
    function of the config that names it). A command with `steps` (calibrate) has one per step."""

    help: str
    config: str = ""
    target: str | Callable[[Any], str] = ""
    steps: dict[str, Command] = field(default_factory=dict)


def _run_target(config) -> str:
    # Simulated arms are started by sim/, which then runs the runtime's loop on them.
    return "chatvla2.sim.robot:run_main" if config.robot == "sim" else "chatvla2.runtime.run:main"


def _arm_target(config) -> str:
    return "chatvla2.sim.cli:arm_with_sim_main" if config.sim else "chatvla2.drivers.cli:arm_main"


# `chatvla2 calibrate STEP`: the steps' modules import nothing heavy at the top (torch, onnx and
# modelopt inside functions).
CALIBRATE_STEPS = {
    "capture": Command("record each engine's real inputs and the fp32 reference outputs over observations",
                       "chatvla2.calibration.capture_config:CaptureConfig", "chatvla2.calibration.capture:main"),
    "sweep": Command("latency and accuracy of every precision plan; report.md, pareto.png, report.json",
                     "chatvla2.calibration.sweep_config:SweepConfig", "chatvla2.calibration.sweep:main"),
    "select": Command("the fastest plan of a sweep within an accuracy budget that a target can run",
                      "chatvla2.calibration.selection_config:SelectConfig", "chatvla2.calibration.selection:main"),
    "predict": Command("a bundle's lower-bound latency on Orin, Thor or H100, from its graphs",
                       "chatvla2.calibration.predict_config:PredictConfig", "chatvla2.calibration.predict:main"),
}

COMMANDS = {
    "info": Command("parameters per component of a model",
                    "chatvla2.models.info_config:InfoConfig", "chatvla2.models.info:main"),
    "import": Command("Hugging Face Qwen2-VL (+ a DexVLA ScaleDP head) weights -> a checkpoint",
                      "chatvla2.models.import_config:ImportConfig", "chatvla2.models.import_checkpoint:main"),
    "demo": Command("the shipped model, exported, driving simulated ARX arms on both tasks",
                    "chatvla2.evaluation.demo_config:DemoConfig", "chatvla2.evaluation.demo:main"),
    "export": Command("export a model to a verified ONNX bundle",
                      "chatvla2.export.export_config:ExportConfig", "chatvla2.export.cli:export_main"),
    "lint": Command("check a bundle's graphs against TensorRT's ONNX parser rules",
                    "chatvla2.export.lint_config:LintConfig", "chatvla2.export.lint:main"),
    "build": Command("build TensorRT engines from a bundle",
                     "chatvla2.export.build_config:BuildConfig", "chatvla2.export.tensorrt_build:main"),
    "run": Command("run a bundle on the robot (or simulated arms)",
                   "chatvla2.sim.run_command_config:RunCommandConfig", _run_target),
    "serve": Command("serve a bundle's policy over HTTP from Ray Serve replicas (the robot: run --policy-url)",
                     "chatvla2.serve.serve_config:ServeConfig", "chatvla2.serve.server:main"),
    "bench": Command("time the policy step per stage, against the PyTorch reference",
                     "chatvla2.calibration.bench_config:BenchConfig", "chatvla2.calibration.bench:main"),
    "train": Command("train a model by the paper's two-stage recipe on simulated data",
                     "chatvla2.training.config:TrainConfig", "chatvla2.training.cli:main"),
    "calibrate": Command("accuracy against latency: capture, sweep, select, predict", steps=CALIBRATE_STEPS),
    "eval": Command("the paper's task scores of a checkpoint or bundle on simulated episodes",
                    "chatvla2.evaluation.eval_config:EvalConfig", "chatvla2.evaluation.task_eval:main"),
    "sim": Command("the simulated tasks: generate demonstrations, show a scene",
                   "chatvla2.sim.task_config:SimTaskConfig", "chatvla2.sim.task_cli:main"),
    "sim-arm": Command("a simulated ARX arm behind a pseudo-terminal",
                       "chatvla2.sim.sim_arm_config:SimArmConfig", "chatvla2.sim.cli:sim_arm_main"),
    "arm": Command("read, enable, home or damp an ARX arm",
                   "chatvla2.drivers.arm_command_config:ArmCommandConfig", _arm_target),
}


def parse(argv: list[str]) -> tuple[Command, Any]:
    """(the command, its config) from the command line. Only the chosen command's options are built
    (importing its config's module); the others are listed by name and help alone."""
    from chatvla2.contract.command_config import add_options, config_from_namespace, unknown_options_message

    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="chatvla2", description="Run ChatVLA-2 policies on robots.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    built: dict[str | None, tuple[argparse.ArgumentParser, Command]] = {}  # step (None: no steps) -> parser, command
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        if name != chosen:
            continue
        if not command.steps:
            add_options(command_parser, _load(command.config))
            built[None] = (command_parser, command)
            continue
        steps = command_parser.add_subparsers(dest="step", metavar="STEP", required=True)
        for step_name, step in command.steps.items():
            step_parser = steps.add_parser(step_name, help=step.help, description=step.help)
            add_options(step_parser, _load(step.config))
            built[step_name] = (step_parser, step)
    namespace, extras = parser.parse_known_args(argv)
    command_parser, command = built[getattr(namespace, "step", None)]
    config_class = _load(command.config)
    if extras:  # the command's own usage, and the closest option to each unknown one
        command_parser.error(unknown_options_message(config_class, extras))
    return command, config_from_namespace(config_class, namespace)


def _load(name: str) -> Any:
    """"package.module:attribute" -> the attribute (importing the module)."""
    module_name, attribute = name.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def _user_errors() -> tuple[type[BaseException], ...]:
    # imported when needed: `chatvla2 --help` imports nothing of ours
    from chatvla2.contract.errors import USER_ERRORS

    return USER_ERRORS


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
        command, config = parse(argv)  # a config that refuses its values: one line below
        target = command.target if isinstance(command.target, str) else command.target(config)
        run = _load(target)
        return int(run(config) or 0)
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, prefix)
    except KeyboardInterrupt as exc:
        # Ctrl-C, or a stop signal the command turned into an exception (e.g. `run` before the arms
        # connect): 128 + the signal's number, as the shell reports a process a signal ended.
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"{prefix} interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + int(signum)
    except _user_errors() as exc:
        # A problem the user can fix (contract/errors.py): one line. Anything else is a bug and
        # keeps its traceback (exit 1).
        if os.environ.get("CHATVLA2_DEBUG"):
            raise
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
