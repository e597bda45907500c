"""Prometheus metrics, served at ``/metrics``.

The per-message counters are plain integers that the handlers bump (an
addition costs nanoseconds; a ``prometheus_client`` ``Counter.inc()`` takes a
lock), and a collector turns them into Prometheus counters when ``/metrics``
is scraped. Rarer events - connections, closes, errors, refusals - use the
client library's own types.

Each :class:`Metrics` owns its own registry, so several servers in one
process (the test suite runs many) never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "MessageCounts", "Metrics"]

_NS = "websocket"
_TYPES = ("text", "binary")


class MessageCounts:
    """Messages and payload bytes, in and out, indexed by ``is_binary``."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = [0, 0]
        self.messages_out = [0, 0]
        self.bytes_in = [0, 0]
        self.bytes_out = [0, 0]


class _MessageCollector(Collector):
    def __init__(self, counts: MessageCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        for name, doc, values in (
            ("messages_received", "Messages received, by type", c.messages_in),
            ("messages_sent", "Messages sent, by type", c.messages_out),
            ("received_bytes", "Message payload bytes received, by type", c.bytes_in),
            ("sent_bytes", "Message payload bytes sent, by type", c.bytes_out),
        ):
            family = CounterMetricFamily(f"{_NS}_{name}", doc, labels=["type"])
            for index, kind in enumerate(_TYPES):
                family.add_metric([kind], values[index])
            yield family


class Metrics:
    """The server's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_connections = Gauge(
            f"{_NS}_open_connections", "WebSocket connections open now", registry=r
        )
        self.connections_opened = Counter(
            f"{_NS}_connections_opened", "WebSocket connections accepted", registry=r
        )
        self.connections_closed = Counter(
            f"{_NS}_connections_closed",
            "WebSocket connections ended, by close code (1006: no close frame)",
            ["code"],
            registry=r,
        )
        self.handshakes_rejected = Counter(
            f"{_NS}_handshakes_rejected",
            "Upgrade requests refused, by reason",
            ["reason"],
            registry=r,
        )
        self.connection_duration = Histogram(
            f"{_NS}_connection_duration_seconds",
            "How long WebSocket connections stayed open",
            buckets=(0.1, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.errors = Counter(f"{_NS}_errors", "WebSocket errors, by kind", ["kind"], registry=r)
        #: The per-message counters, bumped by the handlers.
        self.messages = MessageCounts()
        r.register(_MessageCollector(self.messages))

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
