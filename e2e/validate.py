"""Check rendered manifests the way a cluster would, before any cluster.

- :func:`knative_schema_errors`: the OpenAPI schema of the Knative Serving
  Service CRD (v1.23.0, read from ``../shared`` or ``$KNATIVE_SERVICE_CRD``),
  made strict: an unknown field is an error, as with
  ``kubectl apply --validate=strict``.
- :func:`knative_webhook_errors`: rules Knative's admission webhook enforces
  that a schema cannot express.
- :func:`kubernetes_errors`: built-in kinds against the Kubernetes schemas
  shipped by ``kubernetes-validate``, strict.
- :func:`restricted_errors`: the "restricted" Pod Security Standard.
- :func:`prometheus_operator_errors`: a PodMonitor, ServiceMonitor or
  PrometheusRule against the prometheus-operator v0.93.0 CRD schemas (read
  from ``../shared/prometheus-operator/v0.93.0`` or
  ``$PROMETHEUS_OPERATOR_CRDS``), strict like the Knative one.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from .render import ROOT

__all__ = [
    "KUBERNETES_VERSION",
    "knative_crd_path",
    "knative_schema_errors",
    "knative_webhook_errors",
    "kubernetes_errors",
    "pod_spec",
    "prometheus_operator_crd_dir",
    "prometheus_operator_errors",
    "restricted_errors",
]

#: Kubernetes version whose schemas built-in kinds are checked against.
KUBERNETES_VERSION = "1.33.0"
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
#: Knative's default max-revision-timeout-seconds.
KNATIVE_MAX_TIMEOUT = 600


def knative_crd_path() -> Path:
    env = os.environ.get("KNATIVE_SERVICE_CRD")
    if env:
        return Path(env)
    return ROOT.parent / "shared" / "knative" / "serving-v1.23.0" / "service-crd.yaml"


def _strict(schema: Any) -> Any:
    """Reject unknown fields where the CRD lists the known ones."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _knative_validator() -> jsonschema.Draft7Validator:
    path = knative_crd_path()
    if not path.exists():
        raise FileNotFoundError(
            f"Knative Service CRD not found at {path}; set KNATIVE_SERVICE_CRD to its path"
        )
    # A file of the one CRD, or Knative's serving-crds.yaml with all of them.
    crd = next(
        (
            doc
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("metadata", {}).get("name") == "services.serving.knative.dev"
        ),
        None,
    )
    if crd is None:
        raise ValueError(f"{path} holds no services.serving.knative.dev CRD")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def knative_schema_errors(service: dict[str, Any]) -> list[str]:
    """Where ``service`` breaks the (strict) CRD schema; [] when it fits."""
    errors = sorted(_knative_validator().iter_errors(service), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]


#: An image reference as the webhook parses it (go-containerregistry's
#: name.ParseReference): [registry[:port]/]path[:tag][@sha256:<64 hex>].
IMAGE_REFERENCE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


def knative_webhook_errors(
    service: dict[str, Any], max_timeout: int = KNATIVE_MAX_TIMEOUT
) -> list[str]:
    """Rules from Knative's validating webhook for a Service's template."""
    errors: list[str] = []
    name = service.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = service["spec"]["template"]["spec"]
    containers = spec.get("containers", [])
    if len(containers) != 1:
        errors.append(f"expected 1 container (sidecars need a feature flag), got {len(containers)}")
    ports = [p for c in containers for p in c.get("ports", [])]
    if len(ports) > 1:
        errors.append(f"more than one container port: {ports}")
    for port in ports:
        if port.get("name", "") not in ("", "http1", "h2c"):
            errors.append(f"port name {port['name']!r} must be empty, 'http1' or 'h2c'")
        if port.get("containerPort") in KNATIVE_RESERVED_PORTS:
            errors.append(f"containerPort {port['containerPort']} is reserved by Knative")
    for c in containers:
        if not IMAGE_REFERENCE.fullmatch(c.get("image", "")):
            errors.append(f"image {c.get('image', '')!r} is not a valid reference")
        for env in c.get("env", []):
            if env["name"] in KNATIVE_RESERVED_ENV:
                errors.append(f"env {env['name']} is reserved (Knative sets it)")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(probe_name) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                if "port" in (probe.get(handler) or {}):
                    errors.append(
                        f"{probe_name}.{handler}.port must not be set (Knative routes probes)"
                    )
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and not 0 <= timeout <= max_timeout:
        errors.append(f"timeoutSeconds {timeout} is outside 0..{max_timeout}")
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None and not 0 <= concurrency <= 1000:
        errors.append(f"containerConcurrency {concurrency} is outside 0..1000")
    annotations = service["spec"]["template"].get("metadata", {}).get("annotations", {})
    for key in ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale"):
        if key in annotations and not re.fullmatch(r"\d+", annotations[key]):
            errors.append(f"{key} must be a whole number, got {annotations[key]!r}")
    target = annotations.get("autoscaling.knative.dev/target")
    if target is not None:
        try:
            if float(target) < 0.01:
                errors.append(f"autoscaling.knative.dev/target {target} must be at least 0.01")
        except ValueError:
            errors.append(f"autoscaling.knative.dev/target {target!r} is not a number")
    metric = annotations.get("autoscaling.knative.dev/metric")
    if metric is not None and metric not in ("concurrency", "rps", "cpu", "memory"):
        errors.append(f"autoscaling.knative.dev/metric {metric!r} is not known")
    return errors


