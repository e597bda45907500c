"""Talk to a real cluster with the Python ``kubernetes`` client: apply
rendered manifests server-side, wait for readiness while printing each
condition change, port-forward to a pod, and collect what a person needs to
know when something fails.

The parts that need no cluster - condition parsing, change reports, URL and
host handling, diagnostics formatting - are plain functions, unit-tested in
``tests/test_e2e_helpers.py``.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Cluster",
    "Condition",
    "condition_changes",
    "conditions_of",
    "format_diagnostics",
    "host_of",
    "is_pod_ready",
    "is_ready",
    "unreachable_reason",
]

KNATIVE_SERVICE_CRD = "services.serving.knative.dev"


# -- pure helpers (no cluster needed) ------------------------------------------------


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""

    def __str__(self) -> str:
        text = f"{self.type}={self.status}"
        if self.reason:
            text += f" ({self.reason})"
        if self.message:
            text += f": {self.message}"
        return text


def conditions_of(obj: dict[str, Any]) -> dict[str, Condition]:
    """The ``status.conditions`` of any object, by type."""
    out = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        out[c["type"]] = Condition(
            c["type"], c.get("status", "Unknown"), c.get("reason") or "", c.get("message") or ""
        )
    return out


def condition_changes(before: dict[str, Condition], after: dict[str, Condition]) -> list[str]:
    """One line per condition that appeared or changed, in type order."""
    return [str(c) for t, c in sorted(after.items()) if before.get(t) != c]


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready (Knative) or Available (Deployment) is True for the current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False
    conditions = conditions_of(obj)
    kind = obj.get("kind")
    wanted = "Available" if kind == "Deployment" else "Ready"
    ready = conditions.get(wanted)
    return ready is not None and ready.status == "True"


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """A pod (as a dict) whose Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def host_of(url: str) -> str:
    """The host a Knative route answers to, from ``status.url``."""
    host = urlsplit(url).hostname
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    return host


def format_diagnostics(
    objects: list[dict[str, Any]],
    events: list[dict[str, Any]],
    logs: dict[str, str],
    tail: int = 40,
) -> str:
    """A report for a failed run: each object's conditions, the events of
    the namespace (oldest first), and the last lines of each container's log."""
    lines = ["--- conditions ---"]
    for obj in objects:
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        conds = conditions_of(obj)
        lines.append(f"{name}: " + ("; ".join(str(c) for c in conds.values()) or "no conditions"))
    lines.append("--- events ---")
    for ev in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        involved = ev.get("involvedObject") or {}
        lines.append(
            f"{ev.get('lastTimestamp') or ev.get('eventTime') or '-'} {ev.get('type')} "
            f"{involved.get('kind')}/{involved.get('name')} {ev.get('reason')}: {ev.get('message')}"
        )
    if not events:
        lines.append("(none)")
    for container, text in sorted(logs.items()):
        lines.append(f"--- logs {container} (last {tail} lines) ---")
        lines.extend(text.splitlines()[-tail:] or ["(empty)"])
    return "\n".join(lines)


