"""The backplane (server/backplane.py) and the chat on it, with a real
``redis-server`` (the Debian package, scripts/setup.sh) on a free loopback
port and real ``python -m examples.chat`` processes: delivery across
processes and across WS_WORKERS, order per publisher, Redis killed and
started again (one error event, the metric, local delivery meanwhile, the
reader back), resume with ``?last_id=`` without loss, duplicate or
reordering while messages keep coming, the gap notice past the retention,
the password in no log line, and bad ``last_id`` values answered 400."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from server.backplane import Entry, LocalBackplane, parse_id, redact_url
from server.config import ConfigError, load_settings
from testkit.redis import RedisServer

from .conftest import ServerProcess
from .rawws import upgrade_request


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """A factory of started redis-servers, all stopped at the end."""
    started: list[RedisServer] = []

    def make(password: str = "") -> RedisServer:
        server = RedisServer(tmp_path, password)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


def room_url(server: ServerProcess, room: str, **query: str) -> str:
    tail = "?" + urllib.parse.urlencode(query) if query else ""
    return f"ws://127.0.0.1:{server.port}/ws/rooms/{room}{tail}"


async def doc(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    reply = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(reply, str)
    value: dict[str, Any] = json.loads(reply)
    return value


async def until_type(ws: ClientConnection, kind: str, **match: Any) -> dict[str, Any]:
    """The next message of ``kind`` (with ``match``'s fields), skipping others."""
    while True:
        got = await doc(ws)
        if got["type"] == kind and all(got.get(k) == v for k, v in match.items()):
            return got


async def fill_with_large_texts(ws: ClientConnection, count: int = 1000) -> None:
    """``count`` messages of ``max_text`` (4096) characters, emoji (16 KB
    each, numbered), said by ``ws`` and heard back: the room's history."""
    for n in range(count):
        await ws.send(f"{n:05d}" + "\U0001f600" * 4091)
    for _ in range(count):
        await until_type(ws, "message")


class Clients(contextlib.AsyncExitStack):
    """websockets clients closed when the block ends, however it ends."""

    async def open(self, url: str) -> ClientConnection:
        return await self.enter_async_context(connect(url))

    async def join(self, server: ServerProcess, room: str, name: str) -> ClientConnection:
        """A member of ``room`` once its own join is back: subscribed."""
        ws = await self.open(room_url(server, room, name=name))
        await until_type(ws, "join", name=name)
        return ws


def metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as page:
        text = page.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def test_a_message_reaches_the_members_on_another_process(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """Two chat processes on one Redis: each client hears the other, with the
    same ids, and ``members`` counts both processes' members."""
    redis = redis_server()
    a, b = chat(redis.url), chat(redis.url)

    async def scenario() -> None:
        async with connect(room_url(a, "lobby", name="ada")) as ada:
            joined = await doc(ada)
            assert joined["members"] == 1
            assert parse_id(joined["id"])
            async with connect(room_url(b, "lobby", name="bob")) as bob:
                seen_by_bob = await doc(bob)
                assert seen_by_bob == await doc(ada)
                assert seen_by_bob["members"] == 2  # across the two processes
                await bob.send("from b")
                said = await doc(ada)
                assert said == await doc(bob)
                assert said["text"] == "from b"
                await ada.send("from a")
                assert (await doc(bob))["text"] == "from a"
                assert (await doc(ada))["text"] == "from a"
            left = await doc(ada)
            assert left["type"] == "leave"
            assert left["members"] == 1
            assert parse_id(left["id"]) > parse_id(said["id"])

    asyncio.run(scenario())
    assert metric(a, "websocket_backplane_connected") == 1


def test_workers_share_rooms_through_redis(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """WS_WORKERS=2: clients land on either worker (SO_REUSEPORT); each
    gets every message, in the order its one sender sent them. The metric
    counts the pod's connected processes."""
    redis = redis_server()
    server = chat(redis.url, WS_WORKERS="2")

    async def scenario() -> None:
        async with Clients() as stack:
            clients = [await stack.join(server, "lobby", f"c{n}") for n in range(8)]
            talker = clients[0]
            await talker.send("hello")
            for client in clients:
                assert (await until_type(client, "message"))["text"] == "hello"
            for n in range(50):
                await talker.send(f"m{n}")
            for client in clients:
                texts = [(await until_type(client, "message"))["text"] for _ in range(50)]
                assert texts == [f"m{n}" for n in range(50)]

    asyncio.run(scenario())
    pids = {d["pid"] for d in server.log if d.get("event") == "listening"}
    assert len(pids) == 2
    assert metric(server, "websocket_backplane_connected") == 2


def test_order_per_publisher_across_processes(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """Two publishers on two processes, 300 messages each as fast as they
    go: every listener, on either process, gets each publisher's messages
    in its order, and every listener the same overall order (the ids)."""
    redis = redis_server()
    a, b = chat(redis.url), chat(redis.url)

    async def scenario() -> None:
        async with Clients() as stack:
            listeners = [await stack.join(s, "race", f"l{n}") for n, s in enumerate((a, b, a, b))]
            pa = await stack.join(a, "race", "pa")
            pb = await stack.join(b, "race", "pb")
            for ws in (*listeners, pa):  # everyone's joins are in
                await until_type(ws, "join", name="pb")

            async def burst(ws: ClientConnection, tag: str) -> None:
                for n in range(300):
                    await ws.send(f"{tag}{n}")

            await asyncio.gather(burst(pa, "a"), burst(pb, "b"))
            orders = []
            for ws in listeners:
                got = [await until_type(ws, "message") for _ in range(600)]
                texts = [d["text"] for d in got]
                assert [t for t in texts if t[0] == "a"] == [f"a{n}" for n in range(300)]
                assert [t for t in texts if t[0] == "b"] == [f"b{n}" for n in range(300)]
                ids = [parse_id(d["id"]) for d in got]
                assert ids == sorted(ids)
                assert len(set(ids)) == 600
                orders.append(texts)
            assert all(order == orders[0] for order in orders)

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_redis_killed_and_back(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """Redis dies: one ``error`` event (backplane_unavailable) however many
    messages go meanwhile, the gauge drops to 0, the members of one process
    still hear each other; Redis back on the same port: the process
    reconnects (an event, the counter), and the two processes talk again."""
    redis = redis_server()
    a, b = chat(redis.url), chat(redis.url)

    async def scenario() -> None:
        async with Clients() as stack:
            ada = await stack.join(a, "lobby", "ada")
            amy = await stack.join(a, "lobby", "amy")
            bob = await stack.join(b, "lobby", "bob")
            for ws in (ada, amy):
                await until_type(ws, "join", name="bob")
            redis.kill()
            for n in range(20):
                await ada.send(f"local {n}")
                assert (await until_type(amy, "message"))["text"] == f"local {n}"
                assert (await until_type(ada, "message"))["text"] == f"local {n}"
            with pytest.raises(TimeoutError):  # bob is on the other process
                await until_type(bob, "message")
            assert metric(a, "websocket_backplane_connected") == 0
            redis.start()
            # Both processes back: a second "connected" each (the first is
            # the one at start; a reader in its backoff takes seconds more).
            deadline = time.monotonic() + 30
            for name, process in (("a", a), ("b", b)):
                while len([d for d in process.log if d.get("state") == "connected"]) < 2:
                    assert time.monotonic() < deadline, f"{name} did not reconnect"
                    await asyncio.sleep(0.05)
            await bob.send("after")
            assert (await until_type(ada, "message"))["text"] == "after"
            assert (await until_type(amy, "message"))["text"] == "after"
            assert (await until_type(bob, "message"))["text"] == "after"
            await ada.send("again")
            assert (await until_type(bob, "message"))["text"] == "again"

    asyncio.run(scenario())
    errors = [d for d in a.log if d.get("event") == "error" and d["kind"] != "abnormal_closure"]
    assert len(errors) == 1, errors
    assert errors[0]["kind"] == "backplane_unavailable"
    assert errors[0]["url"] == redis.url
    states = [d for d in a.log if d.get("event") == "backplane"]
    assert [d["state"] for d in states] == ["connected", "connected"]
    assert states[1]["down_seconds"] > 0
    assert metric(a, "websocket_backplane_connected") == 1
    assert metric(a, "websocket_backplane_reconnects_total") == 1
    assert metric(a, 'websocket_errors_total{kind="backplane_unavailable"}') == 1


@pytest.mark.timeout(90)
def test_resume_with_last_id_while_messages_keep_coming(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """A listener drops mid-stream and comes back with ``?last_id=`` (on the
    other process, then on the same one) while a publisher keeps sending:
    what it got before and after is exactly the publisher's sequence,
    nothing lost, nothing twice, nothing out of order, and no gap notice."""
    redis = redis_server()
    a, b = chat(redis.url), chat(redis.url)
    total = 600

    async def scenario() -> None:
        async with Clients() as stack:
            publisher = await stack.join(a, "resume", "pub")
            listener = await stack.open(room_url(b, "resume", name="lis"))
            got = [await until_type(listener, "join", name="lis")]

            async def publish() -> None:
                for n in range(total):
                    await publisher.send(str(n))
                    if n % 20 == 0:
                        await asyncio.sleep(0.002)

            task = asyncio.create_task(publish())
            for server, drop_at in ((a, 150), (b, 300)):
                while len([d for d in got if d["type"] == "message"]) < drop_at:
                    got.append(await doc(listener))
                await listener.close()
                last = got[-1]["id"]
                listener = await stack.open(room_url(server, "resume", name="lis", last_id=last))
            await task
            while not (got and got[-1].get("text") == str(total - 1)):
                got.append(await doc(listener))
            await listener.close()
            await publisher.close()
            assert not [d for d in got if d["type"] == "gap"]
            texts = [d["text"] for d in got if d["type"] == "message"]
            assert texts == [str(n) for n in range(total)]
            ids = [parse_id(d["id"]) for d in got]
            assert ids == sorted(ids)
            assert len(set(ids)) == len(ids)

    asyncio.run(scenario())


def test_a_last_id_older_than_the_retention_gets_a_gap_notice(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """WS_BACKPLANE_RETENTION=100: after 500 messages, a client back with
    the first id gets ``{"type": "gap", "last_id", "first_id"}`` first, then
    what the stream kept from ``first_id`` on; one back with a recent id
    gets no notice."""
    redis = redis_server()
    server = chat(redis.url, WS_BACKPLANE_RETENTION="100")

    async def scenario() -> None:
        async with connect(room_url(server, "old", name="pub")) as pub:
            first = await doc(pub)
            said = []
            for tens in range(50):  # paced: a reader more than 100 behind would lose some
                for n in range(10):
                    await pub.send(str(10 * tens + n))
                said += [await until_type(pub, "message") for _ in range(10)]
        async with connect(room_url(server, "old", last_id=first["id"])) as late:
            gap = await doc(late)
            assert gap["type"] == "gap"
            assert gap["last_id"] == first["id"]
            replay = [await doc(late) for _ in range(50)]
            assert replay[0]["id"] == gap["first_id"]
            assert parse_id(gap["first_id"]) > parse_id(said[0]["id"])
            assert [d["text"] for d in replay] == [
                d["text"] for d in said if parse_id(d["id"]) >= parse_id(gap["first_id"])
            ][:50]
        async with connect(room_url(server, "old", last_id=said[-3]["id"])) as recent:
            assert [await doc(recent) for _ in range(2)] == said[-2:]
            # pub's leave, late's join and leave, then its own join
            types = [(await doc(recent))["type"] for _ in range(4)]
            assert types == ["leave", "join", "leave", "join"]

    asyncio.run(scenario())


def test_the_password_is_in_no_log_line(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """A Redis with a password: the connected event, the outage's error
    event and the reconnect show the URL with ``***``; a bad URL's start
    error does not show it either."""
    secret = "s3cret-Pa55word"
    redis = redis_server(password=secret)
    server = chat(redis.url)

    async def scenario() -> None:
        async with connect(room_url(server, "pw")) as ws:
            await doc(ws)
            redis.kill()
            await ws.send("during")
            assert (await until_type(ws, "message"))["text"] == "during"
            await asyncio.to_thread(server.wait_event, "error", 10)
            redis.start()
            deadline = time.monotonic() + 20
            while len([d for d in server.log if d.get("event") == "backplane"]) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

    asyncio.run(scenario())
    server.stop()
    output = server.output()
    assert "backplane_unavailable" in output
    assert f"redis://default:***@127.0.0.1:{redis.port}/0" in output
    assert secret not in output
    with pytest.raises(ConfigError) as info:
        load_settings([], {"WS_BACKPLANE_URL": f"redis://u:{secret}@host:99999/0"})
    assert secret not in str(info.value)
    assert "WS_BACKPLANE_URL" in str(info.value)
    assert secret not in repr(load_settings([], {"WS_BACKPLANE_URL": redis.url}))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("rediss://h:6380", "rediss://h:6380"),
        ("redis://u:p%40w@h", "redis://u:***@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _independent_id(raw: str) -> tuple[int, int] | None:
    """An id by hand: two runs of ASCII digits around one dash, each below 2**64."""
    head, dash, tail = raw.partition("-")
    ok = dash and head and tail and all(c in "0123456789" for c in head + tail)
    if not ok or len(head) > 20 or len(tail) > 20:
        return None
    pair = int(head), int(tail)
    return pair if max(pair) < 2**64 else None


@given(
    st.one_of(
        st.text(max_size=45),
        st.from_regex(r"\A[0-9]{1,21}-[0-9]{1,21}\Z"),
        st.tuples(st.integers(0, 2**65), st.integers(0, 2**65)).map(lambda p: f"{p[0]}-{p[1]}"),
    )
)
def test_parse_id_against_an_independent_reading(raw: str) -> None:
    expected = _independent_id(raw)
    if expected is None:
        with pytest.raises(ValueError, match="id"):
            parse_id(raw)
    else:
        assert parse_id(raw) == expected


@pytest.fixture(scope="module")
def local_chat() -> Iterator[ServerProcess]:
    """One chat process on the in-process backplane, for the parsing tests."""
    server = ServerProcess(module="examples.chat", env={"WS_LOG_MESSAGES": "false"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _upgrade_status(server: ServerProcess, query: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(upgrade_request("/ws/rooms/lobby?last_id=" + query.decode("latin-1")))
        return s.recv(64).split(b"\r\n", 1)[0]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=60))
def test_any_last_id_gets_400_or_an_upgrade(local_chat: ServerProcess, raw: bytes) -> None:
    """Whatever a client puts in ``last_id`` (percent-encoded bytes): an id
    upgrades, anything else is 400 - and the server goes on serving."""
    query = urllib.parse.quote_from_bytes(raw, safe="").encode()
    status = _upgrade_status(local_chat, query)
    try:
        text: str | None = raw.decode()
    except UnicodeDecodeError:
        text = None
    valid = text is not None and _independent_id(text) is not None
    assert status == (b"HTTP/1.1 101 Switching Protocols" if valid else b"HTTP/1.1 400 Bad Request")
    assert local_chat.proc.poll() is None


def test_local_backplane_history_and_gap() -> None:
    """The in-process backplane: ids of the streams' shape, increasing;
    history after an id; the gap once the retention trimmed past it."""
    plane = LocalBackplane(retention=3)
    seen: list[Entry] = []

    async def scenario() -> None:
        await plane.subscribe("c", seen.append)
        for n in range(5):
            plane.publish("c", str(n))
        ids = [e.id for e in seen]
        assert [e.data for e in seen] == ["0", "1", "2", "3", "4"]
        assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
        recent = await plane.history("c", ids[2])
        assert ([e.data for e in recent.entries], recent.gap) == (["3", "4"], False)
        old = await plane.history("c", ids[0])
        assert ([e.data for e in old.entries], old.gap) == (["2", "3", "4"], True)
        assert (await plane.history("other", "0-0")).gap is False
        assert (await plane.history("other", ids[0])).gap is True

    asyncio.run(scenario())


class _RacingBackplane(LocalBackplane):
    """The in-process backplane with the race forced: while a client's
    replay is being read, two more messages are published (they reach the
    subscription and are in the history too, as with Redis when entries
    arrive between the subscription and the XRANGE), and one after (only
    the subscription has it). A real LocalBackplane;
    only the timing is arranged."""

    async def history(self, channel: str, after: str, limit: int | None = None) -> Any:
        self.publish(channel, json.dumps({"type": "message", "name": "x", "text": "during 1"}))
        await asyncio.sleep(0)
        self.publish(channel, json.dumps({"type": "message", "name": "x", "text": "during 2"}))
        history = await super().history(channel, after, limit)
        self.publish(channel, json.dumps({"type": "message", "name": "x", "text": "during 3"}))
        return history


@pytest.fixture
def app(service: Any) -> Any:
    import dataclasses

    from examples.chat.app import Rooms, routes
    from server.app import make_app

    return make_app(
        dataclasses.replace(service, backplane=_RacingBackplane()), routes=routes(Rooms())
    )


async def test_messages_published_during_the_replay_come_once_in_order(port: int) -> None:
    lobby = f"ws://127.0.0.1:{port}/ws/rooms/lobby"
    async with connect(lobby + "?name=ada") as ada:
        joined = await doc(ada)
        await ada.send("before")
        before = await until_type(ada, "message")
        async with connect(f"{lobby}?last_id={joined['id']}") as back:
            got = [await doc(back) for _ in range(5)]
            assert [d.get("text", d["type"]) for d in got] == [
                "before",
                "during 1",
                "during 2",
                "during 3",
                "join",
            ]
            assert got[0] == before
            ids = [parse_id(d["id"]) for d in got]
            assert ids == sorted(ids)
            with pytest.raises(TimeoutError):
                await doc(back, 0.3)


def test_redis_is_not_imported_without_a_backplane_url() -> None:
    """redis-py is imported when WS_BACKPLANE_URL is set, not on every start
    (Knative's scale from zero waits on the imports)."""
    code = (
        "import sys, server.__main__, server.app, examples.chat.app\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_drained_members_leave_reaches_the_other_process(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """SIGTERM on one process: its member is closed with 1001, and the
    member on the other process gets the leave (published during the drain,
    sent before the backplane closes) with the count left."""
    redis = redis_server()
    a, b = chat(redis.url, WS_DRAIN_SPREAD="0"), chat(redis.url)

    async def scenario() -> None:
        async with (
            connect(room_url(a, "drain", name="ada")) as ada,
            connect(room_url(b, "drain", name="bob")) as bob,
        ):
            await until_type(ada, "join", name="bob")
            await until_type(bob, "join", name="bob")
            a.proc.send_signal(signal.SIGTERM)
            left = await until_type(bob, "leave")
            assert (left["name"], left["members"]) == ("ada", 1)
            assert ada.close_code in (None, 1001)

    asyncio.run(scenario())
    assert a.proc.wait(20) == 0


def test_a_foreign_entry_in_the_stream_does_not_stop_delivery(
    redis_server: Callable[..., RedisServer], chat: Callable[..., ServerProcess]
) -> None:
    """Something else writes a non-JSON entry to the room's stream: one
    error event, and the room's next messages still arrive."""
    redis = redis_server()
    server = chat(redis.url)

    async def scenario() -> None:
        async with connect(room_url(server, "bad", name="ada")) as ada:
            await doc(ada)
            cli = ["redis-cli", "-p", str(redis.port), "XADD", "ws:stream:chat:bad", "*"]
            subprocess.run([*cli, "d", "not json"], check=True, capture_output=True)
            await ada.send("still")
            assert (await until_type(ada, "message"))["text"] == "still"

    asyncio.run(scenario())
    error = server.wait_event("error")
    assert error["kind"] == "handler_exception"
    assert "chat:bad" in error["detail"]
