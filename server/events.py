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

__all__ = ["EVENT_LOGGER", "JsonFormatter", "TextFormatter", "configure_logging", "emit"]

#: The logger every WebSocket and lifecycle event is written to.
EVENT_LOGGER = logging.getLogger("server.events")

#: One encoder for every record: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def emit(event: str, level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    """Log one event; ``fields`` become top-level keys of the record.

    The record is made with ``makeRecord`` and given to ``handle`` directly:
    ``Logger.log`` would also find the caller's file and line by walking the
    stack, which costs more than the rest of the record and says nothing
    here (every event comes through this function).
    """
    if EVENT_LOGGER.isEnabledFor(level):
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


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


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


class TextFormatter(logging.Formatter):
    """``time LEVEL event key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record)} {record.levelname:<7} "
        if hasattr(record, "event"):
            head += record.event
        else:
            head += f"{record.name}: {record.getMessage()}"
        parts = [head]
        for key, value in _fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, str) and (not text or any(c in text for c in ' "=\n')):
                text = json.dumps(value, ensure_ascii=False)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LoopFlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that flushes once per event-loop iteration instead of
    once per record: under load many events share one write to the pipe,
    and each still reaches it before the loop waits for more I/O."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._flush_scheduled = False

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up, shutdown): write through
            super().flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        super().flush()

    def close(self) -> None:
        super().flush()
        super().close()


def configure_logging(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send all logs to ``stream`` (stdout) in the chosen format and level."""
    handler = LoopFlushingHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Tornado's access log is replaced by our own request log (see app.py).
    logging.getLogger("tornado.access").propagate = False
    # Nothing here reads these; skipping them makes every record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
