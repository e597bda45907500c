"""The trace id on the ``open`` event (server/tracecontext.py).

The parsers are compared with OpenTelemetry's own propagators
(``TraceContextTextMapPropagator`` and ``opentelemetry-propagator-b3``), an
independent implementation, on inputs Hypothesis makes and mutates; where
the two differ on purpose (B3 in upper case, which the B3 spec does not
allow and OpenTelemetry accepts) the test says so. The event-line test runs
a real server and a real client.
"""

from __future__ import annotations

import asyncio
import string

from hypothesis import assume, example, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from websockets.asyncio.client import connect

from server.tracecontext import (
    MAX_TRACEPARENT,
    b3_multi_trace_id,
    b3_trace_id,
    trace_id,
    traceparent_id,
)

from .conftest import ServerProcess

W3C = TraceContextTextMapPropagator()
B3_SINGLE = B3SingleFormat()
B3_MULTI = B3MultiFormat()

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _otel(propagator: object, carrier: dict[str, str]) -> str | None:
    context = propagator.extract(carrier)  # type: ignore[attr-defined]
    span = trace.get_current_span(context).get_span_context()
    return trace.format_trace_id(span.trace_id) if span.is_valid else None


hex_lower = st.text("0123456789abcdef", min_size=0, max_size=40)
hex_any = st.text("0123456789abcdefABCDEF", min_size=0, max_size=40)


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    """Well-formed values, values with one field off, and near misses."""
    version = draw(st.sampled_from(["00", "01", "cc", "fe", "ff", "0", "000", "0A", "zz"]))
    trace_ = draw(
        st.one_of(
            st.text("0123456789abcdef", min_size=32, max_size=32),
            st.just("0" * 32),
            hex_any,
        )
    )
    parent = draw(
        st.one_of(
            st.text("0123456789abcdef", min_size=16, max_size=16),
            st.just("0" * 16),
            hex_any,
        )
    )
    flags = draw(st.sampled_from(["00", "01", "ff", "1", "0g", "FF"]))
    rest = draw(st.sampled_from(["", "-", "-x", "-01-extra", ",00", " "]))
    sep = draw(st.sampled_from(["-", "-", "-", "_"]))
    return f"{version}{sep}{trace_}-{parent}-{flags}{rest}"


def _plain(value: str) -> bool:
    # Tornado strips a header value's surrounding whitespace, and a value
    # never holds a line break; OpenTelemetry's parser allows both.
    return value == value.strip(" \t") and "\n" not in value and "\r" not in value


@given(st.one_of(traceparents(), st.text(max_size=80)))
@example(f"00-{TRACE}-{PARENT}-01")
@example(f"01-{TRACE}-{PARENT}-01-anything")
@example(f"00-{TRACE}-{PARENT}-01-")
@example(f"ff-{TRACE}-{PARENT}-01")
@example(f"00-{'0' * 32}-{PARENT}-01")
@example(f"00-{TRACE}-{'0' * 16}-01")
@example(f"00-{TRACE.upper()}-{PARENT}-01")
def test_traceparent_agrees_with_opentelemetry(value: str) -> None:
    assume(_plain(value))
    ours = traceparent_id(value)
    assert ours == _otel(W3C, {"traceparent": value})
    if ours is not None:
        assert len(ours) == 32
        assert set(ours) <= set(string.hexdigits.lower())


def test_traceparent_examples() -> None:
    """The W3C spec's own example, and the rules one by one."""
    assert traceparent_id(f"00-{TRACE}-{PARENT}-01") == TRACE
    assert traceparent_id(f"00-{TRACE}-{PARENT}-00") == TRACE  # not sampled: still a trace
    assert traceparent_id(f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like") == TRACE
    for bad in (
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has four fields
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE}-{PARENT}-01,00-{TRACE}-{PARENT}-01",  # a repeated header, joined
        f"01-{TRACE}-{PARENT}-01-" + "x" * MAX_TRACEPARENT,  # too long
        "",
    ):
        assert traceparent_id(bad) is None, bad


@st.composite
def b3_singles(draw: st.DrawFn) -> str:
    trace_ = draw(
        st.one_of(
            st.text("0123456789abcdef", min_size=32, max_size=32),
            st.text("0123456789abcdef", min_size=16, max_size=16),
            st.sampled_from(["0" * 16, "0" * 32]),
            hex_lower,
        )
    )
    span = draw(
        st.one_of(
            st.text("0123456789abcdef", min_size=16, max_size=16), st.just("0" * 16), hex_lower
        )
    )
    sampled = draw(st.sampled_from([None, "0", "1", "d"]))
    parent = draw(
        st.one_of(st.none(), st.text("0123456789abcdef", min_size=16, max_size=16), hex_lower)
    )
    value = f"{trace_}-{span}"
    if sampled is not None:
        value += f"-{sampled}"
        if parent is not None:
            value += f"-{parent}"
    return value


