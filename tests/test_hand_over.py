"""The hand-over from Tornado to the transport, and the transport's edges,
against a real ``python -m server`` on its default event loop (uvloop):
what an outside review found by racing the upgrade, and by reading slowly."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from typing import Any

import pytest

from testkit.metrics import sample, scrape

from .conftest import ServerProcess
from .rawws import frame, upgrade_request


def _read_all(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Everything until the server's FIN (or a reset, or the timeout)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    except TimeoutError:
        return data, "timeout"
    return data, "eof"


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    pos = 0
    while pos + 2 <= len(data):
        size = data[pos + 1] & 0x7F
        head = 2
        if size == 126:
            size, head = struct.unpack("!H", data[pos + 2 : pos + 4])[0], 4
        elif size == 127:
            size, head = struct.unpack("!Q", data[pos + 2 : pos + 10])[0], 10
        frames.append((data[pos] & 0x0F, data[pos + head : pos + head + size]))
        pos += head + size
    return frames


def test_frames_and_fin_right_behind_the_upgrade_request_are_answered(
    server_process: type[ServerProcess],
) -> None:
    """Upgrade request, a binary message, invalid text, then FIN, all at
    once: the echo and a 1007 come back. (Was: uvloop delivered the FIN
    before the handler had opened, and the transport closed at once.)"""
    server = server_process()
    server.wait_ready()
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(upgrade_request() + frame(0x2, b"hello") + frame(0x1, b"\xff\xfe"))
        sock.shutdown(socket.SHUT_WR)
        data, how = _read_all(sock, 5)
        sock.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        frames = _frames(rest)
        assert frames[0] == (0x2, b"hello")
        assert frames[1][0] == 0x8
        assert struct.unpack("!H", frames[1][1][:2])[0] == 1007
        assert how == "eof"


def test_clients_that_reset_right_after_the_upgrade_do_not_fill_the_cap(
    server_process: type[ServerProcess],
) -> None:
    """200 upgrades, each reset at once (SO_LINGER 0) with a frame behind
    it, against a cap of 50: none stays counted, and a well-behaved client
    still gets in. (Was: each dead connection was registered after it was
    gone, the gauge said 200, and every later upgrade got 503.)"""
    server = server_process(env={"WS_MAX_CONNECTIONS": "50"})
    server.wait_ready()
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(upgrade_request() + frame(0x2, b"x"))
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sample(scrape(server.url), "websocket_open_connections") == 0:
            break
        time.sleep(0.1)
    assert sample(scrape(server.url), "websocket_open_connections") == 0
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(upgrade_request())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    sock.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_tiny_unread_echoes_are_bounded_in_memory(
    server_process: type[ServerProcess],
) -> None:
    """A client that sends 1-byte messages for seconds and never reads:
    its queued echoes are bounded in bytes of memory, not only in payload
    bytes. (Was: about 100 MiB per such client, a list and a bytes object
    and a Future for every 3-byte frame.)"""
    server = server_process(env={"WS_SEND_TIMEOUT": "30", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    before = _rss_kib(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(upgrade_request())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    one = frame(0x2, b"x")
    burst = one * 4096
    sock.settimeout(0.05)
    peak = before
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, BlockingIOError):
            sock.send(burst)  # fails once the server stops reading us
        peak = max(peak, _rss_kib(server.proc.pid))
    sock.close()
    # 1 MiB of echoes plus the kernel's and the event loop's buffers.
    assert peak - before < 24 * 1024, (before, peak)


@pytest.mark.timeout(60)
def test_a_slow_steady_reader_gets_its_1008_not_a_reset(
    server_process: type[ServerProcess],
) -> None:
    """A client that sends fast and reads slowly (but steadily) is failed
    with 1008 once its unread echoes stay over the limit for
    WS_SEND_TIMEOUT, and then receives that close frame: the server
    lingers while the client is still taking data. (Was: a reset, losing
    the close frame and echoes already sent.)"""
    server = server_process(env={"WS_SEND_TIMEOUT": "2", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(upgrade_request())
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    rest = head.partition(b"\r\n\r\n")[2]
    payload = frame(0x2, os.urandom(16384)) * 8
    sock.settimeout(0.01)
    received = bytearray(rest)
    how = "timeout"
    # For 5 s it sends as fast as it can and reads 4 KiB every 20 ms (too
    # slow: the server fails it after 2 s over the limit); then it stops
    # sending, as a client that saw a close frame would, and reads what is
    # left as fast as it can, while the server lingers.
    slow_until = time.monotonic() + 5
    deadline = slow_until + 40
    while time.monotonic() < deadline:
        slow = time.monotonic() < slow_until
        if slow:
            with contextlib.suppress(TimeoutError, BlockingIOError):
                sock.send(payload)
        try:
            chunk = sock.recv(4096 if slow else 262144)
        except TimeoutError:
            chunk = None
        except ConnectionResetError:
            how = "reset"
            break
        if chunk == b"":
            how = "eof"
            break
        if chunk:
            received += chunk
        if slow:
            time.sleep(0.02)
    sock.close()
    closes = [f for f in _frames(bytes(received)) if f[0] == 0x8]
    assert how == "eof", how
    assert closes, "no close frame reached the client"
    assert struct.unpack("!H", closes[0][1][:2])[0] == 1008
    errors: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        errors = [e for e in server.log if e.get("event") == "error"]
        time.sleep(0.05)
    assert [e["kind"] for e in errors] == ["slow_consumer"]
