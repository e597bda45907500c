"""Bad input gets a specific status or close code, is logged once, and leaves
other connections alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.ioloop import IOLoop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from server import exposition
from server.echo import EchoWebSocket
from server.metrics import Metrics
from testkit.frames import close_payload

from .conftest import events, until
from .rawws import RawWebSocket, frame, http_request, upgrade_request


@pytest.fixture
def bystander(ws_url: str, io_loop: IOLoop) -> Iterator[ClientConnection]:
    """A healthy client open through the whole test; checked at the end.

    (pytest-tornasync has no async fixtures: the set-up and the check run on
    the test's own loop with ``run_sync``.)
    """

    async def start() -> ClientConnection:
        ws = await connect(ws_url)
        await ws.send("before")
        assert await ws.recv() == "before"
        return ws

    async def check(ws: ClientConnection) -> None:
        await ws.send("after")
        assert await ws.recv() == "after", "a bad client disturbed another connection"
        await ws.close()

    ws = io_loop.run_sync(start)
    yield ws
    io_loop.run_sync(lambda: check(ws))


async def _only_error(caplog: pytest.LogCaptureFixture, kind: str) -> dict[str, object]:
    """The one error event of the test, once the server has logged it."""
    await until(lambda: bool(events(caplog, "error")))
    await asyncio.sleep(0.05)  # room for a (wrong) second one
    errors = events(caplog, "error")
    assert [e["kind"] for e in errors] == [kind], errors
    return errors[0]


# -- handshakes ----------------------------------------------------------------


async def test_plain_get_gets_400_with_a_clear_body(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncHTTPClient()
    with pytest.raises(HTTPClientError) as info:
        await client.fetch(f"http://127.0.0.1:{port}/ws")
    assert info.value.code == 400
    assert info.value.response is not None
    body = info.value.response.body.decode()
    assert "WebSocket endpoint" in body
    assert "Upgrade: websocket" in body
    error = await _only_error(caplog, "bad_handshake")
    assert error["status"] == 400
    assert str(error["peer"]).startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({"Connection": "keep-alive"}, 400, "Connection header"),
        ({"Sec-WebSocket-Key": None}, 400, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "not-base64!"}, 400, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, "Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Version": "8"}, 426, "Sec-WebSocket-Version"),
        ({"Sec-WebSocket-Version": None}, 426, "Sec-WebSocket-Version"),
    ],
    ids=["no-connection-upgrade", "no-key", "bad-key", "short-key", "old-version", "no-version"],
)
async def test_bad_handshake_gets_specific_status(
    port: int,
    caplog: pytest.LogCaptureFixture,
    bystander: ClientConnection,
    headers: dict[str, str | None],
    status: int,
    detail: str,
) -> None:
    kw = {k.replace("-", "_"): v for k, v in headers.items()}
    got, resp_headers, body, _, writer = await http_request(port, upgrade_request(**kw))  # type: ignore[arg-type]
    writer.close()
    assert got == status
    assert detail in body.decode()
    if status == 426:
        assert resp_headers["sec-websocket-version"] == "13"
    error = await _only_error(caplog, "bad_handshake")
    assert error["status"] == status


async def test_oversized_headers_get_431(
    port: int, caplog: pytest.LogCaptureFixture, metrics: Metrics, bystander: ClientConnection
) -> None:
    request = upgrade_request(X_Padding="a" * 20000)
    status, headers, body, _, writer = await http_request(port, request)
    writer.close()
    assert status == 431
    assert headers["connection"] == "close"
    assert b"the limit is 16384 bytes" in body
    error = await _only_error(caplog, "headers_too_large")
    assert error["detail"] == "request head over 16384 bytes"
    assert str(error["peer"]).startswith("127.0.0.1:")
    assert (
        exposition.registry(metrics).get_sample_value(
            "websocket_handshakes_rejected_total", {"reason": "headers_too_large"}
        )
        == 1
    )


async def test_cross_origin_browser_is_refused_with_403(
    ws_url: str, caplog: pytest.LogCaptureFixture, bystander: ClientConnection
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url, origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    assert b"not allowed" in info.value.response.body
    error = await _only_error(caplog, "origin_rejected")
    assert error["origin"] == "https://evil.example"


async def test_same_origin_page_is_allowed(ws_url: str, port: int) -> None:
    async with connect(ws_url, origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
        await ws.send("same origin")
        assert await ws.recv() == "same origin"


@pytest.mark.settings(allowed_origins=("https://app.example",))
async def test_listed_origin_is_allowed_others_not(ws_url: str) -> None:
    async with connect(ws_url, origin="https://app.example") as ws:  # type: ignore[arg-type]
        await ws.send("ok")
        assert await ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url, origin="https://other.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


@pytest.mark.settings(allowed_origins=("*",))
async def test_wildcard_allows_any_origin(ws_url: str) -> None:
    async with connect(ws_url, origin="https://anywhere.example") as ws:  # type: ignore[arg-type]
        await ws.send("ok")
        assert await ws.recv() == "ok"


@pytest.mark.settings(max_connections=2)
async def test_connection_cap_refuses_with_503_before_upgrade(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(ws_url) as a, connect(ws_url) as b:
        with pytest.raises(InvalidStatus) as info:
            await connect(ws_url)
        assert info.value.response.status_code == 503
        assert info.value.response.headers["Retry-After"] == "1"
        assert b"connection limit of 2" in info.value.response.body
        await a.send("still fine")
        assert await a.recv() == "still fine"
        await b.send("me too")
        assert await b.recv() == "me too"
    await _only_error(caplog, "over_capacity")
    await asyncio.sleep(0.05)
    async with connect(ws_url) as c:  # a slot is free again
        await c.send("x")
        assert await c.recv() == "x"


# -- frames ----------------------------------------------------------------------


@pytest.mark.settings(max_message_bytes=1000)
async def test_oversized_message_closes_with_1009(
    ws_url: str, caplog: pytest.LogCaptureFixture, bystander: ClientConnection
) -> None:
    async with connect(ws_url, max_size=None) as ws:
        await ws.send(b"a" * 1001)
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == 1009
    assert "limit is 1000 bytes" in (ws.close_reason or "")
    error = await _only_error(caplog, "message_too_big")
    assert error["code"] == 1009
    [closed] = events(caplog, "close")
    assert closed["code"] == 1009


@pytest.mark.settings(max_message_bytes=1000)
async def test_oversized_fragmented_message_closes_with_1009(ws_url: str) -> None:
    async with connect(ws_url, max_size=None) as ws:
        await ws.send([b"a" * 600, b"b" * 600])
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == 1009


@pytest.mark.settings(max_message_bytes=1 << 20)
async def test_huge_declared_length_closes_with_1009_without_waiting_for_it(port: int) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(frame(0x2, b"", length=1 << 40)[:14])  # header only: claims 1 TiB
    close = await raw.recv_close()
    assert close.close_code == 1009
    assert await raw.at_eof()
    raw.close()


async def test_invalid_utf8_closes_with_1007(
    ws_url: str, caplog: pytest.LogCaptureFixture, bystander: ClientConnection
) -> None:
    async with connect(ws_url) as ws:
        await ws.send(b"ok \xff\xfe", text=True)
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == 1007
    error = await _only_error(caplog, "invalid_payload")
    assert error["code"] == 1007


@pytest.mark.parametrize(
    "fragments",
    [
        [frame(0x1, b"valid start ", fin=False), frame(0x0, b"\xff\xfe", fin=False)],
        # A character cut between fragments, then not continued.
        [frame(0x1, "caf\u00e9".encode()[:-1], fin=False), frame(0x0, b"x", fin=False)],
    ],
)
async def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends(
    port: int, caplog: pytest.LogCaptureFixture, fragments: list[bytes]
) -> None:
    """RFC 6455 8.1: a text message is failed as soon as its UTF-8 turns
    invalid, without waiting for the final fragment (which never comes)."""
    raw = await RawWebSocket.connect(port)
    for f in fragments:
        await raw.send(f)
    close = await raw.recv_close()
    assert close.close_code == 1007
    error = await _only_error(caplog, "invalid_payload")
    assert error["code"] == 1007
    raw.close()


async def test_character_split_across_fragments_is_echoed_whole(port: int) -> None:
    raw = await RawWebSocket.connect(port)
    text = "caf\u00e9 \u2603".encode()
    await raw.send(frame(0x1, text[:4], fin=False))  # ends inside the 2-byte "e acute"
    await raw.send(frame(0x0, text[4:9], fin=False))  # ends inside the snowman
    await raw.send(frame(0x0, text[9:]))
    echo = await raw.recv()
    assert (echo.opcode, echo.payload) == (0x1, text)
    raw.close()


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (frame(0x1, b"unmasked", masked=False), "masked"),
        (frame(0x1, b"rsv", rsv=0x40), "reserved bits"),
        (frame(0x3, b"op3"), "unknown opcode"),
        (frame(0xB, b"opB"), "unknown opcode"),
        (frame(0x0, b"orphan"), "continuation"),
        (frame(0x9, b"p", fin=False), "fragmented control"),
        (frame(0x9, b"x" * 126), "control frame too long"),
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), "inside a fragmented"),
        (frame(0x8, close_payload(1005)), "invalid close code 1005"),
        (frame(0x8, close_payload(999)), "invalid close code 999"),
        (frame(0x8, close_payload(2999)), "invalid close code 2999"),
        (frame(0x8, b"\x03"), "1-byte"),
    ],
    ids=[
        "unmasked",
        "reserved-bits",
        "opcode-3",
        "opcode-B",
        "orphan-continuation",
        "fragmented-ping",
        "long-ping",
        "interleaved-message",
        "close-1005",
        "close-999",
        "close-2999",
        "close-1-byte",
    ],
)
async def test_protocol_violations_close_with_1002(
    port: int,
    caplog: pytest.LogCaptureFixture,
    bystander: ClientConnection,
    data: bytes,
    detail: str,
) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(data)
    close = await raw.recv_close()
    assert close.close_code == 1002
    assert detail in close.close_reason
    assert await raw.at_eof()
    raw.close()
    error = await _only_error(caplog, "protocol_error")
    assert detail in str(error["detail"])


async def test_close_reason_with_invalid_utf8_closes_with_1007(port: int) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(frame(0x8, close_payload(1000) + b"\xff"))
    close = await raw.recv_close()
    assert close.close_code == 1007
    raw.close()


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
async def test_valid_close_codes_are_echoed(port: int, code: int) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(frame(0x8, close_payload(code) + b"bye"))
    close = await raw.recv_close()
    assert close.close_code == code
    raw.close()


async def test_client_vanishing_without_close_frame_is_an_error_event(
    port: int, caplog: pytest.LogCaptureFixture, bystander: ClientConnection
) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(frame(0x1, b"hi"))
    assert (await raw.recv()).payload == b"hi"
    raw.close()
    error = await _only_error(caplog, "abnormal_closure")
    assert error["code"] == 1006
    closes = [c for c in events(caplog, "close") if c["code"] == 1006]
    assert len(closes) == 1


class _BrokenEcho(EchoWebSocket):
    """A handler bug, planted: 'boom' raises inside on_message."""

    async def on_message(self, message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("planted bug")
        written = super().on_message(message)
        if written is not None:
            await written


@pytest.mark.handler.with_args(_BrokenEcho)
async def test_exception_in_handler_closes_1011_and_logs_the_traceback(
    port: int, caplog: pytest.LogCaptureFixture, bystander: ClientConnection
) -> None:
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("fine")
        assert await ws.recv() == "fine"
        await ws.send("boom")
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == 1011
    error = await _only_error(caplog, "handler_exception")
    assert error["level"] == "ERROR"
    record = next(r for r in caplog.records if getattr(r, "event", None) == "error")
    assert record.exc_info is not None
    assert "planted bug" in str(record.exc_info[1])


class _DroppingEcho(EchoWebSocket):
    """The peer's connection breaks just before the echo is written (the
    stream is closed under the handler, as a reset would)."""

    def on_message(self, message: str | bytes) -> None:
        ws = self._kws.ws  # the base's transport: a test may reach in
        assert ws is not None
        assert ws.transport is not None
        ws.transport.abort()
        super().on_message(message)


@pytest.mark.handler.with_args(_DroppingEcho)
async def test_failed_write_is_an_error_event(
    ws_url: str, caplog: pytest.LogCaptureFixture, metrics: Metrics
) -> None:
    async with connect(ws_url) as ws:
        await ws.send("lost")
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    await until(lambda: bool(events(caplog, "close")))
    kinds = [e["kind"] for e in events(caplog, "error")]
    assert "write_failed" in kinds
    [failed] = [e for e in events(caplog, "error") if e["kind"] == "write_failed"]
    assert failed["peer"].startswith("127.0.0.1:")
    assert metrics.errors.labels("write_failed").value == 1
    assert metrics.messages.messages_out == [0, 0]


class _WritingOnAfterTheError(EchoWebSocket):
    """An app that keeps writing after its peer's connection broke,
    catching each WebSocketClosedError."""

    def on_message(self, message: str | bytes) -> None:
        ws = self._kws.ws
        assert ws is not None
        assert ws.transport is not None
        ws.transport.abort()
        for _ in range(1000):
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                self.write_message(message)


@pytest.mark.handler.with_args(_WritingOnAfterTheError)
async def test_writes_after_a_failed_one_are_counted_but_logged_once(
    ws_url: str, caplog: pytest.LogCaptureFixture, metrics: Metrics
) -> None:
    """1000 writes to a broken connection: one ``write_failed`` line, all
    1000 in ``websocket_errors_total``."""
    async with connect(ws_url) as ws:
        await ws.send("lost")
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    await until(lambda: bool(events(caplog, "close")))
    assert [e["kind"] for e in events(caplog, "error")].count("write_failed") == 1
    assert metrics.errors.labels("write_failed").value == 1000


@pytest.mark.settings(send_timeout=0.5)
async def test_client_that_never_reads_is_closed_with_1008(
    port: int, caplog: pytest.LogCaptureFixture, metrics: Metrics, bystander: ClientConnection
) -> None:
    """A client that sends and never reads its echoes: once over 1 MiB of
    echoes waits unsent, the server stops reading it, and after
    ``send_timeout`` drops it with an error event that says why."""
    raw = await RawWebSocket.connect(port)
    message = frame(0x2, b"x" * 65536)
    flood = asyncio.ensure_future(raw.send(message * 400))  # 25 MiB, never read back
    error = await _only_error(caplog, "slow_consumer")
    assert error["code"] == 1008
    assert "unread for 0.5 s" in str(error["detail"])
    [closed] = events(caplog, "close")
    assert closed["code"] == 1008
    assert closed["messages_in"] < 400  # it stopped reading long before the end
    assert (
        exposition.registry(metrics).get_sample_value(
            "websocket_errors_total", {"kind": "slow_consumer"}
        )
        == 1
    )
    # The server sent its close frame, stopped sending and reads (and
    # discards) what is still coming for a moment, then drops the socket:
    # the flood either ends or is cut off, and the connection is closed.
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(flood, 10)
    assert await raw.at_eof(timeout=10)
    raw.close()
