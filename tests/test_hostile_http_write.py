"""A plain HTTP client that never reads what it asked for, against a real
``python -m server``: raw sockets on loopback, the server's end of each
connection (its state and send queue) read from ``/proc/net/tcp``, and the
server's own stdout.

Tornado reads no request while a response is being written, and its write
has no timeout: a client pipelining requests without reading held its
connection, and about 4 MB of kernel memory for the socket's send queue,
forever (``WS_IDLE_TIMEOUT`` only bounds the wait for the next request,
``WS_REQUEST_HEAD_TIMEOUT`` only the head). ``WS_SEND_TIMEOUT`` now bounds
it as it bounds unread echoes on a WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from testkit.metrics import sample as metric

from .conftest import ServerProcess as Server
from .test_hostile import Watchdog

#: The bounds of these tests: the pipelining client's repro, with the
#: WebSocket send timeout at 2 s (a sweep every 0.5 s).
ENV = {"WS_SEND_TIMEOUT": "2", "WS_IDLE_TIMEOUT": "2", "WS_REQUEST_HEAD_TIMEOUT": "2"}
#: Dropped within WS_SEND_TIMEOUT and two sweeps of the stall starting;
#: what is left is for a loaded shared machine.
BOUND = 2.0 + 2 * 0.5 + 2.0

_TCP_STATES = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE"}


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(env=ENV)


def server_side(port: int, client: socket.socket) -> tuple[str, int] | None:
    """The state and send queue (bytes) of the server's end of ``client``'s
    loopback connection, or None once the kernel has let it go."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.rsplit(":", 1)[1], 16) == port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                state = int(fields[3], 16)
                return _TCP_STATES.get(state, str(state)), int(fields[4].split(":")[0], 16)
    return None


def released(side: tuple[str, int] | None) -> bool:
    """The server closed its end and holds none of its send queue."""
    return side is None or (side[0] != "ESTABLISHED" and side[1] == 0)


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def non_reading_client(port: int) -> socket.socket:
    """A client with a 4 KiB receive buffer (closed after the test)."""
    sock = socket.socket()
    _opened.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def pipeline_without_reading(sock: socket.socket, seconds: float, request: bytes) -> None:
    """Send ``request`` over and over for ``seconds``, never reading."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.send(request * 50)
        except BlockingIOError:
            time.sleep(0.01)
        except ConnectionError:  # dropped already
            return


def ends(sock: socket.socket, timeout: float = 10.0) -> bool:
    """The client, reading at last, sees its connection end (EOF or reset)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


async def others_are_served(server: Server, watch: Watchdog, until: Any, limit: float) -> float:
    """Meanwhile: ``/healthz`` on a new connection answers within a second,
    every 0.2 s, and the watchdog's WebSocket echoes within a second, until
    ``until()``; returns when that came (seconds)."""
    started = time.monotonic()
    while not until():
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"still held after {elapsed:.1f} s"
        asked = time.monotonic()
        status = (await asyncio.to_thread(server.get, "/healthz", 2.0))[0]
        assert status == 200
        assert time.monotonic() - asked < 1.0
        await asyncio.sleep(0.2)
    assert watch.count > 0
    assert watch.worst < 1.0, watch.worst
    return time.monotonic() - started


#: The events of the start, of requests and of the watchdog's WebSocket.
_EXPECTED = {"listening", "request", "open", "message", "close"}


def other_lines(server: Server) -> list[str]:
    """The lines not about requests, the start or the watchdog (which the
    test drops without a close frame: abnormal_closure)."""
    left = []
    for line in server.lines:
        try:
            event = json.loads(line)
        except ValueError:
            left.append(line)
            continue
        if event.get("event") in _EXPECTED or event.get("kind") == "abnormal_closure":
            continue
        left.append(line)
    return left


def errors(server: Server) -> list[dict[str, Any]]:
    return [e for e in server.events("error") if e["kind"] != "abnormal_closure"]


