"""Fan-out: one publisher, many receivers, side by side with a peer.

    .venv/bin/python bench/fanout.py              # 3 runs a target, medians
    .venv/bin/python bench/fanout.py --quick      # 1 short run, 100 receivers
    .venv/bin/python bench/fanout.py --targets ours,websockets --receivers 1000

Each target is a server where a message sent to ``/pub`` goes to every
connection open on ``/ws``:

- ``ours``: an app on the base, :func:`server.base.broadcast` (framed once);
- ``ours-write-message``: the same app writing to each receiver with
  ``write_message`` (how an app fanned out before ``broadcast``);
- ``ours-redis-2-workers``: the same app with ``WS_WORKERS=2`` and
  ``WS_BACKPLANE_URL`` naming a ``redis-server`` this script starts (on a
  free loopback port, in a temporary directory, no persistence; stopped
  after): ``/pub`` publishes to a backplane channel (XADD), and each
  worker's subscriber (XREAD BLOCK) broadcasts to its own ``/ws`` members -
  the receivers spread over both workers by ``SO_REUSEPORT``;
- ``ours-redis-1-worker``: the same path through Redis with one worker
  (the Redis hop without the split);
- ``websockets``: a minimal websockets server with ``websockets.broadcast()``.

The server (every worker) runs pinned to ``--server-cpus`` (CPU 0), the
load generator (this file's ``client`` mode: picows on uvloop, one process)
to ``--loadgen-cpus`` (CPU 1), as bench/run.py does; redis-server shares
the server's CPUs (``--redis-cpus``): every row gets the same CPU for its
whole server side, so on a 2-CPU machine two workers take turns on one
CPU (what they cost, not how they scale). Two scenarios per run:

- throughput: the publisher keeps ``WINDOW`` messages (64 B) in flight -
  a message is in flight until every receiver has it - for ``--seconds``;
  deliveries (messages received, all receivers together) per second;
- latency: the publisher sends at ``--rate`` messages a second, each
  carrying its send time (CLOCK_MONOTONIC, one clock for both processes);
  publish-to-delivery p50 and p99 over every delivery.

Every receiver must get every message once and in order, or the run fails.
Our servers send each receiver, when it opens, the pid of the worker that
holds it: the load generator waits for all of them before it publishes, and
a target with more than one worker fails unless every worker holds some.

Prints a markdown table (medians of the runs) with the date and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
#: The backplane channel of the Redis targets.
CHANNEL = "fanout"
#: Seconds the load generator waits for a message to reach everyone.
STALL = 15.0
#: Messages in flight in the throughput scenario (in flight until every
#: receiver has it).
WINDOW = 16
SIZE = 64

sys.path.insert(0, str(ROOT))  # testkit and server, when run as a script


@dataclasses.dataclass(frozen=True)
class Target:
    """A server under test: ``label`` in the table, and the command that
    serves ``/pub`` and ``/ws`` on a port (``{port}`` filled in)."""

    name: str
    label: str
    command: tuple[str, ...]
    #: ``{redis}`` in a value is the URL of the redis-server started for it.
    env: tuple[tuple[str, str], ...] = ()
    #: Server processes holding receivers, each saying which it is (0: it
    #: does not say).
    workers: int = 0

    @property
    def redis(self) -> bool:
        return any("{redis}" in value for _, value in self.env)


HERE = str(Path(__file__).resolve())
TARGETS = [
    Target("ours", "ours, `broadcast()`", (PY, HERE, "serve", "ours", "{port}"), workers=1),
    Target(
        "ours-write-message",
        "ours, a `write_message` per receiver",
        (PY, HERE, "serve", "ours-write-message", "{port}"),
        workers=1,
    ),
    Target(
        "ours-redis-2-workers",
        "ours through Redis, 2 workers, `broadcast()` in each",
        (PY, HERE, "serve", "ours-redis", "{port}"),
        (("WS_WORKERS", "2"), ("WS_BACKPLANE_URL", "{redis}")),
        workers=2,
    ),
    Target(
        "ours-redis-1-worker",
        "ours through Redis, 1 worker, `broadcast()`",
        (PY, HERE, "serve", "ours-redis", "{port}"),
        (("WS_WORKERS", "1"), ("WS_BACKPLANE_URL", "{redis}")),
        workers=1,
    ),
    Target(
        "websockets",
        "websockets {websockets}, `broadcast()`",
        (PY, HERE, "serve", "websockets", "{port}"),
    ),
]


# -- the servers ----------------------------------------------------------------


def serve_ours(port: int, mode: str) -> None:
    """``mode``: ``ours``, ``ours-write-message`` or ``ours-redis`` (through
    the backplane ``WS_BACKPLANE_URL`` names, on ``WS_WORKERS`` workers)."""
    from server.__main__ import main
    from server.backplane import Entry
    from server.base import KnativeWebSocketHandler, broadcast

    per_member = mode == "ours-write-message"
    via_backplane = mode == "ours-redis"
    receivers: set[KnativeWebSocketHandler] = set()
    subscribed: list[asyncio.Future[None]] = []  # this worker's subscription, once made

    def deliver(entry: Entry) -> None:
        """The channel's subscriber: to this worker's receivers. The
        backplane carries text; the binary message is its Latin-1."""
        broadcast(entry.data.encode("latin-1"), receivers, binary=True)

    class Receiver(KnativeWebSocketHandler):
        async def open(self) -> None:
            receivers.add(self)
            if via_backplane:
                if not subscribed:
                    subscribed.append(asyncio.get_running_loop().create_future())
                    await self.backplane.subscribe(CHANNEL, deliver)
                    subscribed[0].set_result(None)
                await subscribed[0]
            self.write_message(f"worker {os.getpid()}")

        def on_close(self) -> None:
            receivers.discard(self)

    class Publisher(KnativeWebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            binary = isinstance(message, bytes)
            if via_backplane:
                assert isinstance(message, bytes)
                self.backplane.publish(CHANNEL, message.decode("latin-1"))
                return
            if not per_member:
                broadcast(message, receivers, binary=binary)
                return
            for member in receivers:
                if not member.ws_connection or member.ws_connection.is_closing():
                    continue
                member.write_message(message, binary=binary)

    os.environ["PORT"] = str(port)
    os.environ.setdefault("WS_HOST", "127.0.0.1")
    main([], routes=[("/ws", Receiver), ("/pub", Publisher)])


async def serve_websockets(port: int) -> None:
    from http import HTTPStatus

    from websockets.asyncio.server import ServerConnection, broadcast, serve

    receivers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/pub":
            async for message in ws:
                broadcast(receivers, message)
            return
        receivers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            receivers.discard(ws)

    def ready(connection: Any, request: Any) -> Any:
        if request.path == "/readyz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async with serve(handler, "127.0.0.1", port, process_request=ready, compression=None):
        await asyncio.Event().wait()


# -- the load generator -----------------------------------------------------------


async def client(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop  # noqa: F401  (the loop is set by the caller)
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    receivers = args.receivers
    got: dict[int, int] = {}  # seq -> receivers that have it
    latencies: list[int] = []
    state = {"complete": 0, "deliveries": 0, "record": False}
    progress = asyncio.Event()
    workers: dict[int, int] = {}  # pid -> receivers it holds
    wrong: list[str] = []  # the first messages out of order, missing or twice

    class Receiver(WSListener):
        last = 0  # the last message's seq

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:  # "worker <pid>"
                pid = int(frame.get_payload_as_ascii_text().split()[1])
                workers[pid] = workers.get(pid, 0) + 1
                return
            if frame.msg_type != WSMsgType.BINARY:
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            now = time.monotonic_ns()
            seq, sent_ns = struct.unpack_from("!QQ", frame.get_payload_as_bytes())
            if seq != self.last + 1 and len(wrong) < 5:
                wrong.append(f"a receiver got message {seq} after {self.last}")
            self.last = seq
            state["deliveries"] += 1
            if state["record"]:
                latencies.append(now - sent_ns)
            n = got.get(seq, 0) + 1
            if n == receivers:
                got.pop(seq, None)
                state["complete"] += 1
                progress.set()
            else:
                got[seq] = n

    class Publisher(WSListener):
        pass

    url = args.url.rstrip("/")
    clients = []
    for start in range(0, receivers, 200):  # in batches: a burst of SYNs overflows the backlog
        clients += await asyncio.gather(
            *(ws_connect(Receiver, f"{url}/ws") for _ in range(start, min(receivers, start + 200)))
        )
    pub, _ = await ws_connect(Publisher, f"{url}/pub")
    if args.workers:  # every receiver's open() has run when it says so
        deadline = time.monotonic() + STALL
        while sum(workers.values()) < receivers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{receivers - sum(workers.values())} receivers never opened")
            await asyncio.sleep(0.01)
        if len(workers) != args.workers:
            raise RuntimeError(
                f"receivers by worker {sorted(workers.values())}: "
                f"not spread over {args.workers} worker(s)"
            )
    else:
        await asyncio.sleep(0.5)  # every receiver's open() has run
    padding = b"\0" * (SIZE - 16)
    seq = 0

    def publish() -> None:
        nonlocal seq
        seq += 1
        pub.send(WSMsgType.BINARY, struct.pack("!QQ", seq, time.monotonic_ns()) + padding)

    async def window(seconds: float) -> tuple[int, float]:
        """Publish with WINDOW in flight for ``seconds``; deliveries, elapsed."""
        start_deliveries = state["deliveries"]
        started = time.perf_counter()
        end = started + seconds
        while time.perf_counter() < end:
            while seq - state["complete"] < WINDOW:
                publish()
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), STALL)
            except TimeoutError:
                raise RuntimeError(stuck()) from None
        return state["deliveries"] - start_deliveries, time.perf_counter() - started

    def stuck() -> str:
        missing = seq - state["complete"]
        behind = sum(1 for _, listener in clients if listener.last < seq)
        return (
            f"{missing} of {seq} messages never reached everyone within {STALL:g} s: "
            f"{behind} of {receivers} receivers are missing some (receivers by worker: "
            f"{sorted(workers.values())}); {'; '.join(wrong)}"
        )

    async def settle() -> None:
        deadline = time.monotonic() + STALL
        while state["complete"] < seq:
            if time.monotonic() > deadline:
                raise RuntimeError(stuck())
            await asyncio.sleep(0.01)
        if wrong:
            raise RuntimeError("; ".join(wrong))

    await window(args.warmup)
    await settle()
    user, system = tree_cpu_seconds(args.server_pid)
    redis_cpu = redis_cpu_seconds(args.redis_port) if args.redis_port else 0.0
    messages = seq
    own_cpu = time.process_time()
    deliveries, elapsed = await window(args.seconds)
    user_after, system_after = tree_cpu_seconds(args.server_pid)
    messages = seq - messages
    if args.redis_port:
        redis_cpu = redis_cpu_seconds(args.redis_port) - redis_cpu
    own_cpu = time.process_time() - own_cpu
    await settle()
    # Latency at a fixed rate, below what every target sustains.
    state["record"] = True
    interval = 1.0 / args.rate
    next_at = time.perf_counter()
    end = next_at + args.seconds
    while next_at < end:
        publish()
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await settle()
    state["record"] = False
    behind = sum(1 for _, listener in clients if listener.last != seq)
    if behind:
        raise RuntimeError(f"{behind} receivers did not get the last message")
    latencies.sort()
    for transport, _ in clients:
        transport.disconnect()
    pub.disconnect()
    return {
        "deliveries_per_s": deliveries / elapsed,
        # CPU time per delivery: what each side spends, whatever else runs
        # on the machine (the rate above is what they get of it).
        "server_user_us": (user_after - user) / deliveries * 1e6,
        "server_system_us": (system_after - system) / deliveries * 1e6,
        "loadgen_cpu_us": own_cpu / deliveries * 1e6,
        "redis_cpu_us": redis_cpu / deliveries * 1e6 if args.redis_port else None,
        "redis_cpu_us_a_message": redis_cpu / messages * 1e6 if args.redis_port else None,
        "receivers_by_worker": sorted(workers.values()),
        "lat_p50_ms": latencies[len(latencies) // 2] / 1e6,
        "lat_p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6,
        "latency_samples": len(latencies),
    }


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used (from /proc): user
    is the server's Python, system mostly the kernel's send per receiver."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def redis_cpu_seconds(port: int) -> float:
    """redis-server's user and system CPU seconds together, to the
    microsecond (``INFO cpu``: its getrusage): it spends too little a
    delivery for the clock ticks of /proc/PID/stat."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO cpu\r\n")
        reply = b""
        while b"\r\n" not in reply or len(reply) < reply.index(b"\r\n") + 2 + int(
            reply[1 : reply.index(b"\r\n")]  # "$<length>\r\n<text>\r\n"
        ):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            reply += chunk
    fields = dict(
        line.split(":", 1) for line in reply.decode().splitlines() if line.startswith("used_cpu_")
    )
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """:func:`cpu_seconds` of a process and its children (a supervisor and
    its workers: a child counts in the parent's stat only once reaped)."""
    pids = [pid, *children(pid)]
    user = system = 0.0
    for p in pids:
        try:
            u, s = cpu_seconds(p)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile (a worker is never restarted in a run)
        user, system = user + u, system + s
    return user, system


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


