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

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["EVENT_LOGGER", "JsonFormatter", "TextFormatter", "configure_logging", "emit"]

#: The logger every WebSocket and lifecycle event is written to.
EVENT_LOGGER = logging.getLogger("server.events")

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def emit(event: str, level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    """Log one event; ``fields`` become top-level keys of the record."""
    if EVENT_LOGGER.isEnabledFor(level):
        EVENT_LOGGER.log(level, event, exc_info=exc_info, extra={"event": event, "fields": fields})


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


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
        return json.dumps(doc, ensure_ascii=False, default=str)


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


def configure_logging(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send all logs to ``stream`` (stdout) in the chosen format and level."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Tornado's access log is replaced by our own request log (see app.py).
    logging.getLogger("tornado.access").propagate = False