def test_a_client_pipelining_requests_without_reading_is_dropped(server: Server) -> None:
    """The reviewer's repro: ``GET /`` pipelined for 3 s by a client with a
    4 KiB receive buffer that never reads. The server's end held about
    2.8 MB in its send queue, ESTABLISHED, for as long as the client
    liked; now it is reset within WS_SEND_TIMEOUT (plus a sweep or two),
    the kernel's queue freed, with one ``slow_http_client`` line and
    count, while ``/healthz`` and a WebSocket echo go on meanwhile."""
    sock = non_reading_client(server.port)
    port = sock.getsockname()[1]

    async def scenario() -> float:
        async with Watchdog(server.port) as watch:
            await asyncio.to_thread(
                pipeline_without_reading, sock, 3.0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            # Dropped already, or stalled with megabytes queued: the repro is real.
            side = server_side(server.port, sock)
            assert released(side) or (side is not None and side[1] > 1_000_000), side
            took = await others_are_served(
                server, watch, lambda: released(server_side(server.port, sock)), BOUND + 5
            )
        return took

    took = asyncio.run(scenario())
    assert took < BOUND, took
    assert ends(sock)
    server.settle(0.5)
    dropped = errors(server)
    assert [e["kind"] for e in dropped] == ["slow_http_client"], dropped
    assert dropped[0]["count"] == 1
    assert dropped[0]["peer"] == f"127.0.0.1:{port}"
    assert len(other_lines(server)) == 1, other_lines(server)
    text = server.get("/metrics")[1].decode()
    assert metric(text, "websocket_errors_total", kind="slow_http_client") == 1


def test_request_heads_sent_at_once_for_more_than_the_kernel_holds(server: Server) -> None:
    """One write of 400 ``GET /metrics`` heads (about 4.5 MB of answers,
    more than the kernel's buffers take), then nothing read: dropped
    within the bound and counted, like the pipelining client."""
    sock = non_reading_client(server.port)
    sock.setblocking(True)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 400)

    async def scenario() -> float:
        async with Watchdog(server.port) as watch:
            return await others_are_served(
                server, watch, lambda: released(server_side(server.port, sock)), BOUND + 5
            )

    took = asyncio.run(scenario())
    assert took < BOUND, took
    assert ends(sock)
    server.settle(0.5)
    assert [e["kind"] for e in errors(server)] == ["slow_http_client"]
    text = server.get("/metrics")[1].decode()
    assert metric(text, "websocket_errors_total", kind="slow_http_client") == 1


@pytest.mark.parametrize("path", ["/metrics", "/"])
def test_one_large_response_never_read_is_closed_by_the_idle_timeout(
    server: Server, path: str
) -> None:
    """One request head for ``/metrics`` (11 KB) or the console page
    (7 KB), never read, with a 4 KiB receive buffer: the kernel takes the
    whole response, so the server waits on the client no longer than
    for its next request, and WS_IDLE_TIMEOUT closes it (no
    ``slow_http_client``: nothing waited in the server). Its send queue
    holds at most that one response meanwhile."""
    size = len(server.get(path)[1])
    sock = non_reading_client(server.port)
    sock.setblocking(True)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    most = 0

    def closed() -> bool:
        nonlocal most
        side = server_side(server.port, sock)
        most = max(most, side[1] if side is not None else 0)
        return side is None or side[0] != "ESTABLISHED"

    async def scenario() -> float:
        async with Watchdog(server.port) as watch:
            return await others_are_served(server, watch, closed, 2.0 + 5)

    took = asyncio.run(scenario())
    assert took < 2.0 + 2.0, took
    assert 0 < most <= size + 1024, (most, size)
    assert ends(sock)
    server.settle(0.5)
    assert errors(server) == []


def test_many_clients_that_never_read_log_one_line_with_a_count(server: Server) -> None:
    """Eight clients pipelining without reading, together: each dropped
    within the bound and counted in ``websocket_errors_total``, and one
    ``error`` line for them all (one per 10 s); the next line, 10 s on,
    carries the count of those left out."""
    socks = [non_reading_client(server.port) for _ in range(8)]
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

    async def scenario() -> float:
        async with Watchdog(server.port) as watch:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(len(socks)) as pool:  # all at once
                await asyncio.gather(
                    *(
                        loop.run_in_executor(pool, pipeline_without_reading, s, 3.0, request)
                        for s in socks
                    )
                )
            return await others_are_served(
                server,
                watch,
                lambda: all(released(server_side(server.port, s)) for s in socks),
                BOUND + 5,
            )

    took = asyncio.run(scenario())
    assert took < BOUND, took
    for sock in socks:
        assert ends(sock)
    server.settle(0.5)
    lines = errors(server)
    assert [e["kind"] for e in lines] == ["slow_http_client"], lines
    text = server.get("/metrics")[1].decode()
    assert metric(text, "websocket_errors_total", kind="slow_http_client") == 8
    # 10 s after the first line (logged before they were all released),
    # one more drop: logged, with the count.
    time.sleep(10.5)
    late = non_reading_client(server.port)
    pipeline_without_reading(late, 1.0, request)
    deadline = time.monotonic() + BOUND + 5
    while not released(server_side(server.port, late)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.settle(0.5)
    lines = errors(server)
    assert [e["kind"] for e in lines] == ["slow_http_client"] * 2, lines
    assert [e["count"] for e in lines] == [1, 8], lines
