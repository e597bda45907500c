"""The base's :func:`~server.base.broadcast` and the ``WS_MAX_BACKLOG`` cap.

A member that never reads, in a room another member talks in fast, is
closed at once with 1008 ``slow_consumer`` when its backlog passes the cap,
and the server's memory stays bounded (a real ``examples.chat`` process,
its RSS read from /proc); a server that writes to a client that never
reads meets the same cap through ``write_message``. broadcast frames a
message once for the members without compression, skips closing members,
and gives members that negotiated permessage-deflate frames their own
compressor can read (real websockets clients decode them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import server.base
from server import wire
from server.app import make_app
from server.base import KnativeWebSocketHandler, Service, broadcast
from server.wire import CloseCode
from testkit.frames import close_payload, frame
from testkit.metrics import sample, scrape

from .conftest import ServerProcess, events, until
from .rawws import RawWebSocket, stalled_client, stalled_client_in_loop

MIB = 1024 * 1024


@pytest.fixture
def chat(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    """``python -m examples.chat`` processes, killed at the end."""
    return functools.partial(server_process, module="examples.chat")


@pytest.mark.timeout(120)
def test_a_member_that_never_reads_is_closed_at_the_backlog_cap_and_memory_stays_bounded(
    chat: Callable[..., ServerProcess], request: pytest.FixtureRequest
) -> None:
    """The send timeout is 120 s: only the cap can close the stalled member
    within the test. It is closed with 1008 ``slow_consumer`` (error event,
    close event with cause ``slow_consumer``, the closed-by-cause metric),
    the others keep receiving every message, and the server's peak RSS
    grows by less than the cap and a margin while the room says many times
    more than the cap."""
    server = chat(env={"WS_SEND_TIMEOUT": "120", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    before = server.rss_kib()
    stalled = stalled_client(server.port, "/ws/rooms/lobby?name=stalled")
    request.addfinalizer(stalled.close)
    text = "x" * 3000
    room = f"ws://127.0.0.1:{server.port}/ws/rooms/lobby"

    async def scenario() -> tuple[int, int, float]:
        async with connect(f"{room}?name=talker") as talker, connect(f"{room}?name=ear") as ear:
            heard: list[dict[str, Any]] = []
            ear_texts = 0

            async def drain(ws: ClientConnection, keep: bool) -> None:
                nonlocal ear_texts
                async for message in ws:
                    doc = json.loads(message)
                    if keep:
                        heard.append(doc)
                        ear_texts += doc["type"] == "message"

            readers = [
                asyncio.create_task(drain(talker, False)),
                asyncio.create_task(drain(ear, True)),
            ]
            # The ear is a member once it has its own join.
            await until(lambda: any(d.get("name") == "ear" for d in heard), 10)
            sent = 0
            started = time.monotonic()
            left_at = 0.0
            # Until the stalled member leaves, and as much again after.
            while time.monotonic() - started < 60:
                await talker.send(text)
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0.005)
                if not left_at and any(d["type"] == "leave" for d in heard):
                    left_at = time.monotonic() - started
                    stop_at = sent * 2
                if left_at and sent >= stop_at:
                    break
            await talker.send("last")
            await until(lambda: bool(heard) and heard[-1].get("text") == "last", 20)
            for task in readers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert left_at, "the stalled member was never closed"
            return sent, ear_texts, left_at

    sent, ear_texts, left_at = asyncio.run(scenario())
    peak = server.memory_kib("VmHWM")
    assert ear_texts == sent + 1  # every message reached the member that reads
    error = server.wait_event("error")
    assert error["kind"] == "slow_consumer"
    close = server.wait_event("close")
    assert close["code"] == CloseCode.POLICY_VIOLATION
    assert close["cause"] == "slow_consumer"
    assert close["reason"].startswith("slow_consumer")
    page = scrape(server.url)
    assert sample(page, "websocket_connections_closed_by_cause_total", cause="slow_consumer") == 1
    # The room said tens of MiB; the server held the 4 MiB cap and change.
    assert sent * len(text) > 24 * MIB, sent
    assert (peak - before) * 1024 < 4 * MIB + 8 * MIB, (before, peak, sent)
    print(f"sent {sent} x 3000 B; closed after {left_at:.2f} s; RSS {before} -> peak {peak} KiB")


# -- in process ---------------------------------------------------------------


class Room(KnativeWebSocketHandler):
    """Every open connection is in one room. ``all:<text>`` broadcasts
    ``<text>`` (``bin:`` as binary) and answers the count; ``leave:<text>``
    closes itself first, then broadcasts to everyone, itself included;
    ``flood`` writes 64 KiB messages to itself every turn, never waiting."""

    def members(self) -> list[Room]:
        return self.connections.select(Room)

    async def on_message(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        verb, _, text = message.partition(":")
        if verb == "all":
            sent = broadcast(text, self.members())
            self.write_message(f"sent:{sent}")
        elif verb == "bin":
            broadcast(text.encode(), self.members(), binary=True)
        elif verb == "leave":
            members = self.members()
            self.close(CloseCode.NORMAL_CLOSURE, "bye")
            Room.last_count = broadcast(text, members)
        elif verb == "flood":
            asyncio.get_running_loop().call_soon(self._flood)

    last_count = -1
    peak_backlog = 0

    def _flood(self) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        self.write_message(b"\0" * 65536, binary=True)
        Room.peak_backlog = max(Room.peak_backlog, self.backlog)
        asyncio.get_running_loop().call_soon(self._flood)


@pytest.fixture
def app(service: Service) -> tornado.web.Application:
    return make_app(service, handler=Room)


async def _joined(port: int, count: int, **kwargs: Any) -> list[ClientConnection]:
    return [await connect(f"ws://127.0.0.1:{port}/ws", **kwargs) for _ in range(count)]


async def test_broadcast_frames_once_and_every_member_gets_it(
    port: int, monkeypatch: pytest.MonkeyPatch, metrics: Any
) -> None:
    framed: list[bytes] = []
    real_frame = server.base._frame

    def counting_frame(payload: bytes, binary: bool) -> list[bytes]:
        framed.append(payload)
        return real_frame(payload, binary)

    per_member: list[bytes] = []
    real_send = wire.Connection.send_message

    def counting_send(self: wire.Connection, data: bytes, binary: bool) -> list[bytes]:
        per_member.append(data)
        return real_send(self, data, binary)

    members = await _joined(port, 5)
    try:
        monkeypatch.setattr(server.base, "_frame", counting_frame)
        monkeypatch.setattr(wire.Connection, "send_message", counting_send)
        big = "y" * 10000  # a header and payload apart (over wire.GATHER_SIZE)
        for text in ("hello", big):
            await members[0].send(f"all:{text}")
            for ws in members:
                assert await asyncio.wait_for(ws.recv(), 5) == text
            assert await asyncio.wait_for(members[0].recv(), 5) == "sent:5"
        await members[1].send("bin:raw")
        for ws in members:
            assert await asyncio.wait_for(ws.recv(), 5) == b"raw"
        assert framed == [b"hello", big.encode(), b"raw"]  # once per message
        # No member framed it on its own (only the "sent:5" answers went
        # through write_message).
        assert per_member == [b"sent:5", b"sent:5"]
        # Counted once per member it was queued to (text: 2 x 5 and the answers).
        counts = metrics.messages
        assert (counts.messages_out[False], counts.messages_out[True]) == (12, 5)
        assert counts.bytes_out[True] == 5 * 3
        assert counts.bytes_out[False] == 5 * (5 + 10000) + 2 * len("sent:5")
    finally:
        for ws in members:
            await ws.close()


async def test_broadcast_skips_a_closing_member_without_raising(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The member that broadcasts has just closed itself: it is skipped
    (its close frame is the last frame it gets), the others get the
    message, and nothing is logged as an error."""
    members = await _joined(port, 2)
    leaver = await RawWebSocket.connect(port)
    try:
        Room.last_count = -1
        await leaver.send(frame(0x1, b"leave:after you"))
        for ws in members:
            assert await asyncio.wait_for(ws.recv(), 5) == "after you"
        close = await leaver.recv()
        assert (close.opcode, close.close_code, close.close_reason) == (0x8, 1000, "bye")
        await leaver.send(frame(0x8, close_payload(1000)))
        assert await leaver.reader.read() == b""  # nothing after the close frame
        assert Room.last_count == 2
        await until(lambda: bool(events(caplog, "close")))
        assert not events(caplog, "error")
    finally:
        leaver.close()
        for ws in members:
            await ws.close()


