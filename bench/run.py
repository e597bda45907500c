"""Benchmark our server side by side with its peers, in one run, on this
machine: the seed (the Knative sample websockets-go, Go + Gorilla,
bench/seed-go/), picows's own server, and minimal echo servers on Tornado,
websockets and aiohttp (bench/peers.py).

    .venv/bin/python bench/run.py            # 3 runs a scenario, medians
    .venv/bin/python bench/run.py --quick    # 1 short run, for a smoke check
    .venv/bin/python bench/run.py --servers ours,seed,picows --scenarios fixed,sweep
    .venv/bin/python bench/run.py --scaling-only   # WS_WORKERS=1 against 2

Each server runs pinned to CPU 0, the load generator (bench/loadgen.py,
picows on uvloop) to CPU 1. Our server runs with its defaults: an event
logged for every message (to /dev/null) and metrics on; so does the seed
(its log lines carry each message's content; seed-quiet drops them).

The headline (scenarios ``fixed`` and ``sweep``): the server's CPU per
message at a fixed offered load. ``loadgen.py paced`` sends on an
open-loop schedule (message i at start + i / rate, over 100 connections,
whether or not earlier echoes are back) and measures each echo's latency
from its scheduled send time (no coordinated omission); the server's CPU
is utime + stime of its process and children from /proc over the
measured window, divided by the echoes received in it. 32 B at 20,000
msgs/s and 64 KiB at 1,500 msgs/s (98 MB/s, reported per MB): loads every
server here sustains. The sweep: 5,000, 20,000 and 50,000 msgs/s of 32 B,
flagging a rate a server did not sustain (achieved < 95 %). Checks: the
sender's achieved rate and lateness, every message echoed, our server's own
count of messages sent equal to the echoes, the server's CPU over an idle
window (~0), and the CPU other processes took on the server's core.

Then (``saturation``) 32 B and 64 KiB echo throughput, 100 connections with
one message in flight each, flagged where the load generator used nearly
its whole core (it, not the server, set the pace); (``extras``) latency at
2,000 msgs/s, RSS per idle connection, process start to /readyz 200,
SIGTERM with 1,000 clients; (``scaling``) our server with WS_WORKERS=1 and 2
on every CPU, driven by raw pipelined clients that cost the load generator
little (loadgen.py blast), with the server's own CPU measured beside.
Prints markdown tables with the ratio of each server to ours and to the
seed, with the date and versions, and writes JSON to bench/results/.

The seed is built once, offline, from Debian's golang-go and
golang-github-gorilla-websocket-dev (installed with apt-get if missing),
into $XDG_CACHE_HOME/knative-websocket-server/bench (~/.cache by default).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

sys.path.insert(0, str(ROOT))  # testkit, when run as a script
from testkit import metrics  # noqa: E402
from testkit.process import ServerProcess, free_port, http_status, package_versions  # noqa: E402

SERVERS = [
    "ours",
    "ours-every",
    "ours-nolog",
    "seed",
    "seed-quiet",
    "picows",
    "tornado",
    "tornado-uvloop",
    "websockets",
    "aiohttp",
]
#: the servers of the headline tables, unless --servers says otherwise
HEADLINE = ["ours", "ours-nolog", "seed", "seed-quiet", "picows", "websockets", "aiohttp"]
#: variants of a server: only the cost and throughput scenarios (the others
#: would repeat ours, or the seed)
THROUGHPUT_ONLY = {"ours-nolog", "ours-every", "seed-quiet"}
SCENARIOS = ["fixed", "sweep", "saturation", "extras", "scaling"]
#: The fixed offered loads, each over CONNS connections. 32 B at 20,000
#: msgs/s: well under what every server here echoes at saturation (the
#: slowest, aiohttp, ~34k) and what one core of load generator paces.
#: 64 KiB at 1,500 msgs/s = 98 MB/s: a quarter of the slowest server's
#: saturation figure (the seed, which logs each message's content: ~400
#: MB/s), so every server sustains it with room to spare on a shared
#: machine (at 197 MB/s the seed fell behind there when other work took
#: part of its core), and the loadgen (which masks 64 KiB each way) stays
#: well under its core.
FIXED = {"32B": (20_000, 32), "64KiB": (1_500, 65536)}
SWEEP = (5_000, 20_000, 50_000)  # msgs/s of 32 B
CONNS = 100
SUSTAINED = 0.95  # achieved under this share of the offered rate: not sustained
#: --baseline DIR: a checkout of an earlier commit, run as "baseline" (its
#: own `python -m server`, the same defaults) beside this one.
baseline_dir: Path | None = None
SERVER_CPU, LOADGEN_CPU = "0", "1"
SEED_SRC = ROOT / "bench" / "seed-go" / "main.go"
GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their source
GORILLA = Path(GOPATH) / "src" / "github.com" / "gorilla" / "websocket"
SEED_PACKAGES = ["golang-go", "golang-github-gorilla-websocket-dev"]
PIPELINE_DEPTH = 128  # frames a block in the scaling scenario (two blocks in flight)
DRAIN_LIMIT = 60  # seconds from SIGTERM to every client closed, at most
SAME_CORE = 0.9  # a load generator over this many cores of CPU set the pace
STARVED = 0.8  # a server at saturation under this many cores of CPU: the machine set the pace

seed_binary: Path | None = None
baseline_label = "baseline"


def log(what: str) -> None:
    print(what, file=sys.stderr, flush=True)


# -- the seed's Go server ------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knative-websocket-server" / "bench"


def command_output(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def go_version() -> str:
    return command_output("go", "env", "GOVERSION").removeprefix("go") or "unknown"


def gorilla_version() -> str:
    """Debian's package version without its epoch and revision: the upstream release."""
    version = command_output(
        "dpkg-query", "-W", "-f", "${Version}", "golang-github-gorilla-websocket-dev"
    )
    return version.partition(":")[2 if ":" in version else 0].rsplit("-", 1)[0] or "unknown"


