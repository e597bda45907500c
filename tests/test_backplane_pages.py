"""History in pages (``Backplane.history(channel, after, limit)``) on both
backplanes (Redis: a real ``redis-server``), the in-process backplane's
byte bound, and the chat's paced replay to a client that does not read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.backplane import Backplane, Entry, LocalBackplane, RedisBackplane, parse_id
from testkit.redis import RedisServer

from .conftest import ServerProcess
from .rawws import small_window_socket
from .test_backplane import doc, fill_with_large_texts, until_type


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def _pages(plane: Backplane, channel: str, after: str, limit: int) -> list[list[str]]:
    """The history after ``after`` read ``limit`` at a time: each page's data."""
    pages: list[list[str]] = []
    while True:
        page = await plane.history(channel, after, limit)
        assert not page.gap
        pages.append([e.data for e in page.entries])
        if len(page.entries) < limit:
            return pages
        after = page.entries[-1].id


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_history_pages_follow_on_and_report_the_gap(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Seven entries read three at a time: 3, 3, 1, in order, none twice;
    an id older than what is kept still reports the gap with a page."""

    async def scenario() -> None:
        plane: Backplane
        if kind == "local":
            plane = LocalBackplane(retention=5)
        else:
            server: RedisServer = request.getfixturevalue("redis")
            plane = RedisBackplane(server.url, retention=5)
            await plane.start()
        try:
            seen: list[str] = []
            await plane.subscribe("c", lambda e: seen.append(e.id))
            plane.publish("c", "first")
            for _ in range(1000):
                if seen:
                    break
                await asyncio.sleep(0.02)
            first = seen[0]
            for n in range(7):
                plane.publish("c", str(n))
            for _ in range(1000):
                if len(seen) == 8:
                    break
                await asyncio.sleep(0.02)
            if kind == "redis":  # exact, not MAXLEN ~: keep "0" to "6"
                assert isinstance(plane, RedisBackplane)
                assert plane._client is not None
                await plane._client.xtrim("ws:stream:c", maxlen=7, approximate=False)
                start = seen[1]  # "0": then "1" to "6"
            else:  # retention 5: "0" and "1" are trimmed too
                assert len(await _pages(plane, "c", seen[2], 3)) == 2
                start = seen[3]  # "2": then "3" to "6"
            pages = await _pages(plane, "c", start, 3)
            got = [data for page in pages for data in page]
            assert got == [str(n) for n in range(7)][-len(got) :]
            assert [len(p) for p in pages][:-1] == [3] * (len(pages) - 1)
            old = await plane.history("c", "0-1", 2)
            assert old.gap
            assert len(old.entries) == 2
            assert parse_id(old.entries[0].id) > parse_id(first)
        finally:
            await plane.close()

    asyncio.run(scenario())


def test_local_history_is_bounded_by_bytes_idle_channels_first() -> None:
    """Past ``max_bytes``: the idle channels go first (their history then
    says gap), then the oldest entries of the channel published to least
    recently (a gap after the last id that was trimmed)."""
    text = "x" * 1000
    plane = LocalBackplane(retention=1000)
    ids: dict[str, list[str]] = {"quiet": [], "busy": []}

    def keep(channel: str) -> Callable[[Entry], None]:
        return lambda entry: ids[channel].append(entry.id)

    async def scenario() -> None:
        for channel in ("quiet", "busy"):
            await plane.subscribe(channel, keep(channel))
        plane.publish("idle", text)
        plane.max_bytes = 20 * plane.bytes  # room for 20 entries
        plane.publish("quiet", text)
        plane.publish("quiet", text)
        for _ in range(17):
            plane.publish("busy", text)
        assert (await plane.history("idle", "0-0")).entries  # kept while there is room
        plane.publish("busy", text)
        assert plane.bytes <= plane.max_bytes
        idle = await plane.history("idle", "0-1")
        assert (idle.entries, idle.gap) == ((), True)  # forgotten first
        quiet = await plane.history("quiet", "0-0")
        assert [e.id for e in quiet.entries] == ids["quiet"]  # untouched yet
        for _ in range(2):
            plane.publish("busy", text)
        assert plane.bytes <= plane.max_bytes
        quiet = await plane.history("quiet", ids["quiet"][0])
        assert (quiet.entries, quiet.gap) == ((), True)  # its oldest entries went next
        busy = await plane.history("busy", "0-0")
        assert [e.id for e in busy.entries] == ids["busy"]
        assert not busy.gap

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_client_that_does_not_read_its_replay_is_closed_within_the_send_timeout(
    server_process: type[ServerProcess],
) -> None:
    """A client resumes a room of 1000 texts of 4096 emoji (16 MB) and
    reads nothing: the replay waits for it at most ``WS_SEND_TIMEOUT``
    (2 s), then it gets 1008 with the part it was sent (what the kernels'
    buffers and a window took, not the whole history), and the room never
    sees it join. (Before, the whole replay was written at once: 1008
    ``slow_consumer`` at once, the history's bytes held meanwhile.)"""
    env = {"WS_LOG_MESSAGES": "false", "WS_SEND_TIMEOUT": "2"}
    server = server_process(module="examples.chat", env=env)
    server.wait_ready()
    url = f"ws://127.0.0.1:{server.port}/ws/rooms/lazy"

    async def scenario() -> tuple[int, int | None, str]:
        async with connect(f"{url}?name=filler", max_size=None, max_queue=None) as filler:
            first = await until_type(filler, "join", name="filler")
            await fill_with_large_texts(filler)
            sock = small_window_socket(server.port)
            resume = f"{url}?name=lazy&last_id={first['id']}"
            async with connect(resume, sock=sock, max_size=None, max_queue=1) as lazy:
                await asyncio.sleep(4)  # reads nothing
                got = 0
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        message = await doc(lazy, timeout=10)
                        assert message["type"] == "message"
                        got += 1
                await filler.send("after")
                joins = []
                while (message := await doc(filler))["type"] != "message":
                    joins.append(message)
                assert message["text"] == "after"
                assert not [j for j in joins if j.get("name") == "lazy"]
                return got, lazy.close_code, lazy.close_reason or ""

    got, code, reason = asyncio.run(scenario())
    assert code == 1008
    assert "replay" in reason
    assert 0 < got < 900


def test_a_resume_over_many_pages_on_redis_comes_whole_and_in_order(
    redis: RedisServer, server_process: type[ServerProcess]
) -> None:
    """Two chat processes on one Redis: 100 messages said on one (three
    pages and a bit), a client resuming on the other from before them gets
    all 100 once, in order, then its own join."""
    env = {"WS_BACKPLANE_URL": redis.url, "WS_LOG_MESSAGES": "false"}
    a = server_process(module="examples.chat", env=env)
    b = server_process(module="examples.chat", env=env)
    a.wait_ready()
    b.wait_ready()

    async def scenario() -> list[str]:
        url = f"ws://127.0.0.1:{a.port}/ws/rooms/pages?name=talker"
        async with connect(url, max_queue=None) as talker:
            first = await until_type(talker, "join", name="talker")
            for n in range(100):
                await talker.send(f"m{n}")
            for _ in range(100):
                await until_type(talker, "message")
            resume = f"ws://127.0.0.1:{b.port}/ws/rooms/pages?name=back&last_id={first['id']}"
            async with connect(resume, max_queue=None) as back:
                texts: list[str] = []
                while (got := await doc(back))["type"] != "join":
                    assert got["type"] == "message", got
                    texts.append(got["text"])
                assert got["name"] == "back"
                return texts

    assert asyncio.run(scenario()) == [f"m{n}" for n in range(100)]
