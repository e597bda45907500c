"""Every query of the Grafana dashboard, and every alert expression, against
a real Prometheus (Debian's ``prometheus`` binary, on loopback) scraping a
real server process with ``WS_WORKERS=2`` every second while a load
generator runs: real websocket clients sending text and binary, closing
with several codes, and bad handshakes.

Grafana itself cannot run here (it is in neither Debian nor PyPI nor npm),
so the dashboard's template variables are filled in the way Grafana does
for "All": ``$job`` and ``$namespace`` become ``.*``, ``$__rate_interval``
a window longer than the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from e2e.render import CHART

from .conftest import ServerProcess, free_port
from .rawws import frame, upgrade_request

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULES = CHART / "files" / "prometheus-rules.yaml"
#: Seconds of load before the queries; the rate window covers all of it.
LOAD_SECONDS = 8.0
RATE_WINDOW = "30s"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, variables filled in as
    Grafana does with "All" selected."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", RATE_WINDOW)
                .replace("$job", ".*")
                .replace("$namespace", ".*")
            )
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


class Prometheus:
    """``prometheus`` in a temporary directory, scraping ``target`` every second."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: scripts/setup.sh installs Debian's prometheus package"
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "websocket-server", "static_configs": [{"targets": [target]}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
        self.directory = directory

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                result: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with a JSON body
            result = json.load(exc)
            exc.close()
        return result

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.directory / "prometheus.log").read_text()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("prometheus never became ready")

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


async def generate_load(
    server: ServerProcess, seconds: float, held: list[ClientConnection]
) -> dict[str, int]:
    """Connections that send text and binary and close with 1000, 1001 and
    4000, plain GETs of /ws (400) and foreign origins (403); the ``held``
    connections are kept open and echo now and then."""
    counts = {"sessions": 0, "refused": 0}

    async def session(code: int) -> None:
        async with connect(server.ws_url, compression=None) as ws:
            await ws.send("hello")
            await ws.recv()
            await ws.send(b"\x00\x01\x02binary")
            await ws.recv()
            await ws.close(code)
        counts["sessions"] += 1

    async def refused(origin: str | None) -> None:
        headers = {"Origin": origin} if origin else {}
        if origin is None:  # not an upgrade at all: 400
            request = urllib.request.Request(server.url + "/ws", headers={"Connection": "close"})
            with contextlib.suppress(urllib.error.HTTPError):
                await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
        else:
            with contextlib.suppress(InvalidStatus):
                async with connect(server.ws_url, additional_headers=headers):
                    pass
        counts["refused"] += 1

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(
            *(session(code) for code in (1000, 1000, 1001, 4000)),
            refused(None),
            refused("https://evil.example"),
        )
        for ws in held:
            await ws.send("still here")
            await ws.recv()
        await asyncio.sleep(0.1)
    return counts


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[type[Prometheus]]:
    started: list[Prometheus] = []

    class Factory(Prometheus):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            started.append(self)

    yield Factory
    for p in started:
        p.stop()


def _values(result: dict[str, Any]) -> list[float]:
    return [float(sample["value"][1]) for sample in result["data"]["result"]]


