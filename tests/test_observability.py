"""What operators plug in: the scrape configs, the alert rules and the
Grafana dashboard, rendered by the real ``helm`` and ``kubectl kustomize``,
checked against the prometheus-operator v0.93.0 CRD schemas, and the alerts
unit-tested by the real ``promtool`` (Debian's ``prometheus`` package).
tests/test_dashboard_live.py runs every query against a real Prometheus."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.render import CHART, KUSTOMIZE, ROOT, RenderError, Route, helm_template, routes
from e2e.validate import prometheus_operator_errors

from .conftest import run_python

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts.test.yaml"
MONITORING = "monitoring.coreos.com/v1"

ROUTES = routes()
MONITORED = [r for r in ROUTES if r.name.endswith("monitoring")]


def _alerts() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


ALERTS = [rule["alert"] for rule in _alerts()]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {r.id: r.render() for r in ROUTES}


def _kind(docs: list[dict[str, Any]], kind: str, api_version: str = MONITORING) -> dict[str, Any]:
    [doc] = [d for d in docs if d.get("apiVersion") == api_version and d.get("kind") == kind]
    return doc


def _dashboard_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [doc] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]
    return doc


# -- the scrape configs --------------------------------------------------------------


def test_monitoring_routes_exist_for_both_tools_and_both_modes() -> None:
    assert {(r.tool, r.mode) for r in MONITORED} == {
        (tool, mode) for tool in ("helm", "kustomize") for mode in ("knative", "kubernetes")
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_monitoring_objects_fit_the_prometheus_operator_crds(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    docs = [d for d in rendered[route.id] if d["apiVersion"] == MONITORING]
    if route in MONITORED:
        assert {d["kind"] for d in docs} == {
            "PodMonitor" if route.mode == "knative" else "ServiceMonitor",
            "PrometheusRule",
        }
    else:
        assert docs == [], "monitoring is off by default"
    for doc in docs:
        assert prometheus_operator_errors(doc) == [], doc["kind"]


def test_the_crd_check_catches_what_a_cluster_rejects(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The validator is not vacuous: each of these a cluster would refuse."""
    monitor = _kind(rendered["helm-monitoring"], "PodMonitor")
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert any("intervall" in e for e in prometheus_operator_errors(typo))
    number = copy.deepcopy(monitor)
    number["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert any("interval" in e for e in prometheus_operator_errors(number))
    action = copy.deepcopy(monitor)
    action["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    assert any("action" in e for e in prometheus_operator_errors(action))
    no_selector = copy.deepcopy(_kind(rendered["helm-kubernetes-monitoring"], "ServiceMonitor"))
    del no_selector["spec"]["selector"]
    assert any("selector" in e for e in prometheus_operator_errors(no_selector))
    rule = copy.deepcopy(_kind(rendered["helm-monitoring"], "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "a while"
    assert any("for" in e for e in prometheus_operator_errors(rule))


@pytest.mark.parametrize("route", [r for r in MONITORED if r.mode == "knative"], ids=lambda r: r.id)
def test_podmonitor_scrapes_the_user_port_of_the_services_pods(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    """Knative names the user container's port "user-port" whatever the
    Service calls it (knative/serving pkg/apis/serving/v1/revision_helpers.go,
    UserPortName); the monitor selects the revision pods by labels the
    Service puts on its template."""
    docs = rendered[route.id]
    monitor = _kind(docs, "PodMonitor")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "user-port"
    assert endpoint["path"] == "/metrics"
    service = _kind(docs, "Service", "serving.knative.dev/v1")
    pod_labels = service["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= pod_labels.items()


@pytest.mark.parametrize(
    "route", [r for r in MONITORED if r.mode == "kubernetes"], ids=lambda r: r.id
)
def test_servicemonitor_scrapes_the_services_named_port(
    rendered: dict[str, list[dict[str, Any]]], route: Route
) -> None:
    docs = rendered[route.id]
    monitor = _kind(docs, "ServiceMonitor")
    service = _kind(docs, "Service", "v1")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= service["metadata"]["labels"].items()


def test_helm_values_reach_the_monitors(rendered: dict[str, list[dict[str, Any]]]) -> None:
    values = yaml.safe_load((CHART / "ci" / "monitoring-values.yaml").read_text())["monitoring"]
    monitor = _kind(rendered["helm-monitoring"], "PodMonitor")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    wanted = values["podMonitor"]
    assert endpoint["interval"] == wanted["interval"] == "15s"
    assert endpoint["scrapeTimeout"] == wanted["scrapeTimeout"]
    assert endpoint["relabelings"] == wanted["relabelings"]
    assert endpoint["metricRelabelings"] == wanted["metricRelabelings"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = _kind(rendered["helm-monitoring"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = _dashboard_map(rendered["helm-monitoring"])
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"  # the default label
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "WebSockets"}
    plain = _dashboard_map(rendered["helm-kubernetes-monitoring"])
    assert plain["metadata"]["labels"]["team"] == "websockets"
    # a plain-mode PodMonitor scrapes the container's own port name
    [pod_monitor] = [
        d
        for d in helm_template(
            [CHART / "ci" / "kubernetes-values.yaml"],
            {"monitoring.podMonitor.enabled": "true"},
        )
        if d["kind"] == "PodMonitor"
    ]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http1"
    assert prometheus_operator_errors(pod_monitor) == []


def test_helm_refuses_a_servicemonitor_in_knative_mode() -> None:
    with pytest.raises(RenderError, match=r"monitoring\.serviceMonitor needs mode: kubernetes"):
        helm_template(set_values={"monitoring.serviceMonitor.enabled": "true"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("monitoring.podMonitor.interval", "30"),
        ("monitoring.podMonitor.scrapeTimeout", "ten seconds"),
        ("monitoring.podMonitor.relabelings[0].action", "rename"),
        ("monitoring.serviceMonitor.intervall", "30s"),
        ("monitoring.grafanaDashboard.labels.grafana_dashboard", "1"),  # a number, not "1"
    ],
)
def test_helm_rejects_bad_monitoring_values(key: str, value: str) -> None:
    with pytest.raises(RenderError, match="values don't meet the specifications of the schema"):
        helm_template(set_values={key: value})


# -- one source of truth ---------------------------------------------------------------


def test_rules_and_dashboard_have_one_source(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The chart reads chart/files/ as is; the kustomize component holds
    copies that scripts/gen_monitoring.py keeps current."""
    proc = run_python("scripts/gen_monitoring.py", "--check")
    assert proc.returncode == 0, proc.stdout
    rules = yaml.safe_load(RULES.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    for route in MONITORED:
        docs = rendered[route.id]
        assert _kind(docs, "PrometheusRule")["spec"] == rules, route.id
        data = _dashboard_map(docs)["data"]
        assert list(data) == ["websocket-server.json"]
        assert json.loads(data["websocket-server.json"]) == dashboard, route.id


def test_a_stale_kustomize_copy_is_caught(tmp_path: Path) -> None:
    """--check is not vacuous: an edited copy is reported."""
    copy_dir = tmp_path / "repo"
    for part in ("chart/files", "kustomize/components/monitoring", "scripts"):
        shutil.copytree(ROOT / part, copy_dir / part)
    component = copy_dir / "kustomize/components/monitoring/prometheusrule.yaml"
    component.write_text(component.read_text().replace("> 0.05", "> 0.5"))
    proc = run_python(str(copy_dir / "scripts/gen_monitoring.py"), "--check")
    assert proc.returncode == 1
    assert "prometheusrule.yaml is stale" in proc.stdout


def test_each_kustomize_component_says_what_it_is_for() -> None:
    for name in ("monitoring", "podmonitor", "servicemonitor"):
        text = (KUSTOMIZE / "components" / name / "kustomization.yaml").read_text()
        assert text.startswith("# ")
        assert "kind: Component" in text


# -- the alerts ----------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: scripts/setup.sh installs Debian's prometheus package"
    return found


def _promtool_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    check = _promtool_run("check", "rules", RULES)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    test = _promtool_run("test", "rules", RULE_TESTS)
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook() -> None:
    """Each alert is exercised by tests/promtool/alerts.test.yaml, and its
    runbook_url points at the docs site's section with that name
    (docs/guides/runbooks.md; scripts/docs.sh checks the built anchors)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])}
    assert tested == set(ALERTS)
    fired = {
        t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t["exp_alerts"]
    }
    assert fired == set(ALERTS)
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs" / "guides" / "runbooks.md").read_text().splitlines()
        if line.startswith("#")
    }
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["site_url"]
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]
        base, anchor = url.split("#")
        assert base == f"{site}guides/runbooks.html", url
        assert anchor == rule["alert"].lower(), url
        assert anchor in headings, url
        assert rule["labels"]["severity"] in {"warning", "critical"}


def _broken(tmp_path: Path, alert: str, mutate: str) -> Path:
    """A copy of the rules and their tests, with ``alert``'s expression
    made never to fire, to fire with no labels at all, or with its
    thresholds at 0 (so that the healthy series fire too)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                expr = rule["expr"].strip()
                rule["expr"] = {
                    "never": f"({expr}) > Inf",
                    "always": f"({expr}) or vector(1)",
                    # every threshold down to 0: the healthy series fire
                    "loose": re.sub(r"> [0-9.]+", ">= 0", expr),
                }[mutate]
    (tmp_path / "chart" / "files").mkdir(parents=True)
    (tmp_path / "chart" / "files" / RULES.name).write_text(yaml.safe_dump(rules))
    (tmp_path / "tests" / "promtool").mkdir(parents=True)
    target = tmp_path / "tests" / "promtool" / RULE_TESTS.name
    shutil.copy(RULE_TESTS, target)
    return target


@pytest.mark.parametrize("mutate", ["never", "always", "loose"])
@pytest.mark.parametrize("alert", ALERTS)
def test_promtool_fails_when_an_alert_is_broken(tmp_path: Path, alert: str, mutate: str) -> None:
    """The unit tests can fail: an alert that never fires, or that fires on
    a healthy pod as well, is caught by promtool."""
    proc = _promtool_run("test", "rules", _broken(tmp_path, alert, mutate))
    assert proc.returncode != 0, proc.stdout
    assert f"alertname: {alert}," in proc.stdout + proc.stderr


# -- the dashboard -------------------------------------------------------------------


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    """What Grafana needs to import it (tests/test_dashboard_live.py runs
    its queries): unique panel ids, panels that do not overlap on the
    24-column grid, every query on the data source variable, and the
    panels docs/guides/operate.md lists."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "knative-websocket-server"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert "$__rate_interval" in target["expr"] or "rate(" not in target["expr"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for words in (
        "open connections per pod",
        "opened and closed",
        "duration percentiles",
        "messages per second by type",
        "bytes per second by type",
        "errors per second by kind",
        "handshake refusals",
        "slow consumers",
        "log events dropped",
        "the drain",
    ):
        assert words in titles, words
