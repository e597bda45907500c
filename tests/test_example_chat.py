"""The chat example (``examples/chat``) as a real ``python -m examples.chat``
process with real websockets clients (and one raw socket that never reads):
rooms from the path, join and leave notices with the presence count,
messages broadcast to the room's members only, and a member that stops
reading closed by the base with 1008 while the others go on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from examples.chat.app import Rooms, routes
from server.app import make_app
from server.base import Service
from server.wire import CloseCode

from .conftest import ServerProcess
from .rawws import stalled_client


@pytest.fixture
def chat(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    """``python -m examples.chat`` processes, killed at the end."""
    return functools.partial(server_process, module="examples.chat")


async def next_doc(ws: ClientConnection) -> dict[str, Any]:
    """The next message, its stream ``id`` checked and taken out."""
    doc = await next_with_id(ws)
    assert re.fullmatch(r"[0-9]+-[0-9]+", doc.pop("id")), doc
    return doc


async def next_with_id(ws: ClientConnection) -> dict[str, Any]:
    reply = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(reply, str)
    doc: dict[str, Any] = json.loads(reply)
    return doc


def test_rooms_join_talk_and_leave(chat: Callable[..., ServerProcess]) -> None:
    server = chat()
    server.wait_ready()
    room = f"ws://127.0.0.1:{server.port}/ws/rooms"

    async def scenario() -> None:
        async with connect(f"{room}/lobby?name=ada") as ada:
            assert await next_doc(ada) == {"type": "join", "name": "ada", "members": 1}
            async with (
                connect(f"{room}/lobby?name=<b>bob</b>") as guest,
                connect(f"{room}/den?name=eve") as eve,
            ):
                joined = {"type": "join", "name": "guest-1", "members": 2}
                assert await next_doc(ada) == joined
                assert await next_doc(guest) == joined  # a bad name gets a guest name
                assert await next_doc(eve) == {"type": "join", "name": "eve", "members": 1}
                await guest.send("hello, lobby")
                said = {"type": "message", "name": "guest-1", "text": "hello, lobby"}
                assert await next_doc(ada) == said
                assert await next_doc(guest) == said
                await eve.send("hello, den")
                den = {"type": "message", "name": "eve", "text": "hello, den"}
                assert await next_doc(eve) == den
                await guest.close()
                assert await next_doc(ada) == {"type": "leave", "name": "guest-1", "members": 1}
                # Nothing from the lobby reached the den.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(eve.recv(), 0.3)
            # A binary message closes its sender with 1003; the room goes on.
            async with connect(f"{room}/lobby?name=bin") as binary:
                assert (await next_doc(ada))["members"] == 2
                assert (await next_doc(binary))["name"] == "bin"
                await binary.send(b"\x00")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(binary.recv(), 5)
                assert binary.close_code == CloseCode.UNSUPPORTED_DATA
            assert await next_doc(ada) == {"type": "leave", "name": "bin", "members": 1}
            # A room name outside the route's pattern is not a route.
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"{room}/Not_A_Room"):
                    pass
            assert info.value.response.status_code == 404

    asyncio.run(scenario())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "/", timeout=5)  # no echo console
    assert info.value.code == 404
    info.value.close()
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as page:
        text = page.read().decode()
    opened = re.search(r"^websocket_connections_opened_total (\S+)$", text, re.MULTILINE)
    assert opened
    assert float(opened.group(1)) == 4  # ada, the guest, eve, bin


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(90)
def test_a_member_that_never_reads_is_closed_1008_and_the_room_goes_on(
    chat: Callable[..., ServerProcess], request: pytest.FixtureRequest
) -> None:
    """A member that never reads while the room talks: the base closes it
    with 1008 (slow_consumer) at WS_MAX_BACKLOG (4 MiB) unread or
    WS_SEND_TIMEOUT, whichever comes first. The others get its leave notice
    and keep talking, and the server's memory grows by a bounded amount,
    not with everything the room said."""
    server = chat(env={"WS_SEND_TIMEOUT": "2", "WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    before = _rss_kib(server.proc.pid)
    stalled = stalled_client(server.port, "/ws/rooms/lobby?name=stalled")
    request.addfinalizer(stalled.close)
    text = os.urandom(1500).hex()  # 3000 characters
    sent = 0
    peak = before

    async def scenario() -> dict[str, Any]:
        nonlocal sent, peak
        async with connect(f"ws://127.0.0.1:{server.port}/ws/rooms/lobby?name=talker") as talker:
            heard: list[dict[str, Any]] = []

            async def listen() -> None:
                async for message in talker:
                    heard.append(json.loads(message))

            listener = asyncio.create_task(listen())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(d["type"] == "leave" for d in heard):
                await talker.send(text)
                sent += 1
                if sent % 50 == 0:
                    peak = max(peak, _rss_kib(server.proc.pid))
                    await asyncio.sleep(0.01)
            await talker.send("still here")
            while not any(d.get("text") == "still here" for d in heard):
                await asyncio.sleep(0.01)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            [leave] = [d for d in heard if d["type"] == "leave"]
            del leave["id"]
            return leave

    leave = asyncio.run(scenario())
    stalled.close()
    assert leave == {"type": "leave", "name": "stalled", "members": 1}
    error = server.wait_event("error")
    assert error["kind"] == "slow_consumer"
    close = server.wait_event("close")
    assert close["code"] == CloseCode.POLICY_VIOLATION
    # The stalled member was sent megabytes (3 KB a message, thousands of
    # them): the server held at most WS_MAX_BACKLOG and the kernel's
    # buffers, not all of it (tests/test_broadcast.py bounds it tighter).
    assert sent * len(text) > 8 * 1024 * 1024, sent
    assert peak - before < 64 * 1024, (before, peak, sent)
    print(f"sent {sent} messages; RSS {before} -> {peak} KiB")


@pytest.fixture
def app(service: Service) -> tornado.web.Application:
    """The chat in process, with small limits: two members, 16 characters."""
    return make_app(service, routes=routes(Rooms(max_members=2, max_text=16)))


async def test_a_full_room_gets_1013_and_a_long_text_1009(port: int) -> None:
    lobby = f"ws://127.0.0.1:{port}/ws/rooms/lobby"
    async with connect(lobby) as a, connect(lobby) as b:
        assert (await next_doc(a))["members"] == 1
        assert (await next_doc(a))["members"] == 2
        async with connect(lobby) as third:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(third.recv(), 5)
            assert third.close_code == CloseCode.TRY_AGAIN_LATER
        async with connect(f"ws://127.0.0.1:{port}/ws/rooms/den") as elsewhere:
            assert (await next_doc(elsewhere))["members"] == 1  # another room has room
        await b.send("x" * 17)
        assert (await next_doc(b))["type"] == "join"  # its own join, then the close
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(b.recv(), 5)
        assert b.close_code == CloseCode.MESSAGE_TOO_BIG
        assert await next_doc(a) == {"type": "leave", "name": "guest-2", "members": 1}
