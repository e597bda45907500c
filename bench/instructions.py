"""Instructions per echo, counted by callgrind: a figure a busy machine
cannot move.

    .venv/bin/python bench/instructions.py                      # ours
    .venv/bin/python bench/instructions.py --baseline ../old    # side by side

Wall-clock benchmarks (bench/run.py) need a quiet machine; on a shared
2-core one their ratios swing by 20 % from run to run. Valgrind's callgrind
counts the instructions the server process executes, which depend only on
the code, the inputs and the environment (PYTHONHASHSEED is fixed here),
not on what else the machine does. The server runs under callgrind (about
50 times slower), a client outside it sends MESSAGES messages of SIZE bytes
over CONNS connections (one in flight each, every echo checked), and the
server is stopped with SIGTERM, when callgrind writes its totals. Each
server runs twice, with a few messages and with MESSAGES more: the
difference divided by MESSAGES is the cost of one echo, start-up and drain
cancelled out. Instructions are not time (a cache miss costs more than an
add), so this complements bench/run.py rather than replacing it.

Needs valgrind (Debian's package; installed with apt-get if missing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def settle(port: int) -> None:
    """Let the start-up work that runs by the clock happen in every run,
    the short one too: the server imports the ``/metrics`` code on a thread
    a second after it listens (server.http.warm_up_metrics, some 57 million
    instructions under callgrind). A scrape imports it now, on the event
    loop, and the wait lets the timer fire (the import is then a no-op).
    Without this the short run ended before the timer and the long one
    did not, which added about 14,000 instructions to every per-echo
    figure at 4,000 echoes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        r.read()
    time.sleep(1.5)


def drive(port: int, messages: int, size: int, conns: int) -> None:
    """``messages`` echoes of ``size`` bytes, spread over ``conns``
    connections, one in flight on each; every echo checked."""
    errors: list[BaseException] = []

    def one(count: int, index: int) -> None:
        try:
            payload = bytes([65 + index % 26]) * size
            with connect(
                f"ws://127.0.0.1:{port}/ws", max_size=None, open_timeout=60, close_timeout=60
            ) as ws:
                for _ in range(count):
                    ws.send(payload)
                    if ws.recv(timeout=120) != payload:
                        raise AssertionError("a wrong echo")
        except BaseException as exc:
            errors.append(exc)

    share, extra = divmod(messages, conns)
    threads = [threading.Thread(target=one, args=(share + (i < extra), i)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"the load failed: {errors[0]!r}")


def instructions(cwd: Path, messages: int, size: int, conns: int, out_dir: Path) -> int:
    """Total instructions (callgrind's Ir) of one server run that echoes
    ``messages`` messages."""
    port = free_port()
    out = out_dir / f"callgrind.{cwd.name}.{messages}.{size}"
    env = {
        **os.environ,
        "PORT": str(port),
        "WS_HOST": "127.0.0.1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Keepalive pings and the metrics warm-up would add instructions by
        # the clock (the run under callgrind is slow): off for both servers.
        "WS_PING_INTERVAL": "0",
        "WS_DRAIN_SPREAD": "0",
    }
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            PY,
            "-m",
            "server",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc, timeout=300)
        settle(port)
        drive(port, messages, size, conns)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no totals in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", help="also count this checkout's server (a git worktree)")
    parser.add_argument("--messages", type=int, default=4000, help="echoes counted (4000)")
    parser.add_argument(
        "--sizes", default="32,65536", help="message sizes in bytes, comma-separated"
    )
    parser.add_argument("--conns", type=int, default=10, help="connections (10)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True)
    checkouts = {"ours": ROOT}
    if args.baseline:
        checkouts["baseline"] = Path(args.baseline).resolve()
    labels = {
        name: subprocess.run(
            ["git", "-C", str(path), "log", "-1", "--format=%h"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "?"
        for name, path in checkouts.items()
    }
    sizes = [int(s) for s in args.sizes.split(",")]
    warm = args.conns  # one message a connection: the connections' own cost
    rows: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for name, path in checkouts.items():
                base = instructions(path, warm, size, args.conns, Path(tmp))
                full = instructions(path, warm + args.messages, size, args.conns, Path(tmp))
                rows[name, size] = (full - base) / args.messages
                cost = f"{rows[name, size]:,.0f}"
                print(f"# {name} ({labels[name]}) {size} B: {cost} instructions/echo", flush=True)
    version = sys.version.split()[0]
    print(f"\nInstructions per echo (callgrind), Python {version}, {args.messages} echoes\n")
    header = "| size | " + " | ".join(f"{n} ({labels[n]})" for n in checkouts)
    if "baseline" in checkouts:
        header += " | ours / baseline"
    print(header + " |")
    print("|" + "---|" * (header.count("|")))
    for size in sizes:
        cells = [f"{rows[n, size]:,.0f}" for n in checkouts]
        if "baseline" in checkouts:
            cells.append(f"{rows['ours', size] / rows['baseline', size]:.3f}")
        print(f"| {size} B | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
