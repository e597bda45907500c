"""The deploy path on a cluster with Knative Serving: apply the Service as
rendered by Helm and by Kustomize, wait for Ready, echo through the real
ingress; then autoscaling by open connections and a graceful drain.

Runs in the GitHub Actions e2e job (kind + Knative + Kourier, see
scripts/kind-up.sh). Without a reachable cluster with Knative, every test
here is skipped with that reason.

Knative's clocks (docs/guides/knative.md: The knobs that matter for WebSockets): kind-up.sh
sets config-defaults' revision-response-start-timeout-seconds to 20 s and
these tests render the chart with timeoutSeconds 60, so each clock runs out
within a minute. The chart's Service (responseStartTimeoutSeconds: 0) keeps
a connection echoing past the response-start default until the server's
clean close at its maximum age (1001 "max connection age", before
timeoutSeconds); a negative control without responseStartTimeoutSeconds: 0
shows Knative's own cut at the default: no close frame (1006).

Each test runs in one event loop (one ``asyncio.run()``), and every
Kubernetes API wait goes through ``e2e.held`` on another thread, so held
connections keep answering the server's pings. The client mechanics - held
connections, API polling, the drain - are the ones e2e/test_held_connections.py
runs for real in .ci/run; only what Knative itself decides (Ready, the
route's URL, the pod count under autoscaling) is left to this job.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest

from server.probe import probe_with_retries

from .cluster import Cluster, host_of
from .held import (
    DRAIN_TIMEOUT,
    GOING_AWAY,
    MAX_AGE_REASON,
    NO_CLOSE_FRAME,
    assert_drained,
    close_all,
    drain,
    e2e_timeout,
    echo_each,
    echo_until_closed,
    hold,
    in_thread,
    wait_for,
)
from .render import CHART, Route, helm_template, knative_service, routes

KSVC = ("serving.knative.dev/v1", "Service")
ROUTE_NAME = os.environ.get("E2E_ROUTE", "dev")
KNATIVE_ROUTES = [r for r in routes() if r.name == ROUTE_NAME]
KOURIER_NAMESPACE = os.environ.get("E2E_KOURIER_NAMESPACE", "kourier-system")
KOURIER_SELECTOR = "app=3scale-kourier-gateway"
#: Waits, in seconds: retrying the first echo while the route settles, the
#: autoscaler bringing up a second pod, and scaling back down (6 s window).
ECHO_RETRY = 60.0
SCALE_UP_TIMEOUT = 240.0
SCALE_DOWN_TIMEOUT = 300.0
REVISION = ("serving.knative.dev/v1", "Revision")
#: The clock tests' Service: timeoutSeconds 60, so the chart's maximum age is
#: 60 minus max(10 s, 10 %) = 50 s.
CLOCK_TIMEOUT = 60
CLOCK_AGE = 50
#: Seconds between the clock tests' messages.
TICK = 2.0


@contextlib.contextmanager
def ingress(cluster: Cluster) -> Iterator[str]:
    """host:port of the ingress gateway: $E2E_INGRESS, else a port-forward
    to a Kourier gateway pod."""
    if os.environ.get("E2E_INGRESS"):
        yield os.environ["E2E_INGRESS"]
        return
    pods = cluster.ready_pods(KOURIER_NAMESPACE, KOURIER_SELECTOR)
    if not pods:
        raise RuntimeError(
            f"no ready Kourier gateway pod ({KOURIER_SELECTOR} in {KOURIER_NAMESPACE})"
        )
    with cluster.port_forward(KOURIER_NAMESPACE, pods[0], 8080) as port:
        yield f"127.0.0.1:{port}"


def deploy(
    cluster: Cluster, docs: list[dict[str, Any]], namespace: str, timeout: float
) -> dict[str, Any]:
    """Apply every rendered document (hooks aside) and wait for the Service."""
    service = knative_service(docs)
    for doc in docs:
        if "helm.sh/hook" not in doc.get("metadata", {}).get("annotations", {}):
            cluster.apply(doc, namespace)
    return cluster.wait_ready(*KSVC, service["metadata"]["name"], namespace, timeout=timeout)


@pytest.mark.timeout(e2e_timeout(ECHO_RETRY))
@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_deploy_and_echo_through_the_ingress(
    knative: Cluster, route: Route, ready_timeout: float
) -> None:
    async def scenario(ns: str, address: str) -> None:
        service = await in_thread(deploy, knative, route.render(namespace=ns), ns, ready_timeout)
        url = service["status"]["url"]
        print(f"{route.id}: ready at {url}")
        result = await probe_with_retries(
            f"ws://{address}/ws", host=host_of(url), count=6, retry_for=ECHO_RETRY
        )
        assert result.echoes == 6

    with (
        knative.namespace(f"ws-e2e-{route.tool}") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))


def response_start_default(cluster: Cluster) -> int:
    """config-defaults' revision-response-start-timeout-seconds, which
    scripts/kind-up.sh sets small; a cluster left at Knative's 300 s cannot
    run the clock tests in minutes (skipped, or failed under E2E_REQUIRE_KNATIVE)."""
    config = cluster.core.read_namespaced_config_map("config-defaults", "knative-serving")
    raw = (config.data or {}).get("revision-response-start-timeout-seconds")
    if raw is None or not 0 < int(raw) <= CLOCK_AGE // 2:
        reason = (
            f"config-defaults' revision-response-start-timeout-seconds is {raw!r}: the clock "
            f"tests need 1..{CLOCK_AGE // 2} (scripts/kind-up.sh sets 20)"
        )
        if os.environ.get("E2E_REQUIRE_KNATIVE"):
            pytest.fail(reason)
        pytest.skip(reason)
    return int(raw)


def _clock_docs(namespace: str, response_start_timeout_zero: bool = True) -> list[dict[str, Any]]:
    """The chart (dev values) with timeoutSeconds 60; without
    responseStartTimeoutSeconds: 0 for the negative control."""
    docs = helm_template(
        [CHART / "ci" / "dev-values.yaml"],
        set_values={"timeoutSeconds": str(CLOCK_TIMEOUT)},
        namespace=namespace,
        include_tests=False,
    )
    spec = knative_service(docs)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert spec["responseStartTimeoutSeconds"] == 0
    assert env["WS_MAX_CONNECTION_AGE"] == str(CLOCK_AGE)
    if not response_start_timeout_zero:
        del spec["responseStartTimeoutSeconds"]
    return docs


@pytest.mark.timeout(e2e_timeout(ECHO_RETRY, CLOCK_TIMEOUT))
def test_a_connection_outlives_the_response_start_default_then_gets_a_clean_close(
    knative: Cluster, ready_timeout: float
) -> None:
    """The chart's Service: the connection echoes past Knative's
    response-start default, then the server closes it with 1001 "max
    connection age" before timeoutSeconds - a close frame, not a cut."""
    response_start = response_start_default(knative)

    async def scenario(ns: str, address: str) -> None:
        service = await in_thread(deploy, knative, _clock_docs(ns), ns, ready_timeout)
        revision = await in_thread(
            knative.get, *REVISION, service["status"]["latestReadyRevisionName"], ns
        )
        # Knative kept the 0: no response-start timer on this revision.
        assert revision["spec"]["responseStartTimeoutSeconds"] == 0
        async with hold(address, 1, host=host_of(service["status"]["url"])) as [one]:
            lifetime = await echo_until_closed(one, TICK, CLOCK_TIMEOUT + 30)
        print(f"responseStartTimeoutSeconds 0: {lifetime}")
        assert any(t > response_start + 2 * TICK for t in lifetime.echoes), (
            f"no echo after the response-start default ({response_start} s): {lifetime}"
        )
        assert (lifetime.code, lifetime.reason) == (GOING_AWAY, MAX_AGE_REASON), str(lifetime)
        assert lifetime.closed_after < CLOCK_TIMEOUT, str(lifetime)
        assert lifetime.all_echoed, str(lifetime)

    with (
        knative.namespace("ws-e2e-clock") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))