def install_go_packages() -> None:
    """Debian's Go and Gorilla, with apt-get, if either is missing."""
    if shutil.which("go") and GORILLA.is_dir():
        return
    if not shutil.which("apt-get"):
        raise RuntimeError(f"the seed needs {' and '.join(SEED_PACKAGES)} (Debian), no apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"-- apt-get install {' '.join(SEED_PACKAGES)}")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", *SEED_PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def build_seed() -> Path:
    """The seed's binary, built once a (source, Go, Gorilla) into the cache."""
    install_go_packages()
    key = hashlib.sha256(
        SEED_SRC.read_bytes() + go_version().encode() + gorilla_version().encode()
    ).hexdigest()[:16]
    cache = cache_dir()
    binary = cache / f"seed-go-{key}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    log(f"-- building the seed: {binary}")
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, CGO_ENABLED="0")
    env["GOCACHE"] = str(cache / "go-build")
    partial = binary.with_suffix(".partial")
    subprocess.run(
        ["go", "build", "-o", str(partial), SEED_SRC.name], cwd=SEED_SRC.parent, env=env, check=True
    )
    partial.rename(binary)
    return binary


# -- servers -------------------------------------------------------------------


def server_cmd(name: str, port: int) -> tuple[list[str], dict[str, str]]:
    """``ours`` is one process pinned to the server's CPU; ``ours-wN`` runs
    N workers on every CPU (the scaling scenario)."""
    env = dict(os.environ)
    pin = ["taskset", "-c", SERVER_CPU]
    if name.startswith(("ours", "baseline")):
        env.update(
            {
                "PORT": str(port),
                "WS_HOST": "127.0.0.1",
                "WS_MAX_MESSAGE_BYTES": str(64 << 20),
                # at least WS_MAX_MESSAGE_BYTES + 2 MiB, or the server refuses to start
                "WS_MAX_BACKLOG": str(66 << 20),
            }
        )
        if name == "ours-nolog":
            env["WS_LOG_MESSAGES"] = "false"
        if name == "ours-every":
            env["WS_LOG_MESSAGE_RATE"] = "0"  # every message logged, as the seed does
        if name.startswith(("ours-w", "baseline-w")):
            env["WS_WORKERS"] = name.partition("-w")[2]
            return [PY, "-m", "server"], env
        return [*pin, PY, "-m", "server"], env
    if name == "seed":
        assert seed_binary is not None
        env.update({"HOST": "127.0.0.1", "PORT": str(port)})
        return [*pin, str(seed_binary)], env
    if name == "seed-quiet":
        assert seed_binary is not None
        env.update({"HOST": "127.0.0.1", "PORT": str(port), "SEED_LOG_MESSAGES": "false"})
        return [*pin, str(seed_binary)], env
    return [*pin, PY, str(ROOT / "bench" / "peers.py"), name, str(port)], env


