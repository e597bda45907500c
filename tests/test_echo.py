"""Echo behaviour and event logs over real connections on loopback."""

from __future__ import annotations

import os

import pytest
from websockets.asyncio.client import connect

from .conftest import events


async def test_text_comes_back_as_text(ws_url: str) -> None:
    async with connect(ws_url) as ws:
        await ws.send("hello")
        echo = await ws.recv()
    assert echo == "hello"
    assert isinstance(echo, str)


async def test_binary_comes_back_as_binary(ws_url: str) -> None:
    payload = bytes(range(256))
    async with connect(ws_url) as ws:
        await ws.send(payload)
        echo = await ws.recv()
    assert isinstance(echo, bytes)
    assert echo == payload


@pytest.mark.parametrize(
    "message",
    [
        "",
        b"",
        "héllo wörld ✓ 日本語 🚀",
        "\x00nul and control \x7f",
        os.urandom(65536),
        "x" * 70000,
    ],
    ids=["empty-text", "empty-binary", "multibyte-utf8", "control-chars", "64k-binary", "70k-text"],
)
async def test_echo_is_byte_exact(ws_url: str, message: str | bytes) -> None:
    async with connect(ws_url, max_size=None) as ws:
        await ws.send(message)
        assert await ws.recv() == message


@pytest.mark.settings(max_message_bytes=4096)
async def test_message_at_the_limit_is_echoed(ws_url: str) -> None:
    async with connect(ws_url) as ws:
        await ws.send(b"z" * 4096)
        assert await ws.recv() == b"z" * 4096
        await ws.send("é" * 2048)  # 4096 bytes of UTF-8
        assert await ws.recv() == "é" * 2048


async def test_thousands_of_messages_come_back_in_order(ws_url: str) -> None:
    """Sent back to back without waiting, mixing types: order and types hold."""
    sent: list[str | bytes] = [(f"msg {i}" if i % 3 else f"bin {i}".encode()) for i in range(2000)]
    async with connect(ws_url) as ws:
        for m in sent:
            await ws.send(m)
        received = [await ws.recv() for _ in sent]
    assert received == sent


async def test_fragmented_message_is_echoed_whole(ws_url: str) -> None:
    async with connect(ws_url) as ws:
        await ws.send(["frag", "ment", "ed"])
        assert await ws.recv() == "fragmented"


async def test_two_clients_do_not_see_each_others_echoes(ws_url: str) -> None:
    async with connect(ws_url) as a, connect(ws_url) as b:
        await a.send("for a")
        await b.send("for b")
        assert await b.recv() == "for b"
        assert await a.recv() == "for a"


@pytest.mark.settings(compression=True)
async def test_permessage_deflate_when_enabled(ws_url: str) -> None:
    async with connect(ws_url, compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        text = "compressible " * 1000
        await ws.send(text)
        assert await ws.recv() == text


async def test_permessage_deflate_off_by_default(ws_url: str) -> None:
    async with connect(ws_url, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("plain")
        assert await ws.recv() == "plain"


# -- event logs ----------------------------------------------------------------


async def test_open_message_close_are_logged_with_peer(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(ws_url) as ws:
        local_port = ws.local_address[1]
        await ws.send("hi there")
        await ws.recv()
        await ws.send(b"\x01\x02")
        await ws.recv()
        await ws.close(1000, "done")
    await _settle()
    peer = f"127.0.0.1:{local_port}"
    [opened] = events(caplog, "open")
    assert opened["peer"] == peer
    text, binary = events(caplog, "message")
    assert text == {"peer": peer, "type": "text", "size": 8, "content": "hi there", "level": "INFO"}
    assert binary["type"] == "binary"
    assert binary["content"] == "0102"
    [closed] = events(caplog, "close")
    assert closed["peer"] == peer
    assert closed["code"] == 1000
    assert closed["reason"] == "done"
    assert closed["messages_in"] == 2
    assert closed["messages_out"] == 2
    assert closed["duration"] >= 0
    assert events(caplog, "error") == []


async def test_forwarded_client_address_is_logged(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.2"}
    async with connect(ws_url, additional_headers=headers) as ws:
        local_port = ws.local_address[1]
    await _settle()
    [opened] = events(caplog, "open")
    assert opened["peer"] == "203.0.113.7"
    assert opened["via"] == f"127.0.0.1:{local_port}"
    [closed] = events(caplog, "close")
    assert closed["peer"] == "203.0.113.7"


@pytest.mark.settings(log_preview_bytes=5)
async def test_message_preview_is_truncated(ws_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with connect(ws_url) as ws:
        await ws.send("abcdefghij")
        await ws.recv()
        await ws.send(b"\xaa" * 10)
        await ws.recv()
    text, binary = events(caplog, "message")
    assert text["content"] == "abcde"
    assert text["truncated"] is True
    assert text["size"] == 10
    assert binary["content"] == "aa" * 5
    assert binary["truncated"] is True


@pytest.mark.settings(log_content=False)
async def test_content_logging_can_be_switched_off(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(ws_url) as ws:
        await ws.send("secret password")
        assert await ws.recv() == "secret password"
    [message] = events(caplog, "message")
    assert "content" not in message
    assert message["size"] == 15
    assert "secret" not in caplog.text


@pytest.mark.settings(log_messages=False)
async def test_message_events_can_be_switched_off(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(ws_url) as ws:
        await ws.send("quiet")
        assert await ws.recv() == "quiet"
    await _settle()
    assert events(caplog, "message") == []
    assert len(events(caplog, "open")) == 1
    assert len(events(caplog, "close")) == 1


async def _settle() -> None:
    """Let the server run its on_close after the client's close returns."""
    import asyncio

    for _ in range(20):
        await asyncio.sleep(0.01)
