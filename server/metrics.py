"""Prometheus metrics, served at ``/metrics``.

Each :class:`Metrics` owns its own registry, so several servers in one
process (the test suite runs many) never share counters. Labelled children
that the hot path touches are bound once here, not looked up per message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_NS = "websocket"


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
        messages_in = Counter(
            f"{_NS}_messages_received", "Messages received, by type", ["type"], registry=r
        )
        messages_out = Counter(
            f"{_NS}_messages_sent", "Messages sent, by type", ["type"], registry=r
        )
        bytes_in = Counter(
            f"{_NS}_received_bytes", "Message payload bytes received, by type", ["type"], registry=r
        )
        bytes_out = Counter(
            f"{_NS}_sent_bytes", "Message payload bytes sent, by type", ["type"], registry=r
        )
        self.errors = Counter(f"{_NS}_errors", "WebSocket errors, by kind", ["kind"], registry=r)
        # Bound children for the per-message path, keyed by "is binary".
        self.messages_in = {False: messages_in.labels("text"), True: messages_in.labels("binary")}
        self.messages_out = {
            False: messages_out.labels("text"),
            True: messages_out.labels("binary"),
        }
        self.bytes_in = {False: bytes_in.labels("text"), True: bytes_in.labels("binary")}
        self.bytes_out = {False: bytes_out.labels("text"), True: bytes_out.labels("binary")}

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