@pytest.mark.timeout(e2e_timeout(ECHO_RETRY, CLOCK_TIMEOUT))
def test_without_response_start_zero_knative_cuts_the_connection_at_its_default(
    knative: Cluster, ready_timeout: float
) -> None:
    """Negative control, and the upstream behaviour the manifests work
    around (knative/serving#16169, TestWebSocketWithTimeout): without
    responseStartTimeoutSeconds: 0, Knative defaults it from config-defaults,
    and its timeout handler - which never sees a write on a hijacked
    connection - cuts a busy WebSocket there, with no close frame (1006)."""
    response_start = response_start_default(knative)

    async def scenario(ns: str, address: str) -> None:
        docs = _clock_docs(ns, response_start_timeout_zero=False)
        service = await in_thread(deploy, knative, docs, ns, ready_timeout)
        revision = await in_thread(
            knative.get, *REVISION, service["status"]["latestReadyRevisionName"], ns
        )
        assert revision["spec"]["responseStartTimeoutSeconds"] == response_start
        async with hold(address, 1, host=host_of(service["status"]["url"])) as [one]:
            lifetime = await echo_until_closed(one, TICK, CLOCK_TIMEOUT + 30)
        print(f"responseStartTimeoutSeconds unset: {lifetime}")
        assert lifetime.code == NO_CLOSE_FRAME, str(lifetime)
        # At the default, well before the server's own close at CLOCK_AGE.
        assert response_start - 1 <= lifetime.closed_after < response_start + 3 * TICK, str(
            lifetime
        )

    with (
        knative.namespace("ws-e2e-cut") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))


