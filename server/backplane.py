"""Fan-out across processes and pods: publish to a channel, and every
process subscribed to it delivers to its own connections.

On Knative a room's members are spread over pods with no stickiness, and
with ``WS_WORKERS`` > 1 over the processes of a pod: a message one process
receives reaches the others through a backplane. Two implementations of one
interface (:class:`Backplane`):

- :class:`LocalBackplane` (the default, ``WS_BACKPLANE_URL`` unset): one
  process; the same ids, history and presence, kept in memory;
- :class:`RedisBackplane` (``WS_BACKPLANE_URL=redis://...``): a Redis
  Stream per channel, on redis-py's asyncio client.

Each published message becomes a stream entry, ``XADD <stream> MAXLEN ~ N``
(``N``: ``WS_BACKPLANE_RETENTION``), and its id (``"<ms>-<seq>"``) is the
message's id. Live delivery reads the streams (``XREAD BLOCK``, one reader
connection per process for every channel it has members in), not pub/sub:
the live messages and a reconnecting client's replay (``XRANGE``) are then
the same entries with the same ids in the same order, so a client that
comes back with the last id it saw gets exactly what came after, and a
reader that lost Redis for a while picks up where it stopped instead of
losing what was published meanwhile. Every process sees a channel's entries
in the stream's order, so the messages of one publisher arrive in the order
it sent them (each process sends its publishes through one queue, in order).
Past :data:`PUBLISH_QUEUE` publishes waiting for Redis (a stall), a publish
is dropped, counted and logged (``backplane_overflow``, once a minute at
most): what was taken keeps its order everywhere, and memory stays bounded.

Losing Redis: one ``error`` event (kind ``backplane_unavailable``, the URL
with its password redacted) per outage, ``websocket_backplane_connected``
drops, the reader retries with capped exponential backoff and jitter, and
meanwhile a publish is delivered to this process's own subscribers (with
an id of the same shape, not in any stream: the other processes do not get
it, and a client resuming from it later gets what the stream has after
it). A pipeline that fails with its outcome unknown (a timeout: Redis may
run it when it wakes) is delivered here too; each entry carries this
process's token and a sequence number (fields ``p`` and ``s``), so the
reader skips those it reads back later instead of delivering them twice.
Readiness is not touched: local delivery still works, and failing
readiness on every pod at once would take the whole service out of the
load balancer for a Redis blip.

Presence (:meth:`Backplane.presence_add`): a sorted set per channel of
member keys scored by their expiry; each process refreshes its own members
every :data:`PRESENCE_HEARTBEAT` seconds, so the members of a pod that
crashed drop out of the count after :data:`PRESENCE_TTL` seconds.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .events import emit
from .kinds import ErrorKind
from .metrics import Metrics
from .telemetry import record_error

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "LOCAL_HISTORY_BYTES",
    "PRESENCE_HEARTBEAT",
    "PRESENCE_TTL",
    "Backoff",
    "Backplane",
    "BackplaneUnavailable",
    "Entry",
    "History",
    "LocalBackplane",
    "RedisBackplane",
    "Subscriber",
    "make_backplane",
    "parse_id",
    "redact_url",
]

#: Seconds a member key stays in a channel's presence set without a refresh.
PRESENCE_TTL = 30.0
#: Seconds between a process's refreshes of its members' presence.
PRESENCE_HEARTBEAT = 10.0
#: Seconds a channel's stream is kept after its last publish.
STREAM_IDLE_EXPIRY = 86400
#: Channels the in-process backplane keeps history for once none of them
#: has a subscriber (the oldest are forgotten first).
LOCAL_IDLE_CHANNELS = 10_000
#: Bytes of history the in-process backplane keeps, every channel together
#: (about what the entries cost in memory): past it, idle channels are
#: forgotten (the oldest first), then the oldest entries of the channels
#: published to least recently are trimmed (history reports the gap).
LOCAL_HISTORY_BYTES = 32 * 1024 * 1024
#: What an entry costs besides its data's string (the Entry, its id, the
#: deque's slot), counted against :data:`LOCAL_HISTORY_BYTES`.
_ENTRY_COST = 160
#: Publishes waiting for Redis at most; past it a publish is dropped (counted
#: as ``backplane_overflow``) until the queue has room again.
PUBLISH_QUEUE = 10_000
#: Publishes of this process delivered here after their pipeline failed
#: (Redis may still have taken them) that the reader remembers, to skip
#: them when it reads them from a stream; the oldest are forgotten first.
UNSURE_PUBLISHES = 20_000

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX = 2**64 - 1


def parse_id(raw: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (a Redis Stream id; each part 0 to 2**64-1) as a
    pair that sorts as the ids do. Anything else raises ValueError."""
    match = _ID.fullmatch(raw)
    if match is None:
        raise ValueError("expected an id like 1700000000000-0")
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX or seq > _MAX:
        raise ValueError("an id's parts are at most 2**64-1")
    return ms, seq


