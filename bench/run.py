"""Benchmark our server side by side with minimal echo servers on Tornado,
websockets and aiohttp, in one run, on this machine.

    .venv/bin/python bench/run.py            # 3 runs a scenario, medians
    .venv/bin/python bench/run.py --quick    # 1 short run, for a smoke check

Each server runs pinned to CPU 0, the load generator (bench/loadgen.py,
picows on uvloop) to CPU 1. Our server runs with its defaults: an event
logged for every message (to /dev/null) and metrics on. Prints a table with
the ratio of each server to bare Tornado and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SERVERS = ["ours", "tornado", "tornado-uvloop", "websockets", "aiohttp"]
SERVER_CPU, LOADGEN_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cmd(name: str, port: int) -> tuple[list[str], dict[str, str]]:
    """``ours`` is one process pinned to the server's CPU; ``ours-wN`` runs
    N workers on every CPU (the scaling scenario)."""
    env = dict(os.environ)
    if name.startswith("ours"):
        env.update(
            {"PORT": str(port), "WS_HOST": "127.0.0.1", "WS_MAX_MESSAGE_BYTES": str(64 << 20)}
        )
        if name.startswith("ours-w"):
            env["WS_WORKERS"] = name.removeprefix("ours-w")
            return [PY, "-m", "server"], env
        return ["taskset", "-c", SERVER_CPU, PY, "-m", "server"], env
    return ["taskset", "-c", SERVER_CPU, PY, str(ROOT / "bench" / "peers.py"), name, str(port)], env


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@contextlib.contextmanager
def running(name: str) -> Iterator[tuple[subprocess.Popen[bytes], int, float]]:
    """A server process; yields (process, port, seconds from start to ready)."""
    port = free_port()
    cmd, env = server_cmd(name, port)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not ready(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            if time.perf_counter() - started > 30:
                raise RuntimeError(f"{name} not ready in 30 s")
            time.sleep(0.002)
        yield proc, port, time.perf_counter() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def loadgen(*args: str, stdin: Any = None, cpus: str = LOADGEN_CPU) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["taskset", "-c", cpus, PY, str(ROOT / "bench" / "loadgen.py"), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_loadgen(*args: str, cpus: str = LOADGEN_CPU) -> dict[str, Any]:
    proc = loadgen(*args, cpus=cpus)
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {args} failed")
    return dict(json.loads(out.strip().splitlines()[-1]))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scenario_throughput(
    name: str, size: int, seconds: float, conns: int = 100, cpus: str = LOADGEN_CPU
) -> dict[str, float]:
    with running(name) as (_, port, _):
        return run_loadgen(
            "throughput",
            "--url",
            f"ws://127.0.0.1:{port}/ws",
            "--conns",
            str(conns),
            "--size",
            str(size),
            "--seconds",
            str(seconds),
            cpus=cpus,
        )


def scenario_scaling(runs: int, seconds: float) -> dict[str, float]:
    """32 B echo over 200 connections, our server with 1 and with 2
    workers, nothing pinned: the load generator shares the CPUs (it needs
    about a seventh of one at these rates)."""
    every_cpu = ",".join(str(n) for n in range(os.cpu_count() or 1))
    out = {}
    for workers in (1, 2):
        rates = [
            scenario_throughput(f"ours-w{workers}", 32, seconds, 200, every_cpu)["msgs_per_s"]
            for _ in range(runs)
        ]
        out[f"workers_{workers}_msgs_per_s"] = median(rates)
    return out


def scenario_latency(name: str, seconds: float) -> dict[str, float]:
    with running(name) as (_, port, _):
        return run_loadgen(
            "latency",
            "--url",
            f"ws://127.0.0.1:{port}/ws",
            "--conns",
            "20",
            "--rate",
            "2000",
            "--seconds",
            str(seconds),
        )


def _hold(port: int, conns: int) -> subprocess.Popen[str]:
    """A loadgen holding ``conns`` connections open (it printed "ready")."""
    gen = loadgen(
        "hold", "--url", f"ws://127.0.0.1:{port}/ws", "--conns", str(conns), stdin=subprocess.PIPE
    )
    assert gen.stdout is not None
    line = gen.stdout.readline().strip()
    if line != "ready":
        gen.kill()
        raise RuntimeError(f"loadgen could not open {conns} connections: {line!r}")
    return gen


def scenario_idle(name: str, conns: int) -> float:
    with running(name) as (proc, port, _):
        time.sleep(0.3)
        before = rss_kib(proc.pid)  # taskset execs: same pid
        gen = _hold(port, conns)
        assert gen.stdin is not None
        time.sleep(1.0)
        after = rss_kib(proc.pid)  # taskset execs: same pid
        gen.stdin.close()
        gen.wait(60)
        return (after - before) / conns


def scenario_startup(name: str) -> float:
    with running(name) as (_, _, seconds):
        return seconds * 1000


def scenario_drain(name: str, conns: int) -> dict[str, Any]:
    with running(name) as (proc, port, _):
        gen = _hold(port, conns)
        assert gen.stdout is not None
        assert gen.stdin is not None
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        out = gen.stdout.readline()
        gen.stdin.close()
        gen.wait(60)
        result = json.loads(out.strip().splitlines()[-1])
        proc.wait(30)
        return {
            "all_closed_ms": 1000 * (result["last_closed_at"] - sent),
            "exit_ms": 1000 * (time.time() - sent),
            "close_codes": result["close_codes"],
        }


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 short run a scenario")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--no-scaling", action="store_true", help="skip the WS_WORKERS scenario")
    args = parser.parse_args()
    runs, seconds = (1, 2.0) if args.quick else (3, 5.0)
    servers = args.servers.split(",")
    results: dict[str, dict[str, Any]] = {s: {} for s in servers}
    for name in servers:
        r = results[name]
        print(f"-- {name}", file=sys.stderr, flush=True)
        step = lambda what: print(f"   {what}", file=sys.stderr, flush=True)  # noqa: E731
        step("echo 32 B")
        t32 = [scenario_throughput(name, 32, seconds)["msgs_per_s"] for _ in range(runs)]
        r["echo_32B_msgs_per_s"] = median(t32)
        step("echo 64 KiB")
        t64 = [scenario_throughput(name, 65536, seconds)["mb_per_s"] for _ in range(runs)]
        r["echo_64KiB_MB_per_s"] = median(t64)
        step("latency")
        lat = [scenario_latency(name, seconds) for _ in range(runs)]
        r["latency_p50_ms"] = median([x["p50_ms"] for x in lat])
        r["latency_p99_ms"] = median([x["p99_ms"] for x in lat])
        step("idle connections")
        r["idle_KiB_per_conn_1000"] = median([scenario_idle(name, 1000) for _ in range(runs)])
        r["idle_KiB_per_conn_5000"] = scenario_idle(name, 5000)
        step("start to ready")
        r["start_to_ready_ms"] = median([scenario_startup(name) for _ in range(max(runs, 5))])
        step("SIGTERM with 1000 clients")
        drain = scenario_drain(name, 1000)
        r["sigterm_1000_closed_ms"] = drain["all_closed_ms"]
        r["sigterm_close_codes"] = drain["close_codes"]

    scaling: dict[str, float] = {}
    if "ours" in servers and not args.no_scaling:
        print("-- ours, WS_WORKERS=1 and 2, on every CPU", file=sys.stderr, flush=True)
        scaling = scenario_scaling(runs, seconds)

    metrics = [k for k in results[servers[0]] if k != "sigterm_close_codes"]
    header = ["metric", *servers]
    rows = []
    for m in metrics:
        row = [m]
        base = results.get("tornado", {}).get(m)
        for s in servers:
            v = results[s][m]
            cell = f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
            if base and s != "tornado":
                cell += f" ({v / base:.2f}x)"
            row.append(cell)
        rows.append(row)
    rows.append(
        ["sigterm_close_codes", *[json.dumps(results[s]["sigterm_close_codes"]) for s in servers]]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))

    if scaling:
        one, two = scaling["workers_1_msgs_per_s"], scaling["workers_2_msgs_per_s"]
        print(f"\nWS_WORKERS scaling, 32 B echo, 200 connections, {os.cpu_count()} CPUs shared")
        print(
            f"with the load generator: 1 worker {one:,.0f} msgs/s, "
            f"2 workers {two:,.0f} ({two / one:.2f}x)"
        )

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "runs": runs,
        "seconds": seconds,
    }
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": results, "scaling": scaling}, indent=2))
    where = path.relative_to(ROOT)
    print(f"\n(ratios: against bare Tornado; medians of {runs} run(s); JSON: {where})")


if __name__ == "__main__":
    main()