# -- the orchestrator ---------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def versions() -> dict[str, str]:
    from testkit.process import package_versions
    from testkit.redis import redis_server_version

    out = package_versions("tornado", "uvloop", "websockets", "picows", "redis")
    try:
        out["redis-server"] = redis_server_version()
    except (OSError, subprocess.SubprocessError):
        out["redis-server"] = "not installed"
    return out


def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis = None
        if target.redis:
            from testkit.redis import RedisServer

            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            redis = RedisServer(directory, prefix=("taskset", "-c", args.redis_cpus))
            stack.callback(redis.kill)
            redis.start()
        return _run_server(target, args, redis.url if redis else "", redis)


def _run_server(
    target: Target, args: argparse.Namespace, redis_url: str, redis: Any
) -> dict[str, Any]:
    from testkit.process import ServerProcess, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WS_")}
    env.update({"PORT": str(port), "WS_HOST": "127.0.0.1"})
    env.update({k: v.format(redis=redis_url) for k, v in target.env})
    command = ["taskset", "-c", args.server_cpus, *(c.format(port=port) for c in target.command)]
    server = ServerProcess(command=command, base_env=env, port=port, log=None)
    try:
        server.wait_ready(timeout=30)
        client_args = [
            "taskset", "-c", args.loadgen_cpus, PY, HERE, "client",
            "--url", f"ws://127.0.0.1:{port}",
            "--receivers", str(args.receivers),
            "--seconds", str(args.seconds),
            "--warmup", str(args.warmup),
            "--rate", str(args.rate),
            "--server-pid", str(server.proc.pid),
            "--workers", str(target.workers),
        ]  # fmt: skip
        if redis is not None:
            client_args += ["--redis-port", str(redis.port)]
        proc = subprocess.run(
            client_args,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{target.name}: client failed:\n{proc.stdout}{proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result
    finally:
        stop(server)


def stop(server: Any) -> None:
    """SIGTERM (workers drain and exit with their supervisor), then SIGKILL
    for whatever of the server is left, so nothing of it runs on into the
    next target's turn."""
    pids = children(server.proc.pid)
    server.signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)
    server.stop()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    v = versions()
    by_name = {t.name: t for t in TARGETS}
    ours = (
        statistics.median(r["deliveries_per_s"] for r in results["ours"])
        if "ours" in results
        else None
    )
    redis = any(by_name[name].redis for name in results)
    lines = [
        f"Fan-out, one publisher to {args.receivers} receivers, {SIZE} B binary messages; "
        f"{args.runs} run(s) a target, medians; {datetime.date.today().isoformat()}; "
        f"Python {v['python']}, Tornado {v['tornado']}, uvloop {v['uvloop']}, "
        f"websockets {v['websockets']}, picows {v['picows']} (load generator)"
        + (f", redis-server {v['redis-server']}, redis-py {v['redis']}" if redis else "")
        + f"; server (every worker) on CPU {args.server_cpus}"
        + (f", redis-server on CPU {args.redis_cpus}" if redis else "")
        + f", load generator on CPU {args.loadgen_cpus}; "
        f"load average {LOAD_AT_START:.1f} when the run began ({os.cpu_count()} CPUs).",
        "",
        f"| server | deliveries/s ({WINDOW} messages in flight) | vs ours "
        f"| server CPU µs a delivery: user | system "
        f"| redis-server CPU µs a delivery (a message) "
        f"| load generator CPU µs a delivery "
        f"| p50 ms at {args.rate:g} msgs/s | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        rate = statistics.median(r["deliveries_per_s"] for r in runs)
        p50 = statistics.median(r["lat_p50_ms"] for r in runs)
        p99 = statistics.median(r["lat_p99_ms"] for r in runs)
        user_us = statistics.median(r["server_user_us"] for r in runs)
        system_us = statistics.median(r["server_system_us"] for r in runs)
        loadgen_us = statistics.median(r["loadgen_cpu_us"] for r in runs)
        redis_us = "-"
        if by_name[name].redis:
            delivery = statistics.median(r["redis_cpu_us"] for r in runs)
            message = statistics.median(r["redis_cpu_us_a_message"] for r in runs)
            redis_us = f"{delivery:.3f} ({message:.0f})"
        ratio = f"{rate / ours:.2f}" if ours else "-"
        label = by_name[name].label.format(**v)
        lines.append(
            f"| {label} | {rate:,.0f} | {ratio} | {user_us:.1f} | {system_us:.1f} "
            f"| {redis_us} | {loadgen_us:.1f} "
            f"| {p50:.2f} | {p99:.2f} |"
        )
    spread = [
        f"{name}: " + ", ".join("/".join(map(str, r["receivers_by_worker"])) for r in runs)
        for name, runs in results.items()
        if by_name[name].workers > 1
    ]
    if spread:
        lines += ["", "Receivers by worker, each run: " + "; ".join(spread) + "."]
    return "\n".join(lines)


LOAD_AT_START = os.getloadavg()[0]


def main() -> None:
    _raise_nofile()
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        name, port = sys.argv[2], int(sys.argv[3])
        if name == "websockets":
            import uvloop

            uvloop.run(serve_websockets(port))
        else:
            serve_ours(port, name)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        parser = argparse.ArgumentParser()
        parser.add_argument("--url", required=True)
        parser.add_argument("--receivers", type=int, default=1000)
        parser.add_argument("--seconds", type=float, default=3.0)
        parser.add_argument("--warmup", type=float, default=1.0)
        parser.add_argument("--rate", type=float, default=10.0)
        parser.add_argument("--server-pid", type=int, required=True)
        parser.add_argument("--redis-port", type=int, default=0)
        parser.add_argument("--workers", type=int, default=0)
        import uvloop

        print(json.dumps(uvloop.run(client(parser.parse_args(sys.argv[2:])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    parser.add_argument("--receivers", type=int, default=None, help="1000 (--quick: 100)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="latency: messages a second (10: 10,000 deliveries/s to 1,000 receivers)",
    )
    parser.add_argument("--quick", action="store_true", help="1 short run, 100 receivers")
    parser.add_argument("--server-cpus", default="0", help="taskset -c list for the server")
    parser.add_argument("--redis-cpus", default=None, help="for redis-server (the server's)")
    parser.add_argument("--loadgen-cpus", default="1", help="for the load generator")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.warmup = 1, 1.0, 0.3
    if args.receivers is None:
        args.receivers = 100 if args.quick else 1000
    if args.redis_cpus is None:
        args.redis_cpus = args.server_cpus
    names = [n for n in args.targets.split(",") if n]
    unknown = set(names) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for run in range(args.runs):
        for target in (t for t in TARGETS if t.name in names):
            result = run_target(target, args)
            results[target.name].append(result)
            print(f"run {run + 1} {target.name}: {json.dumps(result)}", file=sys.stderr)
    print(table(results, args))


if __name__ == "__main__":
    main()
