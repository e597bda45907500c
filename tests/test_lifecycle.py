"""Readiness, graceful drain and signals - in process and on a real
``python -m server`` subprocess."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
import urllib.error
import urllib.request

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.connections import Registry
from server.metrics import Metrics
from testkit.metrics import sample

from .conftest import ServerProcess, events, recv_until_closed
from .rawws import RawWebSocket, frame


async def test_healthz_and_readyz(port: int) -> None:
    client = AsyncHTTPClient()
    health = await client.fetch(f"http://127.0.0.1:{port}/healthz")
    ready = await client.fetch(f"http://127.0.0.1:{port}/readyz")
    assert health.code == 200
    assert ready.code == 200
    assert b'"ready"' in ready.body


async def test_drain_echoes_everything_then_closes_1001(
    ws_url: str, port: int, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages already sent when the drain starts all come back before 1001;
    readiness and new upgrades answer 503 meanwhile."""
    clients = [await connect(ws_url) for _ in range(3)]
    sent = [[f"c{c} m{i}" for i in range(300)] for c in range(len(clients))]
    for ws, messages in zip(clients, sent, strict=True):
        for m in messages:
            await ws.send(m)
    drain = asyncio.ensure_future(registry.drain(5.0))
    await asyncio.sleep(0)
    client = AsyncHTTPClient()
    with pytest.raises(HTTPClientError) as ready:
        await client.fetch(f"http://127.0.0.1:{port}/readyz")
    assert ready.value.code == 503
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url)
    assert refused.value.response.status_code == 503
    received = await asyncio.gather(*(recv_until_closed(ws) for ws in clients))
    assert await drain == 0
    for ws, messages, got in zip(clients, sent, received, strict=True):
        assert got == messages
        assert ws.close_code == 1001
    assert [e["kind"] for e in events(caplog, "error")] == ["draining"]
    assert sorted(c["code"] for c in events(caplog, "close")) == [1001, 1001, 1001]


async def test_drain_aborts_a_peer_that_never_answers_at_the_timeout(
    port: int, registry: Registry
) -> None:
    raw = await RawWebSocket.connect(port)  # never answers our close frame
    started = time.monotonic()
    aborted = await registry.drain(0.5)
    assert aborted == 1
    assert time.monotonic() - started < 2
    close = await raw.recv_close()
    assert close.close_code == 1001
    assert await raw.at_eof()
    raw.close()


