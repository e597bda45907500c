"""The handler-busy race (issue 20): an async ``on_message`` still running
when the connection starts closing. Through a real socket, in process.

The behaviour pinned: ``on_message`` never runs twice at once for one
connection, and no message reaches it after the server's close frame went
out (RFC 6455 5.5.1: the closing handshake has begun), whether the message
was read before the close (it waited behind the running handler) or after;
the running handler is not cancelled and finishes; the client's close frame
is still answered at once, while the handler runs; and the connection is
not quiescent while its handler runs (drain and maximum age ask). (Before:
``close()`` cleared the busy flag while the handler still ran, so the
connection called itself quiescent, and only the "no data after our close
frame" check kept a second message from running concurrently.)"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import pytest

from server.base import KnativeWebSocketHandler

from .conftest import events, until
from .rawws import RawWebSocket, frame


class _SlowCloser(KnativeWebSocketHandler):
    """'first' closes the connection and then keeps running for a while."""

    running: ClassVar[int] = 0
    most: ClassVar[int] = 0
    finished: ClassVar[int] = 0
    seen: ClassVar[list[str | bytes]] = []
    quiescent_while_running: ClassVar[bool | None] = None

    async def on_message(self, message: str | bytes) -> None:
        cls = _SlowCloser
        cls.seen.append(message)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        try:
            if message == "first":
                self.close(1000, "bye")
                # The transport still counts this handler as running: the
                # connection is not quiescent (drain and max age ask this).
                ws = self._kws.ws
                assert ws is not None
                cls.quiescent_while_running = ws.quiescent(0.0)
            await asyncio.sleep(0.5)
        finally:
            cls.running -= 1
            cls.finished += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    _SlowCloser.running = _SlowCloser.most = _SlowCloser.finished = 0
    _SlowCloser.seen = []
    _SlowCloser.quiescent_while_running = None


@pytest.mark.handler.with_args(_SlowCloser)
async def test_message_after_the_close_frame_waits_for_nothing_and_runs_nowhere(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawWebSocket.connect(port)
    await raw.send(frame(0x1, b"first"))
    close = await raw.recv_close()
    assert close.close_code == 1000
    # The handler is still running: a message, then our close frame.
    started = time.monotonic()
    await raw.send(frame(0x1, b"second") + frame(0x8, (1000).to_bytes(2, "big")))
    assert await raw.at_eof(timeout=3)
    answered = time.monotonic() - started
    assert _SlowCloser.running == 1, "the handler was not still running"
    assert answered < 0.4, f"the client's close frame waited {answered:.2f} s for the handler"
    raw.close()
    await until(lambda: _SlowCloser.finished == 1 and bool(events(caplog, "close")))
    assert _SlowCloser.seen == ["first"]
    assert _SlowCloser.most == 1
    assert _SlowCloser.quiescent_while_running is False
    [closed] = events(caplog, "close")
    assert closed["code"] == 1000


@pytest.mark.handler.with_args(_SlowCloser)
async def test_message_read_behind_the_running_handler_is_not_dispatched_after_close(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawWebSocket.connect(port)
    # Both in one write: 'second' waits behind the running handler when
    # 'first' closes the connection.
    await raw.send(frame(0x1, b"first") + frame(0x1, b"second"))
    close = await raw.recv_close()
    assert close.close_code == 1000
    await raw.send(frame(0x8, (1000).to_bytes(2, "big")))
    assert await raw.at_eof(timeout=3)
    raw.close()
    await until(lambda: _SlowCloser.finished >= 1 and bool(events(caplog, "close")))
    await asyncio.sleep(0.7)  # a wrongly queued 'second' would have run by now
    assert _SlowCloser.seen == ["first"]
    assert _SlowCloser.most == 1
    assert _SlowCloser.finished == 1
