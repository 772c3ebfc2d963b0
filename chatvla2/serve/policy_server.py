"""The policy server's replica: one `runtime.policy.Policy` behind HTTP, run by Ray Serve.

Routes: GET /health ("ok"), GET /manifest (JSON: the model, its plan, the manifest's sha256, what a
request must hold), POST /infer (contract/wire.py: one observation -> one action chunk).

Security: when the server has a token, every request must carry `Authorization: Bearer TOKEN`,
compared in constant time (hmac.compare_digest); without it: 401 and no work. A body is checked
before any inference: its declared and actual size against the model's limit (413), then every
field (400, one line); the replica keeps serving. One inference at a time per replica (the
deployment's max_ongoing_requests is 1: a Policy holds per-inference buffers), run in a worker
thread so the replica's event loop stays free. A client that disconnects has its request cancelled
by Serve; its inference, if started, gives up at the next stage or token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import threading
from collections import Counter
from pathlib import Path

from chatvla2.contract.bundle import MANIFEST_FILE
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.wire import BodyTooLarge, RequestLimits, WireError, decode_request, encode_reply


class PolicyServer:
    def __init__(
        self, bundle: str, backend: str = "auto", token: str | None = None, threads: int | None = None, max_bytes: int | None = None
    ):
        from chatvla2.runtime.policy import Policy

        self.policy = Policy.from_bundle(bundle, backend=backend, threads=threads)
        config = self.policy.config
        head = config.action_head
        manifest_bytes = (Path(bundle) / MANIFEST_FILE).read_bytes()
        manifest = json.loads(manifest_bytes)
        self.limits = RequestLimits.for_model(config, max_bytes)
        self.info = {
            "model": config.name, "plan": manifest.get("plan"), "target": manifest.get("target"),
            "sha256": hashlib.sha256(manifest_bytes).hexdigest(), "backend": self.policy.backend,
            "views": config.vision.num_views, "image": [config.vision.image_height, config.vision.image_width],
            "state_dim": head.state_dim, "action_dim": head.action_dim, "chunk_size": head.chunk_size,
            "max_prefix": head.max_prefix, "max_request_bytes": self.limits.max_bytes,
            "node": _ray_node_id(), "pid": os.getpid(),  # which replica answered (scale-out checks)
        }  # fmt: skip
        self._token = token.encode() if token else None
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def _authorised(self, header: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        # compare_digest on bytes of any length: the time does not depend on where they differ
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    def _infer(self, observation: dict, reuse: dict | None, gone: threading.Event) -> dict | None:
        """None when the client left first: before its turn, or between two stages or tokens."""
        from chatvla2.runtime.loop import InferenceStopped

        with self._lock:
            try:
                if gone.is_set():
                    raise InferenceStopped("the client left before its turn")
                return self.policy.infer(observation, reuse=reuse, should_stop=gone.is_set)
            except InferenceStopped:
                self.counts["given_up"] += 1
                return None

    async def __call__(self, request):
        from starlette.responses import JSONResponse, PlainTextResponse, Response

        if not self._authorised(request.headers.get("authorization")):
            self.counts["unauthorised"] += 1
            return PlainTextResponse("unauthorised: this server needs 'Authorization: Bearer TOKEN'\n", status_code=401)
        path = request.url.path.rstrip("/") or "/"
        if request.method == "GET" and path == "/health":
            return PlainTextResponse("ok\n")
        if request.method == "GET" and path == "/manifest":
            return JSONResponse({**self.info, "counts": dict(self.counts)})
        if request.method != "POST" or path != "/infer":
            return PlainTextResponse(f"no route {request.method} {path}: GET /health, GET /manifest, POST /infer\n", status_code=404)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_bytes:
            self.counts["too_large"] += 1
            return PlainTextResponse(f"request body of {declared} bytes exceeds the limit of {self.limits.max_bytes}\n", status_code=413)
        body = await request.body()
        gone = threading.Event()
        try:
            observation, reuse = decode_request(body, self.limits)
            result = await asyncio.to_thread(self._infer, observation, reuse, gone)
        except asyncio.CancelledError:
            # Serve cancels a request whose client disconnected; the worker thread cannot be
            # cancelled, so it is told to give up (Policy.infer's should_stop): an abandoned
            # request costs the next one at most a stage or a token, not a whole inference.
            gone.set()
            self.counts["client_gone"] += 1
            raise
        except WireError as exc:
            self.counts["bad_request"] += 1
            return PlainTextResponse(f"{exc}\n", status_code=413 if isinstance(exc, BodyTooLarge) else 400)
        except InvalidInput as exc:  # what the policy itself refuses (a prefix too long, a wrong image)
            self.counts["bad_request"] += 1
            return PlainTextResponse(f"{exc}\n", status_code=400)
        if result is None:  # given up: the client left (its request was cancelled) before the reply
            return PlainTextResponse("the client disconnected\n", status_code=499)
        self.counts["inferences"] += 1
        served_by = f"{self.info['node']}/{self.info['pid']}"
        return Response(encode_reply(result, served_by), media_type="application/msgpack")


def _ray_node_id() -> str | None:
    """The Ray node this replica runs on (None outside Ray: the class is also usable in-process)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        return None
