"""Fairness between connections (issue 19, point 1), in the reliability suite.

One attacking connection streams tiny frames at full speed into a real
``python -m server`` (on uvloop and on the asyncio loop) while a
well-behaved client echoes: its p99 stays under 50 ms. Without the per-turn
parse budget it was 0.2-0.9 s: the transport parsed all that a read
delivered, and on uvloop a busy socket gets many reads per loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import ROOT
from .rawws import frame, upgrade_request
from .test_hostile import connect

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

#: Fragments per attacking message: it ends well within the 1 MiB limit.
_FRAGMENTS = 20_000


def _attack_stream(kind: str) -> bytes:
    """About 1 MB of what the attacker sends, over and over."""
    if kind == "pings":
        return frame(0x9) * 150_000  # empty pings (6 bytes each); their pongs go unread
    if kind == "continuations":
        first, piece = b"a", b"a"
    else:  # "utf8": a two-byte character cut into one-byte fragments
        first, piece = "é".encode()[:1], None
    frames = [frame(0x1, first, fin=False)]
    encoded = "é".encode()
    for i in range(1, _FRAGMENTS - 1):
        frames.append(
            frame(0x0, piece if piece is not None else encoded[i % 2 : i % 2 + 1], fin=False)
        )
    last = piece if piece is not None else encoded[(_FRAGMENTS - 1) % 2 :][:1]
    frames.append(frame(0x0, last))
    return b"".join(frames)


def attack(port: int, kind: str) -> None:
    """The attacking process: upgrade, then send ``kind`` frames as fast as
    the server takes them, reading nothing; print the bytes sent so far."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(upgrade_request())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    data = _attack_stream(kind)
    print("ready", flush=True)
    sent = 0
    with contextlib.suppress(OSError):
        while True:
            sock.sendall(data)
            sent += len(data)
            print(sent, flush=True)


class Attacker:
    """:func:`attack` in its own process (a thread would take the GIL from
    the well-behaved client's loop, in this process, and skew its times)."""

    def __init__(self, port: int, kind: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.test_fairness import attack; attack({port}, {kind!r})",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> int:
        """Stop it; the bytes it had sent."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        lines = out.split()
        return int(lines[-1]) if lines else 0


async def echo_times(port: int, count: int) -> list[float]:
    ws = await connect(port)
    times = []
    try:
        for i in range(count):
            text = f"good {i}".encode()
            started = time.monotonic()
            await ws.send(frame(0x1, text))
            reply = await ws.recv(timeout=10)
            times.append(time.monotonic() - started)
            assert reply.payload == text
            await asyncio.sleep(0.005)
    finally:
        ws.close()
    return times


def p99(times: list[float]) -> float:
    return sorted(times)[int(len(times) * 0.99)]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_one_flooding_connection_cannot_stall_the_others(start_server: Any, loop: str) -> None:
    """For each attack (1-byte continuation frames, empty pings never
    answered-read, 1-byte UTF-8 fragments): a well-behaved client's echo
    p99 over 300 echoes stays under 50 ms, and the attacker did get through
    (it is slowed, not refused)."""
    server = start_server(env={"WS_EVENT_LOOP": loop, "WS_LOG_FORMAT": "json"})
    results = {}
    for kind in ("continuations", "pings", "utf8"):
        attacker = Attacker(server.port, kind)
        try:
            time.sleep(0.3)  # the flood is under way
            times = asyncio.run(echo_times(server.port, 300))
        finally:
            sent = attacker.close()
        results[kind] = (p99(times), max(times), sent)
    print(
        f"{loop}: "
        + ", ".join(
            f"{k} p99 {v[0] * 1000:.1f} ms max {v[1] * 1000:.1f} ms ({v[2] / 1e6:.0f} MB sent)"
            for k, v in results.items()
        )
    )
    for kind, (slowest99, _, sent) in results.items():
        assert sent > 1_000_000, (kind, sent)
        assert slowest99 < 0.050, (kind, results)
