"""Plain Kubernetes mode on a real cluster: the Deployment and Service that
the chart (mode=kubernetes) and kustomize/overlays/kubernetes render, applied
with the kubernetes client, waited on, and echoed through a port-forward;
real kubelet probes; a pod deletion under a connected client. Plus the
Knative Service validated by a real API server (server-side dry run).

Runs in .ci/run on the local single-node cluster (scripts/local-cluster.sh)
and on any cluster of the current kubeconfig. Without one, every test is
skipped with the reason.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.probe import probe_with_retries

from .cluster import Cluster
from .render import Route, find, helm_template, is_hook, knative_service, routes
from .validate import PROMETHEUS_OPERATOR_CRDS, knative_crd_path, prometheus_operator_crd_dir

DEPLOYMENT = ("apps/v1", "Deployment")
#: The plain-mode routes that run on their own. The backplane routes need a
#: Redis and the Secret that names it: e2e/test_backplane.py deploys those.
PLAIN_ROUTES = [r for r in routes() if r.mode == "kubernetes" and not r.name.endswith("backplane")]
#: An image to run instead of the rendered one (a locally built or kind-loaded one).
IMAGE = os.environ.get("E2E_IMAGE", "")
SELECTOR = "app.kubernetes.io/name=websocket-server"


def plain_docs(route: Route, namespace: str) -> list[dict[str, Any]]:
    return with_test_image(copy.deepcopy(route.render(namespace=namespace)))


def chart_docs(namespace: str, set_values: dict[str, str]) -> list[dict[str, Any]]:
    """The chart in plain Kubernetes mode, with these --set values."""
    return with_test_image(
        helm_template(set_values={"mode": "kubernetes", **set_values}, namespace=namespace)
    )


def with_test_image(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents to apply (hooks left out), running $E2E_IMAGE if set."""
    docs = [d for d in rendered if not is_hook(d)]
    if IMAGE:
        [container] = find(docs, *DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
        container["image"] = IMAGE
        container["imagePullPolicy"] = "IfNotPresent"
    return docs


def ensure_prometheus_operator_crds(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    """The prometheus-operator CRDs (v0.93.0, from ``../shared``) of the
    monitoring objects in ``docs``, so that a real API server validates
    them. Installed when missing only with E2E_INSTALL_PROMETHEUS_OPERATOR_CRDS=1
    (the local cluster of .ci/run); never silently on someone else's cluster:
    there the test is skipped with the reason."""
    kinds = sorted({d["kind"] for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"})
    for kind in kinds:
        crd = yaml.safe_load(
            (prometheus_operator_crd_dir() / PROMETHEUS_OPERATOR_CRDS[kind]).read_text()
        )
        name = crd["metadata"]["name"]
        if cluster.has_crd(name):
            continue
        if not os.environ.get("E2E_INSTALL_PROMETHEUS_OPERATOR_CRDS"):
            pytest.skip(
                f"no {name} CRD in the cluster (E2E_INSTALL_PROMETHEUS_OPERATOR_CRDS=1 installs it)"
            )
        # As for the Knative CRD: Kubernetes 1.20 rejects `default: ""`.
        crd = _without_empty_defaults(crd)
        crd["metadata"] = {"name": name}
        cluster.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition").create(body=crd)
        cluster.wait_established(name)


def deploy(cluster: Cluster, route: Route, namespace: str, timeout: float) -> str:
    """Apply, wait for the Deployment, return the name of its ready pod."""
    docs = plain_docs(route, namespace)
    ensure_prometheus_operator_crds(cluster, docs)
    for doc in docs:
        cluster.apply(doc, namespace)
    name = find(docs, *DEPLOYMENT)["metadata"]["name"]
    cluster.wait_ready(*DEPLOYMENT, name, namespace, timeout=timeout)
    [pod] = cluster.ready_pods(namespace, SELECTOR)
    return pod


@pytest.mark.parametrize("route", PLAIN_ROUTES, ids=lambda r: r.id)
def test_deploy_and_echo_through_a_port_forward(
    cluster: Cluster, route: Route, ready_timeout: float
) -> None:
    with (
        cluster.namespace(f"ws-e2e-{route.tool}") as ns,
        cluster.diagnose_on_failure(ns, [(*DEPLOYMENT, "websocket-server")]),
    ):
        pod = deploy(cluster, route, ns, ready_timeout)
        with cluster.port_forward(ns, pod, 8080) as port:
            result = asyncio.run(
                probe_with_retries(f"ws://127.0.0.1:{port}/ws", count=6, retry_for=30)
            )
        assert result.echoes == 6
        # The kubelet's own probes passed: Ready (readiness) and no restarts (liveness).
        [status] = [p for p in cluster.pods(ns, SELECTOR) if p["metadata"]["name"] == pod]
        [container] = status["status"]["containerStatuses"]
        assert container["ready"] is True
        assert container["restartCount"] == 0
        logs = cluster.core.read_namespaced_pod_log(pod, ns)
        [listening] = [json.loads(line) for line in logs.splitlines() if '"listening"' in line]
        assert '"event": "open"' in logs
        if IMAGE:
            # An image built from this checkout's Dockerfile runs the wire
            # core compiled by mypyc, and says so once at start.
            assert listening["wire"] == "compiled", listening


def test_monitoring_objects_pass_a_real_api_server(cluster: Cluster) -> None:
    """The monitoring overlays' ServiceMonitor, PodMonitor and PrometheusRule,
    validated by the API server itself (server-side dry run) against the
    prometheus-operator CRDs, installed as in the deploy test; a broken copy
    of each is refused, so the validation is real."""
    monitoring = [r for r in PLAIN_ROUTES if r.id.endswith("monitoring")]
    assert monitoring, "no plain-mode monitoring route rendered"
    with cluster.namespace("ws-e2e-monitoring") as ns:
        for route in monitoring:
            docs = [
                d for d in plain_docs(route, ns) if d["apiVersion"] == "monitoring.coreos.com/v1"
            ]
            assert docs, route.id
            ensure_prometheus_operator_crds(cluster, docs)
            for doc in docs:
                result = cluster.apply(doc, ns, dry_run=True)
                assert result["kind"] == doc["kind"], route.id
                broken = copy.deepcopy(doc)
                broken["spec"] = {
                    **broken["spec"],
                    "groups" if doc["kind"] == "PrometheusRule" else "selector": "not an object",
                }
                with pytest.raises(Exception, match=r"[Ii]nvalid"):
                    cluster.apply(broken, ns, dry_run=True)


async def _echo_through_deletion(port: int, delete: Any) -> tuple[list[str], list[str], int | None]:
    sent = [f"in flight {i}" for i in range(200)]
    received: list[str] = []
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("first")
        assert await ws.recv() == "first"
        for message in sent:
            await ws.send(message)
        await asyncio.get_running_loop().run_in_executor(None, delete)
        try:
            while True:
                received.append(str(await asyncio.wait_for(ws.recv(), 60)))
        except ConnectionClosed:
            pass
    return sent, received, ws.close_code


def test_deleting_the_pod_echoes_in_flight_messages_then_closes_1001(
    cluster: Cluster, ready_timeout: float
) -> None:
    """The kubelet's SIGTERM reaches the server: everything already sent is
    echoed, then the client gets 1001 - not a reset."""
    route = next(r for r in PLAIN_ROUTES if r.tool == "kustomize")
    with (
        cluster.namespace("ws-e2e-drain") as ns,
        cluster.diagnose_on_failure(ns, [(*DEPLOYMENT, "websocket-server")]),
    ):
        pod = deploy(cluster, route, ns, ready_timeout)
        with cluster.port_forward(ns, pod, 8080) as port:
            sent, received, code = asyncio.run(
                _echo_through_deletion(port, lambda: cluster.core.delete_namespaced_pod(pod, ns))
            )
        assert received == sent
        assert code == 1001


def _without_empty_defaults(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_empty_defaults(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _without_empty_defaults(v) for k, v in node.items() if not (k == "default" and v == "")
    }
    keys = node.get("x-kubernetes-list-map-keys", [])
    item_props = (node.get("items") or {}).get("properties") or {}
    if any((item_props.get(k) or {}).get("default") == "" for k in keys):
        out.pop("x-kubernetes-list-map-keys")
        out["x-kubernetes-list-type"] = "atomic"
    return out


def test_knative_service_passes_a_real_api_server_dry_run(cluster: Cluster) -> None:
    """The rendered Knative Services, validated by the API server itself
    (server-side dry run) against the Knative CRD. On a cluster without
    Knative, the CRD is installed first when E2E_INSTALL_KNATIVE_CRD=1 (the
    local cluster of .ci/run); never silently on someone else's cluster."""
    if not cluster.has_crd():
        if not os.environ.get("E2E_INSTALL_KNATIVE_CRD"):
            pytest.skip(
                "no Knative Service CRD in the cluster (E2E_INSTALL_KNATIVE_CRD=1 installs it)"
            )
        crd = next(
            d
            for d in yaml.safe_load_all(knative_crd_path().read_text())
            if d and d["metadata"]["name"] == "services.serving.knative.dev"
        )
        # Kubernetes 1.20 (the local cluster) wrongly rejects `default: ""` in a
        # CRD schema as null. Those defaults only fill in empty names, and the
        # list-map keys that need them only steer merges: neither plays a part
        # in validation, so both are left out here.
        crd = _without_empty_defaults(crd)
        cluster.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition").create(body=crd)
        cluster.wait_established("services.serving.knative.dev")
    with cluster.namespace("ws-e2e-dryrun") as ns:
        for route in [r for r in routes() if r.mode == "knative"]:
            service = knative_service(route.render(namespace=ns))
            result = cluster.apply(service, ns, dry_run=True)
            assert (
                result["spec"]["template"]["spec"]["containers"][0]["name"] == "websocket-server"
            ), route.id
        broken = copy.deepcopy(service)
        broken["spec"]["template"]["spec"]["timeoutSeconds"] = "ten minutes"
        with pytest.raises(Exception, match="timeoutSeconds"):
            cluster.apply(broken, ns, dry_run=True)
