"""An app is routes, not one handler: several WebSocket routes with path
arguments and ``initialize()`` arguments, extra HTTP handlers, the console
on or off, all sharing one Service (registry, cap, drain, metrics); and the
apps' read-only view of the open connections. In process, over real
sockets on loopback with real websockets clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import make_app
from server.base import KnativeWebSocketHandler, Service
from server.connections import Connections, Registry
from server.echo import EchoWebSocket
from server.metrics import Metrics

from .conftest import recv_until_closed, until


class Shared:
    """An object every connection of a route gets through ``initialize()``."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, ...]] = []


class RoomWebSocket(KnativeWebSocketHandler):
    """Replies with its room, the shared object's identity, and the view's counts."""

    def initialize(self, shared: Shared, label: str) -> None:
        self.shared = shared
        self.label = label

    def open(self, *args: str, **kwargs: str) -> None:
        self.args = args + tuple(f"{k}={v}" for k, v in kwargs.items())
        self.shared.opened.append(self.args)

    def on_message(self, message: str | bytes) -> None:
        view = self.connections
        self.write_message(
            {
                "label": self.label,
                "args": list(self.args),
                "shared": id(self.shared),
                "all": len(view),
                "rooms": len(view.select(RoomWebSocket)),
                "echoes": len(view.select(EchoWebSocket)),
                "here": len(view.select(path=self.request.path)),
                "route": len(view.select(route=r"/ws/rooms/([a-z]+)")),
                "me": self in view,
            }
        )


class HelloHandler(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.finish(f"hello {name}")


SHARED = Shared()


def routes() -> list[Any]:
    return [
        (r"/ws/rooms/([a-z]+)", RoomWebSocket, {"shared": SHARED, "label": "room"}),
        (r"/ws/users/(?P<user>[a-z]+)/inbox", RoomWebSocket, {"shared": SHARED, "label": "inbox"}),
        (r"/ws", EchoWebSocket),
    ]


@pytest.fixture
def app(request: pytest.FixtureRequest, service: Service) -> tornado.web.Application:
    SHARED.opened.clear()
    console = request.node.get_closest_marker("console")
    return make_app(
        service,
        routes=routes(),
        http_routes=[(r"/hello/([a-z]+)", HelloHandler)],
        console=console.args[0] if console else None,
    )


async def ask(ws: Any) -> dict[str, Any]:
    import json

    await ws.send("?")
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return doc


async def test_routes_get_path_arguments_and_shared_initialize_arguments(port: int) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with (
        connect(f"{base}/ws/rooms/lobby") as a,
        connect(f"{base}/ws/rooms/lobby") as b,
        connect(f"{base}/ws/rooms/den") as c,
        connect(f"{base}/ws/users/ada/inbox") as d,
        connect(f"{base}/ws") as echo,
    ):
        await echo.send("still an echo")
        assert await echo.recv() == "still an echo"
        replies = [await ask(ws) for ws in (a, b, c, d)]
    assert [r["args"] for r in replies] == [["lobby"], ["lobby"], ["den"], ["user=ada"]]
    assert [r["label"] for r in replies] == ["room", "room", "room", "inbox"]
    assert {r["shared"] for r in replies} == {id(SHARED)}
    assert sorted(SHARED.opened) == [("den",), ("lobby",), ("lobby",), ("user=ada",)]
    # The view: every route's connections, by class, by path, by route pattern.
    assert {r["all"] for r in replies} == {5}
    assert {r["rooms"] for r in replies} == {4}
    assert {r["echoes"] for r in replies} == {1}
    assert [r["here"] for r in replies] == [2, 2, 1, 1]
    assert {r["route"] for r in replies} == {3}
    assert all(r["me"] for r in replies)


async def test_a_named_path_group_is_a_keyword_argument_of_open(port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/ws/users/ada/inbox") as ws:
        await ask(ws)
    assert SHARED.opened == [("user=ada",)]  # Tornado passes named groups as kwargs


async def test_the_view_is_read_only_and_a_snapshot(port: int, registry: Registry) -> None:
    view = registry.view
    assert isinstance(view, Connections)
    for name in ("add", "discard", "remove", "clear", "pop", "drain", "_open_set"):
        assert not hasattr(view, name), name
    with pytest.raises(AttributeError):
        view.extra = 1  # type: ignore[attr-defined]
    async with connect(f"ws://127.0.0.1:{port}/ws/rooms/lobby"):
        await until(lambda: len(view) == 1)
        snapshot = list(view)
        snapshot.clear()
        assert len(view) == 1
        [handler] = view.select(RoomWebSocket, route=r"/ws/rooms/(.*)")
        assert handler.args == ("lobby",)
        assert view.select(RoomWebSocket, path="/ws/rooms/den") == []
    await until(lambda: len(view) == 0)


@pytest.mark.settings(max_connections=2)
async def test_every_route_shares_the_one_cap(port: int, metrics: Metrics) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with connect(f"{base}/ws/rooms/lobby"), connect(f"{base}/ws"):
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{base}/ws/users/ada/inbox"):
                pass
        assert info.value.response.status_code == 503


async def test_one_drain_closes_every_route_with_1001(port: int, registry: Registry) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with connect(f"{base}/ws/rooms/lobby") as a, connect(f"{base}/ws") as b:
        await until(lambda: len(registry) == 2)
        aborted, _, _ = await asyncio.gather(
            registry.drain(5), recv_until_closed(a), recv_until_closed(b)
        )
    assert aborted == 0
    assert a.close_code == b.close_code == 1001


async def test_metrics_count_every_route_in_one_place(port: int, metrics: Metrics) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with connect(f"{base}/ws/rooms/lobby") as a, connect(f"{base}/ws") as b:
        await ask(a)
        await b.send("x")
        await b.recv()
    assert metrics.connections_opened.value == 2


async def test_http_routes_probes_and_metrics_are_served(port: int) -> None:
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}"
    assert (await client.fetch(f"{base}/hello/ada")).body == b"hello ada"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.fetch(base + path)).code == 200


async def test_with_routes_the_console_is_off_by_default(port: int) -> None:
    with pytest.raises(HTTPClientError) as info:
        await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")
    assert info.value.code == 404


@pytest.mark.console(True)
async def test_the_console_can_be_turned_on(port: int) -> None:
    page = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")
    assert page.code == 200
    assert b"<html" in page.body.lower()


@pytest.mark.parametrize("path", ["/ws/rooms/lobby", "/ws"])
async def test_a_plain_get_on_any_websocket_route_gets_a_generic_400(port: int, path: str) -> None:
    with pytest.raises(HTTPClientError) as info:
        await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}")
    assert info.value.code == 400
    assert info.value.response is not None
    body = info.value.response.body.decode()
    assert "WebSocket endpoint" in body
    assert "wscat" not in body
    assert "/ws" not in body  # it does not name a route the client may not be on


def test_a_bad_route_fails_at_start_with_a_clear_error(service: Service) -> None:
    with pytest.raises(TypeError, match="must subclass KnativeWebSocketHandler"):
        make_app(service, routes=[(r"/ws", tornado.web.RequestHandler)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="would match /healthz"):
        make_app(service, routes=[(r"/(.*)", EchoWebSocket)])
    with pytest.raises(ValueError, match="at least one"):
        make_app(service, routes=[])
    with pytest.raises(TypeError, match="not both"):
        make_app(service, EchoWebSocket, routes=[(r"/ws", EchoWebSocket)])
    with pytest.raises(TypeError, match="must be a dict"):
        make_app(service, routes=[(r"/ws", EchoWebSocket, [1])])  # type: ignore[list-item]
