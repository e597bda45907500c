"""Issue 19, points 2-6: a hostile client against a real ``python -m server``
(raw sockets on loopback, the server's own stdout, RSS read from /proc).

Each test drives one finding and checks what an operator would notice: no
traceback in the log, peak RSS, CPU time, and a well-behaved client that
keeps echoing. The fairness case (point 1) is in tests/test_fairness.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
import zlib
from typing import Any

from .rawws import frame, upgrade_request
from .test_hostile import Server, connect, echo_time, metric, start  # noqa: F401 - fixture

# -- point 6: the hand-over ----------------------------------------------------


def _reset_after(port: int, delay: float, rst: bool) -> None:
    """Send an upgrade request, wait ``delay`` seconds, then leave with a
    reset (SO_LINGER 0) or a FIN."""
    sock = socket.create_connection(("127.0.0.1", port))
    if rst:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(upgrade_request())
    if delay:
        time.sleep(delay)
    sock.close()


def test_resets_around_the_101_are_abnormal_closures_not_tracebacks(start: Any) -> None:
    """400 clients send the upgrade request and then vanish (RST or FIN) at
    a random moment from 0 to 1 ms later - before, during and after the
    101 and the socket's hand-over. The server logs no traceback and no
    ERROR line; every connection it opened is closed with 1006; and it
    keeps echoing."""
    server = start()
    rng = random.Random(19)
    for i in range(400):
        _reset_after(server.port, rng.uniform(0, 0.001), rst=i % 4 != 0)
    server.settle(1.0)

    async def still_echoes() -> float:
        ws = await connect(server.port)
        try:
            return await echo_time(ws)
        finally:
            ws.close()

    assert asyncio.run(still_echoes()) < 1.0
    server.settle(0.5)
    text = "".join(server.lines)
    assert "Traceback" not in text, text[-3000:]
    assert '"level": "ERROR"' not in text and '"level":"ERROR"' not in text, text[-3000:]
    opened = len(server.events("open"))
    closes = server.events("close")
    assert opened == len(closes), (opened, len(closes))
    assert all(c["code"] in (1006, 1000) for c in closes)
    errors = [e for e in server.events("error") if e.get("kind") != "abnormal_closure"]
    assert not errors, errors[:5]
    status, body, _ = server.get("/metrics")
    assert metric(body.decode(), "websocket_connections_closed_total", code="1006") >= opened - 1


# -- point 2: the permessage-deflate offer -------------------------------------


def test_a_long_extension_offer_costs_no_cpu_and_is_declined(start: Any) -> None:
    """Ten upgrades offering ``permessage-deflate; a`` + 15,500 spaces +
    ``b`` (0.8 s of CPU each with the backtracking parser) are answered 101
    without compression, in little CPU, while another client echoes."""
    server = start(env={"WS_COMPRESSION": "true"})
    offer = "permessage-deflate; a" + " " * 15_500 + "b"

    async def scenario() -> float:
        ws = await connect(server.port)
        cpu_before = server.cpu_seconds()
        for _ in range(10):
            request = upgrade_request(Sec_WebSocket_Extensions=offer)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b"permessage-deflate" not in head.lower()
            writer.close()
            assert await echo_time(ws) < 0.1
        ws.close()
        return server.cpu_seconds() - cpu_before

    cpu = asyncio.run(scenario())
    assert cpu < 1.0, cpu  # was about 8 s
