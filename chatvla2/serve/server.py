"""`chatvla2 serve BUNDLE`: the bundle's policy as a Ray Serve application (serve/policy_server.py).

    chatvla2 serve bundles/demo [--replicas 2] [--host 127.0.0.1] [--port 8000] [--address RAY_ADDRESS]
                   [--token-file F] [--backend auto|onnxruntime|tensorrt]

Ray Serve (docs.ray.io/en/latest/serve) runs the same application on this machine or a cluster:
without --address a local Ray instance is started; with it the server joins a running cluster
(`ray start --head` on one machine, `ray start --address HEAD:6379` on the others), and the
replicas are placed on its nodes (one GPU each where the cluster has GPUs; the bundle must be at
the same path on every node). Replicas are health-checked and restarted by Serve. The robot's
side is `chatvla2 run --policy-url http://HOST:PORT`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from chatvla2.serve.policy_server import PolicyServer
from chatvla2.serve.serve_config import ServeConfig

APP_NAME = "chatvla2"


def start(config: ServeConfig) -> str:
    """Start (or join) Ray, then the application; returns its URL once every replica is up."""
    # Serve marks its HTTP proxy unhealthy when it is not ready within 5 s, three times in a row, and
    # gives up; on a busy 2-core machine importing the proxy's web stack alone took longer (measured:
    # three 5-s timeouts, then the start failed). A local cluster's processes inherit this; on a
    # cluster started with `ray start`, set it there.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    gpus = ray.cluster_resources().get("GPU", 0) >= config.replicas
    # --proxy head: one HTTP proxy on the head node, the one address robots use (and the only layout
    # whose nodes can share a machine, as Ray's cluster utilities do in the tests: every node's proxy
    # would bind the same port); --proxy every: one on each node that holds a replica.
    proxy = {"head": "HeadOnly", "every": "EveryNode"}[config.proxy]
    serve.start(proxy_location=proxy, http_options={"host": config.host, "port": config.port})
    deployment = serve.deployment(PolicyServer, name="policy").options(
        num_replicas=config.replicas,
        max_ongoing_requests=1,  # one inference at a time per replica: Serve sends the next to a free one
        ray_actor_options={"num_cpus": 0 if gpus else 1, "num_gpus": 1 if gpus else 0},
    )
    application = deployment.bind(
        str(Path(config.bundle).resolve()), config.backend, config.token(), config.threads, config.max_request_bytes
    )
    serve.run(application, name=APP_NAME, route_prefix="/")
    return f"http://{config.host}:{config.port}"


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def main(config: ServeConfig) -> int:
    url = start(config)
    print(
        f"serving {config.bundle} at {url} ({config.replicas} replica(s){', token required' if config.token_file else ''}); Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        stop()
    return 0
