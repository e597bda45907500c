"""Review of issue 21 (the backplane and the chat on it) as a hostile
client and a first-time user: real ``python -m examples.chat`` processes on
a real ``redis-server`` (the fixture of tests/test_backplane.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.backplane import redact_url
from server.config import ConfigError, load_settings
from testkit.redis import REDIS_SERVER, RedisServer

from .conftest import ServerProcess
from .rawws import small_window_socket
from .test_backplane import doc, fill_with_large_texts, metric, room_url, until_type


def diff(one: list[str], other: list[str]) -> tuple[int, list[str], list[str]]:
    """Where two lists part, and a few items of each from there."""
    at = next((n for n, (x, y) in enumerate(zip(one, other, strict=False)) if x != y), None)
    at = min(len(one), len(other)) if at is None else at
    return at, one[at : at + 3], other[at : at + 3]


#: The largest id there is: nothing can come after it.
MAX_ID = f"{2**64 - 1}-{2**64 - 1}"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


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


@pytest.mark.timeout(90)
def test_a_burst_while_redis_is_slow_keeps_order_and_reaches_every_process(
    redis: RedisServer, chat: Callable[..., ServerProcess]
) -> None:
    """Redis stalls (``CLIENT PAUSE ... WRITE``: XADD waits 4 s) while a
    member sends 10 600 short messages, more than a process holds for Redis
    (``PUBLISH_QUEUE``, 10 000). The policy (docs/guides/fan-out.md): past
    the queue a publish is dropped - delivered nowhere, counted in
    ``websocket_errors_total{kind="backplane_overflow"}``, one ``error``
    event - so memory stays bounded and nothing jumps the queue. Once Redis
    goes on, a member on the same process and one on another process get
    the same messages, in the order they were sent (the guide: "the messages
    of one publisher arrive everywhere in the order it sent them"), and
    every message sent is either received or counted as dropped. (Before:
    the ones past the queue went at once to the publishing process's
    members only, ahead of the queued ones, with nothing logged or counted.
    The review's version of this test expected all 10 600 everywhere, which
    no bounded queue can promise for a stall of any length.)"""
    import redis as redis_py

    # A retention above the burst: a reader more than the retention behind
    # loses what was trimmed (the guide's documented cost), not this test's point.
    a, b = (chat(redis.url, WS_BACKPLANE_RETENTION="20000") for _ in range(2))
    count = 10_600

    async def collect(ws: ClientConnection) -> list[str]:
        """The messages' texts up to ``end``, sent once Redis went on."""
        texts: list[str] = []
        while True:
            got = await doc(ws, timeout=15)
            if got["type"] == "message":
                if got["text"] == "end":
                    return texts
                texts.append(got["text"])

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            connect(room_url(a, "burst", name="here"), max_queue=None) as here,
            connect(room_url(b, "burst", name="there"), max_queue=None) as there,
        ):
            # Each subscribed (its own join comes after) before the talker joins.
            await until_type(here, "join", name="here")
            await until_type(there, "join", name="there")
            talker = await connect(room_url(a, "burst", name="talker"), max_queue=None)
            await until_type(here, "join", name="talker")
            await until_type(there, "join", name="talker")
            control = redis_py.Redis(port=redis.port)
            control.client_pause(4000, all=False)  # writes (XADD) wait 4 s
            paused = time.monotonic()
            control.close()
            for n in range(count):
                await talker.send(f"m{n}")
            await asyncio.sleep(max(0.0, paused + 4.5 - time.monotonic()))
            await talker.send("end")  # Redis goes on: the queue has room again
            here_texts, there_texts = await asyncio.gather(collect(here), collect(there))
            await talker.close()
            return here_texts, there_texts

    seen_here, seen_there = asyncio.run(scenario())
    # The same messages everywhere, in the same order.
    assert seen_here == seen_there, (len(seen_here), len(seen_there), diff(seen_here, seen_there))
    sent = [int(text[1:]) for text in seen_here]
    assert sent == sorted(set(sent))  # in the order they were sent, none twice
    dropped = count - len(sent)
    assert dropped > 0, "the burst never filled the queue: the test proves nothing"
    assert metric(a, 'websocket_errors_total{kind="backplane_overflow"}') == dropped
    overflows = [e for e in a.events("error") if e.get("kind") == "backplane_overflow"]
    assert len(overflows) == 1, overflows
    assert overflows[0]["queued"] == 10_000
    assert not [e for e in a.events("error") if e.get("kind") == "backplane_unavailable"]


