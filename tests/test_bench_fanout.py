"""``bench/fanout.py``, quickly: a real run of the fan-out benchmark (its
servers and its load generator, real processes on loopback) with a few
receivers prints its table, every message reaching every receiver (the
load generator fails the run otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FANOUT = Path(__file__).resolve().parent.parent / "bench" / "fanout.py"


@pytest.mark.timeout(180)
def test_a_quick_run_prints_a_row_for_each_target() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(FANOUT),
            "--quick",
            "--receivers",
            "20",
            "--targets",
            "ours,websockets",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| server | deliveries/s")
    labels = [row.split(" | ")[0] for row in rows[1:]]
    assert labels[0] == "| ours, `broadcast()`"
    assert labels[1].startswith("| websockets ")
    assert labels[1].endswith(", `broadcast()`")
    for row in rows[1:]:
        rate = float(row.split(" | ")[1].replace(",", ""))
        assert rate > 0, row
    assert "20 receivers" in proc.stdout
