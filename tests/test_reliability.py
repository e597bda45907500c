"""The reliability suite: a real ``python -m server`` under load on loopback.

The load comes from ``bench/loadgen.py soak`` (picows on uvloop, its own
process): every connection keeps one numbered message in flight and checks
that each echo is the message it sent. Bounded in time: about two minutes
in all. ``pytest -m "not reliability"`` leaves it out of a quick run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from .conftest import ROOT, ServerProcess
from .rawws import RawWebSocket, frame, http_request, upgrade_request

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

LOADGEN = ROOT / "bench" / "loadgen.py"


@pytest.fixture
def server(server_process: type[ServerProcess], tmp_path: Path) -> Callable[..., ServerProcess]:
    """``python -m server`` with its log in a file (a pipe read by a thread
    could not keep up with a line per message), ready when returned."""

    numbers = itertools.count()

    def start(**env: str) -> ServerProcess:
        srv = server_process(env=env, log=tmp_path / f"server-{next(numbers)}.log")
        srv.wait_ready(15.0)
        return srv

    return start


def soak(url: str, conns: int, seconds: float, *extra: str) -> subprocess.Popen[str]:
    """The load generator; it prints a JSON line a second, then its result."""
    return subprocess.Popen(
        [
            sys.executable,
            str(LOADGEN),
            "soak",
            "--url",
            url,
            "--conns",
            str(conns),
            "--seconds",
            str(seconds),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def result_of(gen: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, _ = gen.communicate(timeout=timeout)
    assert gen.returncode == 0, out
    return dict(json.loads(out.strip().splitlines()[-1]))


def wait_connected(gen: subprocess.Popen[str]) -> None:
    assert gen.stdout is not None
    line = gen.stdout.readline()
    assert "connected" in line, line


def test_2000_connections_echo_for_60_seconds_without_errors_or_growth(
    server: Callable[..., ServerProcess],
) -> None:
    """2,000 clients echo for 60 s against the server's defaults (every
    message logged, metrics on): no error on either side, every echo right,
    and the server's memory flat once warmed up."""
    srv = server()
    gen = soak(srv.ws_url, 2000, 60)
    wait_connected(gen)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    while gen.poll() is None:
        samples.append((time.monotonic() - started, srv.rss_kib()))
        time.sleep(1)
    result = result_of(gen)
    assert result["conns"] == 2000
    assert result["errors"] == 0
    assert result["closed_early"] == 0
    assert result["close_codes"] == {"1000": 2000}
    assert result["echoed"] > 100_000, result  # it really was under load
    assert srv.events("error") == []
    warm = [rss for t, rss in samples if 15 <= t <= 60]
    assert len(warm) > 30
    # Flat: a leak of one small object per message (hundreds of thousands
    # of them) would add tens of MiB, and grows steadily; allocator noise
    # swings about 1 MiB up and down between samples. So the peak of the
    # window's last third is compared with the peak of its first third,
    # not with one sample that may have caught a dip.
    third = len(warm) // 3
    assert max(warm[-third:]) - max(warm[:third]) < 4096, samples


def test_sigterm_under_load_loses_nothing(server: Callable[..., ServerProcess]) -> None:
    """SIGTERM while 2,000 clients echo: every client gets 1001, every
    message the server read was echoed, at most the one message a client
    sent as the close frame crossed it goes unanswered, and the process
    exits 0 without aborting anyone."""
    srv = server(WS_LOG_MESSAGES="false")
    gen = soak(srv.ws_url, 2000, 60, "--until-closed")
    wait_connected(gen)
    time.sleep(5)
    srv.proc.send_signal(signal.SIGTERM)
    result = result_of(gen)
    assert srv.proc.wait(30) == 0
    assert result["close_codes"] == {"1001": 2000}
    assert result["errors"] == 0
    assert result["max_unanswered"] <= 1
    [drained] = srv.events("drained")
    assert drained["aborted"] == 0
    closes = srv.events("close")
    assert len(closes) == 2000
    assert all(c["code"] == 1001 and c["messages_in"] == c["messages_out"] for c in closes)


