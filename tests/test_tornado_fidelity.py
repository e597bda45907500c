"""Tornado's own server-side WebSocket tests (tornado/test/websocket_test.py,
tornado 6.x), each written once and run against two implementations side
by side, on real sockets with Tornado's client: bare Tornado
``WebSocketHandler`` and our ``KnativeWebSocketHandler``.

A case is a handler mixin written against Tornado's API plus a test body;
:func:`serve` mixes it into either base. Where our base deliberately
differs, the case asserts our behaviour under ``if impl == OURS`` and names
the row of :data:`DIFFERENCES`, the table the guide's "Differences from
Tornado" repeats (tests/test_tornado_fidelity.py checks they match)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from tornado import gen
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.template import DictLoader
from tornado.testing import bind_unused_port
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketHandler,
    websocket_connect,
)

from server.base import SERVICE_SETTING, KnativeWebSocketHandler, Service

TORNADO = "tornado"
OURS = "ours"

#: Every deliberate difference from Tornado: (row, reason). The guide's
#: table has the same rows.
DIFFERENCES = {
    "error-closes-1011": (
        "An exception in open() or on_message closes with 1011 and a close frame; "
        "Tornado drops the TCP connection (the client sees no close code)",
        "RFC 6455 has a code for it, and a client can tell a server bug from a network failure",
    ),
    "no-handler-headers-on-101": (
        "Headers set in prepare() or set_default_headers() are not sent with the 101",
        "the 101 is written by the transport that takes the socket over; "
        "set cookies on an HTTP route",
    ),
    "headers-released-after-open": (
        "self.request.headers (and cookies) raise RuntimeError once open() has returned",
        "they are freed to save memory per idle connection; read them in open() "
        "(current_user and locale are resolved before they go)",
    ),
    "compression-options": (
        "get_compression_options() may return {} or None only; compression_level, "
        "mem_level and the like raise ValueError at the upgrade",
        "the wire core uses zlib's defaults and negotiates the windows with the client",
    ),
    "ping-settings": (
        "websocket_ping_interval and websocket_ping_timeout application settings "
        "raise RuntimeError at the upgrade; ping_interval and ping_timeout report "
        "WS_PING_INTERVAL and WS_PING_TIMEOUT",
        "one keepalive task pings every connection of the process, from the environment",
    ),
    "too-big-reason": (
        "A message over max_message_size closes with 1009 and the reason "
        "'message too big: limit is N bytes' (Tornado: 'message too big')",
        "the client learns the limit it broke",
    ),
    "cancelled-in-on-message": (
        "asyncio.CancelledError raised by on_message closes with 1011 like any error",
        "same outcome as Tornado (connection closed, on_close called), with a close frame",
    ),
    "close-code-checked": (
        "close() with a code no endpoint may send (RFC 6455 7.4: 1004, 1015, "
        "below 1000, 1016-2999, 5000 and up) raises ValueError and changes nothing; "
        "Tornado sends it (or raises struct.error above 65535)",
        "the client would fail the connection with 1002; the app learns at once",
    ),
    "refusal-connection-close": (
        "Every refused upgrade is answered with Connection: close",
        "a client pipelining upgrades gets one answer; each refusal is an event and a count",
    ),
}


@pytest.fixture(params=[TORNADO, OURS])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
def serve(impl: str, service: Service, io_loop: Any) -> Iterator[Serve]:
    """``await serve(Mixin, "/pattern", **initialize_kwargs, settings=...)``:
    a real HTTP server on loopback with the mixin on ``impl``'s base;
    returns ``ws://127.0.0.1:PORT``."""
    servers: list[tornado.httpserver.HTTPServer] = []
    base = WebSocketHandler if impl == TORNADO else KnativeWebSocketHandler

    async def start(
        *routes: tuple[str, type, dict[str, Any]], settings: dict[str, Any] | None = None
    ) -> str:
        rules = []
        for pattern, mixin, kwargs in routes:
            if issubclass(mixin, tornado.web.RequestHandler):
                rules.append((pattern, mixin, kwargs))
                continue
            cls = type(mixin.__name__, (mixin, base), {})
            rules.append((pattern, cls, kwargs))
        extra = {SERVICE_SETTING: service} if impl == OURS else {}
        app = tornado.web.Application(
            rules,
            template_loader=DictLoader({"message.html": "<b>{{ message }}</b>"}),
            **(settings or {}),
            **extra,
        )
        sock, port = bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        servers.append(server)
        return f"ws://127.0.0.1:{port}"

    yield start

    async def cleanup() -> None:
        for ws in _CLIENTS:
            ws.close()
            with contextlib.suppress(Exception):
                while await asyncio.wait_for(ws.read_message(), 2) is not None:
                    pass
        _CLIENTS.clear()
        for server in servers:
            server.stop()
            await server.close_all_connections()
        for connection in list(service.registry.connections):
            connection.abort()
        await asyncio.sleep(0.01)

    io_loop.run_sync(cleanup, timeout=30)
    gc.collect()


