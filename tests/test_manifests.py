"""The Helm chart and the Kustomize overlays, rendered by the real tools and
checked as a cluster would check them - and against the server itself."""

from __future__ import annotations

import copy
import re
import urllib.request
from typing import Any

import pytest
import yaml

from e2e.render import (
    CHART,
    ROOT,
    RenderError,
    Route,
    find,
    helm_template,
    is_hook,
    knative_service,
    kustomize_build,
    routes,
)
from e2e.validate import (
    knative_schema_errors,
    knative_webhook_errors,
    kubernetes_errors,
    pod_spec,
    restricted_errors,
)

from .conftest import ServerProcess, requirement_pins, run_python

ROUTES = routes()
NAMES = sorted({r.name for r in ROUTES})
KNATIVE_ROUTES = [r for r in ROUTES if r.mode == "knative"]
PLAIN_ROUTES = [r for r in ROUTES if r.mode == "kubernetes"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {r.id: r.render() for r in ROUTES}


def _service(rendered: dict[str, list[dict[str, Any]]], route: Route) -> dict[str, Any]:
    return knative_service(rendered[route.id])


def _container(service: dict[str, Any]) -> dict[str, Any]:
    [container] = service["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(service: dict[str, Any]) -> dict[str, str]:
    return env_values(_container(service))


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain ``value`` settings (those from a Secret left out:
    :func:`env_secrets`)."""
    return {e["name"]: e["value"] for e in container["env"] if "valueFrom" not in e}


def env_secrets(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The settings a container takes from a Secret: name -> (secret, key)."""
    out = {}
    for e in container["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = (ref["name"], ref["key"])
    return out


def test_both_tools_have_every_route() -> None:
    by_tool = {tool: {r.name for r in ROUTES if r.tool == tool} for tool in ("helm", "kustomize")}
    assert by_tool["helm"] == by_tool["kustomize"]
    assert {"base", "dev", "prod", "kubernetes"} <= by_tool["helm"]


# -- validity ---------------------------------------------------------------------


@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_knative_service_fits_the_crd_schema(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    assert knative_schema_errors(_service(rendered, route)) == []


@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_knative_service_passes_the_webhook_rules(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    assert knative_webhook_errors(_service(rendered, route)) == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_every_pod_meets_the_restricted_standard(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    for doc in rendered[route.id]:
        template = doc.get("spec", {}).get("template", {})
        if doc["kind"] == "Pod" or "containers" in template.get("spec", {}):
            assert restricted_errors(pod_spec(doc)) == [], doc["kind"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_kubernetes_kinds_fit_their_schemas(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    builtin = [d for d in rendered[route.id] if "." not in d["apiVersion"].split("/")[0]]
    for doc in builtin:
        assert kubernetes_errors(doc) == [], doc["kind"]


def test_schema_check_catches_what_a_cluster_rejects(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The validators are not vacuous: each catches a real mistake."""
    service = _service(rendered, KNATIVE_ROUTES[0])
    typo = copy.deepcopy(service)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in knative_schema_errors(typo))
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["template"]["spec"]["timeoutSeconds"] = "600"
    assert any("timeoutSeconds" in e for e in knative_schema_errors(wrong_type))

    bad = copy.deepcopy(service)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": 9090}, {"containerPort": 8081}]
    container["env"].append({"name": "PORT", "value": "8080"})
    container["readinessProbe"]["httpGet"]["port"] = 8080
    bad["spec"]["template"]["spec"]["timeoutSeconds"] = 3600
    errors = " | ".join(knative_webhook_errors(bad))
    for expected in (
        "more than one container port",
        "port name 'http'",
        "9090 is reserved",
        "env PORT is reserved",
        "readinessProbe.httpGet.port",
        "timeoutSeconds 3600",
    ):
        assert expected in errors

    bad_image = copy.deepcopy(service)
    bad_image["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/x/y@sha256:abc"
    assert any("not a valid reference" in e for e in knative_webhook_errors(bad_image))

    insecure = copy.deepcopy(service)
    insecure["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    errors = " | ".join(restricted_errors(pod_spec(insecure)))
    for expected in (
        "allowPrivilegeEscalation",
        "drop ALL",
        "runAsNonRoot",
        "runAsUser",
        "seccompProfile",
    ):
        assert expected in errors

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}]},
    }
    assert any("bogus" in e for e in kubernetes_errors(pod))


# -- what the manifests say ------------------------------------------------------------


@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_labels_reach_the_revision_template(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    service = _service(rendered, route)
    for labels in (
        service["metadata"]["labels"],
        service["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels["app.kubernetes.io/name"] == "websocket-server"
        assert labels["app.kubernetes.io/part-of"] == "knative-websocket-server"
        assert labels["app.kubernetes.io/component"] == "server"


@pytest.mark.parametrize("route", KNATIVE_ROUTES, ids=lambda r: r.id)
def test_websocket_knobs_agree_with_each_other(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    service = _service(rendered, route)
    spec = service["spec"]["template"]["spec"]
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    env = _env(service)
    assert service["metadata"]["name"] == "websocket-server"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    # The server's own cap matches Knative's hard limit per pod.
    assert int(env["WS_MAX_CONNECTIONS"]) == spec["containerConcurrency"]
    # Pings inside the shortest common idle cut of a load balancer or proxy
    # in front of the cluster (60 s); Kourier itself cuts no idle stream.
    assert 0 < float(env["WS_PING_INTERVAL"]) < 60
    # The drain fits in the grace period Knative gives (timeoutSeconds).
    assert float(env["WS_DRAIN_TIMEOUT"]) < spec["timeoutSeconds"] <= 600
    # Knative's clocks (docs/guides/knative.md: The knobs that matter): no response-start
    # timer (left unset it is defaulted to 300 s and cuts every WebSocket
    # there), no idle timer (a fixed lifetime once the connection is
    # hijacked), and the server's clean close before the cut at timeoutSeconds.
    assert spec["responseStartTimeoutSeconds"] == 0
    assert "idleTimeoutSeconds" not in spec
    assert int(env["WS_MAX_CONNECTION_AGE"]) == default_max_age(spec["timeoutSeconds"])
    port = _container(service)["ports"][0]
    assert port == {"name": "http1", "containerPort": 8080}


def default_max_age(timeout_seconds: int) -> int:
    """The maximum connection age the chart derives and kustomize states:
    timeoutSeconds minus max(10 s, 10 %)."""
    return timeout_seconds - max(10, -(-timeout_seconds // 10))


def test_overlays_say_what_they_are_for(rendered: dict[str, list[dict[str, Any]]]) -> None:
    by_id = {r.id: _service(rendered, r) for r in KNATIVE_ROUTES}
    dev, prod = by_id["kustomize-dev"], by_id["kustomize-prod"]
    assert _container(dev)["image"] == "dev.local/knative-websocket-server:dev"
    assert _container(dev)["imagePullPolicy"] == "IfNotPresent"
    assert (
        dev["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
        == "0"
    )
    assert _env(dev)["WS_LOG_LEVEL"] == "debug"
    assert (
        prod["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
        == "1"
    )
    assert _env(prod)["WS_LOG_CONTENT"] == "false"
    assert _container(prod)["resources"]["limits"]["memory"] == "512Mi"


def _without_tool_labels(service: dict[str, Any]) -> dict[str, Any]:
    s = copy.deepcopy(service)
    s["metadata"].pop("labels", None)
    s["metadata"].pop("namespace", None)
    s["spec"]["template"]["metadata"].pop("labels", None)
    return s


@pytest.mark.parametrize("name", sorted({r.name for r in KNATIVE_ROUTES}))
def test_helm_and_kustomize_render_the_same_service(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    helm = _without_tool_labels(knative_service(rendered[f"helm-{name}"]))
    kustomize = _without_tool_labels(knative_service(rendered[f"kustomize-{name}"]))
    assert helm == kustomize


DIGEST_REFERENCE = re.compile(
    r"ghcr\.io/knative-websocket-server/knative-websocket-server@sha256:[0-9a-f]{64}"
)


def test_both_tools_pin_the_same_digest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """kustomize's images: digest and the chart's image.digest render one
    repository@sha256:... reference, with no tag beside it (the full
    Services are compared above; the validators check both routes)."""
    helm = _container(knative_service(rendered["helm-digest"]))["image"]
    kustomize = _container(knative_service(rendered["kustomize-digest"]))["image"]
    assert helm == kustomize
    assert DIGEST_REFERENCE.fullmatch(helm), helm
    overlay = yaml.safe_load((ROOT / "kustomize/overlays/digest/kustomization.yaml").read_text())
    values = yaml.safe_load((CHART / "ci/digest-values.yaml").read_text())
    assert [overlay["images"][0]["digest"]] == [values["image"]["digest"]]
    assert helm.endswith("@" + values["image"]["digest"])
    # The test hook runs the same pinned image.
    [hook] = [d for d in rendered["helm-digest"] if is_hook(d)]
    assert hook["spec"]["containers"][0]["image"] == helm


# -- plain Kubernetes mode -----------------------------------------------------------


def _plain(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = rendered[route.id]
    return find(docs, "apps/v1", "Deployment"), find(docs, "v1", "Service")


@pytest.mark.parametrize("route", PLAIN_ROUTES, ids=lambda r: r.id)
def test_plain_mode_runs_the_knative_container(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    """The same container as the Knative Service, plus the probe port plain
    Kubernetes requires; a grace period longer than the drain."""
    deployment, service = _plain(rendered, route)
    assert not [d for d in rendered[route.id] if d["apiVersion"].startswith("serving.knative.dev")]
    knative = knative_service(rendered[f"{route.tool}-{knative_twin(route.name)}"])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    expected = copy.deepcopy(_container(knative))
    for probe in ("readinessProbe", "livenessProbe"):
        expected[probe]["httpGet"]["port"] = "http1"
    assert container == expected
    env = env_values(container)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(env["WS_DRAIN_TIMEOUT"])
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http1", "protocol": "TCP"}
    ]


def _without_selection_labels(doc: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    d["metadata"].pop("labels", None)
    d["metadata"].pop("namespace", None)
    spec = d["spec"]
    spec.pop("selector", None)
    if "template" in spec:
        spec["template"]["metadata"].pop("labels", None)
    return d


def knative_twin(name: str) -> str:
    """The Knative route whose container a plain route runs: "kubernetes" ->
    "base", "kubernetes-backplane" -> "backplane"."""
    return name.removeprefix("kubernetes").removeprefix("-") or "base"


@pytest.mark.parametrize("name", sorted({r.name for r in PLAIN_ROUTES}))
def test_plain_mode_helm_and_kustomize_agree(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    by_id = {r.id: r for r in PLAIN_ROUTES}
    helm = _plain(rendered, by_id[f"helm-{name}"])
    kustomize = _plain(rendered, by_id[f"kustomize-{name}"])
    for h, k in zip(helm, kustomize, strict=True):
        assert _without_selection_labels(h) == _without_selection_labels(k)


def test_plain_mode_options_render_valid_objects() -> None:
    docs = helm_template(
        set_values={
            "mode": "kubernetes",
            "kubernetes.hpa.enabled": "true",
            "kubernetes.pdb.enabled": "true",
            "kubernetes.service.port": "8081",
        }
    )
    kinds = sorted(d["kind"] for d in docs if not is_hook(d))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for doc in docs:
        assert kubernetes_errors(doc) == [], doc["kind"]
    deployment = find(docs, "apps/v1", "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    [hook] = [d for d in docs if is_hook(d)]
    assert (
        hook["spec"]["containers"][0]["args"][0]
        == "ws://websocket-server.default.svc.cluster.local:8081/ws"
    )


def test_plain_mode_refuses_a_grace_period_shorter_than_the_drain() -> None:
    with pytest.raises(
        RenderError,
        match=r"drainTimeout \(20\) must be below kubernetes.terminationGracePeriodSeconds \(15\)",
    ):
        helm_template(
            set_values={"mode": "kubernetes", "kubernetes.terminationGracePeriodSeconds": "15"}
        )


# -- the chart's guard rails ----------------------------------------------------------


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        ({"replicas": "3"}, "additional properties 'replicas' not allowed"),
        ({"server.pingIntervall": "10"}, "additional properties 'pingIntervall' not allowed"),
        ({"server.maxConnections": "lots"}, "/server/maxConnections': got string, want integer"),
        ({"autoscaling.minScale": "-1"}, "/autoscaling/minScale': minimum: got -1, want 0"),
        ({"timeoutSeconds": "0"}, "/timeoutSeconds': minimum: got 0, want 1"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy'"),
        ({"server.allowedOrigins[0]": "example.com"}, "/server/allowedOrigins/0'"),
        ({"extraEnv[0].name": "PORT"}, "/extraEnv/0/name'"),
        ({"server.maxConnectionAge": "-1"}, "/server/maxConnectionAge': minimum: got -1"),
        ({"server.maxConnectionAge": "soon"}, "/server/maxConnectionAge': got string"),
        ({"backplane.redisUrl": "http://redis:6379"}, "/backplane/redisUrl'"),
        ({"backplane.redisUrl": "redis-server:6379"}, "/backplane/redisUrl'"),
        ({"backplane.existingSecret.name": "My_Secret"}, "/backplane/existingSecret/name'"),
        ({"backplane.existingSecret.key": ""}, "/backplane/existingSecret/key'"),
        ({"backplane.url": "redis://r"}, "additional properties 'url' not allowed"),
    ],
    ids=[
        "unknown-key",
        "typo-key",
        "wrong-type",
        "negative-scale",
        "zero-timeout",
        "bad-enum",
        "bad-origin",
        "reserved-env",
        "negative-age",
        "wordy-age",
        "backplane-not-redis",
        "backplane-no-scheme",
        "backplane-bad-secret-name",
        "backplane-empty-key",
        "backplane-unknown-key",
    ],
)
def test_helm_rejects_bad_values_with_a_clear_error(
    set_values: dict[str, str], message: str
) -> None:
    with pytest.raises(RenderError) as info:
        helm_template(set_values=set_values)
    assert message in str(info.value)


def test_helm_refuses_a_name_knative_cannot_use() -> None:
    with pytest.raises(RenderError, match=r"at most 57"):
        helm_template(release="a-very-long-release-name-for-a-knative-service-xyz")
    assert (
        knative_service(helm_template(release="short"))["metadata"]["name"]
        == "short-websocket-server"
    )


def test_helm_refuses_a_drain_longer_than_the_grace_period() -> None:
    with pytest.raises(RenderError, match=r"drainTimeout \(700\) must be below timeoutSeconds"):
        helm_template(set_values={"server.drainTimeout": "700"})


@pytest.mark.parametrize(
    ("timeout", "age"), [(600, 540), (60, 50), (30, 20), (21, 11), (3600, 3240), (601, 540)]
)
def test_helm_derives_the_max_age_from_timeout_seconds(timeout: int, age: int) -> None:
    """Unset, the age is timeoutSeconds minus max(10 s, 10 %), in both modes."""
    for mode in ("knative", "kubernetes"):
        docs = helm_template(set_values={"mode": mode, "timeoutSeconds": str(timeout)})
        if mode == "knative":
            service = knative_service(docs)
        else:
            service = {"spec": find(docs, "apps/v1", "Deployment")["spec"]}
        assert _env(service)["WS_MAX_CONNECTION_AGE"] == str(age) == str(default_max_age(timeout))


@pytest.mark.parametrize("age", ["600", "601", "86400"])
def test_helm_refuses_a_max_age_not_below_timeout_seconds(age: str) -> None:
    """values.schema.json cannot compare two fields: the template refuses it."""
    with pytest.raises(
        RenderError,
        match=rf"server.maxConnectionAge \({age}\) must be below timeoutSeconds \(600\): "
        r"Knative cuts a connection at timeoutSeconds with no close frame",
    ):
        helm_template(set_values={"server.maxConnectionAge": age})


def test_helm_takes_an_explicit_max_age() -> None:
    for age in ("0", "1", "599"):
        service = knative_service(helm_template(set_values={"server.maxConnectionAge": age}))
        assert _env(service)["WS_MAX_CONNECTION_AGE"] == age
    # Plain Kubernetes cuts nothing at timeoutSeconds: any age goes.
    docs = helm_template(set_values={"mode": "kubernetes", "server.maxConnectionAge": "7200"})
    [container] = find(docs, "apps/v1", "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "WS_MAX_CONNECTION_AGE", "value": "7200"} in container["env"]


def test_helm_refuses_a_timeout_too_short_for_the_default_age() -> None:
    with pytest.raises(RenderError, match=r"timeoutSeconds \(10\) leaves no room"):
        helm_template(set_values={"timeoutSeconds": "10", "server.drainTimeout": "5"})


def test_helm_values_reach_the_service() -> None:
    service = knative_service(
        helm_template(
            set_values={
                "server.allowedOrigins[0]": "https://a.example",
                "server.allowedOrigins[1]": "https://b.example",
                "image.digest": "sha256:" + "a" * 64,
                "extraEnv[0].name": "EXTRA",
                "extraEnv[0].value": "on",
            }
        )
    )
    env = _env(service)
    assert env["WS_ALLOWED_ORIGINS"] == "https://a.example,https://b.example"
    assert env["EXTRA"] == "on"
    assert _container(service)["image"].endswith("@sha256:" + "a" * 64)


# -- the backplane (WS_BACKPLANE_URL) -------------------------------------------------


def _server_container(docs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    if mode == "knative":
        return _container(knative_service(docs))
    [container] = find(docs, "apps/v1", "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("mode", ["knative", "kubernetes"])
def test_helm_takes_the_backplane_url_from_a_secret(mode: str) -> None:
    """backplane.existingSecret renders WS_BACKPLANE_URL from a secretKeyRef,
    in both modes: the URL (and its password) stays out of the manifest."""
    docs = helm_template(
        set_values={
            "mode": mode,
            "backplane.existingSecret.name": "chat-redis",
            "backplane.existingSecret.key": "redis-url",
        }
    )
    container = _server_container(docs, mode)
    assert env_secrets(container) == {"WS_BACKPLANE_URL": ("chat-redis", "redis-url")}
    assert "WS_BACKPLANE_URL" not in env_values(container)
    assert "redis://" not in yaml.safe_dump_all(docs)


@pytest.mark.parametrize("mode", ["knative", "kubernetes"])
def test_helm_takes_a_plain_backplane_url_for_development(mode: str) -> None:
    url = "rediss://:s3cret@redis.example:6380/2"
    container = _server_container(
        helm_template(set_values={"mode": mode, "backplane.redisUrl": url}), mode
    )
    assert env_values(container)["WS_BACKPLANE_URL"] == url
    assert env_secrets(container) == {}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_only_the_backplane_routes_set_a_backplane(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    """Unset, the server fans out in-process (no WS_BACKPLANE_URL at all);
    the backplane routes take it from the Secret the component names."""
    if route.mode == "knative":
        container = _container(_service(rendered, route))
    else:
        [container] = _plain(rendered, route)[0]["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    if route.name.endswith("backplane"):
        assert names.count("WS_BACKPLANE_URL") == 1
        assert env_secrets(container) == {"WS_BACKPLANE_URL": ("websocket-server-backplane", "url")}
    else:
        assert "WS_BACKPLANE_URL" not in names


def test_both_tools_name_the_same_backplane_secret() -> None:
    """The component's Secret reference is the chart's ci values' (the
    rendered objects are compared whole above)."""
    patch = yaml.safe_load(
        (ROOT / "kustomize/components/backplane-redis/backplane-env.yaml").read_text()
    )
    [op] = patch
    ref = op["value"]["valueFrom"]["secretKeyRef"]
    for name in ("backplane", "kubernetes-backplane"):
        values = yaml.safe_load((CHART / f"ci/{name}-values.yaml").read_text())
        assert values["backplane"]["existingSecret"] == ref, name


def test_helm_refuses_two_backplane_urls() -> None:
    """values.schema.json cannot compare two fields: the template refuses a
    plain URL beside a Secret, naming both, whichever mode."""
    for mode in ("knative", "kubernetes"):
        with pytest.raises(
            RenderError,
            match=r"set one of backplane.redisUrl and backplane.existingSecret.name, not both",
        ):
            helm_template(
                set_values={
                    "mode": mode,
                    "backplane.redisUrl": "redis://redis:6379/0",
                    "backplane.existingSecret.name": "chat-redis",
                }
            )


def test_helm_test_hook_runs_the_probe_client() -> None:
    docs = helm_template(namespace="ws-test")
    [hook] = [d for d in docs if is_hook(d)]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = hook["spec"]["containers"]
    assert container["command"] == ["python", "-m", "server.probe"]
    assert container["args"][0] == "ws://websocket-server.ws-test.svc.cluster.local/ws"
    assert not [d for d in helm_template(set_values={"test.enabled": "false"}) if is_hook(d)]
    # A cluster without DNS or a Service proxy: the probe goes where it is told.
    docs = helm_template(set_values={"test.url": "ws://10.1.2.3:8080/ws"})
    [hook] = [d for d in docs if is_hook(d)]
    assert hook["spec"]["containers"][0]["args"][0] == "ws://10.1.2.3:8080/ws"


def test_kustomize_base_is_valid_alone() -> None:
    [service] = kustomize_build(ROOT / "kustomize" / "base")
    assert service["kind"] == "Service"


def test_chart_readme_values_table_is_current() -> None:
    """chart/README.md's table is generated from values.yaml's comments."""
    proc = run_python("scripts/chart_values_table.py", "--check")
    assert proc.returncode == 0, proc.stdout
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    for key in ("mode", "server.pingInterval", "kubernetes.terminationGracePeriodSeconds"):
        assert f"| `{key}` |" in readme
    assert values["mode"] == "knative"


# -- the contract: manifests and server agree ----------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_server_runs_with_exactly_the_rendered_settings(
    rendered: dict[str, list[dict[str, Any]]],
    route: Route,
    server_process: type[ServerProcess],
) -> None:
    """Start the real server with the container's env and args (PORT as
    Knative sets it), hit the probe paths the manifest names, and echo
    through the probe client."""
    if route.mode == "knative":
        container = _container(_service(rendered, route))
    else:
        [container] = _plain(rendered, route)[0]["spec"]["template"]["spec"]["containers"]
    # A setting from a Secret (WS_BACKPLANE_URL: the user's Redis) is left
    # out: the echo server fans nothing out, and the Secret's value is not
    # in the manifests (e2e/test_backplane.py runs it with a real Redis).
    env = env_values(container)
    server = server_process(env=env, args=container.get("args", []))
    server.wait_ready()
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        with urllib.request.urlopen(server.url + path, timeout=5) as response:
            assert response.status == 200, probe
    result = run_python("-m", "server.probe", server.ws_url, "--count", "4")
    assert result.returncode == 0, result.stderr
    listening = server.wait_event("listening")
    assert listening["max_connections"] == int(env["WS_MAX_CONNECTIONS"])
    # The server reads the maximum age the manifests set (0 would mean off).
    assert listening["max_connection_age"] == float(env["WS_MAX_CONNECTION_AGE"]) > 0


# -- the image ---------------------------------------------------------------------


def test_image_pins_match_the_tested_pins() -> None:
    runtime = requirement_pins(ROOT / "requirements" / "runtime.txt")
    ci = requirement_pins(ROOT / "requirements" / "ci.txt")
    assert runtime
    for name, version in runtime.items():
        assert ci.get(name) == version, name


def test_dockerfile_runs_the_server_as_non_root_in_exec_form() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "server"]' in dockerfile
    assert "USER 65532:65532" in dockerfile
    assert "ARG BASE_IMAGE=" in dockerfile


def test_dockerfile_builds_the_chat_example_as_its_own_target() -> None:
    """`docker build --target chat` runs the chat example on the server's
    runtime; the default (last) target stays the echo server; the build
    context lets examples/chat in (e2e/test_backplane.py runs the image)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE)
    assert ("runtime", "chat") in stages
    assert stages[-1] == ("runtime", "server")
    chat = dockerfile.split("FROM runtime AS chat", 1)[1].split("\nFROM ", 1)[0]
    assert 'ENTRYPOINT ["python", "-m", "examples.chat"]' in chat
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!examples/__init__.py", "!examples/chat/"} <= set(ignore)
