"""A hostile client against a real ``python -m server``: raw sockets on
loopback, the server's own stdout, RSS and CPU time read from /proc.

Each test drives one of the failures of issue 11 and checks what a user or
operator would notice: the logged peer, the log's bytes and lines, the
server's memory and CPU, ``/metrics``, descriptors released - and that a
well-behaved client keeps echoing within a bound throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable

import pytest

from testkit.frames import close_payload
from testkit.metrics import sample as metric

from .conftest import ServerProcess
from .rawws import RawWebSocket, frame, http_request, upgrade_request

#: Characters that must never reach the log raw (besides each line's "\n").
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


async def connect(port: int, **headers: str) -> RawWebSocket:
    status, _, _, reader, writer = await http_request(port, upgrade_request(**headers))
    assert status == 101, status
    return RawWebSocket(reader, writer)


async def echo_time(ws: RawWebSocket, text: str = "ping") -> float:
    """Seconds for one echo on a well-behaved connection."""
    started = time.monotonic()
    await ws.send(frame(0x1, text.encode()))
    reply = await ws.recv(timeout=10)
    assert reply.payload == text.encode()
    return time.monotonic() - started


class Watchdog:
    """A well-behaved client echoing every 50 ms in the background; the
    slowest echo is what a user would notice."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst = 0.0
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watchdog:
        self.ws = await connect(self.port)
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            self.worst = max(self.worst, await echo_time(self.ws, f"watch {self.count}"))
            self.count += 1
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # re-raise what broke the watchdog
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.ws.close()


# -- forwarded headers -------------------------------------------------------------


