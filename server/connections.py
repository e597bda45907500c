"""The open connections: the registry, keepalive, the maximum age and the drain.

Knative sends SIGTERM when it scales a pod down or rolls out a revision,
and Tornado's ``HTTPServer.close_all_connections()`` does not reach
upgraded WebSockets, so :class:`Registry` tracks every open connection and
drains them itself:

1. from the moment :meth:`Registry.drain` starts, ``draining`` is true:
   ``/readyz`` answers 503 and new upgrades get 503;
2. the connections are given slots spread evenly, in random order, over
   the spread window (``DrainPolicy.spread``, at most half the timeout), so
   their clients do not all reconnect in the same instant; until its slot a
   connection echoes as usual;
3. from its slot, each connection is sent close 1001 (going away) once
   everything it had sent has been handled and - in the first moment after
   its slot only - nothing has come in on it for that moment (see
   ``DrainPolicy.quiet``), or after a grace period if it never pauses;
4. it returns once every connection is gone, or when the timeout runs out
   (aborting those left).

With a maximum age (``MaxAge``) each connection is closed the same way, with
1001 and the reason "max connection age", at a deadline drawn for it from
the last tenth of the age: connections opened together (after a rollout,
a scale-up or a drain elsewhere) do not close, and reconnect, together.
1001 and not 1012 (Service Restart): RFC 6455's 1001 says the endpoint is
"going away", and the IANA registry's 1012 asks a client to wait before it
reconnects (5 to 30 s, as its registration describes); a rotated connection
should reconnect at once, to another pod or this one.

Keepalive is one timer for all connections: every ``interval`` seconds each
is pinged, and ``timeout`` seconds later those that did not answer fail
with 1011 (a connection paused for backpressure is judged by the send
timeout instead; see :meth:`server.transport.WebSocketTransport.check_pong`).

The registry drives connections through :class:`Managed` and knows nothing
of handlers or transports; :meth:`Registry.discard` says whether it was the
registry that closed a connection (the ``cause`` of its ``close`` event).
Each connection is added with its owner (the handler an app wrote), and
:class:`Connections` is the apps' read-only view of those owners: iterate,
count, select by handler class, path or route.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import re
import signal
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar, overload

from .kinds import CloseCause
from .wire import CloseCode

__all__ = [
    "DRAIN_REASON",
    "MAX_AGE_REASON",
    "STOP_SIGNALS",
    "Connections",
    "DrainPolicy",
    "Keepalive",
    "Managed",
    "MaxAge",
    "Registry",
]

#: The signals that start a drain (Knative sends SIGTERM; SIGINT is Ctrl-C).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

#: How often the drain loop looks at the connections still open.
_DRAIN_TICK = 0.01
#: The close reasons (with code 1001) of a drain and of the maximum age.
DRAIN_REASON = "server shutting down"
MAX_AGE_REASON = "max connection age"


class Managed(Protocol):
    """What the registry needs of a connection."""

    def ping(self) -> bool:
        """Send a keepalive ping; False if the connection is closing."""

    def check_pong(self, timeout: float) -> None:
        """Fail the connection if the last ping went unanswered."""

    def go_away(self, force: bool, quiet: float, code: int, reason: str) -> bool:
        """Close with ``code`` and ``reason`` if everything received was
        handled and nothing came in for ``quiet`` seconds (or ``force``);
        True once the close frame is sent."""

    def closing(self) -> bool:
        """The close handshake has begun (by either side), or the connection is gone."""

    def abort(self) -> None:
        """Drop the connection at once."""


@dataclasses.dataclass(frozen=True)
class Keepalive:
    """Seconds between pings (0: none) and to wait for a pong (0: forever)."""

    interval: float = 30.0
    timeout: float = 20.0


@dataclasses.dataclass(frozen=True)
class DrainPolicy:
    """How long a drain may take, and when it stops waiting for a pause."""

    timeout: float = 20.0
    #: For this many seconds from its slot in the drain, a connection is
    #: closed only once nothing has come in on it for this many seconds: a
    #: client with Nagle's algorithm on (as Tornado's own client is) holds
    #: its small writes until we acknowledge what it sent before, and Linux
    #: delays that acknowledgement by up to 200 ms. What it had written
    #: before its slot would otherwise reach us after our close frame,
    #: and go unanswered. Such writes follow a read from before the slot,
    #: so they are in by then; after it, a connection is closed at its first
    #: pause (a client in a send-and-wait-for-the-echo loop is never quiet
    #: for long, and would otherwise be held until the force point).
    quiet: float = 0.25
    #: A connection that never pauses is closed anyway after this share of
    #: the timeout, capped at ``force_after_max`` seconds.
    force_share: float = 0.5
    force_after_max: float = 5.0
    #: Seconds over which the 1001s are spread (``WS_DRAIN_SPREAD``), at
    #: most ``spread_share`` of the timeout: the last slot leaves the other
    #: half for that connection's pause or force point and its handshake.
    spread: float = 0.0
    spread_share: float = 0.5

    def window(self, timeout: float) -> float:
        """The spread window of a drain that may take ``timeout`` seconds."""
        return min(self.spread, timeout * self.spread_share)


@dataclasses.dataclass(frozen=True)
class MaxAge:
    """The longest a connection stays open (``WS_MAX_CONNECTION_AGE``, 0: no limit)."""

    seconds: float = 0.0
    #: Each connection's deadline is drawn uniformly from the last
    #: ``jitter`` share of ``seconds``: [0.9, 1.0] x ``seconds`` by default.
    jitter: float = 0.1

    def deadline(self, draw: float) -> float:
        """Seconds after the open when a connection is closed, for a
        ``draw`` from [0, 1): never after ``seconds``."""
        return self.seconds * (1.0 - self.jitter * draw)


class Registry:
    """The open connections, their keepalive, maximum age and drain."""

    def __init__(
        self, keepalive: Keepalive, drain: DrainPolicy, max_age: MaxAge | None = None
    ) -> None:
        self.keepalive = keepalive
        self.drain_policy = drain
        self.max_age = max_age or MaxAge()
        #: Each open connection, and its owner (the app's handler; None if
        #: it was added without one).
        self.connections: dict[Managed, Any] = {}
        #: The apps' read-only view of the open connections.
        self.view = Connections(self)
        #: Upgrades accepted and not yet open (or failed): they count
        #: against the cap from the moment they are let in.
        self.reserved = 0
        self.draining = False
        self._keepalive_task: asyncio.Task[None] | None = None
        # With a maximum age: each connection's timer, those past their
        # deadline waiting for a pause (with their force point), and the
        # task that looks at them.
        self._age_timers: dict[Managed, asyncio.TimerHandle] = {}
        self._retiring: dict[Managed, float] = {}
        self._retire_task: asyncio.Task[None] | None = None
        # Connections a drain under way has given a slot to, by slot.
        self._drain_active: dict[Managed, float] | None = None
        # The connections the registry closed, and why.
        self._causes: dict[Managed, CloseCause] = {}

    def __len__(self) -> int:
        return len(self.connections)

    def reserve(self, limit: int) -> bool:
        """Hold a place for an upgrade about to be handed over; False when
        ``limit`` (0: none) open or reserved connections are there already.
        Every True is matched by one :meth:`release`."""
        if limit and len(self.connections) + self.reserved >= limit:
            return False
        self.reserved += 1
        return True

    def release(self) -> None:
        """Give back a place :meth:`reserve` held (the upgrade is open and
        added, or it failed)."""
        self.reserved -= 1

    def add(self, connection: Managed, owner: Any = None) -> None:
        """Track an open connection (``owner``: what :class:`Connections`
        shows for it, the handler); start the shared keepalive if needed,
        and its maximum-age timer."""
        self.connections[connection] = owner
        if self.keepalive.interval > 0 and (
            self._keepalive_task is None or self._keepalive_task.done()
        ):
            self._keepalive_task = asyncio.ensure_future(self._keep_alive())
        loop = asyncio.get_running_loop()
        age = self.max_age
        if age.seconds > 0:
            now = loop.time()
            self._age_timers[connection] = loop.call_at(
                now + age.deadline(random.random()),  # noqa: S311 - jitter, not a secret
                self._retire,
                connection,
                now + age.seconds,
            )
        if self._drain_active is not None:  # its upgrade began before the drain
            self._drain_active[connection] = loop.time()

    def discard(self, connection: Managed) -> CloseCause | None:
        """Stop tracking a closed connection; the cause, if the registry closed it."""
        self.connections.pop(connection, None)
        if not self.connections and self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        timer = self._age_timers.pop(connection, None)
        if timer is not None:
            timer.cancel()
        self._retiring.pop(connection, None)
        if self._drain_active is not None:
            self._drain_active.pop(connection, None)
        return self._causes.pop(connection, None)

    def set_cause(self, connection: Managed, cause: CloseCause) -> None:
        """Record why the server side is closing ``connection`` (a handler's
        own close); :meth:`discard` returns it."""
        if connection in self.connections:
            self._causes.setdefault(connection, cause)

    def _go_away(
        self, connection: Managed, force: bool, quiet: float, cause: CloseCause, reason: str
    ) -> bool:
        """Close ``connection`` for ``cause`` at its pause; True once it is closing."""
        if connection.closing():
            return True
        if connection.go_away(force, quiet, CloseCode.GOING_AWAY, reason):
            self._causes[connection] = cause
            return True
        return False

    # -- the maximum age ------------------------------------------------------

    def _retire(self, connection: Managed, force_at: float) -> None:
        """``connection``'s deadline: close it at its first pause from now,
        at the latest at ``force_at`` (its full age)."""
        self._age_timers.pop(connection, None)
        if connection not in self.connections:
            return
        loop = asyncio.get_running_loop()
        if self._go_away(
            connection, loop.time() >= force_at, 0.0, CloseCause.MAX_AGE, MAX_AGE_REASON
        ):
            return
        self._retiring[connection] = force_at
        if self._retire_task is None or self._retire_task.done():
            self._retire_task = asyncio.ensure_future(self._retire_busy())

    async def _retire_busy(self) -> None:
        """Close the connections past their deadline that were busy then."""
        loop = asyncio.get_running_loop()
        while self._retiring:
            await asyncio.sleep(_DRAIN_TICK)
            now = loop.time()
            for connection, force_at in list(self._retiring.items()):
                if connection not in self.connections or self._go_away(
                    connection, now >= force_at, 0.0, CloseCause.MAX_AGE, MAX_AGE_REASON
                ):
                    self._retiring.pop(connection, None)

    # -- keepalive ------------------------------------------------------------

    async def _keep_alive(self) -> None:
        interval, timeout = self.keepalive.interval, self.keepalive.timeout
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval
        while self.connections:
            await asyncio.sleep(max(0.0, next_ping - loop.time()))
            next_ping += interval
            pinged = [c for c in list(self.connections) if c.ping()]
            if timeout > 0 and pinged:
                await asyncio.sleep(timeout)
                for connection in pinged:
                    if connection in self.connections:
                        connection.check_pong(timeout)

    # -- the drain ------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> int:
        """Close every connection with 1001 within ``timeout`` seconds (the
        policy's by default), spread over the policy's window; return how
        many had to be aborted."""
        self.draining = True
        policy = self.drain_policy
        timeout = policy.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        force_after = min(timeout * policy.force_share, policy.force_after_max)
        window = policy.window(timeout)
        order = list(self.connections)
        random.shuffle(order)
        count = len(order)
        # Evenly spaced slots: the first at once, the last a share of the
        # window before its end (a single connection is closed at once).
        waiting = collections.deque((start + window * i / count, c) for i, c in enumerate(order))
        active = self._drain_active = {}
        try:
            while self.connections and loop.time() < deadline:
                now = loop.time()
                while waiting and waiting[0][0] <= now:
                    slot, connection = waiting.popleft()
                    if connection in self.connections:
                        active[connection] = slot
                for connection, slot in list(active.items()):
                    quiet = policy.quiet if now < slot + policy.quiet else 0.0
                    if self._go_away(
                        connection, now >= slot + force_after, quiet, CloseCause.DRAIN, DRAIN_REASON
                    ):
                        active.pop(connection, None)
                await asyncio.sleep(_DRAIN_TICK)
        finally:
            self._drain_active = None
        aborted = len(self.connections)
        for connection in list(self.connections):
            self._causes.setdefault(connection, CloseCause.DRAIN)
            connection.abort()
        return aborted


_T = TypeVar("_T")


class Connections:
    """The open connections of every route, as their handlers, read-only.

    ``len(view)``, ``handler in view`` and ``for handler in view`` see the
    connections that are open and not closing (a handler is in it from just
    before its ``open()`` until its close handshake begins). Iteration and
    :meth:`select` work on a snapshot, so a handler may write, close or
    open connections while going through them. Nothing here changes the
    registry: close a connection through its handler.

    Each call goes through every open connection: fine for a broadcast to
    a room among thousands; an app with many more keeps its own index (by
    room, by user) in a shared object passed to ``initialize()``.
    """

    __slots__ = ("_registry",)

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _open(self) -> list[Any]:
        return [
            owner
            for connection, owner in list(self._registry.connections.items())
            if owner is not None and not connection.closing()
        ]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._open())

    def __len__(self) -> int:
        return len(self._open())

    def __contains__(self, handler: object) -> bool:
        return any(owner is handler for owner in self._open())

    @overload
    def select(
        self, cls: type[_T], *, path: str | None = ..., route: str | None = ...
    ) -> list[_T]: ...

    @overload
    def select(
        self, cls: None = ..., *, path: str | None = ..., route: str | None = ...
    ) -> list[Any]: ...

    def select(
        self, cls: type[Any] | None = None, *, path: str | None = None, route: str | None = None
    ) -> list[Any]:
        """The open connections' handlers that are instances of ``cls``,
        whose request path is ``path`` (``/ws/rooms/lobby``), and whose path
        matches the URL pattern ``route`` as Tornado matches it
        (``r"/ws/rooms/([a-z0-9-]+)"``, anchored at both ends); each filter
        given applies."""
        pattern = None
        if route is not None:
            pattern = re.compile(route if route.endswith("$") else route + "$")
        return [
            owner
            for owner in self._open()
            if (cls is None or isinstance(owner, cls))
            and (path is None or owner.request.path == path)
            and (pattern is None or pattern.match(owner.request.path) is not None)
        ]
