"""The deploy path on a cluster with Knative Serving: apply the Service as
rendered by Helm and by Kustomize, wait for Ready, echo through the real
ingress; then autoscaling by open connections and a graceful drain.

Runs in the GitHub Actions e2e job (kind + Knative + Kourier, see
scripts/kind-up.sh). Without a reachable cluster with Knative, every test
here is skipped with that reason.

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
    assert_drained,
    close_all,
    drain,
    e2e_timeout,
    echo_each,
    hold,
    in_thread,
    wait_for,
)
from .render import Route, knative_service, routes

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
def test_deleting_the_service_closes_clients_cleanly(
    knative: Cluster, ready_timeout: float
) -> None:
    """The pod's SIGTERM reaches the server (after the queue-proxy's 30 s
    drain sleep): every message already sent is echoed, then each client sees
    a clean close, not a reset (1006)."""
    route = next(r for r in KNATIVE_ROUTES if r.tool == "kustomize")

    async def scenario(ns: str, address: str) -> None:
        service = await in_thread(deploy, knative, route.render(namespace=ns), ns, ready_timeout)
        name = service["metadata"]["name"]
        async with hold(address, 2, host=host_of(service["status"]["url"])) as held:
            await drain(held, lambda: knative.resource(*KSVC).delete(name=name, namespace=ns))
        assert_drained(held, (1000, 1001))

    with (
        knative.namespace("ws-e2e-drain") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
        ingress(knative) as address,
    ):
        asyncio.run(scenario(ns, address))
