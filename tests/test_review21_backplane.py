"""Review of issue 21 (the backplane and the chat on it) as a hostile
client and a first-time user: real ``python -m examples.chat`` processes on
a real ``redis-server`` (the fixture of tests/test_backplane.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from .conftest import ServerProcess
from .test_backplane import RedisServer, doc, metric, room_url, until_type

#: The largest id there is: nothing can come after it.
MAX_ID = f"{2**64 - 1}-{2**64 - 1}"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def chat(server_process: type[ServerProcess]) -> Callable[..., ServerProcess]:
    def start(url: str, **env: str) -> ServerProcess:
        env = {"WS_BACKPLANE_URL": url, "WS_LOG_MESSAGES": "false", **env}
        server = server_process(module="examples.chat", env=env)
        server.wait_ready()
        return server

    return start


def test_the_largest_last_id_does_not_take_the_backplane_down(
    redis: RedisServer, chat: Callable[..., ServerProcess]
) -> None:
    """A client resuming from the largest id there is (valid: each part at
    most 2**64-1) is answered like any other, and does not make its process
    believe Redis is gone: no ``backplane_unavailable`` error, the gauge
    stays up, and a message published there right after still reaches the
    other process. (Before: Redis refused the XRANGE from ``(<max>`` with
    ``ERR invalid start ID``, which was taken for an outage: any client
    could cut its process off the others, and what its members said meanwhile
    went to that process only.)"""
    a, b = chat(redis.url), chat(redis.url)

    async def scenario() -> None:
        async with connect(room_url(a, "lobby", name="ada")) as ada:
            await until_type(ada, "join", name="ada")  # the stream exists
            async with connect(room_url(b, "lobby", name="bob")) as bob:
                await until_type(bob, "join", name="bob")
                await until_type(ada, "join", name="bob")
                async with connect(room_url(a, "lobby", name="eve", last_id=MAX_ID)) as eve:
                    await until_type(eve, "join", name="eve")
                    await until_type(ada, "join", name="eve")
                    await ada.send("still one room")
                    got = await until_type(bob, "message")
                    assert got["text"] == "still one room"
                    assert got["id"] == (await until_type(ada, "message"))["id"]

    asyncio.run(scenario())
    assert not [e for e in a.events("error") if e.get("kind") == "backplane_unavailable"]
    assert metric(a, "websocket_backplane_connected") == 1
    assert metric(a, "websocket_backplane_reconnects_total") == 0
    assert doc  # the shared helper module's reader, kept for the next tests
