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
