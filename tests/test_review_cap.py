"""Review of issue 19 point 7 (the connection cap reserved from the
handshake check): no way an upgrade can fail gives its place away for
good. A real ``python -m server`` with ``WS_MAX_CONNECTIONS=3`` and
compression on takes about two thousand upgrades that fail every way a
client can make them fail - reset or FIN half-way through the request or
right after it, bad extension offers, foreign origins, pipelined upgrades,
refused over the cap - then the cap must still be whole: three new
upgrades get 101 and echo, a fourth gets 503, and ``/metrics``' open gauge
is back to 0 once they close. (Every ``release`` is matched to a
``reserve``; a path that skipped it would leave the server refusing every
upgrade for good.) Raw sockets on loopback.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from typing import Any

from testkit.metrics import sample as metric

from .conftest import ServerProcess as Server
from .rawws import frame, upgrade_request
from .test_hostile import connect

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

_KINDS = (
    upgrade_request(),
    upgrade_request(
        **{"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=99"}
    ),
    upgrade_request(**{"Sec-WebSocket-Extensions": "permessage-deflate; a" + " " * 3000 + "b"}),
    upgrade_request(**{"Sec-WebSocket-Extensions": 'x-foo, permessage-deflate; ="'}),
    upgrade_request(Origin="https://evil.example"),
    upgrade_request(**{"Sec-WebSocket-Protocol": "a, , b,,"}),
    upgrade_request() + upgrade_request() + frame(0x1, b"early"),
)


async def _one(port: int, rng: random.Random) -> str:
    """One upgrade that ends some hostile way; what the client saw."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    request = rng.choice(_KINDS)
    how = rng.choice(("reset_mid", "reset_after", "fin_after", "read_then_reset", "read"))
    try:
        if how == "reset_mid":
            writer.write(request[: rng.randrange(1, len(request))])
            await asyncio.sleep(0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            return how
        writer.write(request)
        if how == "reset_after":
            await asyncio.sleep(rng.random() * 0.002)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            return how
        if how == "fin_after":
            await asyncio.sleep(rng.random() * 0.002)
            writer.write_eof()
            return how
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if how == "read_then_reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        return head.split(b" ", 2)[1].decode()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return "error"
    finally:
        writer.close()


def test_no_failed_upgrade_keeps_its_place_under_the_cap(start_server: Any) -> None:
    server: Server = start_server(
        env={"WS_MAX_CONNECTIONS": "3", "WS_COMPRESSION": "true", "WS_LOG_MESSAGES": "false"}
    )
    rng = random.Random(18)
    seen: dict[str, int] = {}

    async def storm() -> None:
        deadline = time.monotonic() + 20  # bounded in time on a shared machine
        for _ in range(40):
            results = await asyncio.gather(*(_one(server.port, rng) for _ in range(50)))
            for r in results:
                seen[r] = seen.get(r, 0) + 1
            if time.monotonic() > deadline:
                break

    asyncio.run(storm())
    assert seen.get("101", 0) > 0, seen
    assert seen.get("503", 0) > 0, seen

    deadline = time.monotonic() + 10
    while metric(server.get("/metrics")[1].decode(), "websocket_open_connections") != 0:
        assert time.monotonic() < deadline, "connections left open after the storm"
        time.sleep(0.1)

    async def whole_cap() -> None:
        held = [await connect(server.port) for _ in range(3)]
        for ws in held:
            await ws.send(frame(0x1, b"still whole"))
            assert (await ws.recv()).payload == b"still whole"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade_request())
        assert b" 503 " in await reader.readuntil(b"\r\n\r\n")
        writer.close()
        for ws in held:
            ws.close()
            await ws.writer.wait_closed()

    asyncio.run(whole_cap())
    deadline = time.monotonic() + 10
    while metric(server.get("/metrics")[1].decode(), "websocket_open_connections") != 0:
        assert time.monotonic() < deadline, "the three did not close"
        time.sleep(0.1)
    assert server.proc.poll() is None
