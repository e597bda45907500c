"""Review of issue 18 (server side): a client that never answers the
server's close frame. The docs (reference/events.md) say a ``close`` event's ``code`` and
``reason`` are those of the close frame that ended the handshake - "the
client's ..., or ours if the client never answered". An operator reading
the log of a maximum-age or drain close must see the reason the server
sent, not an empty one. Real sockets on loopback, the in-process server;
``CLOSE_TIMEOUT`` is shortened so the unanswered close ends in a second.
"""

from __future__ import annotations

import asyncio

import pytest

from server import transport
from server.connections import DRAIN_REASON, MAX_AGE_REASON, Registry

from .conftest import events, until
from .rawws import RawWebSocket


async def _unanswered_close(port: int, caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    """A client that reads the server's close frame and never answers it;
    the server's ``close`` event once it gives up on the client."""
    ws = await RawWebSocket.connect(port)
    try:
        frame = await ws.recv_close(timeout=10)
        await until(lambda: bool(events(caplog, "close")), timeout=10)
    finally:
        ws.close()
    (close,) = events(caplog, "close")
    close["frame"] = frame.payload
    return close


@pytest.mark.settings(max_connection_age=1.0)
async def test_an_unanswered_max_age_close_logs_the_reason_sent(
    port: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "CLOSE_TIMEOUT", 0.5)
    close = await _unanswered_close(port, caplog)
    assert close["frame"] == b"\x03\xe9" + MAX_AGE_REASON.encode()
    assert close["cause"] == "max_age"
    assert close["clean"] is False
    assert (close["code"], close["reason"]) == (1001, MAX_AGE_REASON)


async def test_an_unanswered_drain_close_logs_the_reason_sent(
    port: int,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "CLOSE_TIMEOUT", 0.5)
    waiting = asyncio.ensure_future(_unanswered_close(port, caplog))
    await until(lambda: len(registry) == 1)
    try:
        await registry.drain(5.0)
        close = await waiting
    finally:
        registry.draining = False
    assert close["frame"] == b"\x03\xe9" + DRAIN_REASON.encode()
    assert close["cause"] == "drain"
    assert close["clean"] is False
    assert (close["code"], close["reason"]) == (1001, DRAIN_REASON)