@pytest.mark.settings(compression=True)
async def test_compressed_members_get_frames_their_own_inflater_reads(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain members, members that keep their compression context (each
    needs its own frames: they differ once the contexts hold history),
    and members that asked for server_no_context_takeover (one shared
    frame): real websockets clients inflate every message back."""
    compressed: list[bytes] = []
    real_send = wire.Connection.send_message

    def counting_send(self: wire.Connection, data: bytes, binary: bool) -> list[bytes]:
        if self.deflate is not None:
            compressed.append(data)
        return real_send(self, data, binary)

    monkeypatch.setattr(wire.Connection, "send_message", counting_send)
    takeover = await _joined(port, 2)  # websockets offers permessage-deflate by default
    fresh = await _joined(
        port, 2, extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True)]
    )
    plain = await _joined(port, 2, compression=None)
    members = [*takeover, *fresh, *plain]
    try:
        for ws in takeover + fresh:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in plain[0].response.headers  # type: ignore[union-attr]
        texts = [f"message {i} " + "abc" * 200 for i in range(3)] * 2
        for text in texts:
            await plain[0].send(f"all:{text}")
            for ws in members:
                assert await asyncio.wait_for(ws.recv(), 5) == text
            assert await asyncio.wait_for(plain[0].recv(), 5) == "sent:6"
        # Per message: one compression for each member with a context of
        # its own, one for both members without.
        assert len(compressed) == 3 * len(texts)
        await takeover[1].send("bin:" + "z" * 5000)
        for ws in members:
            assert await asyncio.wait_for(ws.recv(), 5) == b"z" * 5000
    finally:
        for ws in members:
            await ws.close()


@pytest.mark.settings(max_backlog=4 * MIB)
async def test_write_message_to_a_client_that_never_reads_meets_the_cap(
    port: int, caplog: pytest.LogCaptureFixture, metrics: Any
) -> None:
    """An app that writes to its client every turn without waiting (no
    broadcast): the client never reads; the connection's backlog stops
    at the cap and it is closed with 1008 slow_consumer."""
    Room.peak_backlog = 0
    loop = asyncio.get_running_loop()
    sock = await stalled_client_in_loop(port)
    try:
        frame = bytes([0x81, 0x80 | 5]) + b"\0\0\0\0" + b"flood"
        await loop.sock_sendall(sock, frame)  # and never reads again
        await until(lambda: bool(events(caplog, "close")), 20)
    finally:
        sock.close()
    [close] = events(caplog, "close")
    assert close["code"] == CloseCode.POLICY_VIOLATION
    assert close["cause"] == "slow_consumer"
    [error] = events(caplog, "error")
    assert error["kind"] == "slow_consumer"
    assert 1 * MIB < Room.peak_backlog <= 4 * MIB + 65536 + 64
    assert metrics.closed_by_cause.children["slow_consumer"].value == 1