def _b3_well_formed_tail(value: str) -> bool:
    """Sampling state and parent span id as the B3 spec has them (the
    parts OpenTelemetry does not check)."""
    fields = value.split("-")
    if len(fields) >= 3 and fields[2] not in ("0", "1", "d"):
        return False
    if len(fields) == 4:
        parent = fields[3]
        return len(parent) == 16 and set(parent) <= set("0123456789abcdef")
    return len(fields) <= 4


@given(st.one_of(b3_singles(), st.text(max_size=80)))
@example(f"{TRACE}-{PARENT}-1-{PARENT}")
@example(f"{TRACE[:16]}-{PARENT}")
@example("1")
@example(f"{'0' * 32}-{PARENT}-1")
def test_b3_single_agrees_with_opentelemetry(value: str) -> None:
    """Where we find a trace id, OpenTelemetry finds the same one; where
    OpenTelemetry finds one in lowercase hex with a well-formed sampling
    state and parent, so do we."""
    assume(_plain(value))
    ours = b3_trace_id(value)
    theirs = _otel(B3_SINGLE, {"b3": value})
    if ours is not None:
        assert ours == theirs
        assert len(ours) == 32
    elif theirs is not None:
        trace_part = value.split("-")[0]
        assert not (value == value.lower() and _b3_well_formed_tail(value)), (
            value,
            trace_part,
        )


@given(
    st.one_of(
        st.text("0123456789abcdef", min_size=32, max_size=32),
        st.text("0123456789abcdef", min_size=16, max_size=16),
        hex_any,
        st.text(max_size=40),
    ),
    st.one_of(st.none(), st.text("0123456789abcdef", min_size=16, max_size=16), hex_any),
)
@example(TRACE.upper(), PARENT)
@example(TRACE, PARENT.upper())
@example(TRACE[:16], PARENT)
@example("0" * 32, PARENT)
def test_b3_multi_agrees_with_opentelemetry(trace_: str, span: str | None) -> None:
    assume(_plain(trace_) and (span is None or _plain(span)))
    carrier = {"x-b3-traceid": trace_}
    if span is not None:
        carrier["x-b3-spanid"] = span
    ours = b3_multi_trace_id(trace_, span)
    theirs = _otel(B3_MULTI, carrier)
    if trace_ == trace_.lower() and (span is None or span == span.lower()):
        assert ours == theirs
    else:  # upper case: B3 is lower-hex; OpenTelemetry accepts it, we do not
        assert ours is None


def test_b3_examples() -> None:
    assert b3_trace_id(f"{TRACE}-{PARENT}-1-{PARENT}") == TRACE
    assert b3_trace_id(f"{TRACE[16:]}-{PARENT}-d") == "0" * 16 + TRACE[16:]
    for bad in (
        "0",
        "1",
        "d",
        f"{TRACE}-{PARENT}-2",
        f"{TRACE}-{PARENT}-1-{PARENT}-x",
        f"{TRACE.upper()}-{PARENT}",
        f"{TRACE}-{'0' * 16}",
        f"{TRACE[:20]}-{PARENT}",
    ):
        assert b3_trace_id(bad) is None, bad
    assert b3_multi_trace_id(TRACE, PARENT) == TRACE
    assert b3_multi_trace_id(TRACE, None) is None  # B3 requires the span id


def test_the_first_valid_format_wins() -> None:
    other = "a" * 32
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "b3": f"{other}-{PARENT}"}
    assert trace_id(headers.get) == TRACE
    headers["traceparent"] = "garbage"
    assert trace_id(headers.get) == other
    headers = {"X-B3-TraceId": other, "X-B3-SpanId": PARENT, "b3": "1"}
    assert trace_id(headers.get) == other
    empty: dict[str, str] = {}
    assert trace_id(empty.get) is None


def test_the_open_event_carries_the_trace_id(server_process: type[ServerProcess]) -> None:
    """A real server's ``open`` event line has the trace id of a valid
    ``traceparent`` or B3 header, and no ``trace_id`` for an invalid one."""
    server = server_process()
    server.wait_ready()
    sent = [
        {"traceparent": f"00-{TRACE}-{PARENT}-01"},
        {"b3": f"{TRACE[16:]}-{PARENT}-1"},
        {"X-B3-TraceId": "b" * 32, "X-B3-SpanId": PARENT},
        {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"},
        {"traceparent": "00-" + "9" * 4000},
        {},
    ]

    async def scenario() -> None:
        for headers in sent:
            async with connect(server.ws_url, additional_headers=headers) as ws:
                await ws.send("x")
                await ws.recv()

    asyncio.run(scenario())
    server.signal()
    assert server.wait() == 0
    opened = [d for d in server.log if d.get("event") == "open"]
    assert [d.get("trace_id") for d in opened] == [
        TRACE,
        "0" * 16 + TRACE[16:],
        "b" * 32,
        None,
        None,
        None,
    ]
