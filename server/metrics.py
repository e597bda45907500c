"""The server's metrics: counters, a gauge and a histogram, as plain numbers.

The handlers bump plain numbers (an addition costs nanoseconds; a
``prometheus_client`` ``Counter.inc()`` takes a lock), and
:mod:`server.exposition` turns them into Prometheus text when ``/metrics``
is scraped. This module does not import ``prometheus_client``: its import
(with ``http.server`` and ``wsgiref`` behind it) took about a tenth of the
server's start, which Knative's scale from zero waits on; it is imported a
second after the server is listening, or at the first scrape.

Each :class:`Metrics` has its own numbers, so several servers in one
process (the test suite runs many) never share counters. With
``WS_WORKERS`` > 1 each worker's numbers live in its own part of a shared
memory region instead (``Metrics(slots)``, see :mod:`server.podstate`):
the same objects and methods, each number a float64 slot that the worker
alone writes and any worker reads to sum the pod's totals.

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

from .kinds import REFUSALS, CloseCause, ErrorKind
from .wire import CloseCode

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
    "Slots",
    "close_code_label",
    "slot_count",
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


class Slots:
    """Float64 numbers in a buffer (shared memory), handed out in order.

    Every process builds its :class:`Metrics` in the same order, so the
    same slot holds the same number in each worker's part."""

    __slots__ = ("created", "used", "view")

    def __init__(self, view: memoryview[Any], created: float) -> None:
        self.view: memoryview[float] = view if view.format == "d" else view.cast("d")
        #: When the pod's numbers started (the ``_created`` series).
        self.created = created
        self.used = 0

    def take(self, count: int) -> int:
        """The index of ``count`` fresh slots."""
        at = self.used
        if at + count > len(self.view):
            raise ValueError(f"{len(self.view)} metric slots are not enough")
        self.used = at + count
        return at


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
        #: Per bucket, not cumulative (slots in shared memory with workers).
        self.counts: list[int] = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _InSlot:
    """A number kept in a slot of shared memory instead of an attribute:
    the ``value`` of :class:`_SharedCounter` and :class:`_SharedGauge`."""

    __slots__ = ()
    _view: memoryview[float]
    _at: int

    @property
    def value(self) -> float:
        return float(self._view[self._at])

    @value.setter
    def value(self, value: float) -> None:
        self._view[self._at] = value

    def inc(self, amount: float = 1.0) -> None:
        self._view[self._at] += amount


class _SharedCounter(_InSlot, Counter):
    """A :class:`Counter` kept in a slot. Made over a slot that holds a
    count already (a worker started again), it goes on from there."""

    __slots__ = ("_at", "_view")

    def __init__(self, slots: Slots, name: str = "", doc: str = "") -> None:
        self.name = name
        self.doc = doc
        self.created = slots.created
        self._view = slots.view
        self._at = slots.take(1)


class _SharedGauge(_InSlot, Gauge):
    """A :class:`Gauge` kept in a slot."""

    __slots__ = ("_at", "_view")

    def __init__(self, slots: Slots, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self._view = slots.view
        self._at = slots.take(1)

    def dec(self, amount: float = 1.0) -> None:
        self._view[self._at] -= amount


class _SharedHistogram(Histogram):
    """A :class:`Histogram` whose bucket counts and sum are slots."""

    __slots__ = ("_at", "_view")

    def __init__(self, slots: Slots, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.created = slots.created
        self._view = slots.view
        at = slots.take(len(bounds))
        self.counts = slots.view[at : at + len(bounds)]  # type: ignore[assignment]
        self._at = slots.take(1)

    @property
    def sum(self) -> float:
        return float(self._view[self._at])

    @sum.setter
    def sum(self, value: float) -> None:
        self._view[self._at] = value

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self._view[self._at] += value


def _shared(
    series: Gauge | Counter | LabelledCounter | Histogram, slots: Slots
) -> Gauge | Counter | LabelledCounter | Histogram:
    """``series`` (just made, at zero) as the same kind of metric in slots."""
    if isinstance(series, Gauge):
        return _SharedGauge(slots, series.name, series.doc)
    if isinstance(series, Counter):
        return _SharedCounter(slots, series.name, series.doc)
    if isinstance(series, Histogram):
        return _SharedHistogram(slots, series.name, series.doc, series.bounds)
    labelled = LabelledCounter(
        series.name, series.doc, series.label, series._fold, tuple(series.children)
    )
    labelled.children = {value: _SharedCounter(slots) for value in series.children}
    return labelled


class MessageCounts:
    """Messages and payload bytes, in and out, indexed by ``is_binary``
    (lists of two, or two slots each)."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self, slots: Slots | None = None) -> None:
        # Typed as the lists; with slots, views of float64 slots that are
        # indexed and added to the same way.
        self.messages_in: list[int]
        self.messages_out: list[int]
        self.bytes_in: list[int]
        self.bytes_out: list[int]
        if slots is None:
            self.messages_in = [0, 0]
            self.messages_out = [0, 0]
            self.bytes_in = [0, 0]
            self.bytes_out = [0, 0]
            return
        view: Any = slots.view
        self.messages_in, self.messages_out, self.bytes_in, self.bytes_out = (
            view[at : at + 2] for at in (slots.take(2) for _ in range(4))
        )


class Metrics:
    """The server's counters, gauge and histogram: plain numbers, or with
    ``slots`` a worker's part of the pod's shared numbers (which then also
    hold ``log_events_dropped`` and ``worker_restarts``)."""

    def __init__(self, slots: Slots | None = None) -> None:
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
        self.drain_started = Gauge(
            f"{_NS}_drain_started_timestamp_seconds",
            "When the SIGTERM drain started, in Unix seconds (0: not draining)",
        )
        self.backplane_connected = Gauge(
            f"{_NS}_backplane_connected",
            "Processes connected to the WS_BACKPLANE_URL backplane (Redis): 1 per "
            "process, summed over the pod's workers; 0 with the in-process one",
        )
        self.backplane_reconnects = Counter(
            f"{_NS}_backplane_reconnects",
            "Times a process connected to the backplane again after losing it",
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
            self.drain_started,
            self.backplane_connected,
            self.backplane_reconnects,
        )
        #: With workers: the log lines this worker's sink dropped (without,
        #: :func:`server.events.log_events_dropped` tells).
        self.log_events_dropped: Counter | None = None
        #: With workers: how often the supervisor started this worker again.
        self.worker_restarts: Counter | None = None
        #: Where :mod:`server.exposition` keeps its Prometheus registry.
        self.exposition: Any = None
        if slots is not None:
            self._share(slots)

    def _share(self, slots: Slots) -> None:
        """Put every number in ``slots``: each series made above (whatever
        its attribute) becomes the same metric kept in slots, in the order
        of :attr:`series`, then the message counts and the workers' two."""
        made = {id(series): _shared(series, slots) for series in self.series}
        for name, value in list(vars(self).items()):
            if id(value) in made:
                setattr(self, name, made[id(value)])
        self.series = tuple(made[id(series)] for series in self.series)
        self.messages = MessageCounts(slots)
        self.log_events_dropped = _SharedCounter(slots, f"{_NS}_log_events_dropped")
        self.worker_restarts = _SharedCounter(
            slots,
            f"{_NS}_worker_restarts",
            "Workers started again after one died (WS_WORKERS > 1)",
        )


def slot_count() -> int:
    """How many slots one :class:`Metrics` takes."""
    slots = Slots(memoryview(bytearray(8 * 4096)), 0.0)
    Metrics(slots)
    return slots.used
