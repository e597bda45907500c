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

The server's own clocks, through the chart in plain mode: a connection
reaches its maximum age (server.maxConnectionAge, 8 s) and gets the clean
close, 1001 "max connection age", with everything it sent echoed first -
the close e2e/test_knative.py expects before Knative's timeoutSeconds; and
a pod deleted under a dozen connections spreads its 1001s over the drain
window (server.drainSpread), instead of closing them all in one instant.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .cluster import Cluster
from .held import (
    DRAIN_TIMEOUT,
    GOING_AWAY,
    MAX_AGE_REASON,
    assert_drained,
    close_all,
    drain,
    e2e_timeout,
    echo_each,
    echo_until_closed,
    hold,
    wait_for,
)
from .render import find
from .test_kubernetes import DEPLOYMENT, PLAIN_ROUTES, SELECTOR, chart_docs, plain_docs

PING_INTERVAL = 2
PING_TIMEOUT = 1
#: How long the connections are held: several ping intervals.
HOLD_FOR = 6 * PING_INTERVAL
CONNECTIONS = 4
#: server.maxConnectionAge for the age test, and how late its close may come
#: through the port-forward.
MAX_AGE = 8
AGE_SLACK = 2.0
#: server.drainSpread for the spread-drain test, over this many connections.
SPREAD = 4
SPREAD_CONNECTIONS = 12


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


def _env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    [container] = find(docs, *DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.timeout(e2e_timeout(MAX_AGE + 30))
def test_a_connection_gets_the_clean_close_at_its_maximum_age(
    cluster: Cluster, ready_timeout: float
) -> None:
    """Three connections, each sending a message every half second: each
    is closed by the server no later than its maximum age, with 1001 "max
    connection age", after every message it sent was echoed; a new
    connection is then served as before."""
    with (
        cluster.namespace("ws-e2e-age") as ns,
        cluster.diagnose_on_failure(ns, [(*DEPLOYMENT, "websocket-server")]),
    ):
        docs = chart_docs(ns, {"server.maxConnectionAge": str(MAX_AGE)})
        assert _env_of(docs)["WS_MAX_CONNECTION_AGE"] == str(MAX_AGE)
        pod = _deploy(cluster, docs, ns, ready_timeout)

        async def scenario(port: int) -> None:
            address = f"127.0.0.1:{port}"
            async with hold(address, 3) as held:
                lifetimes = await asyncio.gather(
                    *(echo_until_closed(one, 0.5, MAX_AGE + 30) for one in held)
                )
            for i, lifetime in enumerate(lifetimes):
                print(f"connection {i}: {lifetime}")
                assert (lifetime.code, lifetime.reason) == (GOING_AWAY, MAX_AGE_REASON), (
                    f"connection {i}: {lifetime}"
                )
                assert lifetime.closed_after <= MAX_AGE + AGE_SLACK, f"connection {i}: {lifetime}"
                assert lifetime.all_echoed, f"connection {i}: {lifetime}"
                # It echoed until the end: the last echo within two ticks of the close.
                assert lifetime.echoes[-1] >= lifetime.closed_after - 1.0, (
                    f"connection {i}: {lifetime}"
                )
            async with hold(address, 1) as again:
                await echo_each(again, "after the age")
                await close_all(again)

        with cluster.port_forward(ns, pod, 8080) as port:
            asyncio.run(scenario(port))


@pytest.mark.timeout(e2e_timeout(2 * DRAIN_TIMEOUT))
def test_a_pod_deletion_spreads_the_drain_closes(cluster: Cluster, ready_timeout: float) -> None:
    """A dozen held connections, the pod deleted under them: every message
    in flight is echoed, every connection gets 1001, and the closes are
    spread over the drain window (server.drainSpread) - not all at once."""
    with (
        cluster.namespace("ws-e2e-spread") as ns,
        cluster.diagnose_on_failure(ns, [(*DEPLOYMENT, "websocket-server")]),
    ):
        docs = chart_docs(ns, {"server.drainSpread": str(SPREAD)})
        assert _env_of(docs)["WS_DRAIN_SPREAD"] == str(SPREAD)
        pod = _deploy(cluster, docs, ns, ready_timeout)

        async def scenario(port: int) -> list[float]:
            async with hold(f"127.0.0.1:{port}", SPREAD_CONNECTIONS) as held:
                await drain(held, lambda: cluster.core.delete_namespaced_pod(pod, ns), in_flight=10)
            assert_drained(held, (GOING_AWAY,))
            return sorted(one.closed_at or 0.0 for one in held)

        with cluster.port_forward(ns, pod, 8080) as port:
            closes = asyncio.run(scenario(port))
        offsets = [round(t - closes[0], 2) for t in closes]
        print(f"close times after the first, s: {offsets}")
        # Twelve closes spread over 4 s span more than 1.6 s (all at once: a
        # few milliseconds), and end within the window, plus the port-forward.
        assert offsets[-1] >= 0.4 * SPREAD, offsets
        assert offsets[-1] <= SPREAD + AGE_SLACK, offsets
