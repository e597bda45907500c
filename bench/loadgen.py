"""The load generator: picows clients on uvloop, run as its own process
(bench/run.py pins it to a core of its own). Prints one JSON object.

    python bench/loadgen.py throughput --url ws://127.0.0.1:8080/ws --conns 100 --size 32
    python bench/loadgen.py throughput --url ... --inflight 8   # pipelined
    python bench/loadgen.py blast --url ... --inflight 16   # raw pipelined frames, near-free client
    python bench/loadgen.py latency --url ... --conns 20 --rate 2000
    python bench/loadgen.py paced --url ... --rate 20000 --server-pid PID   # open loop, CPU/msg
    python bench/loadgen.py hold --url ... --conns 1000   # "ready", then holds until stdin closes
    python bench/loadgen.py soak --url ... --conns 2000 --seconds 60   # every echo checked
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testkit, run as a script
from testkit.frames import frame

#: the paced sender's wake-up period (--tick): every message due by then
#: goes out. 0: it yields to the event loop and comes straight back (it
#: spins its own core), so each message goes out at its time, one at a
#: time, as from independent clients. The loop's timers have 1 ms
#: resolution: a tick of 1 ms (and the lateness of a loaded machine) sends
#: bursts of 20+ messages at 20,000 msgs/s, which a server handles for a
#: good deal less CPU a message (many sockets ready a wake-up) - a cost per
#: message of a sender's pattern, not of the server.
TICK = 0.0


class Client(WSListener):
    """A client connection: answers the server's close frame, records its
    code, and resolves ``closed`` (with the time) when it is gone."""

    def __init__(self) -> None:
        self.running = True
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self.closed = asyncio.get_event_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        self.on_message(transport, frame)

    def on_message(self, transport: WSTransport, frame: WSFrame) -> None:
        """A frame other than close."""

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(time.time())


class Echoer(Client):
    """Keeps ``inflight`` messages in flight and counts the echoes: with 1,
    a message is sent when the last one's echo is back; with more, the
    connection is pipelined (each echo sends the next message, so the
    server gets several frames a read and the load generator spends less
    per message)."""

    def __init__(self, payload: bytes, inflight: int = 1) -> None:
        super().__init__()
        self.payload = payload
        self.inflight = inflight
        self.count = 0
        self.bytes = 0
        self.sent_at: list[float] = []
        self.rtts: list[float] | None = None

    def start(self) -> None:
        assert self.transport is not None
        for _ in range(self.inflight):
            self.transport.send(WSMsgType.BINARY, self.payload)

    def on_message(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return
        self.count += 1
        self.bytes += frame.payload_size
        if self.rtts is not None and self.sent_at:
            self.rtts.append(time.perf_counter() - self.sent_at.pop(0))
        if self.running and self.rtts is None:
            transport.send(WSMsgType.BINARY, self.payload)


async def _connect(url: str, n: int, factory: Any) -> list[Any]:
    clients: list[Echoer] = []
    for start in range(0, n, 200):  # in batches: a burst of SYNs overflows the backlog
        batch = await asyncio.gather(
            *(
                ws_connect(factory, url, max_frame_size=64 << 20)
                for _ in range(start, min(n, start + 200))
            )
        )
        clients.extend(listener for _, listener in batch)
    return clients


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(args.size)
    clients = await _connect(args.url, args.conns, lambda: Echoer(payload, args.inflight))
    for c in clients:
        c.start()
    await asyncio.sleep(args.warmup)
    n0, b0, t0 = sum(c.count for c in clients), sum(c.bytes for c in clients), time.perf_counter()
    cpu0 = time.process_time()
    s0 = tree_cpu_seconds(args.server_pid) if args.server_pid else 0.0
    await asyncio.sleep(args.seconds)
    n1, b1, t1 = sum(c.count for c in clients), sum(c.bytes for c in clients), time.perf_counter()
    cpu1 = time.process_time()
    s1 = tree_cpu_seconds(args.server_pid) if args.server_pid else 0.0
    for c in clients:
        c.running = False
    for c in clients:
        assert c.transport is not None
        c.transport.send_close(WSCloseCode.OK)
    await asyncio.wait([c.closed for c in clients], timeout=5)
    dt = t1 - t0
    return {
        "msgs_per_s": (n1 - n0) / dt,
        "mb_per_s": (b1 - b0) / dt / 1e6,
        # this process's CPU over the measured window, in cores: near 1.0,
        # the load generator, not the server, set the pace
        "loadgen_cpu": (cpu1 - cpu0) / dt,
        # the server's (with --server-pid), in cores
        "server_cpu": (s1 - s0) / dt,
    }


class Blaster(asyncio.Protocol):
    """A raw client that costs next to nothing a message: after the
    handshake it writes ``blocks`` blocks of ``inflight`` ready-made masked
    frames, and writes another block each time a block's worth of echo
    bytes is back. It parses no frame: it counts bytes, and checks only that
    the first block came back byte for byte as the unmasked frames. A wrong
    echo or a connection the server ends is its ``failure``, and fails the
    run, as does a connection with no echo in the measured window. With it
    the server, not the client, is what runs out of CPU."""

    def __init__(self, request: bytes, block: bytes, echo_block: bytes, blocks: int) -> None:
        self.request, self.block, self.echo_block, self.blocks = request, block, echo_block, blocks
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.first = b""
        self.upgraded = asyncio.get_event_loop().create_future()
        self.received = 0  # echo bytes since the upgrade
        self.pending = 0  # echo bytes not yet counted towards a block
        self.running = True
        self.failure: str | None = None
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            data, self.head = self.head[end + 4 :], b""
            self.upgraded.set_result(None)
        if len(self.first) < len(self.echo_block):
            self.first += data[: len(self.echo_block) - len(self.first)]
            if len(self.first) == len(self.echo_block) and self.first != self.echo_block:
                self.failure = "the first block's echo is not the frames sent"
                assert self.transport is not None
                self.transport.abort()
                return
        self.received += len(data)
        self.pending += len(data)
        size = len(self.echo_block)
        assert self.transport is not None
        while self.pending >= size:
            self.pending -= size
            if self.running:
                self.transport.write(self.block)

    def start(self) -> None:
        assert self.transport is not None
        for _ in range(self.blocks):
            self.transport.write(self.block)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        elif self.running and self.failure is None:
            self.failure = f"the server ended the connection ({exc or 'closed'})"
        if not self.lost.done():
            self.lost.set_result(None)


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` has been busy (anything but idle and iowait),
    from /proc/stat: beside the server's own CPU on its core, what other
    processes of a shared machine took there."""
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / tick
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its
    children, from /proc (the server's workers are its children)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for children in Path(f"/proc/{p}/task").glob("*/children"):
                todo.extend(int(c) for c in children.read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


async def blast(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    payload = os.urandom(args.size)
    mask = os.urandom(4)
    block = frame(0x2, payload, mask=mask) * args.inflight
    echo_frame = frame(0x2, payload, masked=False)
    echo_block = echo_frame * args.inflight
    loop = asyncio.get_running_loop()
    clients: list[Blaster] = []
    for _ in range(args.conns):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {url.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        _, client = await loop.create_connection(
            lambda r=request: Blaster(r, block, echo_block, 2),  # type: ignore[misc]
            host,
            port,
        )
        await asyncio.wait_for(client.upgraded, 10)
        clients.append(client)
    for c in clients:
        c.start()
    await asyncio.sleep(args.warmup)
    server = args.server_pid
    s0 = tree_cpu_seconds(server) if server else 0.0
    before = [c.received for c in clients]
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(args.seconds)
    after = [c.received for c in clients]
    t1, cpu1 = time.perf_counter(), time.process_time()
    s1 = tree_cpu_seconds(server) if server else 0.0
    b0, b1 = sum(before), sum(after)
    # A connection with its blocks in flight and nothing back over the whole
    # window has stalled (a close frame the client does not answer, a server
    # that stopped reading): the figure would not be what it claims.
    failures = [
        c.failure or "no echo in the measured window"
        for c, b, a in zip(clients, before, after, strict=True)
        if c.failure is not None or a == b
    ]
    for c in clients:
        c.running = False
        assert c.transport is not None
        c.transport.close()
    await asyncio.wait([c.lost for c in clients], timeout=5)
    if failures:
        sys.exit(f"blast: {len(failures)} of {len(clients)} connections failed: {failures[0]}")
    dt = t1 - t0
    return {
        "msgs_per_s": (b1 - b0) / len(echo_frame) / dt,
        "mb_per_s": (b1 - b0) / len(echo_frame) * args.size / dt / 1e6,
        "loadgen_cpu": (cpu1 - cpu0) / dt,
        # the server's processes' CPU over the same window, in cores
        "server_cpu": (s1 - s0) / dt,
    }


class Paced(Client):
    """A connection of the paced (open-loop) sender: each message's
    *scheduled* send time waits in a FIFO until its echo is back (a
    connection's echoes come back in order), so a late echo counts from
    when the message should have gone, not from when a backed-up sender got
    round to it (no coordinated omission)."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled: collections.deque[float] = collections.deque()
        self.received = 0
        self.bytes = 0
        self.rtts: list[float] = []
        self.measuring = False

    def on_message(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return
        now = time.perf_counter()
        self.received += 1
        self.bytes += frame.payload_size
        due = self.scheduled.popleft()
        if self.measuring:
            self.rtts.append(now - due)


async def paced(args: argparse.Namespace) -> dict[str, Any]:
    """An open-loop load at a fixed rate: message i (of ``--size`` bytes)
    is scheduled at start + i / rate and goes out on connection i mod N,
    whether or not earlier echoes are back. The sender wakes every
    ``TICK`` and sends every message due by then. Over an idle window
    first (connections open, nothing sent) and then the measured window,
    it reads the server's CPU (``--server-pid``, with its children) and its
    own; after the window it stops, waits for every echo, and checks that
    each message sent came back once."""
    payload = os.urandom(args.size)
    clients: list[Paced] = await _connect(args.url, args.conns, Paced)
    server = args.server_pid
    # the idle window: what the server spends with the connections open and
    # no message, to set beside the measured window's cost
    idle_seconds = args.idle
    i0, it0 = tree_cpu_seconds(server) if server else 0.0, time.perf_counter()
    await asyncio.sleep(idle_seconds)
    i1, it1 = tree_cpu_seconds(server) if server else 0.0, time.perf_counter()

    rate, n = args.rate, len(clients)
    start = time.perf_counter()
    warm_end, window_end = start + args.warmup, start + args.warmup + args.seconds
    sent = 0
    lags: list[float] = []  # in the window: how late each batch went out
    mark: dict[str, float] = {}
    sent_in_window = 0
    while True:
        now = time.perf_counter()
        # every message due by now (and by the window's end) goes out first,
        # so the window's edges fall between sends
        due = min(int((now - start) * rate) + 1, int((window_end - start) * rate))
        if sent < due and mark:
            lags.append(now - (start + sent / rate))  # the batch's first: the latest
        while sent < due:
            c = clients[sent % n]
            c.scheduled.append(start + sent / rate)
            assert c.transport is not None
            c.transport.send(WSMsgType.BINARY, payload)
            sent += 1
        if "t0" not in mark and now >= warm_end:
            for c in clients:
                c.measuring = True
            mark.update(t0=now, cpu0=time.process_time(), r0=sum(c.received for c in clients))
            mark["s0"] = tree_cpu_seconds(server) if server else 0.0
            mark["busy0"] = cpu_busy_seconds(args.server_cpu)
            sent_in_window = sent
        if now >= window_end:
            mark.update(t1=now, cpu1=time.process_time(), r1=sum(c.received for c in clients))
            mark["s1"] = tree_cpu_seconds(server) if server else 0.0
            mark["busy1"] = cpu_busy_seconds(args.server_cpu)
            for c in clients:
                c.measuring = False
            sent_in_window = sent - sent_in_window
            break
        await asyncio.sleep(args.tick)
    # every message sent must come back, once
    for _ in range(int(args.drain * 100)):
        if sum(c.received for c in clients) >= sent:
            break
        await asyncio.sleep(0.01)
    received = sum(c.received for c in clients)
    for c in clients:
        assert c.transport is not None
        c.transport.send_close(WSCloseCode.OK)
    await asyncio.wait([c.closed for c in clients], timeout=5)
    rtts = sorted(r for c in clients for r in c.rtts)
    lags.sort()
    dt = mark["t1"] - mark["t0"]
    echoed = mark["r1"] - mark["r0"]
    server_cpu = mark["s1"] - mark["s0"]

    def pct(p: float) -> float:
        return 1000 * rtts[min(len(rtts) - 1, int(p * len(rtts)))] if rtts else float("nan")

    return {
        "offered_per_s": rate,
        "sent_per_s": sent_in_window / dt,
        # echoes received in the window, a second: below the offered rate,
        # the server (or the loadgen) did not keep up
        "achieved_per_s": echoed / dt,
        "window_s": dt,
        "echoed_in_window": echoed,
        "sent": sent,
        "received": received,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": 1e6 * server_cpu / echoed if echoed else float("nan"),
        "server_cpu_cores": server_cpu / dt,
        # the server's core busy with anything else (other processes, the
        # kernel's softirqs not charged to the server), in cores
        "server_core_other": max(0.0, (mark["busy1"] - mark["busy0"] - server_cpu) / dt),
        # the idle window's server CPU, in cores, and spread over as many
        # messages as the offered rate would send in it: ~0
        "idle_server_cpu_cores": (i1 - i0) / (it1 - it0),
        "idle_us_per_msg": 1e6 * (i1 - i0) / (rate * (it1 - it0)),
        "loadgen_cpu": (mark["cpu1"] - mark["cpu0"]) / dt,
        "mb_per_s": echoed * args.size / dt / 1e6,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "samples": len(rtts),
        # how far behind its schedule the sender sent a batch's oldest
        # message: the tick, unless the load generator fell behind
        "send_lag_p50_ms": 1000 * lags[len(lags) // 2] if lags else float("nan"),
        "send_lag_p99_ms": 1000 * lags[int(0.99 * len(lags))] if lags else float("nan"),
    }


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(args.size)
    clients = await _connect(args.url, args.conns, lambda: Echoer(payload, 0))
    for c in clients:
        c.rtts = []
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(args.rate * (args.seconds + args.warmup))
    for i in range(total):
        target = start + i * interval
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        c = clients[i % len(clients)]
        assert c.transport is not None
        c.sent_at.append(time.perf_counter())
        c.transport.send(WSMsgType.BINARY, payload)
    await asyncio.sleep(0.5)
    skip = int(args.rate * args.warmup / len(clients))
    rtts = sorted(r for c in clients for r in (c.rtts or [])[skip:])
    for c in clients:
        assert c.transport is not None
        c.transport.send_close(WSCloseCode.OK)
    await asyncio.wait([c.closed for c in clients], timeout=5)

    def pct(p: float) -> float:
        return 1000 * rtts[min(len(rtts) - 1, int(p * len(rtts)))]

    return {
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "mean_ms": 1000 * statistics.fmean(rtts),
        "samples": len(rtts),
    }


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """Open N connections, say "ready", wait: until stdin closes (then close
    them), or until the server closes them all (a drain)."""
    try:
        clients = await asyncio.wait_for(_connect(args.url, args.conns, lambda: Echoer(b"", 0)), 60)
    except Exception as exc:
        print(f"failed: {type(exc).__name__}: {exc}", flush=True)
        os._exit(1)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed: asyncio.Future[None] = loop.create_future()

    def wait_for_eof() -> None:  # a daemon thread: never holds up the exit
        sys.stdin.read()
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            loop.call_soon_threadsafe(lambda: stdin_closed.done() or stdin_closed.set_result(None))

    threading.Thread(target=wait_for_eof, daemon=True).start()
    all_closed = asyncio.gather(*(c.closed for c in clients))
    done, _ = await asyncio.wait([stdin_closed, all_closed], return_when=asyncio.FIRST_COMPLETED)
    if all_closed in done:
        codes: dict[str, int] = {}
        for c in clients:
            codes[str(c.close_code)] = codes.get(str(c.close_code), 0) + 1
        closed_at = sorted(all_closed.result())
        return {"last_closed_at": closed_at[-1], "close_codes": codes, "closed_at": closed_at}
    for c in clients:
        assert c.transport is not None
        c.transport.send_close(WSCloseCode.OK)
    await asyncio.wait([c.closed for c in clients], timeout=10)
    return {"held": len(clients)}


class Checker(Client):
    """One numbered message in flight; every echo must be the message sent."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.filler = os.urandom(max(0, size - 8))
        self.sent = 0
        self.echoed = 0
        self.errors = 0

    def message(self, seq: int) -> bytes:
        return seq.to_bytes(8, "big") + self.filler

    def send_next(self) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY, self.message(self.sent))
        self.sent += 1

    def on_message(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.BINARY:
            self.errors += 1
            return
        if frame.get_payload_as_bytes() != self.message(self.echoed):
            self.errors += 1
        self.echoed += 1
        if self.running:
            self.send_next()


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """N connections, each echoing numbered messages one at a time for
    ``--seconds`` (then a normal close), or with ``--until-closed`` until the
    server closes them (a drain). Prints a progress line every second."""
    clients = await _connect(args.url, args.conns, lambda: Checker(args.size))
    print(json.dumps({"connected": len(clients)}), flush=True)
    for c in clients:
        c.send_next()
    loop = asyncio.get_running_loop()
    all_closed = asyncio.gather(*(c.closed for c in clients))
    deadline = loop.time() + args.seconds
    while loop.time() < deadline and not all_closed.done():
        await asyncio.wait([all_closed], timeout=min(1.0, deadline - loop.time()))
        echoed = sum(c.echoed for c in clients)
        print(json.dumps({"echoed": echoed, "open": sum(not c.closed.done() for c in clients)}))
        sys.stdout.flush()
    closed_early = sum(c.closed.done() for c in clients) if not args.until_closed else 0
    for c in clients:
        c.running = False
        if not args.until_closed and not c.closed.done():
            assert c.transport is not None
            c.transport.send_close(WSCloseCode.OK)
    await asyncio.wait([all_closed], timeout=10)
    codes: dict[str, int] = {}
    for c in clients:
        codes[str(c.close_code)] = codes.get(str(c.close_code), 0) + 1
    unanswered = [c.sent - c.echoed for c in clients]
    return {
        "conns": len(clients),
        "sent": sum(c.sent for c in clients),
        "echoed": sum(c.echoed for c in clients),
        "errors": sum(c.errors for c in clients),
        "closed_early": closed_early,
        "still_open": sum(not c.closed.done() for c in clients),
        "close_codes": codes,
        "max_unanswered": max(unanswered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "scenario", choices=["throughput", "blast", "paced", "latency", "hold", "soak"]
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--inflight",
        type=int,
        default=1,
        help="throughput: messages in flight a connection; blast: frames a block (2 in flight)",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="blast, paced, throughput: also measure this process tree's CPU",
    )
    parser.add_argument(
        "--server-cpu", type=int, default=0, help="paced: the CPU the server is pinned to"
    )
    parser.add_argument("--tick", type=float, default=TICK, help="paced: sender wake-up, s")
    parser.add_argument("--idle", type=float, default=1.0, help="paced: idle window, seconds")
    parser.add_argument(
        "--drain", type=float, default=5.0, help="paced: seconds to wait for the last echoes"
    )
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--until-closed", action="store_true", help="soak: until the server closes")
    args = parser.parse_args()
    scenario = {
        "throughput": throughput,
        "blast": blast,
        "paced": paced,
        "latency": latency,
        "hold": hold,
        "soak": soak,
    }[args.scenario]
    result = uvloop.run(scenario(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
