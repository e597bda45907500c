"""Fixtures: an in-process server on loopback (pytest-tornasync's
``http_server`` serving our ``app``), and a real ``python -m server``
subprocess for the lifecycle tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop

from server.app import build_service, make_app, make_http_server
from server.base import Service
from server.config import Settings
from server.connections import Registry
from server.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m server`` (or another ``module``, or ``python script``
    run in the script's directory) in a subprocess, its JSON log lines parsed."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        module: str = "server",
        script: Path | None = None,
    ) -> None:
        self.port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WS_")}
        full_env.update({"PORT": str(self.port), "WS_HOST": "127.0.0.1", **(env or {})})
        target = ["-m", module] if script is None else [script.name]
        self.proc = subprocess.Popen(
            [sys.executable, *target, *(args or [])],
            cwd=ROOT if script is None else script.parent,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed at teardown
            self._read_lines(self.proc.stdout)

    def _read_lines(self, stdout: Iterable[str]) -> None:
        for line in stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {"event": "raw", "line": line.rstrip("\n")}
            self.log.append(doc)
            self.lines.put(doc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until the process logs event ``name`` (earlier lines included)."""
        for doc in self.log:
            if doc.get("event") == name:
                return doc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                doc = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if doc.get("event") == name:
                return doc
        raise AssertionError(f"no {name!r} event; log so far: {self.log}")

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/readyz", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log}")
            time.sleep(0.02)
        raise AssertionError("server never became ready")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
        if proc.proc.stdout is not None:
            proc.proc.stdout.close()


def requirement_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalised name."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out