def test_every_dashboard_query_returns_data_from_a_loaded_server(
    server_process: type[ServerProcess], prometheus: type[Prometheus], tmp_path: Path
) -> None:
    server = server_process(env={"WS_WORKERS": "2", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    prom = prometheus(tmp_path, f"127.0.0.1:{server.port}")
    prom.wait_ready()

    held: list[ClientConnection] = []

    async def run() -> dict[str, int]:
        # Held open past the queries: "open connections" is not 0.
        held.extend([await connect(server.ws_url) for _ in range(4)])
        return await generate_load(server, LOAD_SECONDS, held)

    loop = asyncio.new_event_loop()
    try:
        counts = loop.run_until_complete(run())
        assert counts["sessions"] > 20
        assert counts["refused"] > 10
        time.sleep(2)  # two more scrapes after the load

        # Prometheus scraped the server, and loaded every alert.
        up = prom.query('up{job="websocket-server"}')
        assert _values(up) == [1.0], up
        groups = prom.api("rules")["data"]["groups"]
        loaded = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        assert loaded == {name: "ok" for name, _ in alert_expressions()}

        # Every alert expression parses and evaluates.
        for name, expr in alert_expressions():
            result = prom.query(expr)
            assert result["status"] == "success", (name, result)

        # Every panel query parses and returns data.
        dashboard = json.loads(DASHBOARD.read_text())
        queries = panel_queries(dashboard)
        assert len(queries) >= 10
        answers = {}
        for title, expr in queries:
            result = prom.query(expr)
            assert result["status"] == "success", (title, expr, result)
            values = _values(result)
            assert values, f"{title}: no data for {expr}"
            assert not all(math.isnan(v) for v in values), f"{title}: only NaN for {expr}"
            answers[title] = result["data"]["result"]
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                loop.run_until_complete(ws.close())
        loop.close()

    def by(title: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in answers[title]}

    # The load shows where a user would look for it.
    titles = {t.split(" [")[0] for t in answers}
    assert len(titles) == len(dashboard["panels"])
    open_now = sum(float(s["value"][1]) for s in answers["Open connections per pod [A]"])
    assert open_now >= 1  # the held connections (one worker's share, or all)
    closed = by("Connections opened and closed (by close code) per second [B]", "code")
    assert closed["1000"] > 0
    assert closed["4xxx"] > 0
    assert closed["1001"] > 0
    for what in ("Messages per second by type", "Payload bytes per second by type"):
        received = by(f"{what} [A]", "type")
        assert received["text"] > 0, what
        assert received["binary"] > 0, what
    refusals = by("Handshake refusals per second by reason [A]", "reason")
    assert refusals["bad_handshake"] > 0
    assert refusals["origin_rejected"] > 0
    [p50] = _values({"data": {"result": answers["Connection duration percentiles [A]"]}})
    assert 0 < p50 < 1


async def _slow_reader_in_a_lingering_close(port: int) -> asyncio.StreamWriter:
    """A client with a small receive buffer that sends 3 MiB to be echoed
    and its close frame, without reading: the server's echoes wait in its
    backlog. Then it reads 32 KiB a second: the server lingers to deliver
    what it wrote before its close frame (while the client takes it, up to
    30 s), which a drain of 20 s cannot wait out."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16384)
    writer.write(upgrade_request())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    for _ in range(48):
        writer.write(frame(0x2, b"x" * 65536))
    writer.write(frame(0x8, b"\x03\xe8"))

    async def read_slowly() -> None:
        while await reader.read(8192):
            await asyncio.sleep(0.25)

    _background.append(asyncio.ensure_future(read_slowly()))
    return writer


_background: list[asyncio.Future[None]] = []


def test_the_drain_overrun_alert_fires_in_a_real_prometheus(
    server_process: type[ServerProcess], prometheus: type[Prometheus], tmp_path: Path
) -> None:
    """A drain that hits its timeout (a slow reader keeps the server
    lingering past WS_DRAIN_TIMEOUT): more than 16 s into it Prometheus,
    scraping every second and evaluating the shipped rules, fires
    WebSocketDrainOverrun for that server, and not before."""
    server = server_process(env={"WS_DRAIN_TIMEOUT": "20"})
    server.wait_ready()
    target = f"127.0.0.1:{server.port}"
    prom = prometheus(tmp_path, target)
    prom.wait_ready()

    def firing() -> list[dict[str, Any]]:
        alerts = prom.api("alerts")["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "WebSocketDrainOverrun" and a["state"] == "firing"
        ]

    async def scenario() -> float:
        writer = await _slow_reader_in_a_lingering_close(server.port)
        deadline = time.monotonic() + 10
        while _values(prom.query('websocket_open_connections{job="websocket-server"}')) != [1.0]:
            assert time.monotonic() < deadline, "the open connection was never scraped"
            await asyncio.sleep(0.2)
        assert firing() == []
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        while not (alerts := firing()):
            elapsed = time.monotonic() - signalled
            assert elapsed < 20.5, "WebSocketDrainOverrun never fired"
            await asyncio.sleep(0.2)
        fired_after = time.monotonic() - signalled
        [alert] = alerts
        assert alert["labels"]["instance"] == target
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["runbook_url"].endswith("#websocketdrainoverrun")
        # The client goes on reading slowly until the drain gives up on it.
        assert await asyncio.to_thread(server.wait, 15) == 0
        for task in _background:
            task.cancel()
        writer.close()
        return fired_after

    fired_after = asyncio.run(scenario())
    assert fired_after > 16
    # It was a drain that hit its timeout.
    assert server.wait_event("drained")["aborted"] == 1
