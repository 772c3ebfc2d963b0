"""The policy server (`chatvla2 serve`) and the robot's client (runtime/remote_policy.py) on a real
local multi-node Ray cluster (Ray's own cluster utilities: a head and a worker node, one replica on
each): the tiny bundle behind a token; one inference equal to the in-process Policy's; a missing or
wrong token refused; bad bodies refused in one line with the server still serving; the contract
checked at connect; clients gone mid-request and a replica killed leave the server serving; a server
that is gone is the client's deadline error."""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import sample_observation
from chatvla2.contract.wire import encode_request
from chatvla2.runtime.policy import Policy
from chatvla2.runtime.remote_policy import RemoteDeadline, RemoteError, RemotePolicy

ray = pytest.importorskip("ray", reason="the serve extra (Ray Serve) is not installed")

TOKEN = "test-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each: a replica needs one, so each node holds one."""
    from ray.cluster_utils import Cluster

    # the nodes' processes start here, before serve/server.py's start() could set it for them
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def server(cluster, tiny_bundle, tmp_path_factory):
    from chatvla2.serve.serve_config import ServeConfig
    from chatvla2.serve.server import start, stop

    token_file = tmp_path_factory.mktemp("serve") / "token"
    token_file.write_text(TOKEN + "\n")
    config = ServeConfig(bundle=str(tiny_bundle), port=_free_port(), token_file=str(token_file), threads=1,
                         address=cluster.address, replicas=2)  # fmt: skip
    url = start(config)
    yield url
    stop()


def _nodes_serving(url: str, rounds: int = 3) -> set[str]:
    """The Ray nodes whose replica served one of four concurrent inferences, in a few rounds. Each
    replica takes one request at a time, so four at once need both (a stuck replica serves none);
    one at a time, Serve prefers the replica on its proxy's node."""
    from concurrent.futures import ThreadPoolExecutor

    def infer(seed: int) -> str:
        client = RemotePolicy(url, token=TOKEN, deadline_s=60.0).connect()
        try:
            return client.infer(_observation(seed))["served_by"].split("/")[0]
        finally:
            client.close()

    with ThreadPoolExecutor(4) as pool:
        return set(pool.map(infer, range(4 * rounds)))


@pytest.fixture(scope="module")
def token_file(server, tmp_path_factory):
    path = tmp_path_factory.mktemp("client") / "token"
    path.write_text(TOKEN)
    return path


def _observation(seed: int = 4) -> dict:
    frames, instruction, state = sample_observation(2)
    noise = np.random.default_rng(seed).standard_normal((50, 14)).astype(np.float32)
    return {"images": frames, "instruction": instruction, "state": state, "noise": noise}


def test_one_inference_equals_the_in_process_policy(server, tiny_bundle):
    client = RemotePolicy(server, token=TOKEN, deadline_s=30.0).connect()
    assert client.manifest["model"] == "tiny" and client.num_views == 2
    remote = client.infer(_observation())
    local = Policy.from_bundle(tiny_bundle, backend="onnxruntime", threads=1)
    try:
        expected = local.infer(_observation())
    finally:
        local.close()
    assert remote["reasoning_ids"] == expected["reasoning_ids"]
    np.testing.assert_allclose(remote["action_chunk"], expected["action_chunk"], atol=1e-6, rtol=0)
    # the reasoning comes back with its state r, so the next request can reuse it
    again = client.infer(_observation(5), reuse=remote)
    assert again["reused_reasoning"] and again["reasoning_ids"] == remote["reasoning_ids"]
    client.close()


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
def test_a_missing_or_wrong_token_is_refused_without_inference(server, token):
    with pytest.raises(RemoteError, match="401: unauthorised"):
        RemotePolicy(server, token=token, deadline_s=30.0).connect()


