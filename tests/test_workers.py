"""``WS_WORKERS``: several server processes sharing the port, one supervisor.

Every test runs the real ``python -m server`` and real clients on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from server.app import make_app
from server.base import Service
from server.podstate import PodState, Worker, WorkerState
from testkit.metrics import Key, Samples, scrape

from .conftest import ServerProcess, recv_until_closed, run_python
from .rawws import RawWebSocket


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _sockets(pid: int) -> int:
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _listening(server: ServerProcess, count: int) -> list[dict[str, object]]:
    _wait_for(lambda: len([d for d in server.log if d.get("event") == "listening"]) >= count)
    return [d for d in server.log if d.get("event") == "listening"]


def test_connections_are_spread_over_the_workers(server_process: type[ServerProcess]) -> None:
    """Two workers each listen on the port (SO_REUSEPORT); 40 clients end up
    on both of them, and each client's echo comes back."""
    server = server_process(env={"WS_WORKERS": "2"})
    listening = _listening(server, 2)
    assert server.wait_event("workers")["count"] == 2
    pids = _workers(server.proc.pid)
    assert sorted(pids) == sorted(int(str(d["pid"])) for d in listening)
    server.wait_ready()
    before = {pid: _sockets(pid) for pid in pids}

    async def scenario() -> None:
        clients = [await connect(server.ws_url) for _ in range(40)]
        for i, ws in enumerate(clients):
            await ws.send(f"hello {i}")
        assert [await ws.recv() for ws in clients] == [f"hello {i}" for i in range(40)]
        # Hashing 40 connections over 2 listeners leaves fewer than 5 on
        # one of them about once in ten million runs.
        gained = {pid: _sockets(pid) - before[pid] for pid in pids}
        assert all(n >= 5 for n in gained.values()), gained
        for ws in clients:
            await ws.close()

    asyncio.run(scenario())


def test_sigterm_drains_every_worker(server_process: type[ServerProcess]) -> None:
    """SIGTERM to the supervisor reaches each worker: every message in flight
    is echoed, every client gets 1001, and the supervisor exits 0 after them."""
    server = server_process(env={"WS_WORKERS": "2", "WS_LOG_MESSAGES": "false"})
    _listening(server, 2)
    server.wait_ready()

    async def scenario() -> None:
        clients = [await connect(server.ws_url) for _ in range(20)]
        sent = [[f"{c}:{i}" for i in range(200)] for c in range(len(clients))]
        for ws, messages in zip(clients, sent, strict=True):
            for m in messages:
                await ws.send(m)
        server.signal(signal.SIGTERM)
        received = await asyncio.gather(*(recv_until_closed(ws) for ws in clients))
        for ws, messages, got in zip(clients, sent, received, strict=True):
            assert got == messages
            assert ws.close_code == 1001

    asyncio.run(scenario())
    assert server.wait(timeout=20) == 0
    drained = [d for d in server.log if d.get("event") == "drained"]
    assert len(drained) == 2
    assert all(d["aborted"] == 0 for d in drained)
    assert server.log[-1]["event"] == "exit"


def test_sigterm_while_the_workers_start_is_a_clean_exit(
    server_process: type[ServerProcess],
) -> None:
    """SIGTERM that reaches the workers before their event loops handle it
    (Knative may scale a pod down just as it starts) is held until they do,
    and then drains as usual: every worker exits 0, and so does the
    supervisor - not 143, killed by the signal's default action."""
    server = server_process(env={"WS_WORKERS": "2"})
    server.wait_event("workers")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    exits = [d for d in server.log if d.get("event") == "exit"]
    assert [d["status"] for d in exits] == [0, 0, 0]  # two workers, then the supervisor