@pytest.mark.settings(drain_spread=2.0)
async def test_drain_spreads_the_1001s_over_its_window_echoing_everything(
    ws_url: str, registry: Registry, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """20 held connections, each with 50 messages in flight when the drain
    starts and 5 of them in a send-and-await-echo loop: their 1001s come
    spread over the 2 s window (one slot every 100 ms: never more than 5 in
    any 100 ms, where all 20 came in the first without the spread), every message sent
    before a client saw its 1001 is echoed, but the one crossing it."""
    count, window = 20, 2.0
    clients = [await connect(ws_url) for _ in range(count)]
    sent = [[f"c{c} m{i}" for i in range(50)] for c in range(count)]
    for ws, messages in zip(clients, sent, strict=True):
        for m in messages:
            await ws.send(m)

    async def held(ws: ClientConnection, messages: list[str], looping: bool) -> tuple[float, int]:
        got = [await ws.recv() for _ in messages]
        assert got == messages
        crossing = 0
        i = 0
        with contextlib.suppress(ConnectionClosed):
            while looping:
                await ws.send(f"loop {i}")
                crossing = 1
                assert await ws.recv() == f"loop {i}"
                crossing = 0
                i += 1
            while True:
                await ws.recv()
        closed = loop.time() - start
        assert ws.close_code == 1001
        assert ws.close_reason == "server shutting down"
        return closed, crossing

    loop = asyncio.get_running_loop()
    start = loop.time()
    drain = asyncio.ensure_future(registry.drain(10.0))
    results = await asyncio.gather(
        *(held(ws, m, c < 5) for c, (ws, m) in enumerate(zip(clients, sent, strict=True)))
    )
    assert await drain == 0
    times = sorted(t for t, _ in results)
    assert all(crossing <= 1 for _, crossing in results)
    per_100ms = collections.Counter(int(t * 10) for t in times)
    assert max(per_100ms.values()) <= 5, f"close times {times}"
    assert times[-1] - times[0] >= 0.7 * window * (count - 1) / count, times
    assert times[-1] < window + 1.0, times
    closes = events(caplog, "close")
    assert [c["cause"] for c in closes] == ["drain"] * count
    assert metrics.closed_by_cause.labels("drain").value == count


@pytest.mark.settings(drain_spread=30.0, drain_timeout=2.0)
async def test_the_spread_fits_inside_the_drain_timeout(ws_url: str, registry: Registry) -> None:
    """A spread longer than the timeout allows uses half the timeout: every
    connection still gets its 1001 in time."""
    clients = [await connect(ws_url) for _ in range(4)]
    started = time.monotonic()
    assert await registry.drain() == 0
    assert time.monotonic() - started < 2.0
    for ws in clients:
        await ws.wait_closed()
        assert ws.close_code == 1001


# -- a real process, real signals ---------------------------------------------------


def test_sigterm_drains_with_zero_lost_messages(server_process: type[ServerProcess]) -> None:
    """SIGTERM lands while 5 clients have 500 messages each in flight: every
    message is echoed, every client gets 1001, the process exits 0."""
    server = server_process(env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()

    async def scenario() -> list[tuple[int | None, list[str | bytes], list[str | bytes]]]:
        clients = [await connect(server.ws_url) for _ in range(5)]
        sent: list[list[str | bytes]] = []
        for c, ws in enumerate(clients):
            messages: list[str | bytes] = [
                (f"{c}:{i}" if i % 2 else f"{c}:{i}".encode()) for i in range(500)
            ]
            for m in messages:
                await ws.send(m)
            sent.append(messages)
        server.signal(signal.SIGTERM)
        received = await asyncio.gather(*(recv_until_closed(ws) for ws in clients))
        return [(ws.close_code, s, r) for ws, s, r in zip(clients, sent, received, strict=True)]

    results = asyncio.run(scenario())
    assert server.wait(timeout=15) == 0
    for code, sent, received in results:
        assert code == 1001
        assert received == sent
    drained = server.wait_event("drained")
    assert drained["aborted"] == 0
    assert server.wait_event("exit")["status"] == 0


def test_sigterm_still_answers_what_arrives_just_after_it(
    server_process: type[ServerProcess],
) -> None:
    """A message that reaches the server just after its drain began, from a
    client busy just before it - as a client with Nagle's algorithm on sends
    what it held back once its earlier bytes are acknowledged - is echoed
    before the 1001: the drain waits for a moment of quiet
    (DrainPolicy.quiet), not only for what had arrived when it started. (A
    client quiet for that long before the SIGTERM gets its 1001 at once.)"""
    server = server_process(env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()

    async def scenario() -> tuple[int | None, list[str | bytes]]:
        async with connect(server.ws_url) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.signal(signal.SIGTERM)
            await asyncio.to_thread(server.wait_event, "drain")
            try:
                await ws.send("just after")
            except ConnectionClosed:  # the 1001 came first: the failure this test is for
                return ws.close_code, []
            received = await recv_until_closed(ws)
            return ws.close_code, received

    code, received = asyncio.run(scenario())
    assert received == ["just after"]
    assert code == 1001
    assert server.wait(timeout=15) == 0
    assert server.wait_event("drained")["aborted"] == 0


def test_sigterm_closes_clients_in_an_echo_loop_at_a_pause_not_the_force_point(
    server_process: type[ServerProcess],
) -> None:
    """Clients that send, wait for the echo and send again are never quiet
    for DrainPolicy.quiet, but they do pause between messages: the drain
    closes each at such a pause soon after the quiet moment, not after the
    force point (5 s with the default WS_DRAIN_TIMEOUT), and every message
    sent before the 1001 but the one crossing it is echoed. (No spread:
    every connection's slot is the drain's start.)"""
    server = server_process(env={"WS_LOG_MESSAGES": "false", "WS_DRAIN_SPREAD": "0"})
    server.wait_ready()

    async def echo_loop(ws: ClientConnection, counts: list[int]) -> None:
        i = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(f"m{i}")
                counts[0] += 1
                assert await ws.recv() == f"m{i}"
                counts[1] += 1
                i += 1

    async def scenario() -> tuple[float, list[int | None], list[list[int]]]:
        clients = [await connect(server.ws_url) for _ in range(5)]
        counts = [[0, 0] for _ in clients]
        loops = [
            asyncio.ensure_future(echo_loop(ws, c)) for ws, c in zip(clients, counts, strict=True)
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*loops), 10)
        return time.monotonic() - started, [ws.close_code for ws in clients], counts

    took, codes, counts = asyncio.run(scenario())
    assert codes == [1001] * 5
    assert took < 2.5, f"clients closed {took:.2f} s after SIGTERM"
    for sent, echoed in counts:
        assert echoed > 0
        assert sent - echoed <= 1
    assert server.wait(timeout=15) == 0
    assert server.wait_event("drained")["aborted"] == 0


def test_readiness_fails_and_upgrades_are_refused_while_draining(
    server_process: type[ServerProcess],
) -> None:
    server = server_process(env={"WS_DRAIN_TIMEOUT": "3"})
    server.wait_ready()

    async def scenario() -> None:
        raw = await RawWebSocket.connect(server.port)  # holds the drain open
        server.signal(signal.SIGTERM)
        close = await raw.recv_close()
        assert close.close_code == 1001
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(server.url + "/readyz", timeout=2)
        assert ready.value.code == 503
        ready.value.close()
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.ws_url)
        assert refused.value.response.status_code == 503
        raw.close()

    asyncio.run(scenario())
    assert server.wait(timeout=10) == 0


def test_second_signal_exits_at_once(server_process: type[ServerProcess]) -> None:
    server = server_process(env={"WS_DRAIN_TIMEOUT": "60"})
    server.wait_ready()

    async def scenario() -> tuple[int, float]:
        raw = await RawWebSocket.connect(server.port)
        await raw.send(frame(0x1, b"ping"))
        assert (await raw.recv()).payload == b"ping"
        server.signal(signal.SIGTERM)
        # The peer never answers the 1001: the drain would wait its 60 s.
        assert (await raw.recv_close()).close_code == 1001
        await asyncio.to_thread(server.wait_event, "drain")
        started = time.monotonic()
        server.signal(signal.SIGINT)
        status = await asyncio.to_thread(server.wait, 5)
        elapsed = time.monotonic() - started
        raw.close()
        return status, elapsed

    status, elapsed = asyncio.run(scenario())
    assert status == 128 + signal.SIGINT
    assert elapsed < 2
    signals = [d for d in server.log if d.get("event") == "signal"]
    assert [s["action"] for s in signals] == ["drain", "exit now"]


def test_sigint_drains_like_sigterm(server_process: type[ServerProcess]) -> None:
    server = server_process()
    server.wait_ready()
    server.signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0
    assert server.wait_event("signal")["signal"] == "SIGINT"


def test_startup_log_line_and_port_from_env(server_process: type[ServerProcess]) -> None:
    server = server_process()
    server.wait_ready()
    listening = server.wait_event("listening")
    assert listening["address"] == f"127.0.0.1:{server.port}"
    assert listening["startup_ms"] > 0


def test_a_drain_shows_in_metrics_with_its_start(
    server_process: type[ServerProcess],
) -> None:
    """``websocket_drain_started_timestamp_seconds`` is 0 until SIGTERM, then
    the drain's start: with the open connections, what the
    WebSocketDrainOverrun alert (chart/files/prometheus-rules.yaml) reads
    from a scrape taken during the drain."""
    server = server_process(env={"WS_DRAIN_TIMEOUT": "5"})
    server.wait_ready()

    def scrape() -> str:
        with urllib.request.urlopen(server.url + "/metrics", timeout=2) as page:
            return str(page.read().decode())

    async def scenario() -> None:
        raw = await RawWebSocket.connect(server.port)  # never answers the 1001
        before = scrape()
        assert sample(before, "websocket_drain_started_timestamp_seconds") == 0
        signalled = time.time()
        server.signal(signal.SIGTERM)
        assert (await raw.recv_close()).close_code == 1001
        during = scrape()
        started = sample(during, "websocket_drain_started_timestamp_seconds")
        assert signalled - 1 <= started <= time.time()
        assert sample(during, "websocket_open_connections") == 1
        raw.close()

    asyncio.run(scenario())
    assert server.wait(timeout=10) == 0
