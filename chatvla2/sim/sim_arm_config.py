"""`chatvla2 sim-arm`'s options (sim/cli.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.drivers.arm import ArmConfig
from chatvla2.drivers.profiles import PROFILES, get_profile
from chatvla2.sim.faults import parse_faults


@dataclass(frozen=True, kw_only=True)
class SimArmConfig:
    profile: str = option(f"arm profile: {', '.join(PROFILES)}", ArmConfig.profile)
    faults: str = option(
        "comma-separated faults to inject, e.g. drop=0.01,corrupt=0.001,latency=0.002,"
        "silent=4,overcurrent=2,overtemp=5,unplug=10 (see `sim/faults.py`)",
        "",
    )
    seed: int = option("seed of the injected faults' randomness", 0)
    mode_log: str | None = option(
        "when the simulator stops, write what its motors saw (mode changes, holds; time.monotonic()) to FILE as JSON",
        None,
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        get_profile(self.profile)
        parse_faults(self.faults)  # a bad spec is one line before the simulator starts