def _autoscale_docs(namespace: str) -> list[dict[str, Any]]:
    route = next(r for r in KNATIVE_ROUTES if r.tool == "kustomize")
    docs = copy.deepcopy(route.render(namespace=namespace))
    template = knative_service(docs)["spec"]["template"]
    template["metadata"]["annotations"].update(
        {
            "autoscaling.knative.dev/target": "1",
            "autoscaling.knative.dev/min-scale": "0",
            "autoscaling.knative.dev/max-scale": "4",
            # A short window: the test sees scale-down in a minute, not ten.
            "autoscaling.knative.dev/window": "6s",
        }
    )
    return docs


@pytest.mark.timeout(e2e_timeout(SCALE_UP_TIMEOUT, SCALE_DOWN_TIMEOUT))
def test_pods_scale_with_open_connections(knative: Cluster, ready_timeout: float) -> None:
    """target=1: four held connections bring up more than one pod and stay
    open and echoing meanwhile; closing them lets the Service scale back down."""

    async def scenario(ns: str, address: str) -> None:
        service = await in_thread(deploy, knative, _autoscale_docs(ns), ns, ready_timeout)
        selector = f"serving.knative.dev/service={service['metadata']['name']}"
        async with hold(address, 4, host=host_of(service["status"]["url"])) as held:
            await wait_for(
                lambda: len(knative.ready_pods(ns, selector)) > 1, SCALE_UP_TIMEOUT, ">1 ready pod"
            )
            print(f"scaled up: {await in_thread(knative.ready_pods, ns, selector)}")
            await echo_each(held, "still here")
            await close_all(held)
        await wait_for(
            lambda: len(knative.ready_pods(ns, selector)) <= 1,
            SCALE_DOWN_TIMEOUT,
            "scale-down to <= 1 pod",
        )

    with (
        knative.namespace("ws-e2e-scale") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))


@pytest.mark.timeout(e2e_timeout(2 * DRAIN_TIMEOUT))
def test_deleting_the_revisions_pod_closes_clients_cleanly(
    knative: Cluster, ready_timeout: float
) -> None:
    """The revision's pod is deleted (as on scale-down; the Service, its
    route and Kourier's clusters stay): the pod's SIGTERM reaches the server
    after the queue-proxy's 30 s drain sleep, every message already sent is
    echoed, then each client sees a clean close, not a reset (1006)."""
    route = next(r for r in KNATIVE_ROUTES if r.tool == "kustomize")

    async def scenario(ns: str, address: str) -> None:
        service = await in_thread(deploy, knative, route.render(namespace=ns), ns, ready_timeout)
        selector = f"serving.knative.dev/revision={service['status']['latestReadyRevisionName']}"
        async with hold(address, 2, host=host_of(service["status"]["url"])) as held:
            [pod] = await in_thread(knative.ready_pods, ns, selector)
            await drain(held, lambda: knative.core.delete_namespaced_pod(pod, ns))
        assert_drained(held, (1000, 1001))

    with (
        knative.namespace("ws-e2e-drain") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))