@pytest.mark.timeout(90)
def test_a_resume_of_the_default_retention_reaches_a_reading_client(
    server_process: type[ServerProcess],
) -> None:
    """Default settings, the in-process backplane: a room's last 1000
    messages are each ``max_text`` (4096) characters, emoji. A client
    that reconnects with the room's first id, reading steadily (a 4 KiB
    receive buffer: a real link, not loopback's megabytes), gets the gap
    notice, the replay and then its own join - not a 1008."""
    server = server_process(module="examples.chat", env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    url = f"ws://127.0.0.1:{server.port}/ws/rooms/big"

    async def scenario() -> tuple[int, int | None]:
        async with connect(f"{url}?name=filler", max_size=None, max_queue=None) as filler:
            first = await until_type(filler, "join", name="filler")
            await fill_with_large_texts(filler)
        sock = small_window_socket(server.port)
        resume = f"{url}?name=back&last_id={first['id']}"
        async with connect(resume, sock=sock, max_size=None) as back:
            replayed = 0
            with contextlib.suppress(ConnectionClosed):
                while True:
                    got = await doc(back, timeout=10)
                    if got["type"] == "message":
                        replayed += 1
                    if got["type"] == "join" and got["name"] == "back":
                        break
            return replayed, back.close_code

    replayed, code = asyncio.run(scenario())
    assert code is None
    assert replayed >= 999


@pytest.mark.timeout(120)
def test_idle_rooms_history_does_not_grow_the_pod_without_bound(
    server_process: type[ServerProcess],
) -> None:
    """One client, the in-process backplane, default settings: it fills 8
    rooms one after the other with 1000 messages of 4096 emoji and leaves
    each. The server's memory grows by less than 64 MiB (it grew by ~130
    MiB: each empty room keeps ~16 MB of history)."""
    server = server_process(module="examples.chat", env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    before = server.rss_kib()

    async def scenario() -> None:
        for room in range(8):
            url = f"ws://127.0.0.1:{server.port}/ws/rooms/fill{room}?name=filler"
            async with connect(url, max_size=None, max_queue=None) as filler:
                await until_type(filler, "join", name="filler")
                for n in range(1000):
                    await filler.send(f"{n:05d}" + "\U0001f600" * 4091)
                for _ in range(1000):
                    await until_type(filler, "message")

    asyncio.run(scenario())
    grown_mib = (server.rss_kib() - before) / 1024
    assert grown_mib < 64, f"grew by {grown_mib:.0f} MiB"


def test_a_password_in_the_urls_query_is_in_no_log_line_or_error(
    redis: RedisServer, chat: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """redis-py takes the password from the query too
    (``redis://host:6379/0?password=...``): the ``backplane`` event and the
    outage's ``error`` event show it as ``***``, and a start error on such a
    URL does not show it either."""
    secret = "Qu3ry-Secret"
    guarded = RedisServer(tmp_path, password=secret)
    guarded.start()
    try:
        url = f"redis://127.0.0.1:{guarded.port}/0?password={secret}"
        server = chat(url)
        server.wait_event("backplane", 10)

        async def outage() -> None:
            async with connect(room_url(server, "pw", name="ada")) as ada:
                await until_type(ada, "join", name="ada")
                guarded.kill()
                await ada.send("during")  # its XADD finds Redis gone
                await until_type(ada, "message")
                await asyncio.to_thread(server.wait_event, "error", 10)

        asyncio.run(outage())
        server.stop()
    finally:
        guarded.kill()
    output = server.output()
    assert f"redis://127.0.0.1:{guarded.port}/0?password=***" in output
    assert secret not in output
    assert redact_url(f"rediss://h/0?ssl_cert_reqs=none&password={secret}") == (
        "rediss://h/0?ssl_cert_reqs=none&password=***"
    )
    assert secret not in redact_url(f"redis://h/0?%70assword={secret}")
    for query in (f"password={secret}", f"%70assword={secret}"):
        with pytest.raises(ConfigError) as info:
            load_settings([], {"WS_BACKPLANE_URL": f"redis://host:99999/0?{query}"})
        assert secret not in str(info.value)


def test_non_ascii_text_is_relayed_as_utf_8_not_escaped(
    server_process: type[ServerProcess],
) -> None:
    """A member sends 4096 emoji (16 KiB of UTF-8, the most ``max_text``
    allows): the others get it in about as many bytes, not escaped as
    ``\\ud83d\\ude00`` (12 bytes a character: a 3x amplification of every
    non-Latin message to every member, and in the retained history)."""
    server = server_process(module="examples.chat", env={"WS_LOG_MESSAGES": "false"})
    server.wait_ready()
    url = f"ws://127.0.0.1:{server.port}/ws/rooms/emoji"
    text = "\U0001f600" * 4096

    async def scenario() -> str:
        async with connect(f"{url}?name=listener", max_size=None) as listener:
            await until_type(listener, "join", name="listener")
            async with connect(f"{url}?name=talker") as talker:
                await until_type(listener, "join", name="talker")
                await talker.send(text)
                while True:
                    raw = await asyncio.wait_for(listener.recv(), 5)
                    assert isinstance(raw, str)
                    if '"message"' in raw:
                        return raw

    raw = asyncio.run(scenario())
    assert json.loads(raw)["text"] == text
    assert len(raw.encode()) < len(text.encode()) + 200


@pytest.mark.timeout(60)
def test_the_gauge_drops_when_redis_goes_while_no_one_is_connected(
    redis: RedisServer, chat: Callable[..., ServerProcess]
) -> None:
    """A process with no members yet (a new pod, a quiet one) whose Redis
    goes away: within a few seconds ``websocket_backplane_connected`` is 0
    and the outage's ``error`` event is logged - the guide's alert on the
    gauge must see it before the first member finds out. (Before: the
    reader did not touch Redis without a channel to read, so the gauge
    said connected for as long as the process stayed idle.)"""
    server = chat(redis.url)
    assert metric(server, "websocket_backplane_connected") == 1
    redis.kill()
    deadline = time.monotonic() + 15
    while metric(server, "websocket_backplane_connected") != 0:
        assert time.monotonic() < deadline, "the gauge still says connected"
        time.sleep(0.2)
    assert [e for e in server.events("error") if e.get("kind") == "backplane_unavailable"]
    redis.start()
    deadline = time.monotonic() + 20
    while metric(server, "websocket_backplane_connected") != 1:
        assert time.monotonic() < deadline, "not back"
        time.sleep(0.2)


@pytest.mark.timeout(90)
def test_a_reconnect_herd_is_not_taken_for_a_redis_outage(
    redis: RedisServer, chat: Callable[..., ServerProcess]
) -> None:
    """150 clients join one process at once (what a drained pod's clients
    do on the next pod): each is counted and joins, no
    ``backplane_unavailable`` is logged, and the process stays connected to
    the others. (Before: redis-py 8's asyncio pool refuses a 101st
    concurrent command with ``MaxConnectionsError``, which the backplane
    took for an outage: publishes went to this process only meanwhile.)"""
    a, b = chat(redis.url), chat(redis.url)

    async def scenario() -> None:
        async with connect(room_url(b, "herd", name="bob")) as bob:
            await until_type(bob, "join", name="bob")

            async def member(n: int) -> ClientConnection:
                ws = await connect(room_url(a, "herd", name=f"m{n}"), open_timeout=30)
                await until_type(ws, "join", name=f"m{n}")
                return ws

            herd = await asyncio.gather(*(member(n) for n in range(150)))
            try:
                await herd[0].send("after the herd")
                got = await until_type(bob, "message")
                assert got["text"] == "after the herd"
            finally:
                await asyncio.gather(*(ws.close() for ws in herd))

    asyncio.run(scenario())
    errors = [e for e in a.events("error") if e.get("kind") == "backplane_unavailable"]
    assert not errors, errors[0]
    assert metric(a, "websocket_backplane_reconnects_total") == 0


@pytest.mark.parametrize("password", ["ab/cdSECRET", "ab#cdSECRET", "ab?cdSECRET", "x/y+zSECRET=="])
def test_a_password_that_breaks_the_url_is_not_in_the_start_error(password: str) -> None:
    """A generated password with ``/``, ``#`` or ``?`` (base64 has ``/``)
    put in the URL without percent-encoding makes it unparseable as a Redis
    URL: the start error says so, and how to fix it, without the password
    (it showed the whole URL)."""
    with pytest.raises(ConfigError) as info:
        load_settings([], {"WS_BACKPLANE_URL": f"redis://:{password}@redis:6379/0"})
    message = str(info.value)
    assert "SECRET" not in message
    assert "WS_BACKPLANE_URL" in message
    assert "percent-encode" in message


class DebugRedisServer(RedisServer):
    """A redis-server that takes ``DEBUG SLEEP`` (a stall: a fork, a slow
    disk, a paused VM)."""

    def start(self) -> None:
        # The fixture's arguments, with DEBUG enabled (off by default in 7.0).
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        args += ["--enable-debug-command", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.port)


def wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as s,
        ):
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise AssertionError("redis-server did not start")


@pytest.mark.timeout(90)
def test_a_redis_stall_delivers_no_message_twice(
    tmp_path: Path, chat: Callable[..., ServerProcess]
) -> None:
    """Redis stalls 7 s (``DEBUG SLEEP 7``) while a member talks: once
    Redis is back, a member of the same process has each message once."""
    redis = DebugRedisServer(tmp_path)
    redis.start()
    try:
        server = chat(redis.url)

        async def scenario() -> list[str]:
            async with connect(room_url(server, "stall", name="ada"), max_queue=None) as ada:
                await until_type(ada, "join", name="ada")
                sleeper = subprocess.Popen(
                    ["redis-cli", "-p", str(redis.port), "DEBUG", "SLEEP", "7"],
                    stdout=subprocess.DEVNULL,
                )
                await asyncio.sleep(0.3)
                for n in range(20):
                    await ada.send(f"m{n}")
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(sleeper.wait, 20)
                deadline = time.monotonic() + 20
                while len(server.events("backplane")) < 2:  # connected again
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                texts: list[str] = []
                with contextlib.suppress(TimeoutError):
                    while True:
                        got = await doc(ada, timeout=3)
                        if got["type"] == "message":
                            texts.append(got["text"])
                return texts

        texts = asyncio.run(scenario())
    finally:
        redis.kill()
    assert sorted(texts) == sorted(f"m{n}" for n in range(20))
