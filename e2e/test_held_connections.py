"""Held connections on a real cluster, plain Kubernetes mode: the client
mechanics of the Knative tests (e2e/held.py), run for real in .ci/run.

The server is deployed with short keepalive settings (WS_PING_INTERVAL=2,
WS_PING_TIMEOUT=1): a client whose event loop stops for more than about 3 s
misses a pong and is closed with 1011. The test holds connections across
several ping intervals while it polls the Kubernetes API from another
thread, checks every connection is still open and echoing, then deletes the
pod under them: every in-flight message is echoed, then each gets 1001.

This is the scenario of the Knative autoscaling and drain tests, whose
event-loop and ping handling could not be run here before; it fails if a
wait blocks the loop or the helpers stop answering pings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .cluster import Cluster
from .held import DRAIN_TIMEOUT, assert_drained, drain, e2e_timeout, echo_each, hold, wait_for
from .render import find
from .test_kubernetes import DEPLOYMENT, PLAIN_ROUTES, SELECTOR, plain_docs

PING_INTERVAL = 2
PING_TIMEOUT = 1
#: How long the connections are held: several ping intervals.
HOLD_FOR = 6 * PING_INTERVAL
CONNECTIONS = 4


def _with_short_pings(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [container] = find(docs, *DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name, value in (("WS_PING_INTERVAL", PING_INTERVAL), ("WS_PING_TIMEOUT", PING_TIMEOUT)):
        assert name in env, f"the rendered Deployment sets no {name}"
        env[name]["value"] = str(value)
    return docs


def _deploy(cluster: Cluster, docs: list[dict[str, Any]], namespace: str, timeout: float) -> str:
    for doc in docs:
        cluster.apply(doc, namespace)
    cluster.wait_ready(*DEPLOYMENT, find(docs, *DEPLOYMENT)["metadata"]["name"], namespace, timeout)
    [pod] = cluster.ready_pods(namespace, SELECTOR)
    return pod


@pytest.mark.timeout(e2e_timeout(HOLD_FOR, 2 * DRAIN_TIMEOUT))
def test_held_connections_answer_pings_while_the_api_is_polled_then_drain(
    cluster: Cluster, ready_timeout: float
) -> None:
    route = next(r for r in PLAIN_ROUTES if r.tool == "kustomize")
    with (
        cluster.namespace("ws-e2e-held") as ns,
        cluster.diagnose_on_failure(ns, [(*DEPLOYMENT, "websocket-server")]),
    ):
        docs = _with_short_pings(plain_docs(route, ns))
        pod = _deploy(cluster, docs, ns, ready_timeout)

        def pod_still_ready_after(until: float) -> bool:
            assert pod in cluster.ready_pods(ns, SELECTOR), f"pod {pod} stopped being ready"
            return time.monotonic() >= until

        async def scenario(port: int) -> None:
            async with hold(f"127.0.0.1:{port}", CONNECTIONS) as held:
                until = time.monotonic() + HOLD_FOR
                polls = await wait_for(
                    lambda: pod_still_ready_after(until), HOLD_FOR + 30, "the hold", interval=0.5
                )
                print(f"held {CONNECTIONS} connections for {HOLD_FOR} s, {polls} API polls")
                await echo_each(held, "still open")
                pings = [one.pings for one in held]
                # Several pings each, all answered: the server would have closed
                # a connection with 1011 after one late pong.
                assert min(pings) >= HOLD_FOR // PING_INTERVAL - 2, f"pings received: {pings}"
                await drain(held, lambda: cluster.core.delete_namespaced_pod(pod, ns))
            assert_drained(held, (1001,))

        with cluster.port_forward(ns, pod, 8080) as port:
            asyncio.run(scenario(port))
