"""``WS_WORKERS``: several server processes sharing the port, one supervisor.

Every test runs the real ``python -m server`` and real clients on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

from websockets.asyncio.client import connect

from .conftest import ServerProcess, recv_until_closed, run_python


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
