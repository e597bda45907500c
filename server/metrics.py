"""The server's metrics: counters, a gauge and a histogram, as plain numbers.

The handlers bump plain numbers (an addition costs nanoseconds; a
``prometheus_client`` ``Counter.inc()`` takes a lock), and
:mod:`server.exposition` turns them into Prometheus text when ``/metrics``
is scraped. This module does not import ``prometheus_client``: its import
(with ``http.server`` and ``wsgiref`` behind it) took about a tenth of the
server's start, which Knative's scale from zero waits on; it is imported a
second after the server is listening, or at the first scrape.

Each :class:`Metrics` has its own numbers, so several servers in one
process (the test suite runs many) never share counters.

No label value comes from a client as is: each labelled counter takes its
values from a fixed set (:func:`close_code_label`, :data:`ERROR_KINDS`,
:data:`HANDSHAKE_REASONS`, :data:`CLOSE_CAUSES`), anything else is folded into a bucket, so no
client can add a series. Every series there can be is listed at start.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from .wire import REFUSALS, CloseCause, CloseCode, ErrorKind

__all__ = [
    "ACCEPT_ERRORS",
    "CLOSE_CAUSES",
    "CLOSE_CODE_LABELS",
    "ERROR_KINDS",
    "HANDSHAKE_REASONS",
    "MESSAGE_TYPES",
    "Counter",
    "Gauge",
    "Histogram",
    "LabelledCounter",
    "MessageCounts",
    "Metrics",
    "close_code_label",
]

_NS = "websocket"
#: The ``type`` label of the message counters, by ``is_binary``.
MESSAGE_TYPES = ("text", "binary")

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
#: Every value of ``websocket_connections_closed_by_cause_total``'s ``cause``.
CLOSE_CAUSES = tuple(c.value for c in CloseCause)
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


class Counter:
    """A count that only goes up, with the time it started (Prometheus'
    ``_created`` series)."""

    __slots__ = ("created", "doc", "name", "value")

    def __init__(self, name: str = "", doc: str = "") -> None:
        self.name = name
        self.doc = doc
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LabelledCounter:
    """A counter with one label whose values come from a fixed set:
    ``labels(anything)`` folds the value into that set, so it never makes a
    new series. Every allowed value is there (at 0) from the start."""

    __slots__ = ("_fold", "children", "doc", "label", "name")

    def __init__(
        self, name: str, doc: str, label: str, fold: Callable[[Any], str], values: tuple[str, ...]
    ) -> None:
        self.name = name
        self.doc = doc
        self.label = label
        self._fold = fold
        #: The series, in the order of ``values``.
        self.children = {value: Counter() for value in values}

    def labels(self, value: Any) -> Counter:
        return self.children[self._fold(value)]


class Gauge:
    """A number that goes up and down."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Histogram:
    """Observations counted in buckets by upper bound (the last is +Inf),
    with their sum."""

    __slots__ = ("bounds", "counts", "created", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = (*sorted(bounds), float("inf"))
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class MessageCounts:
    """Messages and payload bytes, in and out, indexed by ``is_binary``."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = [0, 0]
        self.messages_out = [0, 0]
        self.bytes_in = [0, 0]
        self.bytes_out = [0, 0]


class Metrics:
    """The server's counters, gauge and histogram."""

    def __init__(self) -> None:
        self.open_connections = Gauge(f"{_NS}_open_connections", "WebSocket connections open now")
        self.connections_opened = Counter(
            f"{_NS}_connections_opened", "WebSocket connections accepted"
        )
        self.connections_closed = LabelledCounter(
            f"{_NS}_connections_closed",
            "WebSocket connections ended, by close code (1006: no close frame; "
            "3xxx, 4xxx: the registered and private ranges)",
            "code",
            close_code_label,
            CLOSE_CODE_LABELS,
        )
        self.closed_by_cause = LabelledCounter(
            f"{_NS}_connections_closed_by_cause",
            "WebSocket connections ended, by what ended them (max_age: "
            "WS_MAX_CONNECTION_AGE; drain: SIGTERM; client, dropped, error, app)",
            "cause",
            _one_of(CLOSE_CAUSES),
            CLOSE_CAUSES,
        )
        self.handshakes_rejected = LabelledCounter(
            f"{_NS}_handshakes_rejected",
            "Upgrade requests refused, by reason",
            "reason",
            _one_of(HANDSHAKE_REASONS),
            HANDSHAKE_REASONS,
        )
        self.connection_duration = Histogram(
            f"{_NS}_connection_duration_seconds",
            "How long WebSocket connections stayed open",
            (0.1, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.errors = LabelledCounter(
            f"{_NS}_errors",
            "WebSocket errors, by kind",
            "kind",
            _one_of(ERROR_KINDS),
            ERROR_KINDS,
        )
        self.accept_errors = LabelledCounter(
            f"{_NS}_accept_errors",
            "Connections the listener could not accept, by errno "
            "(EMFILE/ENFILE: out of file descriptors; accepting pauses)",
            "errno",
            _one_of(ACCEPT_ERRORS),
            ACCEPT_ERRORS,
        )
        #: The per-message counters, bumped by the handlers.
        self.messages = MessageCounts()
        #: Everything above but the message counts, in the order scraped.
        self.series: tuple[Gauge | Counter | LabelledCounter | Histogram, ...] = (
            self.open_connections,
            self.connections_opened,
            self.connections_closed,
            self.closed_by_cause,
            self.handshakes_rejected,
            self.connection_duration,
            self.errors,
            self.accept_errors,
        )
        #: Where :mod:`server.exposition` keeps its Prometheus registry.
        self.exposition: Any = None
