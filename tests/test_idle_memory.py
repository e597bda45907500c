"""What an open WebSocket keeps in memory once Tornado has handed its
socket over: the handler and its request, not Tornado's HTTP objects (the
closed stream with its buffers, the HTTP/1 connection, the task that read
the request). They were about 4 KiB of every idle connection; bench/run.py
measures the whole figure (RSS per idle connection)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import Any, ClassVar

import pytest
import tornado.http1connection
import tornado.iostream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from server.echo import EchoWebSocket

from .conftest import events, until, upgrade_burst


def _live(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


async def test_an_open_websocket_keeps_no_tornado_stream_or_http_connection(
    ws_url: str,
) -> None:
    streams = _live(tornado.iostream.IOStream)
    http = _live(tornado.http1connection.HTTP1Connection)
    clients = [await connect(ws_url) for _ in range(20)]
    try:
        for ws in clients:
            await ws.send("still here")
            assert await ws.recv() == "still here"
        assert _live(tornado.iostream.IOStream) == streams
        assert _live(tornado.http1connection.HTTP1Connection) == http
    finally:
        for ws in clients:
            await ws.close()


class _RequestReader(EchoWebSocket):
    """Records what ``open()`` sees of the upgrade request."""

    seen: ClassVar[dict[str, Any]] = {}

    def open(self, *args: str, **kwargs: str) -> None:
        r = self.request
        _RequestReader.seen = {
            "method": r.method,
            "uri": r.uri,
            "query": self.get_query_argument("room", None),
            "header": r.headers.get("X-Team"),
            "remote_ip": r.remote_ip,
            "protocol": r.protocol,
            "host": r.host,
            "connection": r.connection,
        }


@pytest.mark.handler.with_args(_RequestReader)
async def test_the_handler_still_reads_its_request_after_the_hand_over(
    port: int,
) -> None:
    async with connect(
        f"ws://127.0.0.1:{port}/ws?room=blue", additional_headers={"X-Team": "platform"}
    ) as ws:
        await until(lambda: bool(_RequestReader.seen))
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert _RequestReader.seen == {
        "method": "GET",
        "uri": "/ws?room=blue",
        "query": "blue",
        "header": "platform",
        "remote_ip": "127.0.0.1",
        "protocol": "http",
        "host": f"127.0.0.1:{port}",
        "connection": None,  # no HTTP connection is left once the socket is taken over
    }


class _Burst(EchoWebSocket):
    """A class of its own: CPython keeps one shared key table per class,
    so this test sees the table as a fresh server process would."""


@pytest.mark.handler.with_args(_Burst)
async def test_a_burst_of_upgrades_leaves_each_handler_a_shared_key_dict(port: int) -> None:
    """CPython 3.11 shares one key table among a class's instances, but only
    for the names set while its first few instances are made: a burst of
    upgrades makes many handlers before any of them runs ``get``, and a
    name first set after that gives each handler a whole dict of its own
    (about 1.3 KiB more per open connection)."""
    async with upgrade_burst(port, _Burst) as handlers:
        assert len(handlers) == 60
        sizes = sorted(sys.getsizeof(vars(h)) for h in handlers)
        # a shared-key dict is a few hundred bytes; a dict of its own, 1.5 KiB
        assert sizes[-1] < 1000, sizes


class _HeaderTagger(EchoWebSocket):
    """Writes to the request's headers in on_message, or reads them: the bug
    of a handler that treats them as its own after ``open()``."""

    def on_message(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        if message == "read":
            self.write_message(repr(self.request.headers.get("X-Team")))
        elif message == "write":
            self.request.headers["X-Tag"] = message
        else:
            super().on_message(message)


@pytest.mark.handler.with_args(_HeaderTagger)
@pytest.mark.parametrize("message", ["read", "write"])
async def test_after_open_the_headers_are_gone_and_using_them_fails_only_that_connection(
    ws_url: str, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    """One stand-in serves every open connection: a handler that reads or
    writes it gets an error naming the fix (1011, ``handler_exception``),
    never a silent empty answer (a cookie read in on_message would be
    missing without a word), and no other connection is touched."""
    caplog.set_level(logging.INFO)
    async with connect(ws_url, additional_headers={"X-Team": "platform"}) as a:
        await a.send(message)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(a.recv(), 5)
    assert a.close_code == 1011
    async with connect(ws_url) as b:
        await b.send("hello")
        assert await b.recv() == "hello"
    await until(lambda: len(events(caplog, "close")) == 2)
    errors = [e for e in events(caplog, "error") if e["kind"] == "handler_exception"]
    assert len(errors) == 1
    record = next(r for r in caplog.records if getattr(r, "event", None) == "error")
    assert record.exc_info is not None
    assert "read what you need of them in open()" in str(record.exc_info[1])
