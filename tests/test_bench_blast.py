"""``bench/loadgen.py blast``, the scaling benchmark's client: it counts
echo bytes without parsing frames, so what it does check must fail the run
when it is wrong - a run that lost connections or got the wrong echo is
not a throughput figure. Real load generator process, real server on
loopback; the one wrong-echo server is a stand-in (no real server here
echoes wrong bytes), a few lines of asyncio below."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from server.echo import EchoWebSocket

LOADGEN = Path(__file__).resolve().parent.parent / "bench" / "loadgen.py"


async def blast(port: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(LOADGEN), "blast", "--url", f"ws://127.0.0.1:{port}/ws",
        "--conns", "4", "--inflight", "16", "--seconds", "0.5", "--warmup", "0.3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_blast_counts_the_echoes_of_a_real_server(port: int) -> None:
    code, out = await blast(port)
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["msgs_per_s"] > 100, result


class _ClosesAfter50(EchoWebSocket):
    seen = 0

    def on_message(self, message: str | bytes) -> None:
        self.seen += 1
        if self.seen > 50:
            self.close(1000, "enough")
            return
        super().on_message(message)


@pytest.mark.handler.with_args(_ClosesAfter50)
async def test_a_connection_the_server_closes_fails_the_run(port: int) -> None:
    code, out = await blast(port)
    assert code != 0, out
    # the server's close frame goes unanswered: no echo after it
    assert "4 of 4 connections failed: no echo in the measured window" in out, out


class _DropsAfter50(EchoWebSocket):
    seen = 0

    def on_message(self, message: str | bytes) -> None:
        self.seen += 1
        ws = self._kws.ws  # the base's transport: a test may reach in
        if self.seen > 50 and ws is not None:
            ws.abort()
            return
        super().on_message(message)


@pytest.mark.handler.with_args(_DropsAfter50)
async def test_a_connection_the_server_drops_fails_the_run(port: int) -> None:
    code, out = await blast(port)
    assert code != 0, out
    assert "4 of 4 connections failed: the server ended the connection" in out, out


class _WrongEcho(asyncio.Protocol):
    """Stand-in: accepts the upgrade, then sends back zeros."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.upgraded = False

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.upgraded = True
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            return
        self.transport.write(bytes(len(data)))


async def test_a_wrong_echo_fails_the_run() -> None:
    server = await asyncio.get_running_loop().create_server(_WrongEcho, "127.0.0.1", 0)
    try:
        code, out = await blast(server.sockets[0].getsockname()[1])
    finally:
        server.close()
    assert code != 0, out
    assert "connections failed: the first block's echo is not the frames sent" in out, out
