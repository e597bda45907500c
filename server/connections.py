"""The open connections: the registry, keepalive and the drain.

Knative sends SIGTERM when it scales a pod down or rolls out a revision,
and Tornado's ``HTTPServer.close_all_connections()`` does not reach
upgraded WebSockets, so :class:`Registry` tracks every open connection and
drains them itself:

1. from the moment :meth:`Registry.drain` starts, ``draining`` is true:
   ``/readyz`` answers 503 and new upgrades get 503;
2. each connection is sent close 1001 (going away) once everything it had
   sent has been handled and - in the drain's first moment only - nothing
   has come in on it for that moment (see ``DrainPolicy.quiet``), or after
   a grace period if it never pauses;
3. it returns once every connection is gone, or when the timeout runs out
   (aborting those left).

Keepalive is one timer for all connections: every ``interval`` seconds each
is pinged, and ``timeout`` seconds later those that did not answer fail
with 1011 (a connection paused for backpressure is judged by the send
timeout instead; see :meth:`server.transport.WebSocketTransport.check_pong`).

The registry drives connections through :class:`Managed` and knows nothing
of handlers or transports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from typing import Protocol

__all__ = ["STOP_SIGNALS", "DrainPolicy", "Keepalive", "Managed", "Registry"]

#: The signals that start a drain (Knative sends SIGTERM; SIGINT is Ctrl-C).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

#: How often the drain loop looks at the connections still open.
_DRAIN_TICK = 0.01


class Managed(Protocol):
    """What the registry needs of a connection."""

    def ping(self) -> bool:
        """Send a keepalive ping; False if the connection is closing."""

    def check_pong(self, timeout: float) -> None:
        """Fail the connection if the last ping went unanswered."""

    def go_away(self, force: bool, quiet: float) -> bool:
        """Close with 1001 if everything received was handled and nothing
        came in for ``quiet`` seconds (or ``force``); True once the close
        frame is sent."""

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
    #: For this many seconds from the start of the drain, a connection is
    #: closed only once nothing has come in on it for this many seconds: a
    #: client with Nagle's algorithm on (as Tornado's own client is) holds
    #: its small writes until we acknowledge what it sent before, and Linux
    #: delays that acknowledgement by up to 200 ms. What it had written
    #: before the SIGTERM would otherwise reach us after our close frame,
    #: and go unanswered. Such writes follow a read from before the drain,
    #: so they are in by then; after it, a connection is closed at its first
    #: pause (a client in a send-and-wait-for-the-echo loop is never quiet
    #: for long, and would otherwise be held until the force point).
    quiet: float = 0.25
    #: A connection that never pauses is closed anyway after this share of
    #: the timeout, capped at ``force_after_max`` seconds.
    force_share: float = 0.5
    force_after_max: float = 5.0


class Registry:
    """The open connections, their keepalive, and the drain."""

    def __init__(self, keepalive: Keepalive, drain: DrainPolicy) -> None:
        self.keepalive = keepalive
        self.drain_policy = drain
        self.connections: set[Managed] = set()
        #: Upgrades accepted and not yet open (or failed): they count
        #: against the cap from the moment they are let in.
        self.reserved = 0
        self.draining = False
        self._keepalive_task: asyncio.Task[None] | None = None

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

    def add(self, connection: Managed) -> None:
        """Track an open connection; start the shared keepalive if needed."""
        self.connections.add(connection)
        if self.keepalive.interval > 0 and (
            self._keepalive_task is None or self._keepalive_task.done()
        ):
            self._keepalive_task = asyncio.ensure_future(self._keep_alive())

    def discard(self, connection: Managed) -> None:
        self.connections.discard(connection)
        if not self.connections and self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None

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

    async def drain(self, timeout: float | None = None) -> int:
        """Close every connection with 1001 within ``timeout`` seconds (the
        policy's by default); return how many had to be aborted."""
        self.draining = True
        policy = self.drain_policy
        timeout = policy.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        force_at = start + min(timeout * policy.force_share, policy.force_after_max)
        quiet_until = start + policy.quiet
        while self.connections and loop.time() < deadline:
            now = loop.time()
            force = now >= force_at
            quiet = policy.quiet if now < quiet_until else 0.0
            for connection in list(self.connections):
                connection.go_away(force, quiet)
            await asyncio.sleep(_DRAIN_TICK)
        aborted = len(self.connections)
        for connection in list(self.connections):
            connection.abort()
        return aborted
