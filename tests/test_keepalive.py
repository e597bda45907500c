"""Keepalive pings: an idle connection survives a proxy that cuts idle
streams, and a peer that stops answering pings is closed with 1011."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import events, until
from .rawws import RawWebSocket


@contextlib.asynccontextmanager
async def idle_cutting_proxy(target_port: int, idle_timeout: float) -> AsyncIterator[int]:
    """A loopback TCP proxy that drops a connection after ``idle_timeout``
    seconds without a byte in either direction - what a load balancer, NAT
    or proxy in front of the cluster does to idle connections (often after
    60 s; Kourier itself has no such cut), shrunk to test size."""

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, touched: list[float]
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                touched[0] = loop.time()
                writer.write(data)
                await writer.drain()

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target_port)
        loop = asyncio.get_running_loop()
        touched = [loop.time()]
        tasks = [
            asyncio.ensure_future(pipe(c_reader, s_writer, touched)),
            asyncio.ensure_future(pipe(s_reader, c_writer, touched)),
        ]
        while not all(t.done() for t in tasks):
            if loop.time() - touched[0] > idle_timeout:
                break
            await asyncio.sleep(0.02)
        for t in tasks:
            t.cancel()
        for w in (c_writer, s_writer):
            w.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _idle_through_proxy(port: int, idle_for: float) -> str | None:
    """Connect through the proxy, stay silent, then try an echo."""
    # The client's own keepalive is off: only the server's pings can help.
    async with (
        idle_cutting_proxy(port, idle_timeout=0.6) as proxy_port,
        connect(f"ws://127.0.0.1:{proxy_port}/ws", ping_interval=None) as ws,
    ):
        await asyncio.sleep(idle_for)
        try:
            await ws.send("still there?")
            return str(await asyncio.wait_for(ws.recv(), 2))
        except (TimeoutError, ConnectionClosed):
            return None


@pytest.mark.settings(ping_interval=0.2, ping_timeout=0.2)
async def test_server_pings_keep_an_idle_connection_alive_through_a_proxy(port: int) -> None:
    assert await _idle_through_proxy(port, idle_for=2.0) == "still there?"


@pytest.mark.settings(ping_interval=0.0, ping_timeout=0.0)
async def test_without_pings_the_proxy_cuts_the_idle_connection(port: int) -> None:
    """The control experiment: the same proxy does cut a silent stream."""
    assert await _idle_through_proxy(port, idle_for=2.0) is None


@pytest.mark.settings(ping_interval=0.2, ping_timeout=0.2)
async def test_peer_that_never_answers_pings_is_closed_with_1011(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawWebSocket.connect(port)  # reads, but never sends a pong
    first = await raw.recv()
    assert first.opcode == 0x9  # a ping
    close = await raw.recv_close()
    assert close.close_code == 1011
    assert "no pong" in close.close_reason
    assert await raw.at_eof()
    raw.close()
    await until(lambda: bool(events(caplog, "close")))
    [error] = events(caplog, "error")
    assert error["kind"] == "ping_timeout"


@pytest.mark.settings(ping_interval=0.2, ping_timeout=0.2)
async def test_every_open_connection_is_pinged(port: int) -> None:
    """One keepalive timer serves all connections: each of them gets pings."""
    raws = [await RawWebSocket.connect(port) for _ in range(5)]
    for raw in raws:
        assert (await raw.recv(timeout=2)).opcode == 0x9
    for raw in raws:
        raw.close()