_CLIENTS: list[WebSocketClientConnection] = []


async def _connect(url: Any, **kwargs: Any) -> WebSocketClientConnection:
    ws = await websocket_connect(url, **kwargs)
    _CLIENTS.append(ws)
    return ws


def _fetch(url: str, headers: dict[str, str] | None = None) -> Awaitable[Any]:
    client = SimpleAsyncHTTPClient(force_instance=True)
    return client.fetch(url.replace("ws://", "http://"), headers=headers, raise_error=False)


# -- the handlers of tornado/test/websocket_test.py ---------------------------


class TestHandler:
    """Tornado's TestWebSocketHandler: on_close resolves a Future with
    (close_code, close_reason)."""

    def initialize(
        self,
        close_future: asyncio.Future[Any] | None = None,
        compression_options: Any = None,
        **kw: Any,
    ) -> None:
        super().initialize(**kw)  # type: ignore[misc]
        self.close_future = close_future
        self.compression_options = compression_options

    def get_compression_options(self) -> Any:
        return self.compression_options

    def on_close(self) -> None:
        if self.close_future is not None and not self.close_future.done():
            self.close_future.set_result((self.close_code, self.close_reason))  # type: ignore[attr-defined]


class Echo(TestHandler):
    @gen.coroutine
    def on_message(self, message: Any) -> Any:
        with contextlib.suppress(asyncio.CancelledError, WebSocketClosedError):
            yield self.write_message(message, isinstance(message, bytes))  # type: ignore[attr-defined]


class ErrorInOnMessage(TestHandler):
    def on_message(self, message: Any) -> None:
        1 / 0  # noqa: B018


class ErrorInAsyncOnMessage(TestHandler):
    async def on_message(self, message: Any) -> None:
        await asyncio.sleep(0)
        1 / 0  # noqa: B018


class CancelledInOnMessage(TestHandler):
    def on_message(self, message: Any) -> None:
        raise asyncio.CancelledError()


class CancelledInAsyncOnMessage(TestHandler):
    async def on_message(self, message: Any) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut


class Header(TestHandler):
    def open(self) -> None:
        h: Any = self
        methods_to_test = [
            functools.partial(h.write, "This should not work"),
            functools.partial(h.redirect, "http://localhost/elsewhere"),
            functools.partial(h.set_header, "X-Test", ""),
            functools.partial(h.set_cookie, "Chocolate", "Chip"),
            functools.partial(h.set_status, 503),
            h.flush,
            h.finish,
        ]
        for method in methods_to_test:
            try:
                # In a websocket context, many RequestHandler methods
                # raise RuntimeErrors.
                method()
                raise Exception("did not get expected exception")
            except RuntimeError:
                pass
        self.write_message(self.request.headers.get("X-Test", ""))  # type: ignore[attr-defined]


class HeaderEcho(TestHandler):
    def set_default_headers(self) -> None:
        self.set_header("X-Extra-Response-Header", "Extra-Response-Value")  # type: ignore[attr-defined]

    def prepare(self) -> None:
        for k, v in self.request.headers.get_all():  # type: ignore[attr-defined]
            if k.lower().startswith("x-test"):
                self.set_header(k, v)  # type: ignore[attr-defined]


