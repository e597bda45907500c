"""The probe client against a real server, a wrong server, and no server."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
import tornado.web
import tornado.websocket

from server.probe import ProbeError, probe, probe_with_retries

from .conftest import ServerProcess, free_port, run_python


async def test_probe_passes_against_the_server(ws_url: str) -> None:
    result = await probe(ws_url, count=6)
    assert result.echoes == 6
    assert result.attempts == 1


class _HostEcho(tornado.websocket.WebSocketHandler):
    """Echoes, and records the Host header each connection arrived with."""

    hosts: ClassVar[list[str]] = []

    def open(self) -> None:
        self.hosts.append(self.request.host)

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def test_probe_sends_the_host_header() -> None:
    url, server = await _serve(_HostEcho)
    await probe(url, host="websocket-server.default.example.com")
    await probe(url)
    server.stop()  # type: ignore[attr-defined]
    assert _HostEcho.hosts == ["websocket-server.default.example.com", url.split("/")[2]]


class _Mangler(tornado.websocket.WebSocketHandler):
    """A wrong server: text comes back as binary, binary comes back reversed."""

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.write_message(message.encode(), binary=True)
        else:
            self.write_message(message[::-1], binary=True)


class _Closer(tornado.websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.close(4000, "nope")


class _Cutter(tornado.websocket.WebSocketHandler):
    """Echoes three messages, then cuts the TCP connection without a close
    frame (as Knative's queue-proxy does at timeoutSeconds)."""

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))
        self.count = getattr(self, "count", 0) + 1
        if self.count == 3:
            assert self.ws_connection is not None
            self.ws_connection.stream.close()  # type: ignore[attr-defined]


async def _serve(handler: type[tornado.websocket.WebSocketHandler]) -> tuple[str, object]:
    port = free_port()
    app = tornado.web.Application([("/ws", handler)])
    server = app.listen(port, "127.0.0.1")
    return f"ws://127.0.0.1:{port}/ws", server


async def test_probe_fails_when_the_type_changes() -> None:
    url, server = await _serve(_Mangler)
    with pytest.raises(ProbeError, match="sent text, got bytes back"):
        await probe(url)
    server.stop()  # type: ignore[attr-defined]


async def test_probe_fails_when_the_connection_closes() -> None:
    url, server = await _serve(_Closer)
    with pytest.raises(ProbeError, match="close code 4000"):
        await probe(url)
    server.stop()  # type: ignore[attr-defined]


async def test_probe_reports_the_close_it_got(ws_url: str) -> None:
    result = await probe(ws_url)
    # The server answers our 1000 with 1000 (and no reason).
    assert result.close_code == 1000
    assert not result.server_closed
    assert result.describe_close() == "closed with close code 1000, reason ''"


@pytest.mark.settings(max_connection_age=1.5)
async def test_probe_until_close_reports_the_servers_close(ws_url: str) -> None:
    """--until-close: echo until the server's maximum age closes the
    connection; the result names its code and reason."""
    result = await probe(ws_url, until_close=10)
    assert result.server_closed
    assert (result.close_code, result.close_reason) == (1001, "max connection age")
    assert 1.3 <= result.seconds < 3
    assert result.echoes >= 3
    assert result.describe_close() == (
        "server closed with close code 1001, reason 'max connection age'"
    )


async def test_probe_until_close_fails_on_a_cut_and_without_a_close(ws_url: str) -> None:
    url, server = await _serve(_Cutter)
    with pytest.raises(ProbeError, match=r"close code 1006 \(no close frame"):
        await probe(url, until_close=10)
    server.stop()  # type: ignore[attr-defined]
    with pytest.raises(ProbeError, match=r"did not close the connection within 1\.5 s"):
        await probe(ws_url, until_close=1.5)


async def test_probe_reports_http_status(port: int) -> None:
    with pytest.raises(ProbeError, match="HTTP 404"):
        await probe(f"ws://127.0.0.1:{port}/nope")


async def test_probe_retries_until_the_deadline() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    started = asyncio.get_running_loop().time()
    with pytest.raises(ProbeError, match=r"cannot connect.*after [3-9] attempt"):
        await probe_with_retries(url, retry_for=1.0, interval=0.3, timeout=1)
    assert asyncio.get_running_loop().time() - started < 5


def test_probe_cli_exit_codes(server_process: type[ServerProcess]) -> None:
    server = server_process()
    server.wait_ready()
    ok = run_python("-m", "server.probe", server.ws_url, "--count", "4")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"probe: OK {server.ws_url}: 4 echoes")
    assert ok.stdout.rstrip().endswith("; closed with close code 1000, reason ''")
    bad = run_python("-m", "server.probe", f"ws://127.0.0.1:{free_port()}/ws", "--timeout", "1")
    assert bad.returncode == 1
    assert bad.stderr.startswith("probe: FAIL")
    assert len(bad.stderr.strip().splitlines()) == 1
    usage = run_python("-m", "server.probe", "http://example.invalid/")
    assert usage.returncode == 2


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_probe_cli_refuses_an_until_close_that_is_not_a_time(value: str) -> None:
    """``--until-close -5`` (or nan, inf) is a usage error, as ``--count 0``
    is: it used to be taken silently as "do not wait for the server's close"
    (or to wait forever), and the probe passed without checking what the
    user asked for. No server is needed: the arguments are refused first."""
    url = f"ws://127.0.0.1:{free_port()}/ws"
    usage = run_python("-m", "server.probe", url, "--timeout", "1", "--until-close", value)
    assert usage.returncode == 2, (usage.stdout, usage.stderr)
    assert "--until-close" in usage.stderr