def test_spoofed_forwarded_headers_from_trusted_and_untrusted_hops(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Behind a trusted proxy (loopback, as the queue-proxy is) the peer is
    the right-most address it did not add, not the client's first entry;
    from an untrusted hop no forwarded header is believed. The socket peer
    is on every event as ``via``."""
    trusted = start_server()
    untrusted = start_server(env={"WS_TRUSTED_PROXIES": "10.0.0.0/8"})

    async def scenario(server: ServerProcess) -> None:
        ws = await connect(server.port, X_Forwarded_For="6.6.6.6, 203.0.113.7", X_Real_Ip="7.7.7.7")
        await echo_time(ws)
        await ws.send(frame(0x8, close_payload(1000)))
        await ws.recv_close()
        ws.close()

    asyncio.run(scenario(trusted))
    asyncio.run(scenario(untrusted))
    time.sleep(0.5)
    for server, peer in ((trusted, "203.0.113.7"), (untrusted, None)):
        for name in ("open", "message", "close"):
            [event] = server.events(name)
            via = event.get("via") or event["peer"]
            assert re.fullmatch(r"127\.0\.0\.1:\d+", via), event
            assert event["peer"] == (peer or via), event


def test_huge_forwarded_header_and_tiny_messages_stay_bounded(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Four connections with a 15 KB X-Forwarded-For each send 3,000 one-byte
    messages: the peer falls back to the socket, the log stays within the
    message budget (100 events, then 10/s), peak RSS grows by little, and
    the close event says how many messages were not logged."""
    server = start_server()
    before = server.memory_kib()
    logged_before = server.bytes
    huge = ", ".join(f"10.{i // 250}.{i % 250}.1" for i in range(1500))[:15000]
    messages = 3000

    async def one() -> None:
        ws = await connect(server.port, X_Forwarded_For=huge)
        data = frame(0x1, b"x") * messages
        await ws.send(data)
        for _ in range(messages):
            assert (await ws.recv(timeout=20)).payload == b"x"
        await ws.send(frame(0x8, close_payload(1000)))
        await ws.recv_close()
        ws.close()

    async def scenario() -> None:
        async with Watchdog(server.port) as watch:
            await asyncio.gather(*(one() for _ in range(4)))
        assert watch.worst < 1.0, watch.worst

    asyncio.run(scenario())
    server.settle(0.5)
    wire = 4 * (messages * 7 + len(huge))
    logged = server.bytes - logged_before
    assert logged < wire, (logged, wire)  # was about 1,000x the wire traffic
    closes = [e for e in server.events("close") if e.get("messages_in") == messages]
    assert len(closes) == 4
    for close in closes:
        assert close["messages_unlogged"] >= messages - 150
        assert re.fullmatch(r"127\.0\.0\.1:\d+", close["peer"])
    grown_mib = (server.memory_kib() - before) / 1024
    assert grown_mib < 40, grown_mib  # was over 100 MiB per connection


# -- control characters --------------------------------------------------------------

NASTY = 'a\x1b[2J\rfake=1\x00\x0b\t\x7f\x85\x9b\u2028\u2029\u202eb "q" \\'


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_control_characters_never_reach_the_log_raw(
    start_server: Callable[..., ServerProcess], fmt: str
) -> None:
    """Message content, close reasons, origins, paths and forwarded headers
    with controls and separators: every line of the log is one whole event,
    with none of them raw; JSON still decodes to what was sent."""
    server = start_server(env={"WS_LOG_FORMAT": fmt})
    latin1_c1 = "\x85\x9b"  # a header can carry C1 as latin-1 bytes

    async def scenario() -> None:
        ws = await connect(
            server.port,
            path="/ws?x=\x85\x9b",
            X_Forwarded_For="1.2.3.4\x85",
        )
        await ws.send(frame(0x1, NASTY.encode()))
        assert (await ws.recv()).payload == NASTY.encode()
        await ws.send(frame(0x8, close_payload(4000) + NASTY[:40].encode()))
        await ws.recv_close()
        ws.close()
        status, *_rest, writer = await http_request(
            server.port,
            upgrade_request(Origin="http://evil.example\t" + latin1_c1).replace(
                latin1_c1.encode(), latin1_c1.encode("latin-1")
            ),
        )
        assert status == 403
        writer.close()

    asyncio.run(scenario())
    server.settle(0.5)
    text = "".join(server.lines)
    assert not RAW_CONTROL.search(text), [line for line in server.lines if RAW_CONTROL.search(line)]
    if fmt == "json":
        [message] = server.events("message")
        assert message["content"] == NASTY[: len(message["content"])]
        [close] = server.events("close")
        assert close["code"] == 4000
        assert close["reason"] == NASTY[:40]
        [rejected] = [e for e in server.events("error") if e["kind"] == "origin_rejected"]
        assert rejected["origin"] == "http://evil.example\t" + latin1_c1
    else:
        by_event = {line.split()[2]: line for line in server.lines if len(line.split()) > 2}
        assert "\\u001b[2J\\rfake=1\\u0000" in by_event["message"]
        assert "\\u0085\\u009b\\u2028\\u2029\\u202e" in by_event["message"]
        assert by_event["close"].count("\n") == 1
        assert 'origin="http://evil.example\\t\\u0085\\u009b"' in by_event["error"]


# -- descriptors ---------------------------------------------------------------------


def test_descriptor_flood_under_a_low_ulimit(start_server: Callable[..., ServerProcess]) -> None:
    """With 128 descriptors and 300 clients connecting and saying nothing,
    the server neither spins nor floods its log: the listener pauses, one
    line says so, open connections keep echoing, and once the slow clients
    are timed out (WS_REQUEST_HEAD_TIMEOUT) /healthz answers again."""
    server = start_server(env={"WS_REQUEST_HEAD_TIMEOUT": "2"}, nofile=128)
    flood: list[socket.socket] = []

    async def scenario() -> None:
        async with Watchdog(server.port) as watch:
            cpu_before = server.cpu_seconds()
            for _ in range(300):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", server.port))
                flood.append(s)
            await asyncio.sleep(1.5)
            cpu = server.cpu_seconds() - cpu_before
            assert cpu < 0.75, f"{cpu:.2f} s of CPU in 1.5 s: the accept loop spins"
        assert watch.count >= 10, watch.count
        assert watch.worst < 0.5, watch.worst

    try:
        asyncio.run(scenario())
        deadline = time.monotonic() + 20
        while True:
            try:
                assert server.get("/healthz", timeout=2)[0] == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "/healthz never answered again"
                time.sleep(0.2)
    finally:
        for s in flood:
            s.close()
    metrics = server.get("/metrics")[1].decode()
    assert metric(metrics, "websocket_accept_errors_total", errno="EMFILE") > 0
    assert metric(metrics, "websocket_errors_total", kind="request_head_timeout") > 0
    server.settle()
    exhausted = [e for e in server.events("error") if e["kind"] == "descriptors_exhausted"]
    assert 1 <= len(exhausted) <= 3, exhausted
    assert exhausted[0]["limit"] == 128
    assert len(server.lines) < 100, len(server.lines)


def test_slow_request_heads_are_answered_408_and_released(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Fifty half-sent request heads are each answered 408 and closed after
    WS_REQUEST_HEAD_TIMEOUT (not Tornado's 75 s), with one log line."""
    server = start_server(env={"WS_REQUEST_HEAD_TIMEOUT": "1"})

    async def slow() -> tuple[bytes, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer, time.monotonic() - started

    async def scenario() -> None:
        async with Watchdog(server.port) as watch:
            results = await asyncio.gather(*(slow() for _ in range(50)))
        assert watch.worst < 0.5
        for answer, seconds in results:
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
            assert 0.9 < seconds < 4, seconds

    asyncio.run(scenario())
    server.settle()
    timeouts = [e for e in server.events("error") if e["kind"] == "request_head_timeout"]
    assert len(timeouts) == 1
    assert timeouts[0]["count"] == 1
    metrics = server.get("/metrics")[1].decode()
    assert metric(metrics, "websocket_errors_total", kind="request_head_timeout") == 50


# -- metrics -------------------------------------------------------------------------


def test_500_distinct_close_codes_add_no_series(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(env={"WS_LOG_MESSAGES": "false"})
    codes = [3000 + i for i in range(250)] + [4000 + i for i in range(250)]

    async def close_with(code: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            ws = await connect(server.port)
            await ws.send(frame(0x8, close_payload(code)))
            assert (await ws.recv_close()).close_code == code
            ws.close()

    async def scenario() -> None:
        gate = asyncio.Semaphore(50)
        await asyncio.gather(*(close_with(c, gate) for c in codes))

    asyncio.run(scenario())
    time.sleep(0.3)
    body = server.get("/metrics")[1].decode()
    series = [
        line for line in body.splitlines() if line.startswith("websocket_connections_closed_total{")
    ]
    assert len(series) == 17, series  # 14 named codes, 3xxx, 4xxx, other
    assert metric(body, "websocket_connections_closed_total", code="3xxx") == 250
    assert metric(body, "websocket_connections_closed_total", code="4xxx") == 250
    assert len(body) < 16_000, len(body)


# -- the log writer ------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stalled_stdout_drops_log_lines_instead_of_stalling_echoes(
    start_server: Callable[..., ServerProcess], workers: str
) -> None:
    """Nobody reads the server's stdout while a client makes it log 20,000
    events: echoes go on, memory stays bounded, and once stdout is read
    again the lines dropped are reported, and counted in /metrics (with two
    workers, in every scrape, whichever worker answers it)."""
    server = start_server(env={"WS_LOG_MESSAGE_RATE": "0", "WS_WORKERS": workers})
    before = server.memory_kib()
    server.reading.clear()
    messages = 20_000
    text = b"y" * 60

    async def noisy() -> None:
        ws = await connect(server.port)
        for _ in range(0, messages, 1000):
            await ws.send(frame(0x1, text) * 1000)
            for _i in range(1000):
                await ws.recv(timeout=20)
        ws.close()

    async def scenario() -> None:
        async with Watchdog(server.port) as watch:
            await noisy()
        assert watch.worst < 1.0, watch.worst

    asyncio.run(scenario())
    grown_mib = (server.memory_kib() - before) / 1024
    server.reading.set()
    assert grown_mib < 30, grown_mib
    metrics = server.get("/metrics")[1].decode()
    dropped = metric(metrics, "websocket_log_events_dropped_total")
    assert dropped > 1000, dropped
    for _ in range(10):  # each scrape on a new connection: any worker
        again = metric(server.get("/metrics")[1].decode(), "websocket_log_events_dropped_total")
        assert again == dropped
    server.settle(1.0)  # the backlog reaches us
    for _ in range(1 if workers == "1" else 10):
        server.get("/")  # one more event (a request at info), to carry the note
    server.settle(0.5)
    [note] = server.events("log_events_dropped")
    assert note["dropped"] > 0


def test_console_page_cannot_be_framed(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    status, _, headers = server.get("/")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
