"""``bench/run.py``'s headline: server CPU per message at a fixed offered
load (``bench/loadgen.py paced``). A smoke run of the fixed-load scenario
against our real server process (pinned as the benchmark pins it), a
couple of thousand messages, must give a table of sane values; and the checks that
make a figure trustworthy must catch a server that loses messages. Real
load generator process, real servers on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from server.echo import EchoWebSocket

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixed_load_against_ours_gives_sane_figures() -> None:
    run = bench_run()
    rate, size = 2000, 32
    cost = run.measure_cost(["ours"], [(rate, size)], runs=1, seconds=1.0)
    point = cost["ours"][run.point_key(rate, size)]
    per_msg = point["server_cpu_us_per_msg"]
    # a thousand echoes cost the server some CPU, and not absurdly much
    assert math.isfinite(per_msg), point
    assert 0 < per_msg < 10_000, point
    assert point["echoed_in_window"] >= 0.85 * rate, point
    # the paced sender held its rate, and the server kept up (within what a
    # shared machine's preemption allows)
    assert abs(point["sent_per_s"] - rate) < 0.15 * rate, point
    assert point["sustained"], point
    assert abs(point["achieved_per_s"] - rate) < 0.15 * rate, point
    # every message came back, and our server counted as many as were echoed
    assert point["all_echoed"], point
    assert point["server_counted_matches"] is True, point
    # nothing sent, next to nothing spent: the idle window (at most a few
    # 10 ms clock ticks over its second)
    assert point["idle_server_cpu_cores"] < 0.05, point
    assert 0 < point["p50_ms"] <= point["p99_ms"] < 1000, point
    # and the headline table (at this smoke run's load) shows it, unflagged
    run.FIXED = {"32B": (rate, size)}
    tables, _ = run.cost_tables(cost, {}, run.versions())
    row = next(line for line in tables[0].splitlines() if line.startswith("| ours |"))
    cell = row.split("|")[2].strip()
    assert float(cell.replace(",", "")) == pytest.approx(per_msg, rel=0.05), row
    assert "†" not in row, row
    assert "!" not in row, row


class _DropsEveryTenth(EchoWebSocket):
    seen = 0

    def on_message(self, message: str | bytes) -> None:
        self.seen += 1
        if self.seen % 10:
            super().on_message(message)


async def paced(port: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "loadgen.py"), "paced", "--url", f"ws://127.0.0.1:{port}/ws",
        "--conns", "4", "--rate", "400", "--seconds", "0.5", "--warmup", "0.2", "--idle", "0.1",
        "--drain", "0.5",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def test_paced_counts_what_comes_back(port: int) -> None:
    result = await paced(port)
    assert result["received"] == result["sent"] > 0, result


@pytest.mark.handler.with_args(_DropsEveryTenth)
async def test_paced_catches_a_server_that_loses_messages(port: int) -> None:
    result = await paced(port)
    assert result["received"] < result["sent"], result
    # and the achieved rate shows it: a tenth short of what was sent
    assert result["achieved_per_s"] < 0.95 * result["sent_per_s"], result
