"""The JSON-RPC example (``examples/jsonrpc``) as a real ``python -m
examples.jsonrpc`` process with real websockets clients: it answers requests,
and the base handler gives it the same limits, event lines, metrics,
readiness and SIGTERM drain as the echo server."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.wire import CloseCode
from testkit.metrics import sample

from .conftest import ROOT, ServerProcess


@pytest.fixture
def jsonrpc(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    """``python -m examples.jsonrpc`` processes, killed at the end."""
    return functools.partial(server_process, module="examples.jsonrpc")


async def call(ws: ClientConnection, request: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(request if isinstance(request, str) else json.dumps(request))
    reply = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(reply, str)
    doc: dict[str, Any] = json.loads(reply)
    return doc


def test_requests_get_replies_with_events_and_metrics(
    jsonrpc: Callable[..., ServerProcess],
) -> None:
    server = jsonrpc()
    server.wait_ready()
    with urllib.request.urlopen(server.url + "/readyz", timeout=5) as ready:
        assert ready.status == 200

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        async with connect(server.ws_url) as ws:
            replies = [
                await call(ws, {"id": 1, "method": "add", "params": [1, 2, 3.5]}),
                await call(ws, {"id": "e", "method": "echo", "params": {"a": [1, None]}}),
                await call(ws, {"id": 3, "method": "time"}),
                await call(ws, "{not json"),
                await call(ws, {"id": 5, "method": "nope"}),
                await call(ws, {"id": 6, "method": "add", "params": ["1"]}),
                await call(ws, {"id": 7, "method": "add", "params": [2, 2]}),  # still open
            ]
            return int(ws.local_address[1]), replies

    local_port, replies = asyncio.run(scenario())
    v2 = {"jsonrpc": "2.0"}
    assert replies[0] == {**v2, "id": 1, "result": 6.5}
    assert replies[1] == {**v2, "id": "e", "result": {"a": [1, None]}}
    assert replies[2]["id"] == 3
    assert isinstance(replies[2]["result"], float)
    assert replies[2]["result"] > 1.7e9
    assert replies[3]["id"] is None
    assert replies[3]["error"]["code"] == -32700
    assert replies[3]["error"]["message"].startswith("parse error: ")
    assert replies[4] == {**v2, "id": 5, "error": {"code": -32601, "message": "no method 'nope'"}}
    assert replies[5]["error"]["code"] == -32602
    assert replies[6] == {**v2, "id": 7, "result": 4}

    peer = f"127.0.0.1:{local_port}"
    close = server.wait_event("close")
    assert server.wait_event("open")["peer"] == peer
    messages = [d for d in server.log if d.get("event") == "message"]
    assert [(d["peer"], d["type"]) for d in messages] == [(peer, "text")] * 7
    assert messages[3]["content"] == "{not json"
    assert close["peer"] == peer
    assert close["code"] == CloseCode.NORMAL_CLOSURE
    assert close["messages_in"] == close["messages_out"] == 7

    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as page:
        text = page.read().decode()
    assert sample(text, "websocket_messages_received_total", type="text") == 7
    assert sample(text, "websocket_messages_sent_total", type="text") == 7
    assert sample(text, "websocket_connections_opened_total") == 1
    assert sample(text, "websocket_connections_closed_total", code="1000") == 1


def test_a_message_over_the_limit_closes_1009(jsonrpc: Callable[..., ServerProcess]) -> None:
    server = jsonrpc(env={"WS_MAX_MESSAGE_BYTES": "1024"})
    server.wait_ready()

    async def scenario() -> int | None:
        async with connect(server.ws_url) as ws:
            assert (await call(ws, {"id": 1, "method": "echo", "params": "x" * 900}))["result"]
            await ws.send(json.dumps({"id": 2, "method": "echo", "params": "x" * 2000}))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return ws.close_code

    assert asyncio.run(scenario()) == CloseCode.MESSAGE_TOO_BIG
    error = server.wait_event("error")
    assert error["kind"] == "message_too_big"
    assert error["peer"].startswith("127.0.0.1:")
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as page:
        text = page.read().decode()
    assert sample(text, "websocket_errors_total", kind="message_too_big") == 1
    assert sample(text, "websocket_connections_closed_total", code="1009") == 1


def test_a_binary_message_closes_1003(jsonrpc: Callable[..., ServerProcess]) -> None:
    server = jsonrpc()
    server.wait_ready()

    async def scenario() -> tuple[int | None, str | None]:
        async with connect(server.ws_url) as ws:
            await ws.send(b'{"id": 1, "method": "time"}')
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(scenario())
    assert code == CloseCode.UNSUPPORTED_DATA
    assert reason is not None
    assert "binary" in reason
    assert server.wait_event("close")["code"] == CloseCode.UNSUPPORTED_DATA


def test_sigterm_drains_an_open_client_with_1001(jsonrpc: Callable[..., ServerProcess]) -> None:
    server = jsonrpc()
    server.wait_ready()

    async def scenario() -> int | None:
        async with connect(server.ws_url) as ws:
            assert (await call(ws, {"id": 1, "method": "add", "params": [40, 2]}))["result"] == 42
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    assert asyncio.run(scenario()) == CloseCode.GOING_AWAY
    assert server.wait(timeout=15) == 0
    assert server.wait_event("drained")["aborted"] == 0
    assert server.wait_event("close")["code"] == CloseCode.GOING_AWAY
    assert server.wait_event("exit")["status"] == 0


def test_the_single_handler_form_still_serves_ws_and_the_console(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """``main(handler=...)``, the form before routes: the handler at /ws,
    the echo console at /, the probes and /metrics."""
    script = tmp_path / "single.py"
    script.write_text(
        "from examples.jsonrpc.app import JsonRpcWebSocket\n"
        "from server.__main__ import main\n\n"
        "main(handler=JsonRpcWebSocket)\n"
    )
    server = server_process(
        command=[sys.executable, script.name], cwd=script.parent, env={"PYTHONPATH": str(ROOT)}
    )
    server.wait_ready()

    async def scenario() -> dict[str, Any]:
        async with connect(server.ws_url) as ws:
            return await call(ws, {"id": 1, "method": "add", "params": [1, 2]})

    assert asyncio.run(scenario())["result"] == 3
    with urllib.request.urlopen(server.url + "/", timeout=5) as page:
        assert page.status == 200
        assert b"<html" in page.read().lower()
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as page:
        assert page.status == 200


def test_the_routes_form_has_no_console(jsonrpc: Callable[..., ServerProcess]) -> None:
    server = jsonrpc()
    server.wait_ready()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "/", timeout=5)
    assert info.value.code == 404
    info.value.close()
