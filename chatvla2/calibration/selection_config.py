"""`chatvla2 calibrate select`'s options (calibration/selection.py runs it)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.calibration.targets import TARGETS
from chatvla2.contract.command_config import option
from chatvla2.contract.names import UnknownChoice

# The devices predict knows (calibration/targets.py), and this machine's CPU, which runs every graph.
SELECT_TARGETS = (*TARGETS, "cpu")


@dataclass(frozen=True, kw_only=True)
class SelectConfig:
    report: str = option("a sweep directory or its report.json", metavar="REPORT", positional=True)
    budget: str = option('e.g. "action_deg<=0.5,token_agreement>=0.99,success_drop<=2"')
    target: str = option(f"where the plan runs: {', '.join(SELECT_TARGETS)}")
    bundle: str | None = option("record the chosen plan in this bundle's manifest", None, metavar="DIR")

    def __post_init__(self) -> None:
        from chatvla2.calibration.selection import parse_budget  # it imports this module

        parse_budget(self.budget)
        if self.target not in SELECT_TARGETS:
            raise UnknownChoice(f"unknown target {self.target!r}; targets: {', '.join(SELECT_TARGETS)}")
