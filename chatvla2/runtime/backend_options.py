"""The policy's backend options, one set for `chatvla2 run` and `chatvla2 bench` (their configs
derive from this one)."""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.contract.command_config import option
from chatvla2.contract.names import unknown_name
from chatvla2.runtime.engine import BACKENDS
from chatvla2.runtime.policy import check_threads


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    backend: str = option(
        "auto: TensorRT where it is installed and the engines are built, else ONNX Runtime (default %(default)s)", "auto", choices=BACKENDS
    )
    engines: str | None = option("TensorRT engines from `chatvla2 build` (default BUNDLE/engines)", None, metavar="DIR")
    threads: int | None = option("ONNX Runtime intra-op threads", None, metavar="N")
    spin: bool = option(
        "ONNX Runtime's threads spin while waiting for work: faster decoding where the inference has its "
        "cores to itself; off by default (on shared cores it starves the arm controllers)",
        False,
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise unknown_name(self.backend, BACKENDS, "backend", "backends")
        check_threads(self.threads)
