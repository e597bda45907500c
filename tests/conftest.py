"""Fixtures: an in-process server on loopback (pytest-tornasync's
``http_server`` serving our ``app``), and real ``python -m server``
subprocesses (testkit.process.ServerProcess, shared with bench/)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop
from websockets.asyncio.client import connect

from server.app import build_service, make_app, make_http_server
from server.base import Service
from server.config import Settings
from server.connections import Registry
from server.metrics import Metrics
from testkit.process import ROOT, ServerProcess, free_port

__all__ = ["ROOT", "ServerProcess", "free_port"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "settings(**kw): Settings overrides for the in-process server"
    )
    config.addinivalue_line("markers", "handler(cls): the /ws handler class to serve")
    config.addinivalue_line("markers", "console(on): make_app's console argument")


@pytest.fixture(autouse=True)
def _close_implicit_event_loop() -> Iterator[None]:
    """Close the asyncio loop Tornado's IOLoop leaves current after a test.

    pytest-tornasync's IOLoop asks ``asyncio.get_event_loop()`` for the loop
    to restore when it closes; with none set, asyncio makes one, and that
    loop stays current, unclosed, until a later ``asyncio.run()`` replaces
    it and it is collected with a ResourceWarning (an error here)."""
    yield
    policy = asyncio.get_event_loop_policy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = policy.get_event_loop()
    except RuntimeError:  # none set
        return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
        policy.set_event_loop(None)


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Test defaults: no keepalive pings (tests that want them say so)."""
    marker = request.node.get_closest_marker("settings")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    base: dict[str, Any] = {"ping_interval": 0.0, "ping_timeout": 0.0}
    return Settings(**{**base, **overrides})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def service(settings: Settings, metrics: Metrics) -> Service:
    return build_service(settings, metrics)


@pytest.fixture
def registry(service: Service) -> Registry:
    return service.registry


@pytest.fixture
def app(request: pytest.FixtureRequest, service: Service) -> tornado.web.Application:
    """The app under test; ``@pytest.mark.handler(cls)`` swaps the /ws handler."""
    marker = request.node.get_closest_marker("handler")
    if marker:
        return make_app(service, handler=marker.args[0])
    return make_app(service)


@pytest.fixture
def http_server(
    app: tornado.web.Application,
    service: Service,
    io_loop: IOLoop,
    http_server_port: tuple[socket.socket, int],
) -> Iterator[tornado.httpserver.HTTPServer]:
    """pytest-tornasync's fixture, but with the production server's options."""
    server = make_http_server(app, service.metrics)
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture
def port(http_server: Any, http_server_port: tuple[socket.socket, int]) -> int:
    return int(http_server_port[1])


@pytest.fixture
def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The fields of every captured event called ``name``."""
    return [
        dict(r.fields, level=r.levelname)
        for r in caplog.records
        if getattr(r, "event", None) == name
    ]


async def recv_until_closed(ws: Any) -> list[str | bytes]:
    """Every message a websockets client receives until its connection closes."""
    from websockets.exceptions import ConnectionClosed

    received: list[str | bytes] = []
    try:
        while True:
            received.append(await ws.recv())
    except ConnectionClosed:
        return received


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the server side to catch up (an on_close after the client's close)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python ARGS...`` from the project root, output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def server_process() -> Iterator[type[ServerProcess]]:
    """A factory for subprocess servers; every one started is killed at the end."""
    started: list[ServerProcess] = []

    class Factory(ServerProcess):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            started.append(self)

    yield Factory
    for proc in started:
        proc.stop()


@pytest.fixture
def chat(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    """``python -m examples.chat`` processes on a backplane URL, ready
    (tests/test_backplane.py and the backplane reviews' tests)."""

    def start(url: str, **env: str) -> ServerProcess:
        env = {"WS_BACKPLANE_URL": url, "WS_LOG_MESSAGES": "false", **env}
        server = server_process(module="examples.chat", env=env)
        server.wait_ready()
        return server

    return start


@pytest.fixture
def start_server(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    """A factory for the hostile tests' servers: no keepalive pings (a ping
    would land among the raw frames they read), ready when returned."""

    def start(env: dict[str, str] | None = None, nofile: int | None = None) -> ServerProcess:
        server = server_process(env={"WS_PING_INTERVAL": "0", **(env or {})}, nofile=nofile)
        server.wait_ready(15.0)
        return server

    return start


def requirement_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalised name."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


@contextlib.asynccontextmanager
async def upgrade_burst(port: int, cls: type, count: int = 60) -> AsyncIterator[list[Any]]:
    """``count`` upgrades at once (each echoes "hi" once): the handlers of
    ``cls`` they made, while the clients stay open."""
    clients = await asyncio.gather(*(connect(f"ws://127.0.0.1:{port}/ws") for _ in range(count)))
    try:
        for ws in clients:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        gc.collect()
        yield [o for o in gc.get_objects() if type(o) is cls]
    finally:
        for ws in clients:
            await ws.close()