def _format_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _successor(key: tuple[int, int]) -> tuple[int, int] | None:
    """The id right after ``key``; None after the largest there is."""
    ms, seq = key
    if seq < _MAX:
        return ms, seq + 1
    return (ms + 1, 0) if ms < _MAX else None


def redact_url(url: str) -> str:
    """``url`` with its password (if any; in the userinfo, or the query's
    ``password=``, which redis-py reads too) replaced by ``***``: what
    logs show."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{netloc}")
        if parts.query:
            query = "&".join(
                f"{name}=***" if unquote(name).lower() == "password" else field
                for field in parts.query.split("&")
                for name in [field.partition("=")[0]]
            )
            parts = parts._replace(query=query)
        return urlunsplit(parts)
    except ValueError:
        return "<unparseable URL>"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One published message: its id (``"<ms>-<seq>"``) and its data."""

    id: str
    data: str


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """What a channel still holds after an id (:meth:`Backplane.history`).

    ``gap`` is true when entries after that id may be gone: trimmed (the
    retention) or lost (a Redis without persistence restarted); ``entries``
    then may not follow on from it. In Redis it is true when the id is older
    than the oldest entry kept (which Redis cannot tell apart from the id
    being the newest entry trimmed, with nothing lost)."""

    entries: tuple[Entry, ...]
    gap: bool


#: A channel's subscriber: called with each entry, in the channel's order.
Subscriber = Callable[[Entry], None]


