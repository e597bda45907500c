"""Fan-out: one publisher, many receivers, side by side with a peer.

    .venv/bin/python bench/fanout.py              # 3 runs a target, medians
    .venv/bin/python bench/fanout.py --quick      # 1 short run, 100 receivers
    .venv/bin/python bench/fanout.py --targets ours,websockets --receivers 1000

Each target is a server where a message sent to ``/pub`` goes to every
connection open on ``/ws``:

- ``ours``: an app on the base, :func:`server.base.broadcast` (framed once);
- ``ours-write-message``: the same app writing to each receiver with
  ``write_message`` (how an app fanned out before ``broadcast``);
- ``websockets``: a minimal websockets server with ``websockets.broadcast()``.

(A target through Redis across two workers is one more entry in
:data:`TARGETS`: a command that starts it and serves the same two paths.)

The server runs pinned to CPU 0, the load generator (this file's
``client`` mode: picows on uvloop, one process) to CPU 1, as bench/run.py
does. Two scenarios per run:

- throughput: the publisher keeps ``WINDOW`` messages (64 B) in flight -
  a message is in flight until every receiver has it - for ``--seconds``;
  deliveries (messages received, all receivers together) per second;
- latency: the publisher sends at ``--rate`` messages a second, each
  carrying its send time (CLOCK_MONOTONIC, one clock for both processes);
  publish-to-delivery p50 and p99 over every delivery.

Prints a markdown table (medians of the runs) with the date and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SERVER_CPU, LOADGEN_CPU = "0", "1"
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
    env: tuple[tuple[str, str], ...] = ()


HERE = str(Path(__file__).resolve())
TARGETS = [
    Target("ours", "ours, `broadcast()`", (PY, HERE, "serve", "ours", "{port}")),
    Target(
        "ours-write-message",
        "ours, a `write_message` per receiver",
        (PY, HERE, "serve", "ours-write-message", "{port}"),
    ),
    Target(
        "websockets",
        "websockets {websockets}, `broadcast()`",
        (PY, HERE, "serve", "websockets", "{port}"),
    ),
    # Target("ours-redis-w2", "ours through Redis, 2 workers", (...)),  # issue 21's backplane
]


# -- the servers ----------------------------------------------------------------


def serve_ours(port: int, per_member: bool) -> None:
    from server.__main__ import main
    from server.base import KnativeWebSocketHandler, broadcast

    receivers: set[KnativeWebSocketHandler] = set()

    class Receiver(KnativeWebSocketHandler):
        def open(self) -> None:
            receivers.add(self)

        def on_close(self) -> None:
            receivers.discard(self)

    class Publisher(KnativeWebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            binary = isinstance(message, bytes)
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

    class Receiver(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            now = time.monotonic_ns()
            seq, sent_ns = struct.unpack_from("!QQ", frame.get_payload_as_bytes())
            state["deliveries"] += 1
            if state["record"]:
                latencies.append(now - sent_ns)
            n = got.get(seq, 0) + 1
            if n == receivers:
                del got[seq]
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
            await asyncio.wait_for(progress.wait(), 30)
        return state["deliveries"] - start_deliveries, time.perf_counter() - started

    async def settle() -> None:
        deadline = time.monotonic() + 30
        while state["complete"] < seq:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{seq - state['complete']} messages never reached everyone")
            await asyncio.sleep(0.01)

    await window(args.warmup)
    await settle()
    user, system = cpu_seconds(args.server_pid)
    own_cpu = time.process_time()
    deliveries, elapsed = await window(args.seconds)
    user_after, system_after = cpu_seconds(args.server_pid)
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


# -- the orchestrator ---------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("tornado", "uvloop", "websockets", "picows"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    from testkit.process import ServerProcess, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WS_")}
    env.update({"PORT": str(port), "WS_HOST": "127.0.0.1", **dict(target.env)})
    command = ["taskset", "-c", SERVER_CPU, *(c.format(port=port) for c in target.command)]
    server = ServerProcess(command=command, base_env=env, port=port, log=None)
    try:
        server.wait_ready(timeout=30)
        client_args = [
            "taskset", "-c", LOADGEN_CPU, PY, HERE, "client",
            "--url", f"ws://127.0.0.1:{port}",
            "--receivers", str(args.receivers),
            "--seconds", str(args.seconds),
            "--warmup", str(args.warmup),
            "--rate", str(args.rate),
            "--server-pid", str(server.proc.pid),
        ]  # fmt: skip
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
        server.stop()


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    v = versions()
    by_name = {t.name: t for t in TARGETS}
    ours = (
        statistics.median(r["deliveries_per_s"] for r in results["ours"])
        if "ours" in results
        else None
    )
    lines = [
        f"Fan-out, one publisher to {args.receivers} receivers, {SIZE} B binary messages; "
        f"{args.runs} run(s) a target, medians; {datetime.date.today().isoformat()}; "
        f"Python {v['python']}, Tornado {v['tornado']}, uvloop {v['uvloop']}, "
        f"websockets {v['websockets']}, picows {v['picows']} (load generator); "
        f"server on CPU {SERVER_CPU}, load generator on CPU {LOADGEN_CPU}; "
        f"load average {LOAD_AT_START:.1f} when the run began ({os.cpu_count()} CPUs).",
        "",
        f"| server | deliveries/s ({WINDOW} messages in flight) | vs ours "
        f"| server CPU µs a delivery: user | system | load generator CPU µs a delivery "
        f"| p50 ms at {args.rate:g} msgs/s | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        rate = statistics.median(r["deliveries_per_s"] for r in runs)
        p50 = statistics.median(r["lat_p50_ms"] for r in runs)
        p99 = statistics.median(r["lat_p99_ms"] for r in runs)
        user_us = statistics.median(r["server_user_us"] for r in runs)
        system_us = statistics.median(r["server_system_us"] for r in runs)
        loadgen_us = statistics.median(r["loadgen_cpu_us"] for r in runs)
        ratio = f"{rate / ours:.2f}" if ours else "-"
        label = by_name[name].label.format(**v)
        lines.append(
            f"| {label} | {rate:,.0f} | {ratio} | {user_us:.1f} | {system_us:.1f} "
            f"| {loadgen_us:.1f} "
            f"| {p50:.2f} | {p99:.2f} |"
        )
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
            serve_ours(port, per_member=name == "ours-write-message")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        parser = argparse.ArgumentParser()
        parser.add_argument("--url", required=True)
        parser.add_argument("--receivers", type=int, default=1000)
        parser.add_argument("--seconds", type=float, default=3.0)
        parser.add_argument("--warmup", type=float, default=1.0)
        parser.add_argument("--rate", type=float, default=10.0)
        parser.add_argument("--server-pid", type=int, required=True)
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
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.warmup = 1, 1.0, 0.3
    if args.receivers is None:
        args.receivers = 100 if args.quick else 1000
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
