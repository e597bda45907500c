"""Review of session 8 (a first-time service author, then a hostile
client): what an app's calls do when they are wrong, and what the close
event says. The in-process server on loopback, real clients (websockets
and the raw-socket client); ``CLOSE_TIMEOUT`` is shortened where a client
never answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import struct
from typing import Any, ClassVar

import pytest
import tornado.websocket
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from server import wire
from server.base import KnativeWebSocketHandler
from server.events import EventSink
from server.metrics import Metrics
from testkit.frames import frame

from .conftest import events, until
from .rawws import RawWebSocket

#: Codes no endpoint may send (RFC 6455 7.4.1, 7.4.2), at the edges.
UNSENDABLE = [-1, 0, 999, 1004, 1015, 1016, 2999, 5000, 65535, 70000]


class _ClosingLater(KnativeWebSocketHandler):
    """On "close N", calls ``close(N)`` from a task (outside any callback of
    the base), keeps what it raised, and echoes everything else."""

    raised: ClassVar[list[BaseException]] = []

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close "):
            code = int(message.split()[1])
            asyncio.get_running_loop().call_soon(self._close_later, code)
            return
        self.write_message(message, binary=isinstance(message, bytes))

    def _close_later(self, code: int) -> None:
        try:
            self.close(code, "bye")
        except ValueError as exc:
            _ClosingLater.raised.append(exc)
            self.write_message(f"refused {code}")


@pytest.mark.handler.with_args(_ClosingLater)
async def test_close_with_a_code_no_endpoint_may_send_raises_and_changes_nothing(
    ws_url: str,
) -> None:
    """``close(70000)``, ``close(1015)`` and the other codes RFC 6455 7.4
    forbids raise ``ValueError`` at once and leave the connection as it
    was: it still echoes, and a later ``close(4000)`` closes it with 4000.
    (Was: 70000 left it half-closed - no close frame, every later message
    dropped - and 1015 went out, for the client to fail with 1002.)"""
    _ClosingLater.raised = []
    async with connect(ws_url) as ws:
        for code in UNSENDABLE:
            await ws.send(f"close {code}")
            assert await ws.recv() == f"refused {code}"
            await ws.send("still here")
            assert await ws.recv() == "still here"
        await ws.send("close 4000")
        await ws.wait_closed()
    assert ws.close_code == 4000
    assert ws.close_reason == "bye"
    assert len(_ClosingLater.raised) == len(UNSENDABLE)
    assert all("cannot be sent" in str(e) for e in _ClosingLater.raised)


@given(st.integers(min_value=-(2**20), max_value=2**20))
def test_send_close_takes_the_codes_rfc_6455_allows(code: int) -> None:
    """Against RFC 6455 7.4's own list, written out here: a sendable code
    gives a close frame that carries it; any other raises and leaves the
    connection open."""
    allowed = code in {1000, 1001, 1002, 1003} | set(range(1007, 1015)) | set(range(3000, 5000))
    conn = wire.Connection(1024)
    if allowed:
        sent = conn.send_close(code, "r")
        assert sent[:2] == b"\x88\x03"
        assert struct.unpack("!H", sent[2:4])[0] == code
        assert conn.close_sent == code
    elif code in (1005, 1006):
        assert conn.send_close(code) == b"\x88\x00"
    else:
        with pytest.raises(ValueError, match="cannot be sent"):
            conn.send_close(code)
        assert conn.close_sent is None
        assert conn.state is wire.State.OPEN


async def test_a_failure_close_waits_for_no_answer_and_is_not_flagged(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A message over the limit (1009), and the client never answers: the
    server fails the connection (RFC 6455 7.1.7: it closes without waiting
    for the client's close frame), so its ``close`` event has no
    ``clean: false`` - that flag is for closing handshakes the server
    started and the client left unanswered (the events reference)."""
    ws = await RawWebSocket.connect(port)
    try:
        await ws.send(frame(0x2, b"x" * (1024 * 1024 + 1)))
        close = await ws.recv_close(timeout=10)
        assert close.close_code == 1009
        await until(lambda: bool(events(caplog, "close")), timeout=10)
    finally:
        ws.close()
    [event] = events(caplog, "close")
    assert event["code"] == 1009
    assert "clean" not in event
    assert [e["kind"] for e in events(caplog, "error")] == ["message_too_big"]


class _WritingWrongTypes(KnativeWebSocketHandler):
    """Writes what the client names, and answers with the error's text."""

    values: ClassVar[dict[str, Any]] = {"list": [1, 2], "int": 7, "none": None}

    def on_message(self, message: str | bytes) -> None:
        try:
            self.write_message(self.values[str(message)])
        except TypeError as exc:
            self.write_message(str(exc))


@pytest.mark.handler.with_args(_WritingWrongTypes)
async def test_write_message_of_another_type_says_what_it_takes(ws_url: str) -> None:
    """``write_message([1, 2])`` (or an int, or None) raises a TypeError that
    names the types it takes and the one it got (was: "can't concat list to
    bytes", "object of type 'int' has no len()")."""
    async with connect(ws_url) as ws:
        for name, type_name in (("list", "list"), ("int", "int"), ("none", "NoneType")):
            await ws.send(name)
            assert await ws.recv() == (f"write_message takes bytes, str or dict, not {type_name}")


class _Keeping(KnativeWebSocketHandler):
    opened: ClassVar[list[KnativeWebSocketHandler]] = []

    def open(self) -> None:
        _Keeping.opened.append(self)


@pytest.mark.handler.with_args(_Keeping)
async def test_write_message_threadsafe_once_the_loop_is_closed_raises_closed(
    ws_url: str, metrics: Metrics
) -> None:
    """From a thread that outlives the server's event loop (a daemon thread
    at shutdown): ``WebSocketClosedError``, as the docstring promises, not
    asyncio's ``RuntimeError('Event loop is closed')``. The closed loop is
    put in place of the handler's (this test's loop must keep running):
    the one reach into the base's private state here."""
    _Keeping.opened = []
    async with connect(ws_url):
        await until(lambda: bool(_Keeping.opened))
        handler = _Keeping.opened[0]
        running = handler._kws.loop
        closed = asyncio.new_event_loop()
        closed.close()
        handler._kws.loop = closed
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                attempt = pool.submit(handler.write_message_threadsafe, "late")
                with pytest.raises(tornado.websocket.WebSocketClosedError):
                    await asyncio.wrap_future(attempt)
        finally:
            handler._kws.loop = running


def test_a_flood_of_tornado_records_does_not_silence_the_apps_own_lines() -> None:
    """300 records of Tornado's (one per malformed request: any client can
    cause them), then five of the app's own logger: Tornado's are cut at
    the budget (100 at once), the app's five all get through - they have a
    budget of their own. (Was: one shared budget, and the app's audit lines
    were dropped.) The server's own sink, writing to a StringIO."""
    stream = io.StringIO()
    sink = EventSink(stream, "json")

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None)

    for n in range(300):
        sink.emit(record("tornado.general", f"Malformed HTTP message {n}"))
    for n in range(5):
        sink.emit(record("audit", f"AUDIT {n}"))
    sink.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    tornado_lines = [d for d in lines if "Malformed" in d.get("msg", "")]
    assert len(tornado_lines) == 100, len(tornado_lines)
    assert [d["msg"] for d in lines if "AUDIT" in d.get("msg", "")] == [
        f"AUDIT {n}" for n in range(5)
    ]