class NonWebSocket(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


class CloseReason(TestHandler):
    def open(self) -> None:
        self.close(1001, "goodbye")  # type: ignore[attr-defined]


class AsyncPrepare(TestHandler):
    @gen.coroutine
    def prepare(self) -> Any:
        yield gen.moment

    def on_message(self, message: Any) -> None:
        self.write_message(message)  # type: ignore[attr-defined]


class PathArgs(TestHandler):
    def open(self, arg: str) -> None:
        self.write_message(arg)  # type: ignore[attr-defined]


class CoroutineOnMessage(TestHandler):
    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.sleeping = 0

    @gen.coroutine
    def on_message(self, message: Any) -> Any:
        if self.sleeping > 0:
            self.write_message("another coroutine is already sleeping")  # type: ignore[attr-defined]
        self.sleeping += 1
        yield gen.sleep(0.01)
        self.sleeping -= 1
        self.write_message(message)  # type: ignore[attr-defined]


class RenderMessage(TestHandler):
    def on_message(self, message: Any) -> None:
        self.write_message(self.render_string("message.html", message=message))  # type: ignore[attr-defined]


class Subprotocol(TestHandler):
    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.select_subprotocol_called = False

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        if self.select_subprotocol_called:
            raise Exception("select_subprotocol called twice")
        self.select_subprotocol_called = True
        if "goodproto" in subprotocols:
            return "goodproto"
        return None

    def open(self) -> None:
        if not self.select_subprotocol_called:
            raise Exception("select_subprotocol not called")
        self.write_message(f"subprotocol={self.selected_subprotocol}")  # type: ignore[attr-defined]


class OpenCoroutine(TestHandler):
    def initialize(self, event: asyncio.Event, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.event = event
        self.open_finished = False

    async def open(self) -> None:
        await self.event.wait()
        await asyncio.sleep(0.01)
        self.open_finished = True

    def on_message(self, message: Any) -> None:
        if not self.open_finished:
            raise Exception("on_message called before open finished")
        self.write_message("ok")  # type: ignore[attr-defined]


class ErrorInOpen(TestHandler):
    def open(self) -> None:
        raise Exception("boom")


class ErrorInAsyncOpen(TestHandler):
    async def open(self) -> None:
        await asyncio.sleep(0)
        raise Exception("boom")


class NoDelay(TestHandler):
    def open(self) -> None:
        self.set_nodelay(True)  # type: ignore[attr-defined]
        self.write_message("hello")  # type: ignore[attr-defined]


class Ping(TestHandler):
    def on_ping(self, data: bytes) -> None:
        self.write_message(data, binary=isinstance(data, bytes))  # type: ignore[attr-defined]


class Status(TestHandler):
    """What Tornado's API says of an open connection, as text."""

    def open(self) -> None:
        h: Any = self
        open_check = h.ws_connection is not None and not h.ws_connection.is_closing()
        h.write_message(f"status={h.get_status()} open={open_check} size={h.max_message_size}")


class WriteAfterGone(TestHandler):
    """Awaits writes until the client has gone: the error must be
    WebSocketClosedError (Tornado since 5.0), whatever the transport saw."""

    def initialize(self, result: asyncio.Future[Any], **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.result = result

    async def on_message(self, message: Any) -> None:
        h: Any = self
        try:
            for _ in range(10_000):
                await h.write_message(b"x" * 65536, binary=True)
        except Exception as exc:  # what Tornado promises to raise
            self.result.set_result(type(exc))
        else:
            self.result.set_result(None)


# -- the cases ----------------------------------------------------------------


async def test_http_request(serve: Serve) -> None:
    url = await serve(("/echo", Echo, {}))
    assert (await _fetch(url + "/echo")).code == 400


async def test_missing_websocket_key(serve: Serve) -> None:
    url = await serve(("/echo", Echo, {}))
    headers = {"Connection": "Upgrade", "Upgrade": "WebSocket", "Sec-WebSocket-Version": "13"}
    assert (await _fetch(url + "/echo", headers)).code == 400


async def test_bad_websocket_version(serve: Serve) -> None:
    url = await serve(("/echo", Echo, {}))
    headers = {"Connection": "Upgrade", "Upgrade": "WebSocket", "Sec-WebSocket-Version": "12"}
    assert (await _fetch(url + "/echo", headers)).code == 426


@pytest.mark.parametrize("message", ["hello", "hello \u00e9", b"hello \xe9"])
async def test_echo_text_unicode_and_binary(serve: Serve, message: str | bytes) -> None:
    url = await serve(("/echo", Echo, {}))
    ws = await _connect(url + "/echo")
    await ws.write_message(message, binary=isinstance(message, bytes))
    assert await ws.read_message() == message
    ws.close()


async def test_render_message(serve: Serve) -> None:
    url = await serve(("/render", RenderMessage, {}))
    ws = await _connect(
        url + "/render",
    )
    await ws.write_message("hello")
    assert await ws.read_message() == "<b>hello</b>"
    ws.close()


class CurrentUser(TestHandler):
    """The issue's case: a user from a cookie, first read in on_message."""

    def get_current_user(self) -> str | None:
        return self.get_cookie("user")  # type: ignore[attr-defined,no-any-return]

    def on_message(self, message: Any) -> None:
        self.write_message(f"user={self.current_user}")  # type: ignore[attr-defined]


async def test_current_user_from_a_cookie_read_in_on_message(serve: Serve) -> None:
    url = await serve(("/", CurrentUser, {}))
    ws = await _connect(HTTPRequest(url + "/", headers={"Cookie": "user=ada"}))
    await ws.write_message("who")
    assert await ws.read_message() == "user=ada"


class HeaderInOnMessage(TestHandler):
    def on_message(self, message: Any) -> None:
        self.write_message(self.request.headers.get("X-Test", "none"))  # type: ignore[attr-defined]


async def test_headers_read_in_on_message(serve: Serve, impl: str) -> None:
    url = await serve(("/", HeaderInOnMessage, {}))
    ws = await _connect(HTTPRequest(url + "/", headers={"X-Test": "hello"}))
    await ws.write_message("which")
    if impl == OURS:  # DIFFERENCES["headers-released-after-open"]
        assert await ws.read_message() is None
        assert ws.close_code == 1011
        return
    assert await ws.read_message() == "hello"


@pytest.mark.parametrize(
    "mixin",
    [ErrorInOnMessage, ErrorInAsyncOnMessage, CancelledInOnMessage, CancelledInAsyncOnMessage],
    ids=lambda m: m.__name__,
)
async def test_error_in_on_message_closes_and_calls_on_close(
    serve: Serve, impl: str, mixin: type, io_loop: Any
) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/err", mixin, {"close_future": closed}))
    ws = await _connect(url + "/err")
    await ws.write_message("hello")
    assert await ws.read_message() is None
    await asyncio.wait_for(closed, 5)  # on_close is still called
    if impl == OURS:  # DIFFERENCES["error-closes-1011"], DIFFERENCES["cancelled-in-on-message"]
        assert ws.close_code == 1011
    else:
        assert ws.close_code is None


async def test_websocket_http_fail(serve: Serve) -> None:
    url = await serve(("/echo", Echo, {}))
    with pytest.raises(HTTPClientError) as caught:
        await _connect(url + "/notfound")
    assert caught.value.code == 404


async def test_websocket_http_success(serve: Serve) -> None:
    url = await serve(("/non_ws", NonWebSocket, {}))
    with pytest.raises(Exception, match=r"."):
        await _connect(url + "/non_ws")


async def test_websocket_headers(serve: Serve) -> None:
    url = await serve(("/header", Header, {}))
    ws = await _connect(HTTPRequest(url + "/header", headers={"X-Test": "hello"}))
    assert await ws.read_message() == "hello"
    ws.close()


async def test_websocket_header_echo(serve: Serve, impl: str) -> None:
    url = await serve(("/header_echo", HeaderEcho, {}))
    ws = await _connect(HTTPRequest(url + "/header_echo", headers={"X-Test-Hello": "hello"}))
    assert ws.headers is not None
    if impl == OURS:  # DIFFERENCES["no-handler-headers-on-101"]
        assert ws.headers.get("X-Test-Hello") is None
        assert ws.headers.get("X-Extra-Response-Header") is None
    else:
        assert ws.headers.get("X-Test-Hello") == "hello"
        assert ws.headers.get("X-Extra-Response-Header") == "Extra-Response-Value"
    ws.close()


async def test_server_close_reason(serve: Serve) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/close_reason", CloseReason, {"close_future": closed}))
    ws = await _connect(url + "/close_reason")
    assert await ws.read_message() is None
    assert (ws.close_code, ws.close_reason) == (1001, "goodbye")
    code, _ = await asyncio.wait_for(closed, 5)
    assert code == 1001  # the client echoed it: the server's close_code is the client's


async def test_client_close_reason(serve: Serve) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/echo", Echo, {"close_future": closed}))
    ws = await _connect(url + "/echo")
    ws.close(1001, "goodbye")
    assert await asyncio.wait_for(closed, 5) == (1001, "goodbye")


async def test_client_close_without_a_code_leaves_close_code_none(serve: Serve) -> None:
    """close_code comes from the client's close frame only."""
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/echo", Echo, {"close_future": closed}))
    ws = await _connect(url + "/echo")
    ws.close()
    assert await asyncio.wait_for(closed, 5) == (None, None)


async def test_client_gone_without_a_close_frame_leaves_close_code_none(serve: Serve) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/echo", Echo, {"close_future": closed}))
    ws = await _connect(url + "/echo")
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    assert ws.protocol is not None
    ws.protocol.stream.close()  # type: ignore[union-attr]
    assert await asyncio.wait_for(closed, 5) == (None, None)


async def test_async_prepare(serve: Serve) -> None:
    url = await serve(("/async_prepare", AsyncPrepare, {}))
    ws = await _connect(url + "/async_prepare")
    await ws.write_message("hello")
    assert await ws.read_message() == "hello"
    ws.close()


async def test_path_args(serve: Serve) -> None:
    url = await serve(("/path_args/(.*)", PathArgs, {}))
    ws = await _connect(url + "/path_args/hello")
    assert await ws.read_message() == "hello"
    ws.close()


async def test_coroutine_on_message_one_at_a_time(serve: Serve) -> None:
    url = await serve(("/coroutine", CoroutineOnMessage, {}))
    ws = await _connect(url + "/coroutine")
    await ws.write_message("hello1")
    await ws.write_message("hello2")
    assert await ws.read_message() == "hello1"
    assert await ws.read_message() == "hello2"
    ws.close()


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:{port}", None),
        ("http://127.0.0.1:{port}/something", None),
        ("127.0.0.1:{port}", 403),
        ("http://somewhereelse.com", 403),
    ],
    ids=["valid-no-path", "valid-with-path", "invalid-partial-url", "invalid"],
)
async def test_check_origin(serve: Serve, impl: str, origin: str, status: int | None) -> None:
    url = await serve(("/echo", Echo, {}))
    port = url.rsplit(":", 1)[1]
    request = HTTPRequest(url + "/echo", headers={"Origin": origin.format(port=port)})
    if status is None:
        ws = await _connect(request)
        await ws.write_message("hello")
        assert await ws.read_message() == "hello"
        ws.close()
    else:
        with pytest.raises(HTTPClientError) as caught:
            await _connect(request)
        assert caught.value.code == status
        assert caught.value.response is not None
        connection = caught.value.response.headers.get("Connection")
        if impl == OURS:  # DIFFERENCES["refusal-connection-close"]
            assert connection == "close"
        else:
            assert connection != "close"


async def test_check_origin_invalid_subdomains(serve: Serve) -> None:
    url = await serve(("/echo", Echo, {}))
    port = url.rsplit(":", 1)[1]
    if socket.AF_INET not in {a[0] for a in socket.getaddrinfo("localhost", int(port))}:
        pytest.fail("localhost does not resolve to IPv4 here")
    request = HTTPRequest(
        f"ws://localhost:{port}/echo", headers={"Origin": "http://subtenant.localhost"}
    )
    with pytest.raises(HTTPClientError) as caught:
        await _connect(request)
    assert caught.value.code == 403


@pytest.mark.parametrize(
    ("offered", "selected"), [(["badproto", "goodproto"], "goodproto"), (None, None)]
)
async def test_subprotocols(serve: Serve, offered: list[str] | None, selected: str | None) -> None:
    url = await serve(("/subprotocol", Subprotocol, {}))
    ws = await _connect(url + "/subprotocol", subprotocols=offered)
    assert ws.selected_subprotocol == selected
    assert await ws.read_message() == f"subprotocol={selected}"
    ws.close()


async def test_open_coroutine(serve: Serve) -> None:
    event = asyncio.Event()
    url = await serve(("/open_coroutine", OpenCoroutine, {"event": event}))
    ws = await _connect(url + "/open_coroutine")
    await ws.write_message("hello")
    event.set()
    assert await ws.read_message() == "ok"
    ws.close()


@pytest.mark.parametrize("mixin", [ErrorInOpen, ErrorInAsyncOpen], ids=lambda m: m.__name__)
async def test_error_in_open(serve: Serve, impl: str, mixin: type) -> None:
    url = await serve(("/error_in_open", mixin, {}))
    ws = await _connect(url + "/error_in_open")
    assert await ws.read_message() is None
    # DIFFERENCES["error-closes-1011"]
    assert ws.close_code == (1011 if impl == OURS else None)


async def test_nodelay(serve: Serve) -> None:
    url = await serve(("/nodelay", NoDelay, {}))
    ws = await _connect(url + "/nodelay")
    assert await ws.read_message() == "hello"
    ws.close()


async def test_manual_ping(serve: Serve) -> None:
    url = await serve(("/", Ping, {}))
    ws = await _connect(url + "/")
    with pytest.raises(ValueError, match="125"):
        ws.ping("a" * 126)  # type: ignore[arg-type]
    ws.ping("hello")  # type: ignore[arg-type]
    assert await ws.read_message() == b"hello"  # on_ping always sees bytes
    ws.ping(b"binary hello")
    assert await ws.read_message() == b"binary hello"
    ws.close()


class CloseWithCode(TestHandler):
    """Closes with the code the client sends, or says what close() raised."""

    def on_message(self, message: Any) -> None:
        try:
            self.close(int(message), "bye")  # type: ignore[attr-defined]
        except ValueError as exc:
            self.write_message(f"ValueError: {exc}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", [1015, 2999])
async def test_close_with_a_code_no_endpoint_may_send(serve: Serve, impl: str, code: int) -> None:
    url = await serve(("/", CloseWithCode, {}))
    ws = await _connect(url + "/")
    await ws.write_message(str(code))
    if impl == OURS:  # DIFFERENCES["close-code-checked"]
        assert "cannot be sent" in str(await ws.read_message())
        await ws.write_message("4000")  # still open: a valid code closes it
        assert await ws.read_message() is None
        assert (ws.close_code, ws.close_reason) == (4000, "bye")
        return
    assert await ws.read_message() is None
    assert ws.close_code == code


async def test_max_message_size_setting(serve: Serve, impl: str) -> None:
    url = await serve(("/", Echo, {}), settings={"websocket_max_message_size": 1024})
    ws = await _connect(url + "/")
    msg = "a" * 1024
    await ws.write_message(msg)
    assert await ws.read_message() == msg
    await ws.write_message(msg + "b")
    assert await ws.read_message() is None
    assert ws.close_code == 1009
    if impl == OURS:  # DIFFERENCES["too-big-reason"]
        assert ws.close_reason == "message too big: limit is 1024 bytes"
    else:
        assert ws.close_reason == "message too big"


async def test_status_connection_and_size_while_open(serve: Serve, impl: str) -> None:
    """get_status() is 101 and ws_connection says open, in open()."""
    url = await serve(("/", Status, {}), settings={"websocket_max_message_size": 4096})
    ws = await _connect(url + "/")
    assert await ws.read_message() == "status=101 open=True size=4096"
    ws.close()


async def test_awaited_write_to_a_gone_client_raises_websocket_closed_error(
    serve: Serve,
) -> None:
    result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    url = await serve(("/", WriteAfterGone, {"result": result}))
    ws = await _connect(url + "/")
    await ws.write_message("go")
    await asyncio.sleep(0.05)  # writes fill the buffers; the client never reads
    assert ws.protocol is not None
    ws.protocol.stream.close()  # type: ignore[union-attr]
    assert await asyncio.wait_for(result, 10) is WebSocketClosedError


@pytest.mark.parametrize("options", [{"compression_level": 9}, {"mem_level": 5}])
async def test_compression_options(serve: Serve, impl: str, options: dict[str, int]) -> None:
    """Tornado applies compression_level and mem_level; ours cannot, and
    says so (a 500 and the ValueError in the log) instead of ignoring them."""
    url = await serve(("/", Echo, {"compression_options": options}))
    if impl == OURS:  # DIFFERENCES["compression-options"]
        with pytest.raises(HTTPClientError) as caught:
            await _connect(url + "/", compression_options={})
        assert caught.value.code == 500
        return
    ws = await _connect(url + "/", compression_options={})
    await ws.write_message("hello " * 100)
    assert await ws.read_message() == "hello " * 100
    ws.close()


async def test_ping_settings(serve: Serve, impl: str) -> None:
    url = await serve(("/", Echo, {}), settings={"websocket_ping_interval": 5})
    if impl == OURS:  # DIFFERENCES["ping-settings"]
        with pytest.raises(HTTPClientError) as caught:
            await _connect(url + "/")
        assert caught.value.code == 500
        return
    ws = await _connect(url + "/")
    await ws.write_message("hi")
    assert await ws.read_message() == "hi"
    ws.close()


def test_the_guide_lists_every_difference() -> None:
    guide = Path(__file__).parent.parent / "docs" / "guides" / "write-a-service.md"
    section = guide.read_text().split("## Differences from Tornado", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)
    assert rows == list(DIFFERENCES)
    source = Path(__file__).read_text()
    for row in DIFFERENCES:  # each is pinned by a case that names it
        assert f'DIFFERENCES["{row}"]' in source, row
