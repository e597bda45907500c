"""The deploy path on a cluster with Knative Serving: apply the Service as
rendered by Helm and by Kustomize, wait for Ready, echo through the real
ingress; then autoscaling by open connections and a graceful drain.

Runs in the GitHub Actions e2e job (kind + Knative + Kourier, see
scripts/kind-up.sh). Without a reachable cluster with Knative, every test
here is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from server.probe import probe_with_retries

from .cluster import Cluster, host_of
from .render import Route, knative_service, routes

KSVC = ("serving.knative.dev/v1", "Service")
ROUTE_NAME = os.environ.get("E2E_ROUTE", "dev")
KNATIVE_ROUTES = [r for r in routes() if r.name == ROUTE_NAME]
KOURIER_NAMESPACE = os.environ.get("E2E_KOURIER_NAMESPACE", "kourier-system")
KOURIER_SELECTOR = "app=3scale-kourier-gateway"


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


@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_deploy_and_echo_through_the_ingress(
    knative: Cluster, route: Route, ready_timeout: float
) -> None:
    with (
        knative.namespace(f"ws-e2e-{route.tool}") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
    ):
        service = deploy(knative, route.render(namespace=ns), ns, ready_timeout)
        url = service["status"]["url"]
        print(f"{route.id}: ready at {url}")
        with ingress(knative) as address:
            result = asyncio.run(
                probe_with_retries(f"ws://{address}/ws", host=host_of(url), count=6, retry_for=60)
            )
        assert result.echoes == 6


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


async def _hold(address: str, host: str, count: int) -> list[Any]:
    conns = []
    for _ in range(count):
        request = HTTPRequest(f"ws://{address}/ws", headers={"Host": host})
        conn = await websocket_connect(request)
        await conn.write_message("hold")
        assert await conn.read_message() == "hold"
        conns.append(conn)
    return conns


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_pods_scale_with_open_connections(knative: Cluster, ready_timeout: float) -> None:
    """target=1: four held connections bring up more than one pod; closing
    them lets the Service scale back down."""
    with (
        knative.namespace("ws-e2e-scale") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
    ):
        service = deploy(knative, _autoscale_docs(ns), ns, ready_timeout)
        name = service["metadata"]["name"]
        selector = f"serving.knative.dev/service={name}"
        host = host_of(service["status"]["url"])
        with ingress(knative) as address:
            loop = asyncio.new_event_loop()
            try:
                conns = loop.run_until_complete(_hold(address, host, 4))
                _wait_for(lambda: len(knative.ready_pods(ns, selector)) > 1, 240, ">1 ready pod")
                print(f"scaled up: {knative.ready_pods(ns, selector)}")
                for conn in conns:
                    conn.close(1000)
                loop.run_until_complete(asyncio.sleep(1))
            finally:
                loop.close()
        _wait_for(lambda: len(knative.ready_pods(ns, selector)) <= 1, 300, "scale-down to <= 1 pod")


async def _connect_and_wait_for_close(address: str, host: str, on_open: Any) -> int | None:
    request = HTTPRequest(f"ws://{address}/ws", headers={"Host": host})
    conn = await websocket_connect(request)
    await conn.write_message("before delete")
    assert await conn.read_message() == "before delete"
    await asyncio.get_running_loop().run_in_executor(None, on_open)
    while await asyncio.wait_for(conn.read_message(), 120) is not None:
        pass
    return conn.close_code


def test_deleting_the_service_closes_clients_cleanly(
    knative: Cluster, ready_timeout: float
) -> None:
    """The pod's SIGTERM reaches the server, which sends 1001; the client
    sees a clean close, not a reset (1006)."""
    route = next(r for r in KNATIVE_ROUTES if r.tool == "kustomize")
    with (
        knative.namespace("ws-e2e-drain") as ns,
        knative.diagnose_on_failure(ns, [(*KSVC, "websocket-server")]),
    ):
        service = deploy(knative, route.render(namespace=ns), ns, ready_timeout)
        name = service["metadata"]["name"]

        def delete() -> None:
            knative.resource(*KSVC).delete(name=name, namespace=ns)

        with ingress(knative) as address:
            code = asyncio.run(
                _connect_and_wait_for_close(address, host_of(service["status"]["url"]), delete)
            )
        assert code in (1000, 1001), f"close code {code}"