def _post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, str]:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request("POST", "/infer", body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read().decode(errors="replace")


def test_bad_bodies_are_one_line_and_the_server_keeps_serving(server):
    good = encode_request(_observation())
    nan_state = _observation()
    nan_state["state"] = np.full(14, np.nan, np.float32)
    small_image = _observation()
    small_image["images"] = [image[:1] for image in small_image["images"]]  # one row of pixels
    cases = [
        (good[: len(good) // 2], 400, "not msgpack"),
        (encode_request(nan_state), 400, "state: values must be finite"),
        (encode_request(small_image), 400, "images[0]: 320x1 pixels, expected 2..4096 per side"),
        (b"\x00" * (50 << 20), 413, "exceeds the limit"),
    ]
    for body, status, message in cases:
        got_status, text = _post(server, body)
        assert got_status == status and message in text and len(text.strip().splitlines()) == 1, (got_status, text)
    status, _ = _post(server, good)
    assert status == 200  # unaffected


def test_the_contract_is_checked_at_connect(server):
    with pytest.raises(InvalidInput, match="not the bundle this client expects"):
        RemotePolicy(server, token=TOKEN, deadline_s=30.0, expect_sha256="0" * 64).connect()


def test_the_replicas_serve_from_both_nodes_of_the_cluster(server, cluster):
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(alive) == 2 and _nodes_serving(server) == alive


def test_clients_gone_mid_request_leave_every_replica_serving(server):
    import urllib.parse

    parts = urllib.parse.urlsplit(server)
    body = encode_request(_observation())
    head = (f"POST /infer HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/msgpack\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    for sent in (head + body[: len(body) // 2], head + body):  # half a body, then a whole one
        for _ in range(2):  # at least once on each replica, most likely
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
                connection.sendall(sent)  # and gone, before any reply
    client = RemotePolicy(server, token=TOKEN, deadline_s=30.0).connect()
    for seed in range(3):
        assert client.infer(_observation(seed))["action_chunk"].shape == (50, 14)
    client.close()
    assert len(_nodes_serving(server)) == 2


def test_a_replica_killed_is_routed_around_within_the_deadline(server):
    """Serve restarts a killed replica; meanwhile requests go to the other one (or are sent again by
    the client while the deadline allows: a reset connection, a 5xx)."""
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(replicas) == 2
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    client = RemotePolicy(server, token=TOKEN, deadline_s=30.0).connect()
    for seed in range(4):
        assert client.infer(_observation(seed))["action_chunk"].shape == (50, 14)
    client.close()


def test_a_server_that_is_gone_is_the_clients_deadline_error():
    client = RemotePolicy(f"http://127.0.0.1:{_free_port()}", token=TOKEN, deadline_s=0.3)
    started = time.monotonic()
    with pytest.raises(RemoteDeadline, match="no reply within 0.3 s"):
        client.infer(_observation())
    assert time.monotonic() - started < 2.0 and client.reconnects >= 1


def test_listening_beyond_this_machine_needs_a_token(tiny_bundle, tmp_path):
    from chatvla2.serve.serve_config import ServeConfig

    with pytest.raises(InvalidInput, match="--host 0.0.0.0 listens beyond this machine: give --token-file"):
        ServeConfig(bundle=str(tiny_bundle), host="0.0.0.0")
    short = tmp_path / "token"
    short.write_text("abc")
    with pytest.raises(InvalidInput, match="at least 16 characters"):
        ServeConfig(bundle=str(tiny_bundle), token_file=str(short))


def test_run_drives_the_simulated_arms_through_the_server(server, token_file, tmp_path):
    """`chatvla2 run --robot sim --task math_game --policy-url URL`: a math-game episode end to end,
    every chunk from the server."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    telemetry = tmp_path / "run.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "chatvla2", "run", "--robot", "sim", "--task", "math_game", "--duration", "3",
         "--policy-url", server, "--token-file", str(token_file), "--request-deadline", "30", "--telemetry", str(telemetry),
         "--hold", "5"],  # a busy 2-core machine can take over a second per inference: not this test's subject
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, "\n".join(lines[:-1])[-3000:] + result.stderr[-3000:]
    summary = json.loads(lines[-1])
    assert summary["stop_reason"] == "duration reached" and summary["damped"] and not summary["errors"]
    # the first chunk executed whole, and at least one more came from the server (how many more: the
    # machine's load that minute)
    assert summary["steps_sent"] >= 50 and summary["inferences"] >= 2
    assert summary["task"]["name"] == "math_game" and isinstance(summary["task"]["reasoning"], str)
    assert any(line.startswith(f"policy: {server} (remote: tiny on onnxruntime)") for line in lines)


def test_run_refuses_a_bundle_and_a_url_together(tiny_bundle):
    from chatvla2.contract.command_config import parse_config
    from chatvla2.sim.run_command_config import RunCommandConfig

    with pytest.raises(InvalidInput, match="give a bundle or --policy-url, not both"):
        parse_config(RunCommandConfig, [str(tiny_bundle), "--policy-url", "http://127.0.0.1:1"])


def test_a_cancelled_request_gives_up_its_inference_and_frees_the_replica(tiny_bundle):
    """Serve cancels a request whose client disconnected. The replica's worker thread cannot be
    cancelled: it is told to give up (Policy.infer's should_stop), and the next request is served.
    The replica class in-process, with real starlette requests (no Ray needed for this)."""
    import asyncio

    from starlette.requests import Request

    from chatvla2.serve.policy_server import PolicyServer

    server = PolicyServer(str(tiny_bundle), backend="onnxruntime", threads=1)
    body = encode_request(_observation())

    def request() -> Request:
        scope = {"type": "http", "method": "POST", "path": "/infer", "query_string": b"", "root_path": "",
                 "headers": [(b"content-length", str(len(body)).encode())]}  # fmt: skip

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(scope, receive)

    class TurnLock:
        """The replica's lock, telling when a worker thread is waiting for its turn."""

        def __init__(self):
            self.lock, self.waiting = threading.Lock(), threading.Event()

        def __enter__(self):
            self.waiting.set()
            self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    server._lock = TurnLock()

    async def cancel_one_then_serve_one():
        server._lock.lock.acquire()  # another inference is running: the request's thread waits its turn
        abandoned = asyncio.create_task(server(request()))
        while not server._lock.waiting.is_set():  # read, decoded, its thread waiting
            await asyncio.sleep(0.01)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        server._lock.lock.release()  # its turn: the thread finds its client gone and gives up
        return await server(request())

    try:
        reply = asyncio.run(cancel_one_then_serve_one())
        assert reply.status_code == 200 and server.counts == {"client_gone": 1, "given_up": 1, "inferences": 1}
    finally:
        server.policy.close()
