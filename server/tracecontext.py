"""The trace id of an upgrade request, for the ``open`` event.

Knative's ingress and queue-proxy propagate a request's trace context; a
log line that carries its trace id can be joined with the trace. Three
formats are read, in this order, and the first valid one wins:

- W3C Trace Context ``traceparent``: ``version-traceid-parentid-flags``,
  lowercase hex of 2, 32, 16 and 2 characters; version ``ff``, an all-zero
  trace id or parent id are invalid; version ``00`` has exactly those four
  fields, a later version may add more after a ``-`` (as the spec says a
  parser must allow); at most :data:`MAX_TRACEPARENT` characters.
- B3 single header ``b3``: ``traceid-spanid[-sampled[-parentspanid]]``, a
  trace id of 16 or 32 lowercase hex, a span id of 16, sampled ``0``, ``1``
  or ``d``, a parent span id of 16 (a header of a sampling state alone
  carries no trace id).
- B3 multiple headers: ``X-B3-TraceId`` (16 or 32 lowercase hex) with
  ``X-B3-SpanId`` (16).

Nothing else is accepted: no upper case, no surrounding text, no repeated
header (Tornado joins repeats with a comma, which no format allows), no
all-zero id. An invalid header is ignored, and the event has no trace id.
A 64-bit B3 trace id is written as 32 characters, left-padded with zeros,
as OpenTelemetry's B3 propagator reads it: every trace id in the logs has
one form. Whatever the client sends, the result is None or 32 lowercase
hex characters.

Sans-I/O: this module reads a mapping of header names to values.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MAX_TRACEPARENT", "b3_multi_trace_id", "b3_trace_id", "trace_id", "traceparent_id"]

#: A longer ``traceparent`` is ignored (OpenTelemetry's limit too).
MAX_TRACEPARENT = 512

_HEX16 = "[0-9a-f]{16}"
_HEX32 = "[0-9a-f]{32}"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_B3_SINGLE = re.compile(
    rf"({_HEX32}|{_HEX16})-{_HEX16}(?:-[01d](?:-{_HEX16})?)?",
)
_B3_TRACE_ID = re.compile(rf"{_HEX32}|{_HEX16}")
_B3_SPAN_ID = re.compile(_HEX16)


def _valid_id(value: str) -> str | None:
    """``value`` as 32 characters, or None if it is all zeros."""
    if value.strip("0") == "":
        return None
    return value.rjust(32, "0")


def traceparent_id(value: str) -> str | None:
    """The trace id of a W3C ``traceparent`` value, or None if it is invalid."""
    if len(value) > MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace, parent, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if parent == "0" * 16:
        return None
    return _valid_id(trace)


def b3_trace_id(value: str) -> str | None:
    """The trace id of a B3 single ``b3`` header value, or None."""
    match = _B3_SINGLE.fullmatch(value)
    if match is None or value[len(match.group(1)) + 1 :][:16] == "0" * 16:
        return None
    return _valid_id(match.group(1))


def b3_multi_trace_id(trace: str, span: str | None) -> str | None:
    """The trace id of ``X-B3-TraceId`` (with ``X-B3-SpanId``), or None."""
    if span is None or _B3_SPAN_ID.fullmatch(span) is None or span == "0" * 16:
        return None
    if _B3_TRACE_ID.fullmatch(trace) is None:
        return None
    return _valid_id(trace)


def trace_id(get: Callable[[str], str | None]) -> str | None:
    """The request's trace id, from ``get(header_name)`` (a header's value
    or None): ``traceparent``, else ``b3``, else ``X-B3-TraceId``."""
    value = get("traceparent")
    if value is not None and (found := traceparent_id(value)) is not None:
        return found
    value = get("b3")
    if value is not None and (found := b3_trace_id(value)) is not None:
        return found
    value = get("X-B3-TraceId")
    if value is not None:
        return b3_multi_trace_id(value, get("X-B3-SpanId"))
    return None