def unreachable_reason(exc: BaseException) -> str:
    """A one-line reason for skipping: why no cluster could be used."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"no reachable Kubernetes cluster ({type(exc).__name__}: {text[:200]})"


# -- the cluster ------------------------------------------------------------------


class Cluster:
    """A connection to the cluster of the current kubeconfig."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client, dynamic

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.dynamic = dynamic.DynamicClient(api_client)

    @classmethod
    def connect(cls, timeout: float = 5.0) -> Cluster:
        """Load the kubeconfig (or in-cluster config) and check the API answers."""
        from kubernetes import client, config

        try:
            config.load_kube_config()
        except config.ConfigException as no_kubeconfig:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise ConnectionError(
                    f"no kubeconfig ({no_kubeconfig}) and not running inside a cluster"
                ) from None
        api_client = client.ApiClient()
        client.VersionApi(api_client).get_code(_request_timeout=timeout)
        return cls(api_client)

    def has_crd(self, name: str = KNATIVE_SERVICE_CRD) -> bool:
        from kubernetes import client
        from kubernetes.client import ApiException

        try:
            client.ApiextensionsV1Api(self.api).read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def has_knative(self) -> bool:
        """Knative Serving runs here: its Service CRD and its controller."""
        from kubernetes import client
        from kubernetes.client import ApiException

        if not self.has_crd():
            return False
        try:
            client.AppsV1Api(self.api).read_namespaced_deployment("controller", "knative-serving")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        from kubernetes import client

        api = client.ApiextensionsV1Api(self.api)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.api.sanitize_for_serialization(api.read_custom_resource_definition(crd))
            if conditions_of(obj).get("Established", Condition("", "")).status == "True":
                return
            time.sleep(0.5)
        raise TimeoutError(f"CRD {crd} not Established after {timeout:g} s")

    # -- namespaces --

    @contextlib.contextmanager
    def namespace(self, prefix: str) -> Iterator[str]:
        """A fresh namespace, deleted afterwards - also when the test fails."""
        from kubernetes import client

        name = f"{prefix}-{secrets.token_hex(3)}"[:63]
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                self.core.delete_namespace(name, propagation_policy="Background")

    # -- apply and wait --

    def resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(
        self, doc: dict[str, Any], namespace: str | None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply (custom resources included), as ``kubectl apply --server-side``."""
        resource = self.resource(doc["apiVersion"], doc["kind"])
        kwargs: dict[str, Any] = {"field_manager": "websocket-e2e", "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        result = self.dynamic.server_side_apply(
            resource, body=doc, namespace=namespace if resource.namespaced else None, **kwargs
        )
        return dict(result.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return dict(self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict())

    def wait_ready(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str,
        timeout: float = 300.0,
        report: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """Watch the object until it is ready, reporting each condition change.
        Raises TimeoutError (with the last conditions) when time runs out."""
        resource = self.resource(api_version, kind)
        deadline = time.monotonic() + timeout
        seen: dict[str, Condition] = {}
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            events = self.dynamic.watch(
                resource,
                namespace=namespace,
                field_selector=f"metadata.name={name}",
                timeout=min(remaining, 30),
            )
            # closing() releases the streaming connection when we return early.
            with contextlib.closing(events):
                for event in events:
                    raw = event["object"]
                    obj = raw.to_dict() if hasattr(raw, "to_dict") else raw
                    now = conditions_of(obj)
                    for line in condition_changes(seen, now):
                        report(f"{kind}/{name}: {line}")
                    seen = now
                    if is_ready(obj):
                        return obj
                    if time.monotonic() >= deadline:
                        break
        last = "; ".join(str(c) for c in seen.values()) or "no conditions"
        raise TimeoutError(f"{kind}/{name} not ready after {timeout:g} s: {last}")

    # -- pods --

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        """Pods as plain dicts (the API's own field names)."""
        found = self.core.list_namespaced_pod(namespace, label_selector=selector)
        return list(self.api.sanitize_for_serialization(found)["items"])

    def ready_pods(self, namespace: str, selector: str) -> list[str]:
        """Names of the pods that are Ready and not being deleted."""
        return [
            pod["metadata"]["name"]
            for pod in self.pods(namespace, selector)
            if "deletionTimestamp" not in pod["metadata"] and is_pod_ready(pod)
        ]

    def diagnostics(self, namespace: str, objects: list[tuple[str, str, str]]) -> str:
        """Conditions of (apiVersion, kind, name) objects, events and pod logs."""
        found = []
        for api_version, kind, name in objects:
            with contextlib.suppress(Exception):
                found.append(self.get(api_version, kind, name, namespace))
        events = [
            self.api.sanitize_for_serialization(e)
            for e in self.core.list_namespaced_event(namespace).items
        ]
        logs: dict[str, str] = {}
        for pod in self.pods(namespace):
            pod_name = pod["metadata"]["name"]
            for c in pod["spec"]["containers"]:
                key = f"{pod_name}/{c['name']}"
                try:
                    logs[key] = self.core.read_namespaced_pod_log(
                        pod_name, namespace, container=c["name"], tail_lines=200
                    )
                except Exception as exc:
                    logs[key] = f"(no log: {exc})"
        return format_diagnostics(found, events, logs)

    @contextlib.contextmanager
    def diagnose_on_failure(
        self, namespace: str, objects: list[tuple[str, str, str]]
    ) -> Iterator[None]:
        """Print :meth:`diagnostics` when the block fails, then re-raise."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                print(self.diagnostics(namespace, objects))
            raise

    # -- port-forward --

    @contextlib.contextmanager
    def port_forward(self, namespace: str, pod: str, port: int) -> Iterator[int]:
        """A local loopback port relayed to ``pod:port`` through the API
        server's port-forward (as ``kubectl port-forward`` does). Yields the
        local port."""
        from kubernetes import client
        from kubernetes.stream import portforward

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        stop = threading.Event()

        def relay(conn: socket.socket) -> None:
            # portforward() swaps its API client's request method for a
            # websocket one while it connects and puts it back after: two
            # relays starting at once (connections opened together) can
            # leave the shared client swapped, so every later call - a pod
            # deletion, an apply - fails ("Missing required parameter
            # `ports`"). Each relay connects through its own client.
            api = client.ApiClient(self.api.configuration)
            pf = portforward(
                client.CoreV1Api(api).connect_get_namespaced_pod_portforward,
                pod,
                namespace,
                ports=str(port),
            )
            remote = pf.socket(port)
            remote.setblocking(True)
            try:
                _pipe(conn, remote, stop)
            finally:
                conn.close()
                with contextlib.suppress(Exception):
                    pf.close()  # our end of each port's socket pair
                # The client's proxy thread sees that, closes its own end and
                # the API server's websocket, and returns. Closing the
                # websocket under it instead can fail its select() and leave
                # its end open, for a ResourceWarning at some later test.
                deadline = time.monotonic() + _PORT_FORWARD_CLOSE
                while pf.connected and time.monotonic() < deadline:
                    time.sleep(0.01)
                # shutdown() drops the API server socket even when close() fails.
                for close in (pf.websocket.close, pf.websocket.shutdown):
                    with contextlib.suppress(Exception):
                        close()
                with contextlib.suppress(Exception):
                    api.close()

        relays: list[threading.Thread] = []

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                thread = threading.Thread(target=relay, args=(conn,), daemon=True)
                relays.append(thread)
                thread.start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            listener.close()
            thread.join(2)
            for relay_thread in relays:  # each closes its API server connection
                relay_thread.join(5)


#: Seconds a port-forward's proxy thread gets to close its websocket itself.
_PORT_FORWARD_CLOSE = 2.0


def _pipe(a: Any, b: Any, stop: threading.Event) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [a, b]
    while not stop.is_set():
        readable, _, _ = select.select(sockets, [], [], 0.2)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            (b if s is a else a).sendall(data)