@contextlib.contextmanager
def running(name: str) -> Iterator[tuple[subprocess.Popen[bytes], int, float]]:
    """A server process; yields (process, port, seconds from start to ready)."""
    port = free_port()
    cmd, env = server_cmd(name, port)
    cwd = baseline_dir if name.startswith("baseline") and baseline_dir is not None else ROOT
    server = ServerProcess(command=cmd, base_env=env, port=port, cwd=cwd, log=None)
    try:
        try:
            seconds = server.wait_ready(timeout=30, poll=0.002)
        except AssertionError as exc:
            raise RuntimeError(f"{name}: {exc}") from exc
        yield server.proc, port, seconds
    finally:
        server.stop()


# -- the load generator and the scenarios --------------------------------------


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
    name: str,
    size: int,
    seconds: float,
    conns: int = 100,
    inflight: int = 1,
    cpus: str = LOADGEN_CPU,
) -> dict[str, float]:
    with running(name) as (proc, port, _):
        result = run_loadgen(
            "throughput",
            "--server-pid",
            str(proc.pid),
            "--url",
            f"ws://127.0.0.1:{port}/ws",
            "--conns",
            str(conns),
            "--size",
            str(size),
            "--inflight",
            str(inflight),
            "--seconds",
            str(seconds),
            cpus=cpus,
        )
    if not result["msgs_per_s"]:
        raise RuntimeError(f"{name}: not one echo in {seconds:g} s")
    return result


def scenario_scaling(runs: int, seconds: float) -> dict[str, float]:
    """32 B echo over 100 connections against our server with 1 and with 2
    workers, driven by ``loadgen.py blast``: raw clients that write blocks of
    PIPELINE_DEPTH ready-made frames and count the echo bytes without
    parsing them, so the load generator costs a small part of a CPU and the
    workers, not it, run out of CPU. Nothing is pinned (the workers need
    every CPU); the server's own CPU is measured over the same window, so
    the figure per CPU-second of server shows what a worker scales with
    where the cores are not shared with the load generator."""
    every_cpu = ",".join(str(n) for n in range(os.cpu_count() or 1))
    out = {}
    # With --baseline, its 2 workers too (row "baseline 2"); the servers
    # take turns, run by run, so a noisy moment falls on each alike.
    names = {"1": "ours-w1", "2": "ours-w2"}
    if baseline_dir is not None:
        names["baseline_2"] = "baseline-w2"
    results: dict[str, list[dict[str, float]]] = {workers: [] for workers in names}
    for _ in range(runs):
        for workers, name in names.items():
            with running(name) as (proc, port, _):
                results[workers].append(
                    run_loadgen(
                        "blast",
                        "--url",
                        f"ws://127.0.0.1:{port}/ws",
                        "--conns",
                        "100",
                        "--size",
                        "32",
                        "--inflight",
                        str(PIPELINE_DEPTH),
                        "--seconds",
                        str(seconds),
                        "--server-pid",
                        str(proc.pid),
                        cpus=every_cpu,
                    )
                )
    for workers, got in results.items():
        for key in ("msgs_per_s", "loadgen_cpu", "server_cpu"):
            out[f"workers_{workers}_{key}"] = median([r[key] for r in got])
        out[f"workers_{workers}_msgs_per_server_cpu_s"] = median(
            [r["msgs_per_s"] / r["server_cpu"] for r in got]
        )
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
        if name.startswith("ours") or name == "baseline":
            # Our server imports prometheus_client at the first scrape (or a
            # second after start): a cost of the process, not of the
            # connections opened after it.
            http_status(port, "/metrics")
        time.sleep(0.3)
        before = rss_kib(proc.pid)  # taskset execs: same pid
        gen = _hold(port, conns)
        assert gen.stdin is not None
        time.sleep(1.0)
        after = rss_kib(proc.pid)
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
        # the loadgen prints when every client is closed; a server that
        # never closes them must not hang the run
        if not select.select([gen.stdout], [], [], DRAIN_LIMIT)[0]:
            gen.kill()
            raise RuntimeError(f"{name}: clients still open {DRAIN_LIMIT} s after SIGTERM")
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


