"""``/metrics``: Prometheus text that moves with the traffic."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.settings(max_message_bytes=100)
async def test_metrics_follow_connections_messages_and_errors(port: int, ws_url: str) -> None:
    before = await scrape(port)
    assert value(before, "websocket_open_connections") == 0

    async with connect(ws_url) as ws:
        await ws.send("hello")  # 5 bytes
        await ws.recv()
        await ws.send(b"\x00" * 10)
        await ws.recv()
        during = await scrape(port)
        assert value(during, "websocket_open_connections") == 1
        assert value(during, "websocket_connections_opened_total") == 1
        assert value(during, "websocket_messages_received_total", type="text") == 1
        assert value(during, "websocket_messages_received_total", type="binary") == 1
        assert value(during, "websocket_messages_sent_total", type="text") == 1
        assert value(during, "websocket_received_bytes_total", type="text") == 5
        assert value(during, "websocket_sent_bytes_total", type="binary") == 10

    async with connect(ws_url) as big:
        await big.send(b"x" * 101)
        with pytest.raises(ConnectionClosedError):
            await big.recv()
    with pytest.raises(InvalidStatus):
        await connect(ws_url, origin="https://elsewhere.example")  # type: ignore[arg-type]

    for _ in range(100):  # the server counts the close just after the client sees it
        after = await scrape(port)
        if value(after, "websocket_connections_closed_total", code="1009"):
            break
        await asyncio.sleep(0.02)
    assert value(after, "websocket_open_connections") == 0
    assert value(after, "websocket_connections_closed_total", code="1000") == 1
    assert value(after, "websocket_connections_closed_total", code="1009") == 1
    assert value(after, "websocket_errors_total", kind="message_too_big") == 1
    assert value(after, "websocket_errors_total", kind="origin_rejected") == 1
    assert value(after, "websocket_handshakes_rejected_total", reason="origin_rejected") == 1
    assert value(after, "websocket_connection_duration_seconds_count") == 2
