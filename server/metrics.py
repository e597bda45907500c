"""Prometheus metrics, served at ``/metrics``.

The per-message counters are plain integers that the handlers bump (an
addition costs nanoseconds; a ``prometheus_client`` ``Counter.inc()`` takes a
lock), and a collector turns them into Prometheus counters when ``/metrics``
is scraped. Rarer events - connections, closes, errors, refusals - use the
client library's own types.

Each :class:`Metrics` owns its own registry, so several servers in one
process (the test suite runs many) never share counters.

No label value comes from a client as is: each labelled counter takes its
values from a fixed set (:func:`close_code_label`, :data:`ERROR_KINDS`,
:data:`HANDSHAKE_REASONS`), anything else is folded into a bucket, so no
client can add a series. Every series there can be is listed at start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .wire import REFUSALS, CloseCode, ErrorKind

__all__ = [
    "ACCEPT_ERRORS",
    "CLOSE_CODE_LABELS",
    "CONTENT_TYPE_LATEST",
    "ERROR_KINDS",
    "HANDSHAKE_REASONS",
    "MessageCounts",
    "Metrics",
    "close_code_label",
]

_NS = "websocket"
_TYPES = ("text", "binary")

#: Close codes RFC 6455 (7.4.1) and the IANA registry name; each is a label
#: of its own. 1005 and 1006 are never sent but are what the server records
#: for a close frame without a code and for no close frame at all.
_NAMED_CODES = tuple(int(c) for c in CloseCode)
#: Every value the ``code`` label takes.
CLOSE_CODE_LABELS = (*(str(c) for c in _NAMED_CODES), "3xxx", "4xxx", "other")
#: Every value of ``websocket_errors_total``'s ``kind`` ("other" for anything else).
ERROR_KINDS = (*(k.value for k in ErrorKind), "other")
#: Every value of ``websocket_handshakes_rejected_total``'s ``reason``.
HANDSHAKE_REASONS = (*(k.value for k in REFUSALS), "other")
#: Every value of ``websocket_accept_errors_total``'s ``errno``.
ACCEPT_ERRORS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "other")


def close_code_label(code: int | str) -> str:
    """The ``code`` label for a close code: a named code as itself, the
    ranges for libraries (3000-3999) and applications (4000-4999) as
    ``3xxx``/``4xxx``, anything else as ``other``."""
    try:
        value = int(code)
    except (TypeError, ValueError):
        return "other"
    if value in _NAMED_CODES:
        return str(value)
    if 3000 <= value <= 3999:
        return "3xxx"
    if 4000 <= value <= 4999:
        return "4xxx"
    return "other"


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    known = frozenset(allowed)

    def fold(value: Any) -> str:
        return value if value in known else "other"

    return fold


class _FoldedCounter:
    """A labelled counter whose one label value is folded into a fixed set
    before it is used: ``labels(anything)`` never makes a new series. Every
    allowed value is created at start, so the series are there (at 0)
    before the first event."""

    def __init__(self, counter: Counter, fold: Callable[[Any], str], values: tuple[str, ...]):
        self._counter = counter
        self._fold = fold
        for value in values:
            counter.labels(value)

    def labels(self, value: Any) -> Any:
        return self._counter.labels(self._fold(value))


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


class _LogDropCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        from .events import log_events_dropped

        family = CounterMetricFamily(
            f"{_NS}_log_events_dropped",
            "Log lines dropped because stdout did not keep up",
        )
        family.add_metric([], log_events_dropped())
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
        self.connections_closed = _FoldedCounter(
            Counter(
                f"{_NS}_connections_closed",
                "WebSocket connections ended, by close code (1006: no close frame; "
                "3xxx, 4xxx: the registered and private ranges)",
                ["code"],
                registry=r,
            ),
            close_code_label,
            CLOSE_CODE_LABELS,
        )
        self.handshakes_rejected = _FoldedCounter(
            Counter(
                f"{_NS}_handshakes_rejected",
                "Upgrade requests refused, by reason",
                ["reason"],
                registry=r,
            ),
            _one_of(HANDSHAKE_REASONS),
            HANDSHAKE_REASONS,
        )
        self.connection_duration = Histogram(
            f"{_NS}_connection_duration_seconds",
            "How long WebSocket connections stayed open",
            buckets=(0.1, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.errors = _FoldedCounter(
            Counter(f"{_NS}_errors", "WebSocket errors, by kind", ["kind"], registry=r),
            _one_of(ERROR_KINDS),
            ERROR_KINDS,
        )
        self.accept_errors = _FoldedCounter(
            Counter(
                f"{_NS}_accept_errors",
                "Connections the listener could not accept, by errno "
                "(EMFILE/ENFILE: out of file descriptors; accepting pauses)",
                ["errno"],
                registry=r,
            ),
            _one_of(ACCEPT_ERRORS),
            ACCEPT_ERRORS,
        )
        r.register(_LogDropCollector())
        #: The per-message counters, bumped by the handlers.
        self.messages = MessageCounts()
        r.register(_MessageCollector(self.messages))

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