class BackplaneUnavailable(RuntimeError):
    """The backplane cannot answer now (Redis is unreachable)."""


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is drawn from
    the upper half of ``min(cap, base * 2**n)``."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next(self) -> float:
        ceiling: float = min(self.cap, self.base * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        jitter: float = random.uniform(0, ceiling / 2)  # noqa: S311 - not crypto
        return ceiling / 2 + jitter

    def reset(self) -> None:
        self.attempts = 0


class Backplane(abc.ABC):
    """Publish to channels; deliver each channel's entries to the one
    subscriber this process has for it (an app fans out to its members).

    An app subscribes a channel when it gains its first local member and
    unsubscribes it when it loses its last. Entries reach the subscriber in
    the channel's order, the same in every process."""

    #: Entries a channel keeps for :meth:`history` (approximately, in Redis).
    retention: int

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self._subscribers: dict[str, Subscriber] = {}
        self._presence: dict[str, set[str]] = {}
        self._failure_logged = -60.0

    @property
    @abc.abstractmethod
    def up(self) -> bool:
        """Whether publishes reach the other processes now."""

    async def start(self) -> None:  # noqa: B027 - optional
        """Begin (on the event loop that serves); never waits for Redis."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Send what is queued (briefly) and stop."""

    @abc.abstractmethod
    def publish(self, channel: str, data: str) -> None:
        """Publish ``data`` to ``channel``; never blocks. The publishes of
        one process reach every subscriber in the order they were made
        (in Redis, one past :data:`PUBLISH_QUEUE` waiting is dropped)."""

    async def subscribe(self, channel: str, subscriber: Subscriber) -> None:
        """Deliver ``channel``'s entries published from now on to
        ``subscriber`` (replacing any other). Once it returns, every entry
        not in a later :meth:`history` reaches ``subscriber``."""
        self._subscribers[channel] = subscriber

    def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` here."""
        self._subscribers.pop(channel, None)

    @abc.abstractmethod
    async def history(self, channel: str, after: str, limit: int | None = None) -> History:
        """The entries of ``channel`` after id ``after`` (exclusive), oldest
        first - the first ``limit`` of them if given (a page: read the next
        one after the last id of this one) - and whether some were lost
        right after ``after``. Raises BackplaneUnavailable."""

    async def presence_add(self, channel: str, key: str) -> int:
        """Count ``key`` (unique to one member) in ``channel``; the
        channel's members in every process now."""
        self._presence.setdefault(channel, set()).add(key)
        return len(self._presence[channel])

    async def presence_remove(self, channel: str, key: str) -> int:
        """Stop counting ``key``; the channel's members left."""
        keys = self._presence.get(channel)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._presence[channel]
        return len(keys) if keys else 0

    def _deliver(self, channel: str, entry: Entry) -> None:
        subscriber = self._subscribers.get(channel)
        if subscriber is None:
            return
        try:
            subscriber(entry)
        except Exception:  # one bad entry or subscriber must not stop delivery
            now = time.monotonic()
            if now - self._failure_logged >= 60.0:  # one event a minute at most
                self._failure_logged = now
                record_error(
                    None,
                    ErrorKind.HANDLER_EXCEPTION,
                    f"a subscriber of channel {channel[:64]!r} failed on entry {entry.id}",
                    exc_info=sys.exc_info(),
                )


class _LocalIds:
    """Ids of the streams' shape, made here: later than both the clock and
    the last id seen in the channel."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}

    def seen(self, channel: str, key: tuple[int, int]) -> None:
        if key > self.last.get(channel, (0, 0)):
            self.last[channel] = key

    def make(self, channel: str) -> tuple[int, int]:
        now = time.time_ns() // 1_000_000
        last = self.last.get(channel, (0, 0))
        key = (now, 0) if now > last[0] else (last[0], last[1] + 1)
        self.last[channel] = key
        return key


class LocalBackplane(Backplane):
    """One process's channels, in memory: the default. ``retention``
    entries per channel and :data:`LOCAL_HISTORY_BYTES` in all; channels
    without a subscriber are forgotten, oldest first, past
    :data:`LOCAL_IDLE_CHANNELS` or the bytes."""

    def __init__(self, retention: int = 1000, max_bytes: int = LOCAL_HISTORY_BYTES) -> None:
        super().__init__(retention)
        self.max_bytes = max_bytes
        #: Channels in the order of their last publish (the oldest first).
        self._streams: collections.OrderedDict[str, collections.deque[Entry]] = (
            collections.OrderedDict()
        )
        #: Per channel, the newest id trimmed away.
        self._trimmed: dict[str, tuple[int, int]] = {}
        self._ids = _LocalIds()
        #: What every channel's entries cost (see :func:`_cost`).
        self.bytes = 0

    @property
    def up(self) -> bool:
        return True

    def publish(self, channel: str, data: str) -> None:
        entry = Entry(_format_id(self._ids.make(channel)), data)
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = collections.deque()
            self._forget_idle()
        self._streams.move_to_end(channel)
        if len(stream) >= self.retention:
            self._trim(channel, stream)
        stream.append(entry)
        self.bytes += _cost(entry)
        if self.bytes > self.max_bytes:
            self._shed(channel)
        self._deliver(channel, entry)

    def _trim(self, channel: str, stream: collections.deque[Entry]) -> None:
        """Drop ``channel``'s oldest entry (its history then has a gap)."""
        oldest = stream.popleft()
        self.bytes -= _cost(oldest)
        self._trimmed[channel] = parse_id(oldest.id)

    def _forget(self, channel: str) -> None:
        stream = self._streams.pop(channel)
        self.bytes -= sum(_cost(e) for e in stream)
        self._trimmed.pop(channel, None)
        self._ids.last.pop(channel, None)

    def _forget_idle(self) -> None:
        idle = len(self._streams) - LOCAL_IDLE_CHANNELS
        for channel in list(self._streams):
            if idle <= 0:
                break
            if channel not in self._subscribers:
                self._forget(channel)
                idle -= 1

    def _shed(self, current: str) -> None:
        """Over ``max_bytes``: forget idle channels, the oldest first; then
        trim the oldest entries of the channels published to least
        recently (``current``'s last of all; its newest entry stays)."""
        for channel in list(self._streams):
            if self.bytes <= self.max_bytes:
                return
            if channel != current and channel not in self._subscribers:
                self._forget(channel)
        for channel, stream in list(self._streams.items()):
            keep = 1 if channel == current else 0
            while self.bytes > self.max_bytes and len(stream) > keep:
                self._trim(channel, stream)
            if self.bytes <= self.max_bytes:
                return

    async def history(self, channel: str, after: str, limit: int | None = None) -> History:
        key = parse_id(after)
        stream = self._streams.get(channel, ())
        entries: list[Entry] = []
        for entry in reversed(stream):  # the newest first: stop at ``after``
            if parse_id(entry.id) <= key:
                break
            entries.append(entry)
        entries.reverse()
        if limit is not None:
            del entries[limit:]
        gap = self._trimmed.get(channel, (0, 0)) > key
        if channel not in self._streams and key > (0, 0):
            gap = True  # forgotten, or never here: nothing follows on from it
        return History(tuple(entries), gap)


def _cost(entry: Entry) -> int:
    """About what an in-process entry costs in memory."""
    return sys.getsizeof(entry.data) + _ENTRY_COST


class RedisBackplane(Backplane):
    """Channels as Redis Streams (see the module's docstring)."""

    #: Milliseconds an XREAD waits for entries before it asks again.
    BLOCK_MS = 5000
    #: Seconds between the reader's PINGs while it has no channel to read.
    IDLE_PING = 1.0
    #: Connections for publishing, presence and history (the reader has its own).
    POOL_SIZE = 16
    #: Seconds a command waits for one of them before it counts as an outage.
    POOL_WAIT = 10.0

    def __init__(
        self,
        url: str,
        retention: int = 1000,
        metrics: Metrics | None = None,
        *,
        prefix: str = "ws:",
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(retention)
        self.url = url
        self.prefix = prefix
        self.metrics = metrics or Metrics()
        self.backoff = backoff or Backoff()
        self._token = uuid.uuid4().hex[:12]
        self._client: redis.asyncio.Redis | None = None
        self._reader: redis.asyncio.Redis | None = None
        self._reader_id: int | None = None
        #: Per subscribed channel, the id its reading goes on from (None:
        #: fixed at the next connection).
        self._positions: dict[str, str | None] = {}
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._queued = asyncio.Event()
        self._ids = _LocalIds()
        self._up = False
        self._down_since: float | None = None
        self._outage_logged = False
        self._tasks: list[asyncio.Task[None]] = []
        self._unblocks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._writing = False
        #: The sequence number of this process's next publish (field ``s``).
        self._seq = 0
        #: Sequence numbers delivered here whose pipeline failed: the reader
        #: skips them if Redis took them after all (insertion-ordered, bounded).
        self._unsure: dict[int, None] = {}
        self._overflow_logged = -60.0

    @property
    def up(self) -> bool:
        return self._up

    def _key(self, channel: str) -> str:
        return f"{self.prefix}stream:{channel}"

    def _presence_key(self, channel: str) -> str:
        return f"{self.prefix}presence:{channel}"

    # -- connection state ----------------------------------------------------

    def _connected(self) -> None:
        if self._up:
            return
        self._up = True
        self.metrics.backplane_connected.inc()
        self.backoff.reset()
        fields: dict[str, Any] = {"state": "connected", "url": redact_url(self.url)}
        if self._down_since is not None:
            fields["down_seconds"] = round(time.monotonic() - self._down_since, 3)
            self.metrics.backplane_reconnects.inc()
        self._down_since = None
        self._outage_logged = False
        emit("backplane", **fields)

    def _lost(self, exc: BaseException) -> None:
        """Redis failed: one error event per outage, the gauge, the state."""
        if self._up:
            self._up = False
            self.metrics.backplane_connected.dec()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._reader_id = None
        if self._outage_logged:
            return
        self._outage_logged = True
        detail = _describe(exc)
        record_error(
            self.metrics,
            ErrorKind.BACKPLANE_UNAVAILABLE,
            f"redis unreachable: {detail}; delivering to this process only, retrying",
            url=redact_url(self.url),
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
        }
        # A blocking pool: past ``POOL_SIZE`` commands at once (a herd of
        # reconnecting clients) a command waits for a connection; redis-py's
        # default pool raises MaxConnectionsError at its 101st instead,
        # which would read as an outage. It also bounds how many histories
        # are read at once.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.POOL_SIZE,
            timeout=self.POOL_WAIT,
            socket_timeout=5.0,
            **common,
        )
        self._client = redis.asyncio.Redis.from_pool(pool)
        self._reader = redis.asyncio.Redis.from_url(
            self.url,
            socket_timeout=self.BLOCK_MS / 1000 + 5.0,
            single_connection_client=True,
            **common,
        )
        with contextlib.suppress(Exception):  # one attempt; the reader goes on trying
            await self._connect()
        loop = asyncio.get_running_loop()
        for work in (self._read, self._write, self._heartbeat):
            self._tasks.append(loop.create_task(work()))

    async def close(self) -> None:
        # What the drain's last closes publish comes a moment after them
        # (an app's on_close counts presence first): wait for the queue to
        # stay empty a tenth of a second, two seconds at most.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            if not self._queue and not self._writing:
                break
        self._closing = True
        self._queued.set()
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        if writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in (self._client, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -- publishing ----------------------------------------------------------

    def publish(self, channel: str, data: str) -> None:
        if len(self._queue) >= PUBLISH_QUEUE:
            # Delivering it here would put it ahead of the queued ones (and
            # reach no other process); queueing it would grow without bound.
            now = time.monotonic()
            log = now - self._overflow_logged >= 60.0
            if log:
                self._overflow_logged = now
            record_error(
                self.metrics,
                ErrorKind.BACKPLANE_OVERFLOW,
                f"{PUBLISH_QUEUE} publishes are waiting for redis: dropping publishes "
                "until it takes them",
                log=log,
                queued=len(self._queue),
            )
            return
        self._queue.append((channel, data))
        self._queued.set()

    def _deliver_here(self, channel: str, data: str) -> None:
        """A publish Redis did not take: to this process's subscriber only."""
        self._deliver(channel, Entry(_format_id(self._ids.make(channel)), data))

    async def _write(self) -> None:
        """Send the queue to Redis in order, a pipeline at a time; while
        Redis is unreachable, deliver it here."""
        from redis.exceptions import RedisError

        assert self._client is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 256))]
            if not self._up:
                for channel, data in batch:
                    self._deliver_here(channel, data)
                continue
            first = self._seq
            self._seq += len(batch)
            pipe = self._client.pipeline(transaction=False)
            for seq, (channel, data) in enumerate(batch, first):
                key = self._key(channel)
                fields: Any = {"d": data, "p": self._token, "s": seq}
                pipe.xadd(key, fields, maxlen=self.retention, approximate=True)
                pipe.expire(key, STREAM_IDLE_EXPIRY)
            self._writing = True
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self._lost(exc)
                # Possibly taken by Redis too (a timeout: it may run them
                # when it wakes): the reader skips them if it reads them.
                for seq in range(first, first + len(batch)):
                    self._unsure[seq] = None
                while len(self._unsure) > UNSURE_PUBLISHES:
                    del self._unsure[next(iter(self._unsure))]
                for channel, data in batch:
                    self._deliver_here(channel, data)
            finally:
                self._writing = False

    # -- reading -------------------------------------------------------------

    async def subscribe(self, channel: str, subscriber: Subscriber) -> None:
        await super().subscribe(channel, subscriber)
        if channel in self._positions:
            return
        self._positions[channel] = None
        with contextlib.suppress(Exception):  # unreachable: fixed when the reader connects
            self._positions[channel] = await self._last_id(channel)
            self._wake_reader()

    def unsubscribe(self, channel: str) -> None:
        super().unsubscribe(channel)
        self._positions.pop(channel, None)

    async def _last_id(self, channel: str) -> str:
        assert self._client is not None
        newest = await self._client.xrevrange(self._key(channel), count=1)
        return str(newest[0][0]) if newest else "0-0"

    def _wake_reader(self) -> None:
        """Interrupt the reader's XREAD so it reads the new channel too."""
        if self._reader_id is None or self._client is None:
            return
        client, reader_id = self._client, self._reader_id

        async def unblock() -> None:
            with contextlib.suppress(Exception):  # without the right: BLOCK_MS later
                await client.execute_command(  # type: ignore[no-untyped-call]
                    "CLIENT", "UNBLOCK", reader_id
                )

        task = asyncio.get_running_loop().create_task(unblock())
        self._unblocks.add(task)
        task.add_done_callback(self._unblocks.discard)

    async def _connect(self) -> None:
        """(Re)connect the reader: its client id (for CLIENT UNBLOCK), the
        positions of channels subscribed while Redis was away."""
        from redis.exceptions import RedisError

        assert self._reader is not None
        try:
            self._reader_id = int(await self._reader.client_id())
            if self._down_since is not None and self._client is not None:
                # Back after an outage (a Redis restart): the pool's idle
                # connections are to the old server, and the first command
                # on each would fail and read as a new outage (the next
                # publish delivered here only). Close them: the next
                # commands connect afresh.
                await self._client.connection_pool.disconnect(inuse_connections=False)
            for channel, position in list(self._positions.items()):
                if position is None:
                    self._positions[channel] = await self._last_id(channel)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            raise
        self._connected()

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        assert self._reader is not None
        assert self._client is not None
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            try:
                if self._reader_id is None:
                    await self._connect()
                    checked = loop.time()
                streams: Any = {
                    self._key(c): p for c, p in self._positions.items() if p is not None
                }
                if not streams:
                    # Nothing to read: still notice an outage (the gauge,
                    # the error event) while no one is connected here.
                    if loop.time() - checked >= self.IDLE_PING:
                        await self._reader.ping()
                        checked = loop.time()
                    await asyncio.sleep(0.05)
                    continue
                checked = loop.time()
                replies: Any = await self._reader.xread(streams, count=512, block=self.BLOCK_MS)
            except (RedisError, OSError) as exc:
                self._lost(exc)
                await asyncio.sleep(self.backoff.next())
                continue
            for key, entries in replies or ():
                channel = str(key)[len(self.prefix) + len("stream:") :]
                for entry_id, fields in entries:
                    if channel not in self._positions:
                        break  # unsubscribed meanwhile
                    self._positions[channel] = entry_id
                    self._ids.seen(channel, parse_id(entry_id))
                    if self._delivered_here(fields):
                        continue
                    self._deliver(channel, Entry(entry_id, fields.get("d", "")))

    def _delivered_here(self, fields: dict[str, str]) -> bool:
        """Whether an entry is one of this process's publishes that was
        delivered here already (its pipeline failed, Redis ran it later)."""
        if not self._unsure or fields.get("p") != self._token:
            return False
        try:
            seq = int(fields.get("s", ""))
        except ValueError:
            return False
        if seq not in self._unsure:
            return False
        del self._unsure[seq]
        return True

    async def history(self, channel: str, after: str, limit: int | None = None) -> History:
        from redis.exceptions import RedisError, ResponseError

        start = parse_id(after)
        assert self._client is not None
        key = self._key(channel)
        try:
            try:
                info = await self._client.xinfo_stream(key)
            except ResponseError:  # no such key: expired, or Redis lost it
                return History((), start > (0, 0))
            # Trimming does not move max-deleted-entry-id (Redis 7.0): a
            # last id older than the oldest entry kept is a gap - entries
            # were trimmed after it, or the stream started again (a Redis
            # without persistence restarted). At the boundary (the last id
            # is the newest entry trimmed) nothing was lost, but Redis does
            # not tell that apart, so the notice errs on the side of a gap.
            first = info.get("first-entry")
            oldest = parse_id(str(first[0])) if first else None
            # From the id after ``after``, inclusive: Redis refuses an
            # exclusive ``(<2**64-1>-<2**64-1>`` (nothing can follow it).
            following = _successor(start)
            rows: Any = (
                await self._client.xrange(
                    key,
                    min=_format_id(following),
                    max="+",
                    count=self.retention + 1000 if limit is None else limit,
                )
                if following is not None
                else ()
            )
        except (RedisError, OSError) as exc:
            self._lost(exc)
            raise BackplaneUnavailable(_describe(exc)) from exc
        entries = tuple(Entry(str(i), f.get("d", "")) for i, f in rows)
        return History(entries, oldest is not None and start < oldest)

    # -- presence ------------------------------------------------------------

    def _member(self, key: str) -> str:
        return f"{self._token}:{key}"

    async def _count(self, channel: str, add: str | None, remove: str | None) -> int:
        from redis.exceptions import RedisError

        local = len(self._presence.get(channel, ()))
        if not self._up or self._client is None:
            return local
        now = time.time()
        pipe = self._client.pipeline(transaction=False)
        zkey = self._presence_key(channel)
        if add is not None:
            pipe.zadd(zkey, {self._member(add): now + PRESENCE_TTL})
        if remove is not None:
            pipe.zrem(zkey, self._member(remove))
        pipe.zremrangebyscore(zkey, "-inf", now)
        pipe.zcard(zkey)
        pipe.expire(zkey, int(PRESENCE_TTL) * 2)
        try:
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return local
        return int(replies[-2])

    async def presence_add(self, channel: str, key: str) -> int:
        await super().presence_add(channel, key)
        return await self._count(channel, key, None)

    async def presence_remove(self, channel: str, key: str) -> int:
        await super().presence_remove(channel, key)
        return await self._count(channel, None, key)

    async def _heartbeat(self) -> None:
        from redis.exceptions import RedisError

        assert self._client is not None
        while True:
            await asyncio.sleep(PRESENCE_HEARTBEAT)
            if not self._up or not self._presence:
                continue
            expiry = time.time() + PRESENCE_TTL
            pipe = self._client.pipeline(transaction=False)
            for channel, keys in self._presence.items():
                zkey = self._presence_key(channel)
                pipe.zadd(zkey, {self._member(k): expiry for k in keys})
                pipe.expire(zkey, int(PRESENCE_TTL) * 2)
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self._lost(exc)


def _describe(exc: BaseException) -> str:
    """An exception as a short line with no URL in it (redis-py's messages
    name the host and port, never the password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


def make_backplane(url: str, retention: int, metrics: Metrics | None = None) -> Backplane:
    """The backplane ``WS_BACKPLANE_URL`` names: Redis, or in-process if empty."""
    if not url:
        return LocalBackplane(retention)
    return RedisBackplane(url, retention, metrics)


logging.getLogger("redis").setLevel(logging.WARNING)
