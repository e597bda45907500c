"""Review of issue 22's dashboard against issue 18's closes: the drain panel
must show the drain, not every close with code 1001. A connection closed at
its maximum age is 1001 too, and so is every browser tab that navigates
away (the client's own 1001); with ``WS_MAX_CONNECTION_AGE`` on, "1001
closes/s" is never 0 and says nothing about a drain. A real Prometheus
(Debian's) scrapes a real server on loopback, as in
``tests/test_dashboard_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from .conftest import ServerProcess
from .rawws import RawWebSocket
from .test_dashboard_live import DASHBOARD, Prometheus, panel_queries, prometheus

__all__ = ["prometheus"]  # the fixture, used by name

CLOSES = "The drain [C]"


def _drain_closes(prom: Prometheus) -> list[float]:
    [expr] = [q for title, q in panel_queries(json.loads(DASHBOARD.read_text())) if title == CLOSES]
    result = prom.query(expr)
    assert result["status"] == "success", result
    return [float(s["value"][1]) for s in result["data"]["result"]]


def test_the_drain_panel_counts_drain_closes_not_every_1001(
    server_process: type[ServerProcess], prometheus: type[Prometheus], tmp_path: Path
) -> None:
    server = server_process(env={"WS_MAX_CONNECTION_AGE": "1", "WS_DRAIN_SPREAD": "0"})
    server.wait_ready()
    prom = prometheus(tmp_path, f"127.0.0.1:{server.port}")
    prom.wait_ready()

    async def no_drain() -> None:
        """Closes with 1001 and no drain: clients going away, and
        connections reaching their maximum age."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            async with connect(server.ws_url) as ws:
                await ws.close(1001)
            async with connect(server.ws_url) as ws:
                await ws.wait_closed()
                assert ws.close_code == 1001
        await asyncio.sleep(2)  # two more scrapes

    asyncio.run(no_drain())
    age = prom.query('websocket_connections_closed_by_cause_total{cause="max_age"}')
    assert float(age["data"]["result"][0]["value"][1]) > 0
    assert _drain_closes(prom) == [0.0]

    async def drain() -> None:
        """A real drain: one client answers its 1001 at once, one never
        does (the drain then lasts about 5 s, long enough to be scraped)."""
        answers: Any = await connect(server.ws_url, open_timeout=5)
        silent = await RawWebSocket.connect(server.port)
        server.signal(signal.SIGTERM)
        await answers.wait_closed()
        await silent.recv_close()
        deadline = time.monotonic() + 4
        while not any(v > 0 for v in _drain_closes(prom)):
            assert time.monotonic() < deadline, "the drain's close never showed"
            await asyncio.sleep(0.2)
        silent.close()

    asyncio.run(drain())
