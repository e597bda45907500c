"""``/metrics``: the server's numbers (:mod:`server.metrics`) as Prometheus
text, by ``prometheus_client``.

Imported when it is first needed, never at start: ``prometheus_client``
brings ``http.server``, ``wsgiref`` and ``email`` with it, and took about a
tenth of the server's start (Knative's scale from zero waits on that).
``server.http.warm_up_metrics`` imports it on a thread a moment after the
server listens, so that the first scrape does not hold up the event loop
with the import either.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as _ClientCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .events import log_events_dropped
from .metrics import MESSAGE_TYPES, Counter, Gauge, Histogram, LabelledCounter, Metrics

__all__ = ["CONTENT_TYPE_LATEST", "registry", "render"]

#: One of prometheus_client's own counters, in no registry: whether its
#: samples include ``_created`` tells whether the operator turned those
#: series off (``PROMETHEUS_DISABLE_CREATED_SERIES=True``, or
#: ``prometheus_client.disable_created_metrics()``), which the library's
#: own types obey at each scrape and the families below would not.
_CREATED_PROBE = _ClientCounter("created_probe", "", registry=None)


def _created_series() -> bool:
    return any(
        sample.name.endswith("_created")
        for family in _CREATED_PROBE.collect()
        for sample in family.samples
    )


class _Collector(Collector):
    """Reads a :class:`Metrics` at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        created = _created_series()
        for series in self.metrics.series:
            yield _family(series, created)
        family = CounterMetricFamily(
            "websocket_log_events_dropped", "Log lines dropped because stdout did not keep up"
        )
        dropped = self.metrics.log_events_dropped
        family.add_metric([], dropped.value if dropped is not None else log_events_dropped())
        yield family
        c = self.metrics.messages
        for name, doc, values in (
            ("messages_received", "Messages received, by type", c.messages_in),
            ("messages_sent", "Messages sent, by type", c.messages_out),
            ("received_bytes", "Message payload bytes received, by type", c.bytes_in),
            ("sent_bytes", "Message payload bytes sent, by type", c.bytes_out),
        ):
            family = CounterMetricFamily(f"websocket_{name}", doc, labels=["type"])
            for index, kind in enumerate(MESSAGE_TYPES):
                family.add_metric([kind], values[index])
            yield family
        restarts = self.metrics.worker_restarts
        if restarts is not None:  # WS_WORKERS > 1 (server/podstate.py)
            yield _family(restarts, created)


def _family(series: Gauge | Counter | LabelledCounter | Histogram, created: bool) -> Metric:
    if isinstance(series, Gauge):
        gauge = GaugeMetricFamily(series.name, series.doc)
        gauge.add_metric([], series.value)
        return gauge
    if isinstance(series, Counter):
        counter = CounterMetricFamily(series.name, series.doc)
        counter.add_metric([], series.value, created=series.created if created else None)
        return counter
    if isinstance(series, LabelledCounter):
        labelled = CounterMetricFamily(series.name, series.doc, labels=[series.label])
        for value, child in series.children.items():
            labelled.add_metric([value], child.value, created=child.created if created else None)
        return labelled
    histogram = HistogramMetricFamily(series.name, series.doc)
    buckets, total = [], 0
    for bound, count in zip(series.bounds, series.counts, strict=True):
        total += count
        buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
    histogram.add_metric([], buckets, series.sum)
    if created:
        histogram.add_sample(f"{series.name}_created", {}, series.created)
    return histogram


def registry(metrics: Metrics) -> CollectorRegistry:
    """The Prometheus registry that reads ``metrics`` (one per Metrics)."""
    if metrics.exposition is None:
        made = CollectorRegistry(auto_describe=True)
        made.register(_Collector(metrics))
        metrics.exposition = made
    result: CollectorRegistry = metrics.exposition
    return result


def render(metrics: Metrics) -> bytes:
    """``metrics`` in Prometheus text format."""
    return generate_latest(registry(metrics))