def test_a_worker_that_dies_is_started_again(server_process: type[ServerProcess]) -> None:
    server = server_process(env={"WS_WORKERS": "2"})
    _listening(server, 2)
    server.wait_ready()
    time.sleep(1.1)  # past the minimum uptime: a crash now is not a start-up failure
    victim = _workers(server.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    error = server.wait_event("error")
    assert error["kind"] == "worker_exited"
    assert error["pid"] == victim
    assert error["code"] == 128 + signal.SIGKILL
    _listening(server, 3)
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    assert victim not in workers
    server.wait_ready()


def test_workers_that_cannot_start_stop_the_supervisor() -> None:
    """The port is taken by a socket without SO_REUSEPORT: each worker fails
    to bind at once, and the supervisor exits non-zero instead of looping."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WS_")}
        env.update({"PORT": str(port), "WS_HOST": "127.0.0.1", "WS_WORKERS": "2"})
        result = run_python("-m", "server", env=env, timeout=30)
    assert result.returncode == 1
    assert '"kind": "worker_exited"' in result.stdout
    assert '"kind": "worker_failed"' in result.stdout
    assert "Address already in use" in result.stdout


def test_workers_exit_when_the_supervisor_is_killed(server_process: type[ServerProcess]) -> None:
    server = server_process(env={"WS_WORKERS": "2"})
    _listening(server, 2)
    workers = _workers(server.proc.pid)
    server.proc.kill()
    server.proc.wait(10)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    _wait_for(gone)


def test_asyncio_event_loop_serves_too(server_process: type[ServerProcess]) -> None:
    server = server_process(env={"WS_EVENT_LOOP": "asyncio"})
    assert server.wait_event("listening")["event_loop"] == "asyncio"
    server.wait_ready()

    async def scenario() -> None:
        async with connect(server.ws_url) as ws:
            await ws.send("plain asyncio")
            assert await ws.recv() == "plain asyncio"

    asyncio.run(scenario())


# -- one pod's numbers (server/podstate.py) ----------------------------------

#: The series the pod-total tests compare, as (name, labels) keys.
_Sample = Key


def _scrape(server: ServerProcess) -> Samples:
    """One scrape, on a new TCP connection (so the kernel picks the worker
    afresh); ``_created`` left out."""
    return scrape(server.url, created=False)


def _ready(server: ServerProcess) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _settled(server: ServerProcess, key: _Sample, value: float) -> dict[_Sample, float]:
    """Scrape until ``key`` reads ``value`` (the server counts a close a
    moment after the client sees it); the last scrape."""
    deadline = time.monotonic() + 10
    while True:
        got = _scrape(server)
        if got.get(key) == value:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} is {got.get(key)}, not {value}")
        time.sleep(0.05)


OPENED = ("websocket_connections_opened_total", ())
OPEN = ("websocket_open_connections", ())
CLOSED_1000 = ("websocket_connections_closed_total", (("code", "1000"),))
TEXT_IN = ("websocket_messages_received_total", (("type", "text"),))
BINARY_IN = ("websocket_messages_received_total", (("type", "binary"),))
TEXT_BYTES_IN = ("websocket_received_bytes_total", (("type", "text"),))
TEXT_OUT = ("websocket_messages_sent_total", (("type", "text"),))
DURATIONS = ("websocket_connection_duration_seconds_count", ())
RESTARTS = ("websocket_worker_restarts_total", ())
WORKER_EXITED = ("websocket_errors_total", (("kind", "worker_exited"),))


async def _traffic(
    server: ServerProcess, connections: int, keep: int
) -> tuple[list[ClientConnection], int]:
    """``connections`` clients, each on a new TCP connection, each sending
    three text messages and one binary and reading the echoes; all but the
    last ``keep`` close with 1000. The open clients, and text bytes sent."""
    clients, text_bytes = [], 0
    for i in range(connections):
        ws = await connect(server.ws_url)
        for j in range(3):
            message = f"client {i} message {j}"
            text_bytes += len(message)
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(bytes([i % 256]) * 5)
        assert await ws.recv() == bytes([i % 256]) * 5
        clients.append(ws)
    for ws in clients[: connections - keep]:
        await ws.close()
    return clients[connections - keep :], text_bytes


def _pod_started(server: ServerProcess) -> list[int]:
    _listening(server, 2)
    server.wait_ready()
    pids = _workers(server.proc.pid)
    assert len(pids) == 2
    return pids


def test_metrics_are_the_pods_totals_whichever_worker_answers(
    server_process: type[ServerProcess],
) -> None:
    """With two workers, 60 clients on new TCP connections (both workers
    get some), 20 of them still open: 40 scrapes, each on a new connection
    and so answered by either worker, all read the same totals, and those
    are what the clients did."""
    shm_before = set(os.listdir("/dev/shm"))
    server = server_process(env={"WS_WORKERS": "2", "WS_LOG_MESSAGES": "false"})
    pids = _pod_started(server)
    before = {pid: _sockets(pid) for pid in pids}
    # The region is anonymous: one shared (rw-s) mapping in every process,
    # of no file (libuv's io_uring rings are shared mappings too).
    for pid in (server.proc.pid, *pids):
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        shared = [line.split(None, 5)[5] for line in maps if line.split()[1] == "rw-s"]
        files = [name for name in shared if not name.startswith("anon_inode:")]
        assert files == ["/dev/zero (deleted)"], shared
    assert set(os.listdir("/dev/shm")) == shm_before

    async def scenario() -> None:
        open_clients, text_bytes = await _traffic(server, 60, keep=20)
        gained = {pid: _sockets(pid) - before[pid] for pid in pids}
        assert all(n >= 3 for n in gained.values()), gained  # both serve some
        first = _settled(server, CLOSED_1000, 40)
        scrapes = [_scrape(server) for _ in range(40)]
        assert all(scrape == first for scrape in scrapes)
        assert first[OPENED] == 60
        assert first[OPEN] == 20
        assert first[CLOSED_1000] == 40
        assert first[DURATIONS] == 40
        assert first[TEXT_IN] == first[TEXT_OUT] == 180
        assert first[BINARY_IN] == 60
        assert first[TEXT_BYTES_IN] == text_bytes
        assert first[RESTARTS] == 0
        statuses = [_ready(server) for _ in range(20)]
        assert all(
            status == (200, {"status": "ready", "connections": 20, "workers": ["ready"] * 2})
            for status in statuses
        ), statuses
        for ws in open_clients:
            await ws.close()

    asyncio.run(scenario())


def test_a_restarted_worker_keeps_the_pods_counts(server_process: type[ServerProcess]) -> None:
    """kill -9 one of two workers while clients are connected to both: it
    is started again, and no scrape through either worker ever shows a
    counter lower than before; the restart (and the worker_exited error) is
    counted once; the open connections are those still open; /readyz
    through either worker is ready again. Traffic after the restart adds up."""
    server = server_process(env={"WS_WORKERS": "2", "WS_LOG_MESSAGES": "false"})
    _pod_started(server)
    time.sleep(1.1)  # past the minimum uptime: a crash now is not a start-up failure

    async def scenario() -> None:
        open_clients, _ = await _traffic(server, 40, keep=20)
        before = _settled(server, CLOSED_1000, 20)
        victim = _workers(server.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        assert server.wait_event("error")["kind"] == "worker_exited"
        _listening(server, 3)
        server.wait_ready()

        # The victim's clients see their connections drop; the rest stay.
        deadline = time.monotonic() + 10
        while True:
            await asyncio.sleep(0.1)
            alive = [ws for ws in open_clients if ws.state is State.OPEN]
            if _scrape(server)[OPEN] == len(alive) or time.monotonic() > deadline:
                break
        assert 0 < len(alive) < 20  # both workers had some

        for _ in range(30):
            after = _scrape(server)
            for key, value in before.items():
                if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                    assert after[key] >= value, (key, value, after[key])
            assert after[OPENED] == before[OPENED] == 40
            assert after[CLOSED_1000] == 20
            assert after[RESTARTS] == 1
            assert after[WORKER_EXITED] == 1
            assert after[OPEN] == len(alive)
        statuses = [_ready(server) for _ in range(20)]
        assert all(s[0] == 200 and s[1]["status"] == "ready" for s in statuses), statuses

        more, _ = await _traffic(server, 20, keep=0)
        final = _settled(server, CLOSED_1000, 40)
        assert final[OPENED] == 60
        assert final[TEXT_IN] == 180
        assert final[RESTARTS] == 1
        for ws in alive:
            await ws.close()
        del more

    asyncio.run(scenario())


def test_readyz_is_the_pods_while_draining(server_process: type[ServerProcess]) -> None:
    """SIGTERM: from the moment the workers drain, /readyz through either
    says 503 draining (clients that never answer the close frame keep the
    drain going)."""
    server = server_process(
        env={"WS_WORKERS": "2", "WS_DRAIN_TIMEOUT": "5", "WS_LOG_MESSAGES": "false"}
    )
    _pod_started(server)

    async def scenario() -> None:
        clients = [await RawWebSocket.connect(server.port) for _ in range(8)]
        server.signal(signal.SIGTERM)
        _wait_for(lambda: len([d for d in server.log if d.get("event") == "drain"]) == 2)
        for _ in range(10):
            status, doc = _ready(server)
            assert status == 503
            assert doc["status"] == "draining"
            assert set(doc["workers"]) <= {"draining", "exited"}  # type: ignore[arg-type]
        for ws in clients:
            ws.writer.close()

    asyncio.run(scenario())


@pytest.fixture
def pod() -> Iterator[PodState]:
    made = PodState(2)
    yield made
    made.close()


@pytest.fixture
def app(service: Service, pod: PodState) -> tornado.web.Application:
    """Worker 0's app, serving in this process (the other worker is only
    its part of the region, which the test sets as a worker would)."""
    return make_app(service, worker=Worker(pod, 0))


async def test_readyz_and_metrics_answer_for_every_worker(port: int, pod: PodState) -> None:
    """Worker 0 answers /readyz with the other worker's state too, and
    /metrics with its numbers."""
    client = AsyncHTTPClient()

    async def ready() -> tuple[int, dict[str, object]]:
        response = await client.fetch(f"http://127.0.0.1:{port}/readyz", raise_error=False)
        return response.code, json.loads(response.body)

    pod.set_state(0, WorkerState.READY)
    assert await ready() == (
        503,
        {"status": "starting", "connections": 0, "workers": ["ready", "starting"]},
    )
    pod.set_state(1, WorkerState.READY)
    other = pod.metrics(1)
    other.open_connections.inc(3)
    other.connections_opened.inc(5)
    assert await ready() == (
        200,
        {"status": "ready", "connections": 3, "workers": ["ready", "ready"]},
    )
    response = await client.fetch(f"http://127.0.0.1:{port}/metrics")
    assert b"websocket_connections_opened_total 5.0" in response.body
    assert b"websocket_open_connections 3.0" in response.body
    for state in (WorkerState.DRAINING, WorkerState.EXITED):
        pod.set_state(1, state)
        status, doc = await ready()
        assert (status, doc["status"]) == (503, "draining")
    pod.restarted(1)  # what the supervisor does before starting it again
    assert await ready() == (
        503,
        {"status": "starting", "connections": 0, "workers": ["ready", "starting"]},
    )
    response = await client.fetch(f"http://127.0.0.1:{port}/metrics")
    assert b"websocket_connections_opened_total 5.0" in response.body
    assert b"websocket_worker_restarts_total 1.0" in response.body


def test_the_pods_drain_start_is_the_first_workers_not_a_sum() -> None:
    """websocket_drain_started_timestamp_seconds is a time, not a count: with
    two workers draining, the pod's value is when the first began (a sum of
    the two timestamps, as every other slot is added, would be ~2x now and
    the WebSocketDrainOverrun alert's age would be negative)."""
    pod = PodState(2)
    try:
        first, second = pod.metrics(0), pod.metrics(1)
        worker = Worker(pod, 1)
        assert worker.totals().drain_started.value == 0.0
        first.drain_started.value = 1_000.0
        assert worker.totals().drain_started.value == 1_000.0
        second.drain_started.value = 1_000.5
        assert worker.totals().drain_started.value == 1_000.0
        first.open_connections.inc(3)
        second.open_connections.inc(4)
        assert worker.totals().open_connections.value == 7
    finally:
        pod.close()