def kubernetes_errors(doc: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """A built-in kind against the Kubernetes schema, strict; [] when valid."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path) or "<root>"
        return [f"{path}: {exc.message}"]
    return []


#: The prometheus-operator release whose CRDs the monitors are checked against.
PROMETHEUS_OPERATOR_VERSION = "v0.93.0"
#: Kinds of monitoring.coreos.com/v1 the manifests use, and their CRD files.
PROMETHEUS_OPERATOR_CRDS = {
    "PodMonitor": "podmonitors-crd.yaml",
    "ServiceMonitor": "servicemonitors-crd.yaml",
    "PrometheusRule": "prometheusrules-crd.yaml",
}


def prometheus_operator_crd_dir() -> Path:
    env = os.environ.get("PROMETHEUS_OPERATOR_CRDS")
    if env:
        return Path(env)
    return ROOT.parent / "shared" / "prometheus-operator" / PROMETHEUS_OPERATOR_VERSION


@functools.cache
def _prometheus_operator_validator(kind: str) -> jsonschema.Draft7Validator:
    path = prometheus_operator_crd_dir() / PROMETHEUS_OPERATOR_CRDS[kind]
    if not path.exists():
        raise FileNotFoundError(
            f"{kind} CRD not found at {path}; set PROMETHEUS_OPERATOR_CRDS to the directory"
        )
    crd = yaml.safe_load(path.read_text())
    if crd.get("spec", {}).get("names", {}).get("kind") != kind:
        raise ValueError(f"{path} is not the {kind} CRD")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def prometheus_operator_errors(doc: dict[str, Any]) -> list[str]:
    """Where a monitoring.coreos.com/v1 object breaks its (strict) CRD
    schema; [] when it fits."""
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        return [f"apiVersion {doc.get('apiVersion')!r} is not monitoring.coreos.com/v1"]
    kind = doc.get("kind", "")
    if kind not in PROMETHEUS_OPERATOR_CRDS:
        return [f"kind {kind!r} is not one of {sorted(PROMETHEUS_OPERATOR_CRDS)}"]
    validator = _prometheus_operator_validator(kind)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Pod, a workload or a Knative Service."""
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    return dict(doc["spec"]["template"]["spec"])


def restricted_errors(spec: dict[str, Any]) -> list[str]:
    """The "restricted" Pod Security Standard (Kubernetes docs, v1.33 rules)."""
    errors: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            errors.append(f"{field} must not be true")
    for volume in spec.get("volumes", []):
        allowed = {
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        }
        kinds = set(volume) - {"name"}
        if not kinds <= allowed:
            errors.append(f"volume {volume['name']}: type {sorted(kinds - allowed)} not allowed")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            errors.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            errors.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            errors.append(f"{name}: may only add NET_BIND_SERVICE")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            errors.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            errors.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{name}: seccompProfile.type must be RuntimeDefault or Localhost")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                errors.append(f"{name}: hostPort must not be set")
    return errors
