"""The policy's backend options, one set for `chatvla2 run` and `chatvla2 bench` (their configs
derive from this one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatvla2.contract.names import unknown_name
from chatvla2.runtime.engine import BACKENDS
from chatvla2.runtime.policy import check_threads


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    backend: str = field(
        default="auto",
        metadata={
            "choices": BACKENDS,
            "help": "auto: TensorRT where it is installed and the engines are built, else ONNX Runtime (default %(default)s)",
        },
    )
    engines: str | None = field(
        default=None, metadata={"metavar": "DIR", "help": "TensorRT engines from `chatvla2 build` (default BUNDLE/engines)"}
    )
    threads: int | None = field(default=None, metadata={"metavar": "N", "help": "ONNX Runtime intra-op threads"})
    spin: bool = field(
        default=False,
        metadata={
            "help": "ONNX Runtime's threads spin while waiting for work: faster decoding where the inference has its "
            "cores to itself; off by default (on shared cores it starves the arm controllers)"
        },
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise unknown_name(self.backend, BACKENDS, "backend", "backends")
        check_threads(self.threads)
