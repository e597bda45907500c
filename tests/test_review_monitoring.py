"""Review of issue 22's monitors: a scrape timeout longer than the scrape
interval. The prometheus-operator refuses such a PodMonitor or
ServiceMonitor whole ("scrapeTimeout ... greater than scrapeInterval",
its ``validateScrapeIntervalAndTimeout``): nothing is scraped, and the only
sign is the operator's ``PrometheusOperatorRejectedResources``. The chart's
README says the timeout is "at most interval", so the chart refuses to
render one that is not, instead of rendering a monitor that is silently
dropped. Real ``helm template``.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.render import CHART, RenderError, helm_template
from e2e.validate import prometheus_operator_errors

_KUBERNETES = CHART / "ci" / "kubernetes-values.yaml"


def _monitor(kind: str, interval: str, timeout: str) -> list[dict[str, Any]]:
    key = "podMonitor" if kind == "PodMonitor" else "serviceMonitor"
    values = [_KUBERNETES] if kind == "ServiceMonitor" else []
    docs = helm_template(
        values,
        {
            f"monitoring.{key}.enabled": "true",
            f"monitoring.{key}.interval": interval,
            f"monitoring.{key}.scrapeTimeout": timeout,
        },
    )
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
@pytest.mark.parametrize(
    ("interval", "timeout"),
    [("10s", "20s"), ("1m", "61s"), ("500ms", "1s"), ("1m30s", "2m"), ("1h", "1d")],
)
def test_helm_refuses_a_scrape_timeout_longer_than_the_interval(
    kind: str, interval: str, timeout: str
) -> None:
    with pytest.raises(RenderError, match=r"scrapeTimeout .* is longer than .*interval"):
        _monitor(kind, interval, timeout)


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
@pytest.mark.parametrize(
    ("interval", "timeout"),
    [
        ("30s", "10s"),
        ("1m", "60s"),
        ("1m30s", "90s"),
        ("2m", "1m59s999ms"),
        ("1d", "1h"),
        ("30s", ""),
    ],
)
def test_a_scrape_timeout_within_the_interval_renders(
    kind: str, interval: str, timeout: str
) -> None:
    [monitor] = _monitor(kind, interval, timeout)
    assert prometheus_operator_errors(monitor) == []
    endpoints = monitor["spec"].get("podMetricsEndpoints") or monitor["spec"]["endpoints"]
    assert endpoints[0]["interval"] == interval
    assert endpoints[0].get("scrapeTimeout", "") == timeout