def messages_sent_counter(port: int) -> float:
    """Our server's own count of the messages it sent (its /metrics): the
    server-side half of the echo check."""
    page = metrics.scrape(f"http://127.0.0.1:{port}")
    return sum(
        metrics.sample(page, "websocket_messages_sent_total", type=kind, missing=0)
        for kind in ("text", "binary")
    )


def scenario_paced(name: str, rate: int, size: int, seconds: float) -> dict[str, Any]:
    """``loadgen.py paced``: an open-loop offered load of ``rate`` msgs/s of
    ``size`` bytes over CONNS connections, with the server's CPU over the
    measured window. For our server, its own count of messages sent, before
    and after, must equal the echoes the loadgen received."""
    with running(name) as (proc, port, _):
        ours = name.startswith(("ours", "baseline"))
        before = messages_sent_counter(port) if ours else None
        result = run_loadgen(
            "paced",
            "--url",
            f"ws://127.0.0.1:{port}/ws",
            "--conns",
            str(CONNS),
            "--size",
            str(size),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--server-pid",
            str(proc.pid),
            "--server-cpu",
            SERVER_CPU,
        )
        after = messages_sent_counter(port) if ours else None
    result["server_counted"] = after - before if after is not None and before is not None else None
    return result


def point_key(rate: int, size: int) -> str:
    return f"{'64KiB' if size == 65536 else f'{size}B'}@{rate}"


