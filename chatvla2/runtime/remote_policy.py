"""The policy on a server (`chatvla2 serve`), seen from the robot: the same `infer` as a local
`Policy` (runtime/loop.py's InferencePolicy), over HTTP with keep-alive. torch-free and Ray-free.

- **Connect** (`RemotePolicy.connect`): GET /manifest; the server's model must be one this robot
  can drive (14-D actions and state, the contract's) and, when the client names one, the bundle it
  expects (`expect_sha256`: the manifest's hash): otherwise one line, and nothing runs.
- **Infer**: POST /infer with the observation (contract/wire.py), under a per-request deadline.
  A connection that fails (the server restarting, a replica killed) is reopened and the request
  sent again while the deadline allows, and so is a request the server failed on its side (5xx: a
  replica that died under it, no replica up yet); past the deadline, `RemoteDeadline`. A refused
  request (4xx: the body, the token) is not sent again: `RemoteError` at once. The control loop treats that as
  any inference error; while a request is only slow, the loop's plan runs dry and its watchdog holds
  then damps, exactly as for a slow local engine.
- **Auth**: a bearer token (`--token-file`) in every request's Authorization header.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable

from chatvla2.contract.embodiment import ACTION_DIM, STATE_DIM
from chatvla2.contract.errors import DeviceError, InvalidInput
from chatvla2.contract.wire import decode_reply, encode_request
from chatvla2.runtime.loop import InferenceStopped

# Between reconnect attempts while the deadline allows (a replica restarting takes seconds).
RETRY_PAUSE_S = 0.05
# The server failed, not the request: worth sending again while the deadline allows.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class RemoteError(DeviceError):
    """The server refused or failed a request (its status and its one line), or did not answer: a
    device that refuses or stops answering, printed in one line by the front door."""


class RemoteDeadline(RemoteError):
    """No reply within the request's deadline."""


class RemotePolicy:
    backend = "remote"

    def __init__(self, url: str, token: str | None = None, deadline_s: float = 2.0, expect_sha256: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidInput(f"--policy-url {url!r}: expected http://HOST:PORT (TLS: a reverse proxy, docs/serving.md)")
        if not deadline_s > 0:
            raise InvalidInput(f"request deadline must be positive, got {deadline_s}")
        self.url, self.host, self.port = url, parts.hostname, parts.port or 80
        self.token, self.deadline_s, self.expect_sha256 = token, deadline_s, expect_sha256
        self._connection: http.client.HTTPConnection | None = None
        self.manifest: dict = {}
        self.requests = self.reconnects = self.server_errors = 0

    # -- the contract, at connect ----------------------------------------------------------------
    def connect(self) -> RemotePolicy:
        status, body = self._request("GET", "/manifest", b"", time.monotonic() + self.deadline_s)
        if status != 200:
            raise RemoteError(f"{self.url}: /manifest answered {status}: {body.decode(errors='replace').strip()}")
        info = json.loads(body)
        if (info.get("action_dim"), info.get("state_dim")) != (ACTION_DIM, STATE_DIM):
            raise InvalidInput(
                f"{self.url} serves a model with {info.get('action_dim')}-D actions and {info.get('state_dim')}-D "
                f"state; this robot needs {ACTION_DIM} and {STATE_DIM}"
            )
        if self.expect_sha256 and info.get("sha256") != self.expect_sha256:
            raise InvalidInput(
                f"{self.url} serves {info.get('model')!r} (manifest sha256 {str(info.get('sha256'))[:12]}...), "
                f"not the bundle this client expects ({self.expect_sha256[:12]}...)"
            )
        self.manifest = info
        return self

    @property
    def num_views(self) -> int:
        return int(self.manifest["views"])

    @property
    def state_dim(self) -> int:
        return int(self.manifest["state_dim"])

    @property
    def max_prefix(self) -> int:
        return int(self.manifest.get("max_prefix", 0))

    # -- inference -------------------------------------------------------------------------------
    def infer(self, observation: dict, reuse: dict | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
        body = encode_request(observation, reuse)
        status, reply = self._request("POST", "/infer", body, time.monotonic() + self.deadline_s, should_stop)
        if status != 200:
            raise RemoteError(f"{self.url}: {status}: {reply.decode(errors='replace').strip()}")
        return decode_reply(reply)

    def _request(self, method: str, path: str, body: bytes, deadline: float, should_stop=None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/msgpack"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        last: Exception | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise RemoteDeadline(f"{self.url}{path}: no reply within {self.deadline_s:g} s" + (f" (last: {last})" if last else ""))
            if should_stop is not None and should_stop():
                raise InferenceStopped("inference given up: the loop is stopping")
            try:
                connection = self._open(left)
                connection.timeout = left
                if connection.sock is not None:
                    connection.sock.settimeout(left)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.requests += 1
                if response.status not in RETRY_STATUSES:
                    return response.status, data
                last = RemoteError(f"{response.status}: {data.decode(errors='replace').strip()[:200]}")
                self.server_errors += 1
            except (ConnectionError, http.client.HTTPException, OSError) as exc:  # refused, reset, timed out
                last = exc
                self.close()
                self.reconnects += 1
            time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
