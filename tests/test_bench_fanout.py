"""``bench/fanout.py``, quickly: a real run of the fan-out benchmark (its
servers, a real ``redis-server`` it starts for the Redis targets, and its
load generator: real processes on loopback) with a few receivers prints its
table, every message reaching every receiver once and in order (the load
generator fails the run otherwise), and the two-worker target's receivers
spread over both workers. redis-server is installed by scripts/setup.sh:
without it this fails, it does not skip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FANOUT = Path(__file__).resolve().parent.parent / "bench" / "fanout.py"


def quick_run(*targets: str) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            str(FANOUT),
            "--quick",
            "--receivers",
            "20",
            "--targets",
            ",".join(targets),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "20 receivers" in proc.stdout
    return proc.stdout


def rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| server | deliveries/s")
    table = [line.strip("| ").split(" | ") for line in lines[1:]]
    for row in table:
        assert float(row[1].replace(",", "")) > 0, row
    return table


@pytest.mark.timeout(180)
def test_a_quick_run_prints_a_row_for_each_target() -> None:
    table = rows(quick_run("ours", "websockets"))
    labels = [row[0] for row in table]
    assert labels[0] == "ours, `broadcast()`"
    assert labels[1].startswith("websockets ")
    assert labels[1].endswith(", `broadcast()`")
    assert [row[5] for row in table] == ["-", "-"]  # no redis-server CPU


@pytest.mark.timeout(180)
def test_through_redis_every_receiver_on_either_worker_gets_every_message() -> None:
    stdout = quick_run("ours-redis-2-workers", "ours-redis-1-worker")
    table = rows(stdout)
    assert [row[0] for row in table] == [
        "ours through Redis, 2 workers, `broadcast()` in each",
        "ours through Redis, 1 worker, `broadcast()`",
    ]
    for row in table:
        assert float(row[5].split()[0]) > 0, row  # redis-server's CPU was measured
    assert re.search(r", redis-server \d+\.\d+", stdout), stdout
    assert ", redis-py " in stdout
    # Both workers held receivers: "ours-redis-2-workers: 7/13."
    spread = stdout.split("ours-redis-2-workers: ")[1].split(".")[0]
    assert all(int(n) > 0 for n in spread.split("/")), spread
    assert len(spread.split("/")) == 2, spread
