"""A hostile client at the HTTP edge of a real ``python -m server`` (issue
19, points 7-9): the connection cap under a burst of upgrades, client-made
text in Tornado's own log records, and log volume on one keep-alive
connection. Raw sockets on loopback; the server's own stdout.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .rawws import RawWebSocket, frame, upgrade_request
from .test_hostile import Server, connect


@pytest.fixture
def start() -> Iterator[Any]:
    started: list[Server] = []

    def factory(**kw: Any) -> Server:
        server = Server(**kw)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def _status_and_headers(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _read_head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


# -- 7: the connection cap under a burst ------------------------------------------


def test_a_burst_of_upgrades_never_exceeds_the_connection_cap(start: Any) -> None:
    """WS_MAX_CONNECTIONS=5 with 4 open: 30 upgrades sent together give
    exactly one 101 and 29 answers of 503 with Retry-After (all 30 got 101
    when the cap counted only connections already handed over). Once the
    burst is refused, the one that got in echoes and the cap still holds."""
    server = start(env={"WS_MAX_CONNECTIONS": "5"})
    burst = 30

    async def scenario() -> None:
        held = [await connect(server.port) for _ in range(4)]
        # Connected first (accepted, waiting for a request head), then the
        # 30 heads written back to back: they arrive in one loop turn.
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(burst)]
        try:
            await asyncio.sleep(0.2)
            for sock in socks:
                sock.sendall(upgrade_request())
            answers = [_status_and_headers(_read_head(sock)) for sock in socks]
            statuses = sorted(status for status, _ in answers)
            assert statuses == [101] + [503] * (burst - 1), statuses
            for status, headers in answers:
                if status == 503:
                    assert headers.get("retry-after") == "1", headers
            # The one that got in echoes; one more is refused: the cap is full.
            [winner] = [s for s, (status, _) in zip(socks, answers, strict=True) if status == 101]
            winner.sendall(frame(0x1, b"in"))
            assert winner.recv(64)[2:] == b"in"
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(upgrade_request())
            assert _status_and_headers(await reader.readuntil(b"\r\n\r\n"))[0] == 503
            writer.close()
            await writer.wait_closed()
        finally:
            for sock in socks:
                sock.close()
            for ws in held:
                ws.close()
                await ws.writer.wait_closed()

    asyncio.run(scenario())
    # Every slot comes back: after they all left, 5 open again.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if b'"connections": 0' in server.get("/readyz")[1]:
            break
        time.sleep(0.05)

    async def five_again() -> None:
        again = [await connect(server.port) for _ in range(5)]
        for ws in again:
            ws.close()
            await ws.writer.wait_closed()

    asyncio.run(five_again())
