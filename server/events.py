"""Structured event logging.

The Knative sample logs one line for every WebSocket event - ``open``,
``message``, ``close``, ``error`` - with the peer's address. We keep those
four names as the ``event`` field of each record, and add what an operator
reading the logs of a pod needs: close codes, durations, sizes and a
truncated, optional preview of the content.

Records go through the standard :mod:`logging` machinery, so anything that
configures logging (a test's ``caplog``, an embedding application) sees them.
The formatters write JSON lines (for log collectors) or ``key=value`` text
(for people).

Much of what is logged comes from clients, so every record is bounded and
cannot be forged:

- every string field is cut to :data:`FIELD_CHARS` characters (the content
  preview has its own limit, ``WS_LOG_PREVIEW_BYTES``);
- control and separator characters (C0, DEL, C1 with U+0085, U+2028,
  U+2029, and the bidirectional overrides) are written as escapes in both
  formats, so no field can start a line, move the cursor or reorder text;
- :class:`MessageLogBudget` bounds the ``message`` events of a connection
  (``WS_LOG_MESSAGE_RATE``, ``WS_LOG_MESSAGE_BURST``); what it leaves out
  is summed up on ``close``;
- the sink holds at most :data:`BUFFER_BYTES` of lines that stdout has not
  taken; past that it drops them and counts them
  (``websocket_log_events_dropped_total``). A thread of its own writes to
  stdout, so a slow reader of the pod's log never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import json
import logging
import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "BUFFER_BYTES",
    "EVENT_LOGGER",
    "FIELD_CHARS",
    "Event",
    "EventBudget",
    "EventSink",
    "JsonFormatter",
    "MessageLogBudget",
    "TextFormatter",
    "configure_logging",
    "count_drops_in",
    "emit",
    "emit_message",
    "escape_text",
    "log_events_dropped",
]


class Event(enum.StrEnum):
    """The ``event`` field of every record the server writes.

    Each member's docstring names the record's fields (after ``time``,
    ``level`` and ``event``); docs/reference/events.md's table is generated
    from them (``python scripts/gen_docs.py``), and tests/test_docs.py checks
    that every ``emit()`` in ``server/`` names one of these."""

    OPEN = "open"
    """A WebSocket opened: ``peer``, ``path``, ``via``, ``compression``,
    ``subprotocol``, ``trace_id`` (see below)."""

    MESSAGE = "message"
    """A message came in: ``peer``, ``via``, ``type`` (text/binary), ``size``
    (bytes), ``content`` (text, or binary as hex, cut to
    ``WS_LOG_PREVIEW_BYTES``), ``truncated``."""

    CLOSE = "close"
    """A WebSocket ended: ``peer``, ``via``, ``code``, ``reason``, ``cause``,
    ``duration`` (s), ``messages_in``, ``messages_out``; ``clean: false`` when
    the peer never answered the close frame of a closing handshake the
    server started (a failure - an ``error`` event - waits for no answer:
    RFC 6455 7.1.7); ``messages_unlogged`` and
    ``bytes_unlogged`` when the message budget left some out."""

    ERROR = "error"
    """Something failed: ``kind``, ``detail``, ``peer``, ``via``, and ``code``
    or ``status`` (see the error kinds below); ``unlogged`` when the refusal
    budget left some out."""

    REQUEST = "request"
    """A plain HTTP request (probes and ``/metrics`` at debug level):
    ``method``, ``path``, ``status``, ``ms``, ``peer``; ``unlogged`` when the
    request budget left some out."""

    LISTENING = "listening"
    """The server listens: ``address``, ``pid``, ``max_message_bytes``,
    ``ping_interval``, ``max_connection_age``, ``max_connections``,
    ``compression``, ``event_loop``, ``wire`` (``compiled`` or ``python``),
    ``startup_ms``."""

    SIGNAL = "signal"
    """A signal came: ``signal``, ``action`` (drain, exit now, or pass to
    workers)."""

    DRAIN = "drain"
    """The SIGTERM drain started: ``open``, ``timeout``, ``spread`` (the
    window used)."""

    DRAINED = "drained"
    """The drain ended: ``seconds``, ``aborted`` (connections dropped at
    ``WS_DRAIN_TIMEOUT``; a warning when above 0)."""

    EXIT = "exit"
    """The process exits: ``status``."""

    WORKERS = "workers"
    """With ``WS_WORKERS`` > 1, the supervisor starts: ``count``, ``pid``."""

    BACKPLANE = "backplane"
    """The Redis backplane (``WS_BACKPLANE_URL``) is connected: ``state``
    (``connected``), ``url`` (the password as ``***``), ``down_seconds`` after
    an outage (the outage itself is one ``error`` event,
    ``backplane_unavailable``)."""

    LOG = "log"
    """A line of another logger (Tornado's own): ``logger``, ``msg``,
    ``exception`` with a traceback, ``unlogged`` when the budget for such
    lines left some out."""

    LOG_EVENTS_DROPPED = "log_events_dropped"
    """Stdout did not keep up: ``dropped`` (since the last note), ``total``."""


#: The logger every WebSocket and lifecycle event is written to.
EVENT_LOGGER = logging.getLogger("server.events")

#: One encoder for every record: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode
_LEVEL_NAMES = {n: logging.getLevelName(n).lower() for n in (10, 20, 30, 40, 50)}
_ROOT = logging.getLogger()
#: The sink configure_logging installed, for emit's direct path.
_sink: EventSink | None = None
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: Longest string field in a record, in characters (a longer one is cut and
#: ends with "..."). Client-controlled fields - peer, path, origin, close
#: reason, error details - are all strings.
FIELD_CHARS = 256
#: Fields with bounds of their own: the preview (WS_LOG_PREVIEW_BYTES) and
#: a traceback (written by the server, not the client).
_UNCAPPED = frozenset({"content", "exception"})
#: Most bytes of formatted lines the sink holds for stdout; past it lines
#: are dropped and counted.
BUFFER_BYTES = 1 << 20
#: Seconds between two ``log_events_dropped`` notes while lines are dropped.
_DROP_NOTE_INTERVAL = 10.0

#: Characters never written raw: C0, DEL, C1 (U+0085 among them), the line
#: and paragraph separators, and the bidirectional overrides and isolates.
_CONTROL = [
    *range(0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x061C,  # the Arabic letter mark, a bidi control
    *range(0x200B, 0x2010),  # zero-width space and joiners, LRM, RLM
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0xFEFF,  # zero-width no-break space (a BOM)
]
#: json.dumps(ensure_ascii=False) escapes C0 itself; these it writes raw.
_JSON_EXTRA = {c: f"\\u{c:04x}" for c in _CONTROL if c >= 0x7F}
_JSON_EXTRA_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _JSON_EXTRA) + "]")
_TEXT_ESCAPES = {c: f"\\u{c:04x}" for c in _CONTROL}
_TEXT_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"})
#: A text value is quoted (and escaped) when it has any of these.
_TEXT_QUOTE_RE = re.compile('[ "=\\\\' + "".join(re.escape(chr(c)) for c in _CONTROL) + "]")


def escape_text(value: str) -> str:
    """``value`` for the text format: as is when it is one plain word, else
    in double quotes with every control or separator character escaped."""
    if value and not _TEXT_QUOTE_RE.search(value):
        return value
    return '"' + value.translate(_TEXT_ESCAPES) + '"'


def _safe_json(line: str) -> str:
    """A JSON line with DEL, C1, U+2028/U+2029 and bidi controls escaped too."""
    if _JSON_EXTRA_RE.search(line) is None:
        return line
    return line.translate(_JSON_EXTRA)


def _cap(value: Any) -> Any:
    if isinstance(value, str) and len(value) > FIELD_CHARS:
        return value[: FIELD_CHARS - 3] + "..."
    return value


def _capped(fields: dict[str, Any]) -> dict[str, Any]:
    for key, value in fields.items():
        if isinstance(value, str) and len(value) > FIELD_CHARS and key not in _UNCAPPED:
            return {k: v if k in _UNCAPPED else _cap(v) for k, v in fields.items()}
    return fields


class MessageLogBudget:
    """How many ``message`` events one connection may log: ``burst`` at
    once, then ``rate`` a second (a token bucket; ``rate`` 0: all of them).

    The handler holds one per connection. Per message it checks one
    comparison, ``now >= due`` (``due``: when the bucket next holds a whole
    token; -inf while tokens are left), and calls :meth:`spend` only for a
    message it logs; what was left out is the rest of the connection's
    messages, summed up in the ``close`` event (:meth:`summary`). The same
    bucket answers :meth:`allow` for one kind of event (:class:`EventBudget`)."""

    __slots__ = ("burst", "due", "logged", "logged_bytes", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = time.monotonic()
        #: The time.monotonic() from which the next message may be logged.
        self.due = -math.inf
        #: Messages logged and their bytes (see :meth:`summary`).
        self.logged = 0
        self.logged_bytes = 0

    def spend(self, now: float, size: int) -> None:
        """A message of ``size`` bytes is logged at ``now`` (``now >= due``):
        take its token and move ``due`` to when the next one is whole."""
        self.logged += 1
        self.logged_bytes += size
        rate = self.rate
        if not rate:
            return
        tokens = min(self.tokens + (now - self.stamp) * rate, self.burst) - 1.0
        self.tokens = tokens
        self.stamp = now
        self.due = now if tokens >= 1.0 else now + (1.0 - tokens) / rate

    def allow(self, size: int) -> bool:
        """Whether to log one event now (spending its token if so)."""
        now = time.monotonic()
        if now < self.due:
            return False
        self.spend(now, size)
        return True

    def summary(self, messages: int, size: int) -> dict[str, int]:
        """Fields for the ``close`` event of a connection that received
        ``messages`` messages of ``size`` bytes in all: those not logged."""
        if messages <= self.logged:
            return {}
        return {
            "messages_unlogged": messages - self.logged,
            "bytes_unlogged": size - self.logged_bytes,
        }


class EventBudget:
    """How often one kind of event (a request, a refused upgrade) is
    logged: ``burst`` at once, then ``rate`` a second, for the process; and,
    for each connection, ``connection_burst`` then ``connection_rate``
    (keyed by an object that lives as long as the connection: Tornado's
    ``request.connection.context``). An event logged after some were left
    out carries their number, ``unlogged``: each one is either a line or
    counted on a later line."""

    def __init__(
        self, rate: float, burst: int, connection_rate: float = 0.0, connection_burst: int = 0
    ) -> None:
        self.process = MessageLogBudget(rate, burst)
        self.connection_rate = connection_rate
        self.connection_burst = connection_burst
        self._connections: weakref.WeakKeyDictionary[Any, MessageLogBudget] = (
            weakref.WeakKeyDictionary()
        )
        #: Events left out since the last one logged.
        self.unlogged = 0

    def allow(self, connection: Any = None) -> dict[str, int] | None:
        """None to leave this event out (it is counted); else the fields to
        add to it (``unlogged``, when some were left out before it)."""
        if connection is not None and self.connection_burst:
            try:
                budget = self._connections.get(connection)
                if budget is None:
                    budget = MessageLogBudget(self.connection_rate, self.connection_burst)
                    self._connections[connection] = budget
            except TypeError:  # not weakly referable: the process budget only
                budget = None
            if budget is not None and not budget.allow(0):
                self.unlogged += 1
                return None
        if not self.process.allow(0):
            self.unlogged += 1
            return None
        if not self.unlogged:
            return {}
        fields = {"unlogged": self.unlogged}
        self.unlogged = 0
        return fields


def _direct_sink() -> EventSink | None:
    """The server's sink, when it is the only place events go."""
    sink = _sink
    if (
        sink is not None
        and not EVENT_LOGGER.handlers
        and len(_ROOT.handlers) == 1
        and _ROOT.handlers[0] is sink
    ):
        return sink
    return None


def emit(event: str, level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    """Log one event; ``fields`` become top-level keys of the record.

    When the server's own :class:`EventSink` is the only place records go
    (as configured by :func:`configure_logging`), the event is written to it
    directly: no ``LogRecord`` is built, which is most of what logging a
    message would cost. As soon as anything else listens - a test's
    ``caplog``, a handler an embedding application adds, a traceback to
    format - the event takes the standard path through :mod:`logging`.
    """
    if not EVENT_LOGGER.isEnabledFor(level):
        return
    fields = _capped(fields)
    sink = _direct_sink()
    if sink is not None and exc_info is None:
        sink.write_event(level, event, fields)
        return
    # makeRecord + handle, not Logger.log: that would also walk the stack
    # for the caller's file and line, which says nothing here.
    record = EVENT_LOGGER.makeRecord(
        EVENT_LOGGER.name,
        level,
        __file__,
        0,
        event,
        (),
        exc_info,
        extra={"event": event, "fields": fields},
    )
    EVENT_LOGGER.handle(record)


def emit_message(
    peer: str,
    kind: str,
    size: int,
    content: str | None,
    truncated: bool,
    via: str | None = None,
) -> None:
    """The ``message`` event, the one logged per message: the same record
    as ``emit("message", ...)``, written as a JSON line with a template
    when the direct path is open (see :func:`emit`). ``via``: the socket
    peer, when the client came through a proxy."""
    if not EVENT_LOGGER.isEnabledFor(logging.INFO):
        return
    sink = _direct_sink()
    if sink is not None and sink.json:
        line = (
            f'{{"time":"{_now()}","level":"info","event":"message",'
            f'"peer":{_json_string(peer)},"type":"{kind}","size":{size}'
        )
        if via is not None:
            line += f',"via":{_json_string(via)}'
        if content is not None:
            line += f',"content":{_ENCODE(content)}'
        if truncated:
            line += ',"truncated":true'
        sink.append(_safe_json(line + "}"))
        return
    fields: dict[str, Any] = {"peer": _cap(peer), "type": kind, "size": size}
    if via is not None:
        fields["via"] = _cap(via)
    if content is not None:
        fields["content"] = content
    if truncated:
        fields["truncated"] = True
    emit("message", **fields)


def _json_string(text: str) -> str:
    """A peer as a JSON string; short ones (any address) from a cache, so
    the cache holds at most 4,096 entries of at most 64 characters."""
    if len(text) > 64:
        return _ENCODE(_cap(text))
    return _cached_json_string(text)


@functools.lru_cache(maxsize=4096)
def _cached_json_string(text: str) -> str:
    return _ENCODE(text)


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


_last_ms = -1
_last_stamp = ""


def _now() -> str:
    """The time as JSON lines carry it; computed once per millisecond."""
    global _last_ms, _last_stamp
    ms = int(time.time() * 1000)
    if ms != _last_ms:
        _last_ms = ms
        _last_stamp = f"{_second(ms // 1000)}.{ms % 1000:03d}Z"
    return _last_stamp


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] | None = getattr(record, "fields", None)
    if fields is not None:
        return fields
    # A record from another logger: keep whatever `extra` it carried.
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``event``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or "log",
        }
        if not hasattr(record, "event"):
            doc["logger"] = record.name
            doc["msg"] = _cap(record.getMessage())
        doc.update(_capped(_fields(record)))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return _safe_json(_ENCODE(doc))