def test_clients_that_never_read_cannot_grow_server_memory(
    server: Callable[..., ServerProcess],
) -> None:
    """20 clients each send 32 MiB and read nothing back. The server stops
    reading each at 1 MiB of unsent echoes and drops it after
    WS_SEND_TIMEOUT with 1008; its memory grows by a bounded amount (not by
    the 640 MiB sent), and a client that does read keeps echoing."""
    srv = server(WS_LOG_MESSAGES="false", WS_SEND_TIMEOUT="3", WS_MAX_MESSAGE_BYTES="65536")
    before = srv.rss_kib()

    async def scenario() -> int:
        floods = [await RawWebSocket.connect(srv.port) for _ in range(20)]
        chunk = frame(0x2, os.urandom(65536)) * 16  # 1 MiB of messages

        async def flood(raw: RawWebSocket) -> None:
            try:
                for _ in range(32):
                    await raw.send(chunk)
            except ConnectionError:
                pass

        tasks = [asyncio.ensure_future(flood(raw)) for raw in floods]
        peak = 0
        async with connect(srv.ws_url) as reader:
            for i in range(40):  # 4 s: past the send timeout
                await reader.send(f"still here {i}")
                assert await reader.recv() == f"still here {i}"
                peak = max(peak, srv.rss_kib())
                await asyncio.sleep(0.1)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for raw in floods:
            raw.close()
        return peak

    peak = asyncio.run(scenario())
    # 20 x (1 MiB backlog + a 64 KiB message + read buffers) is the bound.
    assert peak - before < 48 * 1024, (before, peak)
    deadline = time.monotonic() + 10  # the log writer may still be writing the last
    while len(srv.events("error")) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    errors = srv.events("error")
    assert [e["kind"] for e in errors] == ["slow_consumer"] * 20
    assert all(e["code"] == 1008 for e in errors)


async def _status(port: int, request: bytes) -> int:
    status, _, _, _, writer = await http_request(port, request)
    writer.close()
    return status


async def _close_code(port: int, data: bytes) -> int | None:
    raw = await RawWebSocket.connect(port)
    await raw.send(data)
    close = await raw.recv_close()
    raw.close()
    return close.close_code


def test_abuse_gets_specific_answers_while_others_keep_echoing(
    server: Callable[..., ServerProcess],
) -> None:
    """Bad handshakes and bad frames from a dozen attackers, while 500
    well-behaved clients echo: each attack gets its own status or close
    code, and not one good client sees an error or a close."""
    srv = server(WS_MAX_MESSAGE_BYTES="65536", WS_LOG_MESSAGES="false")
    gen = soak(srv.ws_url, 500, 12)
    wait_connected(gen)

    async def attacks() -> None:
        port = srv.port
        # Handshakes.
        assert await _status(port, upgrade_request(Sec_WebSocket_Key=None)) == 400
        assert await _status(port, upgrade_request(Sec_WebSocket_Version="8")) == 426
        assert await _status(port, upgrade_request(X_Padding="a" * 20000)) == 431
        # A slow but complete handshake still succeeds...
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for byte in upgrade_request():
            writer.write(bytes([byte]))
            await asyncio.sleep(0.01)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        slow = RawWebSocket(reader, writer)
        await slow.send(frame(0x8, (1000).to_bytes(2, "big")))
        assert (await slow.recv_close()).close_code == 1000
        slow.close()
        # ...and 200 that stall half way hold nobody up.
        stalled = []
        for _ in range(200):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(upgrade_request()[:40])
            stalled.append(w)
        async with connect(srv.ws_url) as ws:
            await ws.send("past the stalled ones")
            assert await ws.recv() == "past the stalled ones"
        for w in stalled:
            w.close()
        # Frames.
        assert await _close_code(port, frame(0x2, b"x" * 65537)) == 1009
        assert await _close_code(port, frame(0x1, b"\xff\xfe")) == 1007
        assert await _close_code(port, frame(0x3, b"")) == 1002
        assert await _close_code(port, frame(0x1, b"hi", rsv=0x40)) == 1002
        assert await _close_code(port, frame(0x1, b"hi", masked=False)) == 1002

    asyncio.run(attacks())
    result = result_of(gen)
    assert result["errors"] == 0
    assert result["closed_early"] == 0
    assert result["close_codes"] == {"1000": 500}
    kinds = sorted(e["kind"] for e in srv.events("error"))
    assert kinds == sorted(
        ["bad_handshake", "bad_handshake", "headers_too_large", "message_too_big"]
        + ["invalid_payload"]
        + ["protocol_error"] * 3
    ), kinds