def measure_cost(
    servers: list[str], points: list[tuple[int, int]], runs: int, seconds: float
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each (rate, size) point against each server, ``runs`` times, the
    servers taking turns run by run (a noisy moment on the shared machine
    falls on each alike); medians, and the checks over every run."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in servers}
    for run in range(runs):
        for rate, size in points:
            for name in servers:
                log(f"-- paced {point_key(rate, size)} msgs/s, {name}, run {run + 1}/{runs}")
                one = scenario_paced(name, rate, size, seconds)
                raw[name].setdefault(point_key(rate, size), []).append(one)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_point in raw.items():
        out[name] = {}
        for key, got in by_point.items():
            m: dict[str, Any] = {
                k: median([g[k] for g in got])
                for k in got[0]
                if isinstance(got[0][k], (int, float)) and k != "server_counted"
            }
            rate = got[0]["offered_per_s"]
            m["sustained"] = m["achieved_per_s"] >= SUSTAINED * rate
            # every message sent came back, in every run
            m["all_echoed"] = all(g["received"] == g["sent"] for g in got)
            counted = [g["server_counted"] for g in got]
            m["server_counted_matches"] = (
                None
                if any(c is None for c in counted)
                else all(c == g["received"] for c, g in zip(counted, got, strict=True))
            )
            m["runs"] = got
            out[name][key] = m
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure_saturation(servers: list[str], runs: int, seconds: float) -> dict[str, dict[str, Any]]:
    """Echo throughput at saturation, 32 B and 64 KiB, 100 connections with
    one message in flight each (closed loop), the servers taking turns run
    by run; with the load generator's CPU and the server's."""
    raw: dict[str, dict[int, list[dict[str, float]]]] = {s: {32: [], 65536: []} for s in servers}
    for run in range(runs):
        for size in (32, 65536):
            for name in servers:
                log(f"-- saturation {size} B, {name}, run {run + 1}/{runs}")
                raw[name][size].append(scenario_throughput(name, size, seconds))
    out: dict[str, dict[str, Any]] = {}
    for name, by_size in raw.items():
        r: dict[str, Any] = {}
        for size, tag, metric in ((32, "32B", "msgs_per_s"), (65536, "64KiB", "mb_per_s")):
            got = by_size[size]
            unit = "msgs_per_s" if size == 32 else "MB_per_s"
            r[f"echo_{tag}_{unit}"] = median([x[metric] for x in got])
            r[f"echo_{tag}_loadgen_cpu"] = median([x["loadgen_cpu"] for x in got])
            r[f"echo_{tag}_server_cpu"] = median([x["server_cpu"] for x in got])
        out[name] = r
    return out


def measure_extras(name: str, runs: int, seconds: float) -> dict[str, Any]:
    """Latency at 2,000 msgs/s, idle RSS, start to ready, SIGTERM drain."""
    r: dict[str, Any] = {}
    log(f"-- {name}: latency, idle RSS, start, drain")
    lat = [scenario_latency(name, seconds) for _ in range(runs)]
    r["latency_p50_ms"] = median([x["p50_ms"] for x in lat])
    r["latency_p99_ms"] = median([x["p99_ms"] for x in lat])
    r["idle_KiB_per_conn_1000"] = median([scenario_idle(name, 1000) for _ in range(runs)])
    r["idle_KiB_per_conn_5000"] = scenario_idle(name, 5000)
    r["start_to_ready_ms"] = median([scenario_startup(name) for _ in range(max(runs, 5))])
    drain = scenario_drain(name, 1000)
    r["sigterm_1000_closed_ms"] = drain["all_closed_ms"]
    r["sigterm_close_codes"] = drain["close_codes"]
    return r


# -- the report ----------------------------------------------------------------


def versions() -> dict[str, str]:
    out = package_versions("tornado", "uvloop", "websockets", "aiohttp", "picows")
    out["go"] = go_version()
    out["gorilla"] = gorilla_version()
    return out


def label(name: str, v: dict[str, str]) -> str:
    return {
        "ours": "ours",
        "ours-nolog": "ours, `WS_LOG_MESSAGES=false`",
        "ours-every": "ours, every message logged (`WS_LOG_MESSAGE_RATE=0`)",
        "baseline": f"ours at {baseline_label}",
        "seed": f"the seed (Go {v['go']} + Gorilla {v['gorilla']}), logging every message",
        "seed-quiet": "the seed, message lines off (`SEED_LOG_MESSAGES=false`)",
        "picows": f"picows {v['picows']}",
        "tornado": "bare Tornado",
        "tornado-uvloop": "bare Tornado on uvloop",
        "websockets": f"websockets {v['websockets']}",
        "aiohttp": f"aiohttp {v['aiohttp']}",
    }.get(name, name)


def number(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def ratio(results: dict[str, dict[str, Any]], base: str, name: str, metric: str) -> str:
    b, v = results.get(base, {}).get(metric), results[name].get(metric)
    return f"{v / b:.2f}" if b and v is not None else "-"


def codes(close_codes: dict[str, int]) -> str:
    """{"1001": 1000} -> "1001 x1000"; a client that saw no close frame: "dropped"."""
    parts = []
    for code, n in sorted(close_codes.items(), key=lambda item: -item[1]):
        parts.append(f"{'dropped' if code == 'None' else code} x{n:,}")
    return ", ".join(parts)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def us_per_unit(point: dict[str, Any], size: int) -> float:
    """Server CPU, µs a message (32 B) or µs a MB (64 KiB)."""
    per_msg = float(point["server_cpu_us_per_msg"])
    return per_msg if size < 1024 else per_msg * 1e6 / size


def cost_ratio(cost: dict[str, dict[str, dict[str, Any]]], base: str, name: str, key: str) -> str:
    b = cost.get(base, {}).get(key, {}).get("server_cpu_us_per_msg")
    v = cost[name].get(key, {}).get("server_cpu_us_per_msg")
    return f"{v / b:.2f}" if b and v is not None else "-"


def flags(point: dict[str, Any]) -> str:
    """† not sustained; ! a check failed (an echo missing, or the server's
    count of echoes not the loadgen's)."""
    mark = "" if point["sustained"] else " †"
    if not point["all_echoed"] or point["server_counted_matches"] is False:
        mark += " !"
    return mark


def cost_tables(
    cost: dict[str, dict[str, dict[str, Any]]],
    saturation: dict[str, dict[str, Any]],
    v: dict[str, str],
) -> tuple[list[str], bool]:
    """The headline table and its checks; and whether a saturation figure
    was flagged as the load generator's."""
    out: list[str] = []
    saturated = starved = False
    servers = list(dict.fromkeys([*cost, *saturation]))
    header = ["server"]
    for tag, (rate, size) in FIXED.items():
        load = f"{rate:,} msgs/s" if size < 1024 else f"{rate * size / 1e6:,.0f} MB/s"
        unit = "µs/msg" if size < 1024 else "µs/MB"
        header += [f"{tag} at {load}: server CPU {unit}", "x ours", "x seed", "p50 / p99 ms"]
    header += ["saturation 32 B msgs/s", "saturation 64 KiB MB/s"]
    rows = []
    for s in servers:
        row = [label(s, v)]
        for rate, size in FIXED.values():
            key = point_key(rate, size)
            point = cost.get(s, {}).get(key)
            if point is None:
                row += ["-"] * 4
                continue
            spread = [us_per_unit(r, size) for r in point["runs"]]
            row += [
                number(us_per_unit(point, size))
                + (f" ({number(min(spread))}-{number(max(spread))})" if len(spread) > 1 else "")
                + flags(point),
                cost_ratio(cost, "ours", s, key),
                cost_ratio(cost, "seed", s, key),
                f"{point['p50_ms']:.2f} / {point['p99_ms']:.2f}",
            ]
        for metric, cpu in (
            ("echo_32B_msgs_per_s", "echo_32B_loadgen_cpu"),
            ("echo_64KiB_MB_per_s", "echo_64KiB_loadgen_cpu"),
        ):
            sat = saturation.get(s, {})
            if metric not in sat:
                row.append("-")
                continue
            mark = ""
            if sat[cpu] > SAME_CORE:
                mark, saturated = " *", True
            elif sat.get(cpu.replace("loadgen", "server"), 1.0) < STARVED:
                mark, starved = " ‡", True
            row.append(number(sat[metric]) + mark)
        rows.append(row)
    out += [markdown(header, rows)]
    if starved:
        out += [
            "",
            f"‡ neither the server (under {STARVED:.0%} of its core) nor the load generator "
            "used its core: other work on the machine set this pace, not saturation.",
        ]

    checks = []
    for s in cost:
        for key, point in cost[s].items():
            counted = point["server_counted_matches"]
            checks.append(
                [
                    label(s, v),
                    key.replace("@", " at "),
                    f"{point['offered_per_s']:,.0f}",
                    f"{point['sent_per_s']:,.0f}",
                    f"{point['send_lag_p99_ms']:.2f}",
                    f"{point['achieved_per_s']:,.0f}" + ("" if point["sustained"] else " †"),
                    "yes" if point["all_echoed"] else "**no**",
                    "-" if counted is None else ("yes" if counted else "**no**"),
                    f"{point['server_cpu_cores']:.2f}",
                    f"{point['server_core_other']:.2f}",
                    f"{point['idle_server_cpu_cores']:.3f}",
                    f"{point['idle_us_per_msg']:.2f}",
                ]
            )
    if checks:
        out += [
            "",
            "Checks on the paced runs (medians): the sender's rate, how late (p99) it sent a "
            "message against its schedule, and the echoes received in the window a second "
            "(achieved); every message sent came back (all runs); the server's own count of "
            "messages sent equals the loadgen's echoes (ours: its /metrics); the server's CPU "
            "in the window, and what else took its core (other processes on the shared "
            "machine), in cores; the server's CPU over an idle second before the window "
            "(connections open, nothing sent), in cores and in µs a message at the offered "
            "rate (~0):",
            "",
            markdown(
                [
                    "server",
                    "load",
                    "offered/s",
                    "sent/s",
                    "send lag p99 ms",
                    "achieved/s",
                    "all echoed (5 s after)",
                    "server count = echoes",
                    "server CPU, cores",
                    "CPU 0, others, cores",
                    "idle server CPU, cores",
                    "idle µs/msg",
                ],
                checks,
            ),
        ]
    return out, saturated


def sweep_table(cost: dict[str, dict[str, dict[str, Any]]], v: dict[str, str]) -> list[str]:
    rows = []
    for s in cost:
        row = [label(s, v)]
        for rate in SWEEP:
            point = cost[s].get(point_key(rate, 32))
            if point is None:
                row.append("-")
                continue
            row.append(
                f"{number(point['server_cpu_us_per_msg'])}{flags(point)} "
                f"({point['achieved_per_s'] / 1000:,.1f}k/s; p99 {point['p99_ms']:.2f} ms)"
            )
        rows.append(row)
    if not any(cell != "-" for row in rows for cell in row[1:]):
        return []
    return [
        "",
        "Rate sweep, 32 B over 100 connections: server CPU µs a message (achieved rate; p99), "
        f"† achieved under {SUSTAINED:.0%} of offered:",
        "",
        markdown(["server", *(f"{r:,} msgs/s" for r in SWEEP)], rows),
    ]


def report(
    results: dict[str, dict[str, Any]],
    cost: dict[str, dict[str, dict[str, Any]]],
    scaling: dict[str, float],
    meta: dict[str, Any],
) -> str:
    v = meta["versions"]
    servers = list(results)
    out = [
        f"Measured {meta['date']} {meta['time']} UTC on {meta['machine']} (load average "
        f"before: {meta['loadavg']}): Python {v['python']}, Tornado "
        f"{v['tornado']}, uvloop {v['uvloop']}, websockets {v['websockets']}, aiohttp "
        f"{v['aiohttp']}, picows {v['picows']}, Go {v['go']}, Gorilla WebSocket {v['gorilla']}; "
        f"ours at {meta['commit']}; "
        + (
            f"each server on CPU {SERVER_CPU}, the load generator on CPU {LOADGEN_CPU}; "
            if results or cost
            else ""
        )
        + f"medians of {meta['runs']} run(s) of {meta['seconds']:g} s, the servers taking "
        "turns run by run.",
    ]
    saturation = {s: r for s, r in results.items() if "echo_32B_msgs_per_s" in r}
    saturated = False
    if cost or saturation:
        out += [
            "",
            "**Server CPU per message at a fixed offered load**, 100 connections: an open-loop "
            "paced sender (each message scheduled at start + i / rate, sent whether or not "
            "earlier echoes are back), latency from each message's scheduled send time (no "
            "coordinated omission); server CPU = utime + stime of the server's process and "
            "its children (/proc/PID/stat) over the measured window, over the echoes received "
            "in it; median (lowest-highest of the runs); lower is better; x ours / x seed in "
            "the same run. Then echo throughput at saturation (closed loop, one message in "
            "flight a connection):",
            "",
        ]
        tables, saturated = cost_tables(cost, saturation, v)
        out += tables
        if saturated:
            out += [
                "",
                f"\\* the load generator used over {SAME_CORE:.0%} of its core: it, not the "
                "server, set this pace (the figure is a floor for the server).",
            ]
        out += [
            "",
            f"† achieved under {SUSTAINED:.0%} of the offered rate: the figure is not at that "
            "load. ! a check failed (see the checks).",
        ]
        out += sweep_table(cost, v)

    others = [s for s in servers if "latency_p99_ms" in results[s]]
    if others:
        columns: list[tuple[str, str]] = [
            ("p50 at 2,000 msgs/s, ms", "latency_p50_ms"),
            ("p99, ms", "latency_p99_ms"),
            ("idle KiB/conn (1,000)", "idle_KiB_per_conn_1000"),
            ("idle KiB/conn (5,000)", "idle_KiB_per_conn_5000"),
            ("start to /readyz 200, ms", "start_to_ready_ms"),
            ("SIGTERM: 1,000 clients closed, ms", "sigterm_1000_closed_ms"),
        ]
        rows = []
        for s in others:
            row = [label(s, v)]
            for _, metric in columns:
                row.append(
                    f"{number(results[s][metric])} ({ratio(results, 'ours', s, metric)} / "
                    f"{ratio(results, 'seed', s, metric)})"
                )
            row.append(codes(results[s]["sigterm_close_codes"]))
            rows.append(row)
        header = ["server", *(title for title, _ in columns), "SIGTERM: close codes"]
        out += [
            "",
            "Latency over 20 connections, RSS per idle connection, start to ready, SIGTERM "
            "drain; (x ours / x seed), lower is better:",
            "",
            markdown(header, rows),
        ]

    failed = [s for s in servers if "extras_error" in results[s]]
    if failed:
        out += [""]
        out += [f"- {label(s, v)}: not measured, {results[s]['extras_error']}" for s in failed]

    if scaling:
        one, two = scaling["workers_1_msgs_per_s"], scaling["workers_2_msgs_per_s"]
        per_one = scaling["workers_1_msgs_per_server_cpu_s"]
        per_two = scaling["workers_2_msgs_per_server_cpu_s"]
        out += [
            "",
            f"`WS_WORKERS` scaling: 32 B echo, 100 connections, `loadgen.py blast` (blocks of "
            f"{PIPELINE_DEPTH} frames, two in flight a connection), nothing pinned, on "
            f"{os.cpu_count()} CPUs:",
            "",
            markdown(
                [
                    "workers",
                    "msgs/s",
                    "server CPU, cores",
                    "load generator CPU, cores",
                    "msgs per server CPU-second",
                ],
                [
                    [
                        n.replace("_", " "),
                        number(scaling[f"workers_{n}_msgs_per_s"]),
                        f"{scaling[f'workers_{n}_server_cpu']:.2f}",
                        f"{scaling[f'workers_{n}_loadgen_cpu']:.2f}",
                        number(scaling[f"workers_{n}_msgs_per_server_cpu_s"]),
                    ]
                    for n in ("1", "2", "baseline_2")
                    if f"workers_{n}_msgs_per_s" in scaling
                ],
            ),
            "",
            f"2 workers against 1: **{two / one:.2f}x** the throughput, "
            f"{per_two / per_one:.2f}x the work per CPU-second (1.00: a second worker adds a "
            f"whole worker's worth on a core of its own).",
        ]
    return "\n".join(out)


def main() -> None:
    global seed_binary
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 short run a scenario")
    parser.add_argument(
        "--servers",
        default=",".join(HEADLINE),
        help=f"comma-separated, of: {', '.join(SERVERS)} (default: {','.join(HEADLINE)})",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--runs", type=int, help="runs a scenario (default 3; --quick 1)")
    parser.add_argument("--seconds", type=float, help="a run's measured window (default 5)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the WS_WORKERS scenario")
    parser.add_argument("--scaling-only", action="store_true", help="only the WS_WORKERS scenario")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the server of this checkout (e.g. a git worktree of an earlier "
        "commit) as 'baseline', side by side",
    )
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    if args.scaling_only:
        scenarios = ["scaling"]
    if args.no_scaling and "scaling" in scenarios:
        scenarios.remove("scaling")
    if bad := [x for x in scenarios if x not in SCENARIOS]:
        parser.error(f"unknown scenario(s): {', '.join(bad)}")
    servers = [] if scenarios == ["scaling"] else args.servers.split(",")
    if args.baseline:
        global baseline_dir, baseline_label
        baseline_dir = Path(args.baseline).resolve()
        baseline_label = command_output(
            "git", "-C", str(baseline_dir), "log", "-1", "--format=%h (%cs)"
        )
        servers.insert(1, "baseline")
    unknown = [s for s in servers if s not in SERVERS and s != "baseline"]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs 2 CPUs: one for the server, one for the load generator")
    if {"seed", "seed-quiet"} & set(servers):
        seed_binary = build_seed()
    # Bytecode for our server, as the image has it (compileall at build):
    # with PYTHONDONTWRITEBYTECODE set, each start would compile it again.
    for checkout in (ROOT, baseline_dir):
        if checkout is not None:
            subprocess.run([PY, "-m", "compileall", "-q", str(checkout / "server")], check=True)
    runs, seconds = (1, 2.0) if args.quick else (3, 5.0)
    runs = args.runs or runs
    seconds = args.seconds or seconds
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    points: list[tuple[int, int]] = []
    if "fixed" in scenarios:
        points += FIXED.values()
    if "sweep" in scenarios:
        points += [(rate, 32) for rate in SWEEP if (rate, 32) not in points]
    cost = measure_cost(servers, points, runs, seconds) if points else {}
    results: dict[str, dict[str, Any]] = {name: {} for name in servers}
    if "saturation" in scenarios:
        for name, r in measure_saturation(servers, runs, seconds).items():
            results[name].update(r)
    if "extras" in scenarios:
        for name in servers:
            if name not in THROUGHPUT_ONLY:
                # one server's failure here (a drain that never ends) must
                # not lose the whole run's figures
                try:
                    results[name].update(measure_extras(name, runs, seconds))
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    log(f"   {name}: {type(exc).__name__}: {exc}")
                    results[name]["extras_error"] = f"{type(exc).__name__}: {exc}"
    scaling: dict[str, float] = {}
    if "scaling" in scenarios and (not servers or "ours" in servers):
        log("-- ours, WS_WORKERS=1 and 2, pipelined, on every CPU")
        scaling = scenario_scaling(runs, seconds)

    meta = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "time": time.strftime("%H:%M:%S", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "loadavg": loadavg,
        "loadavg_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "commit": command_output("git", "-C", str(ROOT), "log", "-1", "--format=%h (%cs)"),
        "versions": versions(),
        "runs": runs,
        "seconds": seconds,
        "scenarios": scenarios,
    }
    print(report(results, cost, scaling, meta))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"meta": meta, "cost": cost, "results": results, "scaling": scaling}, indent=2)
    )
    print(f"\n(JSON: {path.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
