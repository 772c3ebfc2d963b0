"""`chatvla2 arm`'s options (drivers/cli.py runs it; `--sim`: sim/cli.py). Stdlib only: the drivers
import nothing of ours, and the front door reads the fields' metadata (contract/command_config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.drivers.arm import ArmConfig
from chatvla2.drivers.errors import DriverInvalidInput
from chatvla2.drivers.profiles import PROFILES, get_profile

ACTIONS = ("status", "enable", "home", "damp")


@dataclass(frozen=True, kw_only=True)
class ArmCommandConfig:
    port: str | None = field(default=None, metadata={"exclusive": "where", "help": "serial port of the SLCAN adapter (or a pyserial URL)"})
    sim: bool = field(default=False, metadata={"exclusive": "where", "help": "start a simulated arm and use it"})
    profile: str = field(default=ArmConfig.profile, metadata={"help": f"arm profile: {', '.join(PROFILES)}"})
    action: str = field(
        metadata={
            "positional": True,
            "choices": ACTIONS,
            "help": "status: read every motor; enable: enable them and leave them enabled; home: move to the home pose, "
            "then damp and disable; damp: damp for 2 s, then disable",
        }
    )
    # Not an option: `arm --sim` sets the simulated arm's (a loaded machine runs the simulator late);
    # None keeps the drivers' ControllerConfig default for real arms.
    feedback_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if bool(self.port) == self.sim:
            raise DriverInvalidInput("give --port PORT (an SLCAN adapter) or --sim (a simulated arm), one of them")
        if self.action not in ACTIONS:
            raise DriverInvalidInput(f"unknown action {self.action!r}: {', '.join(ACTIONS)}")
        get_profile(self.profile)
