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
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from typing import IO, Any

__all__ = [
    "EVENT_LOGGER",
    "EventSink",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "emit",
    "emit_message",
]

#: The logger every WebSocket and lifecycle event is written to.
EVENT_LOGGER = logging.getLogger("server.events")

#: One encoder for every record: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode
_LEVEL_NAMES = {n: logging.getLevelName(n).lower() for n in (10, 20, 30, 40, 50)}
_ROOT = logging.getLogger()
#: The sink configure_logging installed, for emit's direct path.
_sink: EventSink | None = None
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


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


def emit_message(peer: str, kind: str, size: int, content: str | None, truncated: bool) -> None:
    """The ``message`` event, the one logged per message: the same record
    as ``emit("message", ...)``, written as a JSON line with a template
    when the direct path is open (see :func:`emit`)."""
    if not EVENT_LOGGER.isEnabledFor(logging.INFO):
        return
    sink = _direct_sink()
    if sink is not None and sink.json:
        line = (
            f'{{"time":"{_now()}","level":"info","event":"message",'
            f'"peer":{_json_string(peer)},"type":"{kind}","size":{size}'
        )
        if content is not None:
            line += f',"content":{_ENCODE(content)}'
        if truncated:
            line += ',"truncated":true'
        sink.append(line + "}")
        return
    fields: dict[str, Any] = {"peer": peer, "type": kind, "size": size}
    if content is not None:
        fields["content"] = content
    if truncated:
        fields["truncated"] = True
    emit("message", **fields)


@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
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
            doc["msg"] = record.getMessage()
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return _ENCODE(doc)


def _text_line(timestamp: str, levelname: str, head: str, fields: dict[str, Any]) -> str:
    parts = [f"{timestamp} {levelname:<7} {head}"]
    for key, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if isinstance(value, str) and (not text or any(c in text for c in ' "=\n')):
            text = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class TextFormatter(logging.Formatter):
    """``time LEVEL event key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        head = event or f"{record.name}: {record.getMessage()}"
        line = _text_line(_timestamp(record), record.levelname, head, _fields(record))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class EventSink(logging.Handler):
    """Where the server's logs go: a stream (stdout), written once per
    event-loop iteration instead of once per line, so that under load many
    events share one write to the pipe, and each still reaches it before the
    loop waits for more I/O. :func:`emit` hands it events directly
    (:meth:`write_event`); records from other loggers come through
    :meth:`emit` like any handler's."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        super().__init__()
        self.stream = stream
        self.json = fmt == "json"
        self.setFormatter(JsonFormatter() if self.json else TextFormatter())
        self._lines: list[str] = []
        self._flush_scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
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
            self.append(_ENCODE(doc))
        else:
            self.append(_text_line(_now(), logging.getLevelName(level), event, fields))

    def append(self, line: str) -> None:
        """Queue one formatted line; it is written at the end of this loop iteration."""
        self._lines.append(line)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up, shutdown): write through
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._lines:
            return
        data = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # stdout gone: nothing left to tell
            pass

    def close(self) -> None:
        self.flush()
        super().close()


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
    # Tornado's access log is replaced by our own request log (see lifecycle.py).
    logging.getLogger("tornado.access").propagate = False
    # Nothing here reads these; skipping them makes every record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
