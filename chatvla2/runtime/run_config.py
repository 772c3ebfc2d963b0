"""What a run reads (runtime/run.py): the bundle, its backend, the real arms, the cameras and the
control loop. `chatvla2 run`'s options are these and the simulated robot's
(sim/run_command_config.py); the loop's defaults are LoopConfig's, the arm's ArmConfig's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from chatvla2.contract.command_config import option, option_flags
from chatvla2.contract.config import field_default
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.contract.wire import read_token_file
from chatvla2.drivers.arm import ArmConfig
from chatvla2.drivers.controller import ControllerConfig
from chatvla2.drivers.profiles import PROFILES, get_profile
from chatvla2.runtime.backend_options import BackendOptions
from chatvla2.runtime.camera import CAMERA_SPEC_HELP, DEFAULT_MAX_AGE_S, parse_camera_spec
from chatvla2.runtime.loop import CHUNK_MODES, REASONING_CADENCES, LoopConfig, check_loop_settings
from chatvla2.runtime.numbers import is_finite_number
from chatvla2.runtime.robots import MAX_FEEDBACK_TIMEOUT_S, check_feedback_timeout
from chatvla2.runtime.safety import DEFAULT_JOINT_SPEED

ROBOTS = ("sim", "arx")
# LoopConfig's fields and the RunConfig fields (options) that set them.
LOOP_FIELDS = {
    "rate_hz": "rate",
    "duration_s": "duration",
    "chunk_mode": "chunk_mode",
    "ensemble_decay": "ensemble_decay",
    "reasoning": "reasoning",
    "reasoning_reuse_s": "reasoning_reuse",
    "latency_margin_s": "latency_margin",
    "latency_headroom": "latency_headroom",
    "hold_s": "hold",
}


def _loop(name: str):
    return field_default(LoopConfig, name)


@dataclass(frozen=True, kw_only=True)
class RunConfig(BackendOptions):
    bundle: str | None = option("a bundle directory written by `chatvla2 export` (or --bundle)", None, positional=True)
    bundle_option: str | None = option("the bundle, as an option", None, metavar="DIR", flag="--bundle")
    policy_url: str | None = option(
        "the policy on a server (`chatvla2 serve`), instead of a bundle here: http://HOST:PORT", None, metavar="URL"
    )
    token_file: str | None = option("--policy-url: a file holding the server's bearer token", None, metavar="FILE")
    request_deadline: float = option(
        "--policy-url: give up a request (an inference error) after S seconds; while it is only slow the watchdog holds",
        2.0,
        metavar="S",
    )
    expect_sha256: str | None = option(
        "--policy-url: refuse a server whose bundle manifest has another sha256 (its /manifest says)", None, metavar="HEX"
    )
    robot: str = option("sim: two simulated arms on ptys; arx: real arms", "sim", choices=ROBOTS)
    port: tuple[str, ...] = option("--robot arx: an SLCAN adapter, given twice (left, then right)", (), metavar="PORT")
    left_port: str | None = option("left arm's SLCAN adapter (--robot arx)", None)
    right_port: str | None = option("right arm's SLCAN adapter (--robot arx)", None)
    profile: str = option(f"arm profile: {', '.join(PROFILES)}", field_default(ArmConfig, "profile"))
    feedback_timeout: float | None = option(
        "no reply from a motor for S seconds is a communication fault (the arm damps); default "
        f"{field_default(ControllerConfig, 'feedback_timeout_s'):g} s for --robot arx (the drivers' "
        f"ControllerConfig); at most {MAX_FEEDBACK_TIMEOUT_S:g} s",
        None,
        metavar="S",
    )
    instruction: str | None = option("the instruction (default: the math game's instruction)", None, metavar="TEXT")
    camera: tuple[str, ...] = option(
        f"one per camera view, in the model's order (default: static per view). {CAMERA_SPEC_HELP}", (), metavar="SPEC"
    )
    camera_max_age: float = option(
        "a view whose newest frame is older (or frozen this long) holds the plan", DEFAULT_MAX_AGE_S, metavar="S"
    )
    duration: float | None = option("stop after S seconds (default: until Ctrl-C)", None, metavar="S")
    rate: float = option("control rate of the execution thread", _loop("rate_hz"), metavar="HZ")
    chunk_mode: str = option(
        "switch: each new chunk replaces the plan; ensemble: temporal ensembling; rtc: real-time chunking, the new chunk "
        "continues the actions committed while it is computed (a head trained with --max-prefix)",
        _loop("chunk_mode"),
        choices=CHUNK_MODES,
    )
    ensemble_decay: float = option("temporal ensembling weight exp(-M i)", _loop("ensemble_decay"), metavar="M")
    # "hold" / --reasoning-hold: this cadence's names before 0.2 ("hold" now means only the watchdog's).
    reasoning: str = option(
        "every: new reasoning each inference; reuse: reuse it for --reasoning-reuse seconds",
        _loop("reasoning"),
        choices=REASONING_CADENCES,
        type=lambda value: "reuse" if value == "hold" else value,
    )
    reasoning_reuse: float = option(
        "how long --reasoning reuse keeps a reasoning (default %(default)s s)",
        _loop("reasoning_reuse_s"),
        metavar="S",
        flag=("--reasoning-reuse", "--reasoning-hold"),
    )
    max_tokens: int | None = option("cap the reasoning at N tokens (default: the model's max_reasoning_tokens)", None, metavar="N")
    hold: float = option("watchdog: hold the last action this long without new actions, then damp and stop", _loop("hold_s"), metavar="S")
    latency_margin: float = option("start inference this much earlier than the latency estimate", _loop("latency_margin_s"), metavar="S")
    latency_headroom: float = option("latency estimate = X times the largest recent latency", _loop("latency_headroom"), metavar="X")
    max_joint_speed: float = option("policy-side rate limit per joint", DEFAULT_JOINT_SPEED, metavar="RAD_S")
    telemetry: str | None = option("JSON lines (default runs/run-YYYYmmdd-HHMMSS.jsonl)", None, metavar="FILE")
    seed: int = option("seed of the diffusion noise (numpy)", 0)

    def __post_init__(self) -> None:
        """Everything a run can check before it loads or starts anything: one line naming the option."""
        super().__post_init__()
        flags = {f.name: option_flags(f)[0] for f in dataclasses.fields(self) if "help" in f.metadata}
        loop = {**dataclasses.asdict(LoopConfig()), **{key: getattr(self, name) for key, name in LOOP_FIELDS.items()}}
        check_loop_settings(loop, name=lambda key: flags[LOOP_FIELDS[key]] if key in LOOP_FIELDS else key)
        if self.max_tokens is not None and self.max_tokens < 0:
            raise InvalidInput(f"--max-tokens must be >= 0, got {self.max_tokens}")
        if not is_finite_number(self.max_joint_speed) or self.max_joint_speed <= 0:
            raise InvalidInput(f"--max-joint-speed must be a positive number of rad/s, got {self.max_joint_speed!r}")
        get_profile(self.profile)  # an unknown profile is named here, before any arm (or simulator) starts
        if self.feedback_timeout is not None:
            check_feedback_timeout(self.feedback_timeout)
        if self.robot not in ROBOTS:
            raise InvalidInput(f"--robot {self.robot}: expected one of {', '.join(ROBOTS)}")
        left, right = self.ports
        if self.robot == "arx" and not (left and right):
            raise InvalidInput("--robot arx needs two adapters: --port LEFT --port RIGHT (or --left-port/--right-port)")
        if self.robot == "sim" and (left or right):
            raise InvalidInput("--port is for --robot arx; --robot sim starts its own simulated arms")
        if self.policy_url is not None:
            if self.bundle or self.bundle_option:
                raise InvalidInput("give a bundle or --policy-url, not both")
            if self.max_tokens is not None:
                raise InvalidInput("--max-tokens caps a local policy; the server's bundle sets its own")
            if not is_finite_number(self.request_deadline) or self.request_deadline <= 0:
                raise InvalidInput(f"--request-deadline must be a positive number of seconds, got {self.request_deadline!r}")
            self.token()  # an unreadable token file: one line before anything starts
        else:
            self.bundle_path  # noqa: B018 - two bundles, or none, are refused here
        for spec in self.camera:
            parse_camera_spec(spec)  # a bad SPEC fails before anything loads

    @property
    def bundle_path(self) -> Path:
        """The bundle, given as the positional argument or as --bundle (not two different ones)."""
        if self.bundle and self.bundle_option and self.bundle != self.bundle_option:
            raise InvalidInput(f"two bundles given ({self.bundle} and --bundle {self.bundle_option}): give one")
        bundle = self.bundle or self.bundle_option
        if not bundle:
            raise InvalidInput("no bundle given: chatvla2 run --bundle DIR (a directory written by chatvla2 export), or --policy-url URL")
        return Path(bundle)

    def token(self) -> str | None:
        """The bearer token of --token-file (None without one)."""
        return read_token_file(self.token_file)

    @property
    def ports(self) -> tuple[str | None, str | None]:
        """(left, right): --port given twice (left, right), or --left-port / --right-port."""
        if not self.port:
            return self.left_port, self.right_port
        if len(self.port) != 2 or self.left_port or self.right_port:
            raise InvalidInput(f"--port is given twice, left then right (got {len(self.port)}), and not with --left-port/--right-port")
        return self.port[0], self.port[1]

    @property
    def instruction_text(self) -> str:
        return INSTRUCTION if self.instruction is None else self.instruction

    def loop_config(self) -> LoopConfig:
        return LoopConfig(**{key: getattr(self, name) for key, name in LOOP_FIELDS.items()})
