"""Review of issue 23's per-message work and issue 21's backlog cap.

Run both pure and compiled (scripts/build-speedups.sh, then
WS_EXPECT_COMPILED_WIRE=1): each test holds in both forms."""

from __future__ import annotations

import asyncio

import pytest
import tornado.websocket

from server import wire
from server.base import KnativeWebSocketHandler

from .conftest import until
from .rawws import stalled_client_in_loop


def test_message_matches_positionally() -> None:
    """``case Message(data)`` (the documented ``__match_args__``) works in
    the compiled core too: mypyc took a class-level ``__match_args__`` of a
    native class for an instance attribute's default, and the match raised
    ``TypeError: Message.__match_args__ must be a tuple``."""
    event: wire.Event = wire.Message("hi")
    match event:
        case wire.Message(data):
            assert data == "hi"
        case _:
            raise AssertionError(event)
    assert wire.Message.__match_args__ == ("data",)


def test_message_data_is_read_only_in_both_forms() -> None:
    """A Message's ``data`` cannot be reassigned, as with the frozen
    dataclass it replaced and in the compiled core."""
    message = wire.Message("a")
    with pytest.raises(AttributeError):
        message.data = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del message.data  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.other = 1  # type: ignore[attr-defined]
    assert message.data == "a"
    assert message == wire.Message("a")
    assert hash(message) == hash(wire.Message("a"))
    assert repr(message) == "Message(data='a')"
    match message:
        case wire.Message(data):
            assert data == "a"


MIB = 1024 * 1024


class _Burst(KnativeWebSocketHandler):
    """On any message, writes 40 messages of 256 KiB (10 MiB) at once, as
    an app answering "send me the history" would; records the most bytes
    the connection holds unread, seen right after and a turn later."""

    peak = 0
    inside = -1
    closed = False

    def on_message(self, message: str | bytes) -> None:
        asyncio.get_running_loop().call_soon(self._later)
        try:
            for _ in range(40):
                self.write_message(b"\1" * (256 * 1024), binary=True)
                _Burst.inside = max(_Burst.inside, self.backlog)
                _Burst.peak = max(_Burst.peak, self.backlog)
        except tornado.websocket.WebSocketClosedError:
            _Burst.closed = True  # the cap closed it: the rest is not written

    def _later(self) -> None:
        _Burst.peak = max(_Burst.peak, self.backlog)


@pytest.mark.handler.with_args(_Burst)
async def test_writes_inside_on_message_meet_the_backlog_cap(port: int) -> None:
    """write_message inside on_message to a client that reads nothing: the
    connection never holds more than WS_MAX_BACKLOG (4 MiB) plus one
    message, and ``backlog`` says what it holds. The batch of one read's
    writes let all 10 MiB through to the event loop's buffer at once (held
    there until the drop 2 s later), with ``backlog`` 0 inside on_message:
    the frames one read's events write gathered in a batch that neither
    ``backlog`` nor the cap saw until the read was handled."""
    _Burst.peak, _Burst.inside, _Burst.closed = 0, -1, False
    loop = asyncio.get_running_loop()
    sock = await stalled_client_in_loop(port)
    try:
        await loop.sock_sendall(sock, bytes([0x81, 0x80 | 2]) + b"\0\0\0\0" + b"go")
        await until(lambda: _Burst.peak > 0, 10)
        await asyncio.sleep(0.05)
    finally:
        sock.close()
    assert _Burst.inside > 0  # backlog counts what on_message wrote
    assert _Burst.peak <= 4 * MIB + 256 * 1024 + 4096
    assert _Burst.closed  # closed at the cap (1008 slow_consumer), not later
