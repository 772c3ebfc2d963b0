"""`chatvla2 serve`'s options (serve/server.py runs them)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.wire import read_token_file
from chatvla2.runtime.backend_options import BackendOptions

DEFAULT_PORT = 8000
MIN_TOKEN_LENGTH = 16  # a server's token: guessing it must not be an option


@dataclass(frozen=True, kw_only=True)
class ServeConfig(BackendOptions):
    bundle: str = option("a bundle directory written by `chatvla2 export`", positional=True)
    replicas: int = option("replicas, each holding one Policy (one GPU each where there are GPUs) (default %(default)s)", 1)
    host: str = option("address to listen on (default %(default)s: this machine only; any other needs --token-file)", "127.0.0.1")
    port: int = option("HTTP port (default %(default)s)", DEFAULT_PORT)
    address: str | None = option(
        "a running Ray cluster to join (`ray start --head`'s address); default: a local one", None, metavar="RAY_ADDRESS"
    )
    proxy: str = option(
        "where Serve's HTTP proxy listens: head (one address, the head node's, for every robot) or every "
        "(each node that holds a replica: robots may use any of them) (default %(default)s)",
        "head",
        choices=("head", "every"),
    )
    token_file: str | None = option("a file holding the bearer token every request must carry", None, metavar="FILE")
    max_request_bytes: int | None = option(
        "largest request body (default: one 1920x1080 frame per camera view, plus the model's arrays)", None, metavar="N"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not Path(self.bundle).is_dir():
            raise MissingFile(f"bundle directory not found: {self.bundle}")
        check_integer("--replicas", self.replicas, 1)
        check_integer("--port", self.port, 1)
        if self.port > 65535:
            raise InvalidInput(f"--port must be at most 65535, got {self.port}")
        if self.token_file is not None:
            self.token()  # an unreadable or empty file: one line before Ray starts
        elif not is_loopback(self.host):
            raise InvalidInput(
                f"--host {self.host} listens beyond this machine: give --token-file (a bearer token every request must carry)"
            )
        if self.max_request_bytes is not None:
            check_integer("--max-request-bytes", self.max_request_bytes, 1024)

    def token(self) -> str | None:
        return read_token_file(self.token_file, MIN_TOKEN_LENGTH)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