def _text_line(timestamp: str, levelname: str, event: str, fields: dict[str, Any]) -> str:
    """One text line: the event name is the server's own (a plain word)."""
    parts = [f"{timestamp} {levelname:<7} {escape_text(event)}"]
    for key, value in fields.items():
        # Not a string: ASCII-only JSON, every control character escaped.
        text = escape_text(value) if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{escape_text(str(key))}={text}")
    return " ".join(parts)


class TextFormatter(logging.Formatter):
    """``time LEVEL event key=value ...`` for a person at a terminal, and
    for a logfmt parser: a record from another logger (Tornado's own, whose
    messages can carry a client's Host header or request line) is the event
    ``log`` with ``logger=`` and ``msg=`` fields, the message quoted and
    escaped like any other value; a traceback is the field ``exception``,
    escaped too, so nothing a client wrote can start a line or a field."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        fields = _fields(record)
        if not event:
            event = "log"
            extra = fields
            fields = {"logger": record.name, "msg": record.getMessage()}
            fields.update((k, v) for k, v in extra.items() if k not in fields)
        fields = _capped(fields)
        if record.exc_info:
            fields = {**fields, "exception": self.formatException(record.exc_info)}
        return _text_line(_timestamp(record), record.levelname, event, fields)


#: Seconds the log writer waits after a write, gathering the next lines.
_WRITER_GATHER = 0.005


class _FdWriter:
    """Writes bytes to a file descriptor from a thread of its own, holding at
    most ``limit`` bytes that the descriptor has not taken yet.

    The event loop only appends under a lock; a blocked ``write(2)`` (a
    full pipe, a slow log collector) blocks this thread, never the loop.
    When the backlog is full, :meth:`put` refuses and the caller drops."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A fork copies neither the thread nor (safely) its lock: start afresh.
        self._cond = threading.Condition(threading.RLock())
        self._chunks: collections.deque[bytes] = collections.deque()
        self.pending = 0
        self._thread: threading.Thread | None = None
        self._broken = False

    def room(self) -> int:
        return self.limit - self.pending

    def put(self, data: bytes) -> bool:
        with self._cond:
            if self._broken:
                return True  # stdout is gone: nothing to count as dropped
            if self.pending + len(data) > self.limit:
                return False
            self._chunks.append(data)
            self.pending += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks:
                    self._cond.wait()
                data = b"".join(self._chunks)
                self._chunks.clear()
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:  # stdout gone: nothing left to tell
                with self._cond:
                    self._broken = True
                    self._chunks.clear()
                    self.pending = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self.pending -= len(data)
                self._cond.notify_all()
            # Lines that come one at a time (a few thousand a second) would
            # each wake this thread: the loop's notify and the thread's turn
            # for the GIL cost more than the line. Sleeping a moment after a
            # write lets them gather (puts meanwhile find no waiter to wake).
            time.sleep(_WRITER_GATHER)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for everything put to be written."""
        with self._cond:
            self._cond.wait_for(lambda: self.pending <= 0 or self._broken, timeout)


def _fileno(stream: IO[str]) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class EventSink(logging.Handler):
    """Where the server's logs go: a stream (stdout), written once per
    event-loop iteration instead of once per line, so that under load many
    events share one write to the pipe. :func:`emit` hands it events directly
    (:meth:`write_event`); records from other loggers come through
    :meth:`emit` like any handler's.

    With a real file descriptor (stdout), a writer thread does the writing
    and at most ``buffer_bytes`` wait for it: lines past that are dropped
    and counted in :attr:`dropped` (a note says how many, at most once
    every 10 s). Other streams (a test's StringIO) are written directly."""

    def __init__(self, stream: IO[str], fmt: str, buffer_bytes: int = BUFFER_BYTES) -> None:
        super().__init__()
        self.stream = stream
        self.json = fmt == "json"
        self.setFormatter(JsonFormatter() if self.json else TextFormatter())
        self.buffer_bytes = buffer_bytes
        self._lines: list[str] = []
        self._chars = 0
        self._flush_scheduled = False
        #: Lines dropped because stdout did not keep up, since start.
        self.dropped = 0
        #: Records of other loggers than the events': 100, then 10 a second,
        #: Tornado's (which any client can cause) apart from the app's own
        #: (and asyncio's), so that a flood of one cannot silence the other.
        self.tornado = EventBudget(10.0, 100)
        self.others = EventBudget(10.0, 100)
        #: Also told how many lines each drop loses (a worker's shared counter).
        self.on_drop: Callable[[int], object] | None = None
        self._unnoted = 0
        self._noted_at = 0.0
        fd = _fileno(stream)
        self._writer = _FdWriter(fd, buffer_bytes) if fd is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        if not hasattr(record, "event"):
            # Another logger's record (Tornado's own: a malformed request,
            # a bad Host header, one per connection that sends one; or the
            # app's): within the process's budget for its kind, the count
            # of those left out on the next.
            name = record.name
            tornado = name == "tornado" or name.startswith("tornado.")
            allowed = (self.tornado if tornado else self.others).allow()
            if allowed is None:
                return
            if allowed:
                record.unlogged = allowed["unlogged"]
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.append(line)

    def write_event(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """One event, formatted as the record of :func:`emit` would be."""
        if self.json:
            doc = {"time": _now(), "level": _LEVEL_NAMES[level], "event": event}
            doc.update(fields)
            self.append(_safe_json(_ENCODE(doc)))
        else:
            self.append(_text_line(_now(), logging.getLevelName(level), event, fields))

    def _drop(self, lines: int) -> None:
        self.dropped += lines
        self._unnoted += lines
        if self.on_drop is not None:
            self.on_drop(lines)

    def append(self, line: str) -> None:
        """Queue one formatted line; it is written at the end of this loop iteration."""
        if self._chars + len(line) > self.buffer_bytes:
            self._drop(1)  # one loop iteration logged more than the whole buffer
        else:
            self._lines.append(line)
            self._chars += len(line) + 1
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up, shutdown): write through
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def _drop_note(self) -> str | None:
        now = time.monotonic()
        if not self._unnoted or now - self._noted_at < _DROP_NOTE_INTERVAL:
            return None
        fields: dict[str, Any] = {"dropped": self._unnoted, "total": self.dropped}
        self._unnoted = 0
        self._noted_at = now
        if self.json:
            doc: dict[str, Any] = {
                "time": _now(),
                "level": "warning",
                "event": "log_events_dropped",
            }
            doc.update(fields)
            return _ENCODE(doc)
        return _text_line(_now(), "WARNING", "log_events_dropped", fields)

    def flush(self) -> None:
        self._flush_scheduled = False
        lines = self._lines
        if not lines and not self._unnoted:
            return
        self._lines = []
        self._chars = 0
        writer = self._writer
        if writer is None:
            data = "\n".join(lines) + "\n" if lines else ""
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):  # stdout gone: nothing left to tell
                pass
            return
        if writer.room() < self.buffer_bytes // 2:
            # stdout is behind: keep the note for when it catches up
            pass
        elif (note := self._drop_note()) is not None:
            lines.insert(0, note)
        if not lines:
            return
        encoded = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        if writer.put(encoded):
            return
        # Not all of it fits: as many whole lines as do, the rest dropped.
        room = writer.room()
        kept: list[bytes] = []
        for index, line in enumerate(lines):
            one = line.encode("utf-8", "backslashreplace") + b"\n"
            if len(one) > room:
                self._drop(len(lines) - index)
                break
            kept.append(one)
            room -= len(one)
        if kept and not writer.put(b"".join(kept)):
            self._drop(len(kept))

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.drain(1.0)
        super().close()


def log_events_dropped() -> int:
    """Lines the server's sink dropped because stdout did not keep up."""
    sink = _sink
    return sink.dropped if sink is not None else 0


def count_drops_in(callback: Callable[[int], object] | None) -> None:
    """Call ``callback(lines)`` whenever the sink drops lines (a worker
    counts them in the pod's shared numbers)."""
    if _sink is not None:
        _sink.on_drop = callback


def configure_logging(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send all logs to ``stream`` (stdout) in the chosen format and level."""
    global _sink
    handler = EventSink(stream or sys.stdout, fmt)
    root = _ROOT
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _sink = handler
    # Tornado's access log is replaced by our own request log (see app.py).
    logging.getLogger("tornado.access").propagate = False
    # Nothing here reads these; skipping them makes every record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
