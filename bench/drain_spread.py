"""The reconnect peak of a drain: how many of N held clients see their
1001 in the busiest 100 ms after SIGTERM, for several WS_DRAIN_SPREAD values.

    .venv/bin/python bench/drain_spread.py                  # 1,000 clients, 3 runs
    .venv/bin/python bench/drain_spread.py --conns 1000 --spreads 0,1,2,5,10 --runs 3

Each client would reconnect the moment it sees its close: the busiest 100 ms
is the burst of upgrades the remaining pods (and Knative's activator) take.
Our server runs pinned to CPU 0 with its defaults (WS_DRAIN_TIMEOUT=20) and
the given WS_DRAIN_SPREAD; the clients (bench/loadgen.py hold, picows) on
CPU 1. Also measured: how fast one server process accepts the N upgrades in
the first place (the rate a surviving pod can take them at). Prints a
markdown table of medians over the runs; the histogram of the last run of
each spread goes to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import json
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

sys.path.insert(0, str(ROOT))  # testkit, when run as a script
from testkit.process import ServerProcess  # noqa: E402

SERVER_CPU, LOADGEN_CPU = "0", "1"
LIMIT = 60.0  # seconds from SIGTERM to every client closed, at most


def one_drain(conns: int, spread: float) -> dict[str, Any]:
    server = ServerProcess(
        {"WS_DRAIN_SPREAD": str(spread), "WS_LOG_LEVEL": "warning"},
        command=["taskset", "-c", SERVER_CPU, PY, "-m", "server"],
        log=None,
    )
    port = server.port
    try:
        try:
            server.wait_ready(timeout=30, poll=0.01)
        except AssertionError as exc:
            raise RuntimeError("server did not start") from exc
        opened = time.monotonic()
        gen = subprocess.Popen(
            [
                *("taskset", "-c", LOADGEN_CPU, PY, str(ROOT / "bench" / "loadgen.py"), "hold"),
                *("--url", f"ws://127.0.0.1:{port}/ws", "--conns", str(conns)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert gen.stdout is not None
        assert gen.stdin is not None
        line = gen.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"loadgen could not open {conns} connections: {line!r}")
        open_seconds = time.monotonic() - opened
        time.sleep(0.5)
        sent = time.time()
        server.signal(signal.SIGTERM)
        if not select.select([gen.stdout], [], [], LIMIT)[0]:
            gen.kill()
            raise RuntimeError(f"clients still open {LIMIT} s after SIGTERM")
        result = json.loads(gen.stdout.readline())
        gen.stdin.close()
        gen.wait(60)
        status = server.proc.wait(60)
        exited = time.time() - sent
    finally:
        server.stop()
    after = [t - sent for t in result["closed_at"]]
    buckets = collections.Counter(int(t * 10) for t in after)
    return {
        "spread": spread,
        "peak_per_100ms": max(buckets.values()),
        "first_100ms": buckets.get(0, 0),
        "p50_s": statistics.median(after),
        "last_s": max(after),
        "exit_s": exited,
        "status": status,
        "close_codes": result["close_codes"],
        "upgrades_per_s": conns / open_seconds,
        "histogram_100ms": [buckets.get(i, 0) for i in range(int(max(after) * 10) + 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--spreads", default="0,1,2,5,10")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spreads = [float(s) for s in args.spreads.split(",")]
    rows = []
    last: dict[float, dict[str, Any]] = {}
    for spread in spreads:
        runs = []
        for _ in range(args.runs):
            runs.append(one_drain(args.conns, spread))
            print(f"spread {spread:g}: {runs[-1]['peak_per_100ms']} peak", file=sys.stderr)
        last[spread] = runs[-1]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        codes = collections.Counter[str]()
        for r in runs:
            codes.update(r["close_codes"])
        rows.append(
            f"| {spread:g} | {med('peak_per_100ms'):.0f} | {med('first_100ms'):.0f} "
            f"| {med('p50_s'):.2f} | {med('last_s'):.2f} | {med('exit_s'):.2f} "
            f"| {med('upgrades_per_s'):.0f} | {dict(codes)} |"
        )
    print(
        f"{args.conns} held clients, SIGTERM, WS_DRAIN_TIMEOUT=20; medians of {args.runs} runs, "
        f"{time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}\n"
    )
    print(
        "| WS_DRAIN_SPREAD (s) | peak closes per 100 ms | closes in the first 100 ms "
        "| median close (s) | last close (s) | exit (s) | upgrades/s when opening | close codes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"drain-spread-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({str(k): v for k, v in last.items()}, indent=1))
    print(f"\nhistograms: {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
