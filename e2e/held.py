"""Client mechanics shared by the Knative tests and the plain-mode tests:
hold WebSocket connections open while the Kubernetes API is polled from
another thread, check they still echo, and watch them drain.

The rules that keep held connections alive:

- a test runs inside ONE event loop (one ``asyncio.run()`` per test), so the
  connections it opens are never left on a loop that is not running;
- every blocking Kubernetes API call made while connections are held goes
  through :func:`in_thread` (``run_in_executor``), so the loop keeps reading
  frames and answers the server's pings (the server closes a connection with
  1011 when a pong is late: ``WS_PING_TIMEOUT``);
- each e2e test carries a pytest-timeout marker larger than its longest
  wait (:func:`e2e_timeout`), instead of the 120 s global of pyproject.toml.

``e2e/test_held_connections.py`` runs all of this for real in ``.ci/run``
(plain Kubernetes on the local cluster, short ping settings); the Knative
tests in ``e2e/test_knative.py`` use the same functions on kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

__all__ = [
    "DRAIN_TIMEOUT",
    "GOING_AWAY",
    "MAX_AGE_REASON",
    "NO_CLOSE_FRAME",
    "READY_TIMEOUT",
    "Held",
    "Lifetime",
    "assert_drained",
    "close_all",
    "drain",
    "e2e_timeout",
    "echo_each",
    "echo_until_closed",
    "hold",
    "in_thread",
    "wait_for",
]

T = TypeVar("T")

#: How long a Service or Deployment may take to become ready ($E2E_READY_TIMEOUT).
READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", "300"))
#: How long a client waits for one message (an echo, or the close) while a pod drains.
#: Knative's queue-proxy alone sleeps 30 s (drainSleepDuration) before the app's SIGTERM.
DRAIN_TIMEOUT = 120.0
#: How long a connection may take to open (TCP, then the upgrade's answer:
#: through Knative's activator that can include a cold start).
CONNECT_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 90.0


#: The server's close at WS_MAX_CONNECTION_AGE: 1001 (going away) and this reason.
GOING_AWAY = 1001
MAX_AGE_REASON = "max connection age"
#: RFC 6455's code for a connection that ended without a close frame (a cut);
#: Tornado's client reports it as ``close_code`` None.
NO_CLOSE_FRAME = 1006


def e2e_timeout(*waits: float, margin: float = 120.0) -> float:
    """A per-test timeout: the sum of the test's waits, plus a margin for
    namespace set-up, port-forwards and diagnostics."""
    return READY_TIMEOUT + sum(waits) + margin


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (a Kubernetes API call, a wait) on another thread,
    so the event loop keeps serving the held connections meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _poll(predicate: Callable[[], bool], timeout: float, what: str, interval: float) -> int:
    """Call ``predicate`` every ``interval`` s until it is true; the number of calls.
    Blocking: only ever run through :func:`in_thread`."""
    deadline = time.monotonic() + timeout
    calls = 0
    while True:
        calls += 1
        if predicate():
            return calls
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 2.0
) -> int:
    """Poll ``predicate`` (which may call the API) on another thread until it
    is true, while this loop keeps answering pings. Returns how many polls it took."""
    return await in_thread(_poll, predicate, timeout, what, interval)


@dataclass
class Held:
    """One held connection and what it saw."""

    conn: WebSocketClientConnection
    pings: int = 0
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    #: time.monotonic() before the connection was opened, and when it was
    #: seen closed (by :func:`drain` or :func:`echo_until_closed`).
    opened_at: float = 0.0
    closed_at: float | None = None

    @property
    def close_code(self) -> int:
        """The close code the peer sent; 1006 when it sent no close frame."""
        code = self.conn.close_code
        return NO_CLOSE_FRAME if code is None else code

    @property
    def open(self) -> bool:
        protocol = self.conn.protocol
        return protocol is not None and not protocol.is_closing() and self.conn.close_code is None


def _request(address: str, host: str | None) -> HTTPRequest:
    headers = {"Host": host} if host else None
    return HTTPRequest(
        f"ws://{address}/ws",
        headers=headers,
        connect_timeout=CONNECT_TIMEOUT,
        request_timeout=HANDSHAKE_TIMEOUT,
    )


@contextlib.asynccontextmanager
async def hold(address: str, count: int, host: str | None = None) -> AsyncIterator[list[Held]]:
    """Open ``count`` connections to ``ws://address/ws`` (``host`` as the Host
    header), each checked with one echo, counting the pings each receives;
    every one is released on the way out. The client never pings: only the
    server's pings keep them alive."""
    held: list[Held] = []
    try:
        for i in range(count):
            opened_at = time.monotonic()
            conn = await websocket_connect(_request(address, host))
            one = Held(conn, opened_at=opened_at)

            def on_ping(_data: bytes, one: Held = one) -> None:
                one.pings += 1  # tornado answers with a pong itself

            conn.on_ping = on_ping  # type: ignore[method-assign,assignment]
            held.append(one)
            await echo_each([one], f"hold {i}")
        yield held
    finally:
        for one in held:
            one.conn.close()  # a no-op once closed; releases the socket otherwise


async def echo_each(held: list[Held], text: str) -> None:
    """Send ``text`` on every connection and check each echoes it back."""
    for i, one in enumerate(held):
        assert one.open, f"connection {i} closed: {one.conn.close_code} {one.conn.close_reason!r}"
        message = f"{text} #{i}"
        await one.conn.write_message(message)
        echo = await asyncio.wait_for(one.conn.read_message(), DRAIN_TIMEOUT)
        assert echo == message, (
            f"connection {i}: expected the echo {message!r}, got {echo!r} "
            f"(close {one.conn.close_code} {one.conn.close_reason!r})"
        )


async def close_all(held: list[Held], code: int = 1000) -> None:
    """Close every connection and wait (briefly) for the server's close frames."""
    for one in held:
        one.conn.close(code)
    for one in held:
        with contextlib.suppress(asyncio.TimeoutError):
            while await asyncio.wait_for(one.conn.read_message(), 10) is not None:
                pass


async def _read_until_closed(one: Held) -> None:
    while (message := await asyncio.wait_for(one.conn.read_message(), DRAIN_TIMEOUT)) is not None:
        one.received.append(str(message))
    one.closed_at = time.monotonic()


@dataclass
class Lifetime:
    """What :func:`echo_until_closed` saw on one connection: seconds after
    it was opened of each echo that came back, and of its end; how many
    messages sent got no echo, and how long before the end the first of
    them was sent (0.0 when none)."""

    echoes: list[float]
    closed_after: float
    code: int
    reason: str | None
    lost: int
    lost_since: float = 0.0

    @property
    def all_echoed(self) -> bool:
        """Every message was echoed, but for one that can have crossed the
        server's close frame (sent within the last ``CROSSING`` s)."""
        return self.lost == 0 or (self.lost == 1 and self.lost_since <= CROSSING)

    def __str__(self) -> str:
        last = f"{self.echoes[-1]:.1f}" if self.echoes else "-"
        lost = f"{self.lost} lost" + (
            f" (the first sent {self.lost_since:.2f} s before the end)" if self.lost else ""
        )
        return (
            f"closed {self.code} {self.reason!r} after {self.closed_after:.1f} s; "
            f"{len(self.echoes)} echoes, the last at {last} s; {lost}"
        )


#: How long a message may be in flight towards the server while the
#: server's close frame is in flight back: the server cannot echo it.
CROSSING = 0.3


async def echo_until_closed(one: Held, every: float, limit: float) -> Lifetime:
    """Send a message every ``every`` s and read its echo, until the peer
    ends the connection or ``limit`` s after it opened (then AssertionError).
    The messages sent and echoed are kept in ``one.sent``/``one.received``;
    ``lost`` counts those sent but never echoed before the end."""
    one.sent, one.received = [], []
    echoes: list[float] = []
    sent_at: list[float] = []
    n = 0
    # One read outstanding across the loop, waited on without cancelling
    # it: a read cancelled by a timeout as the close arrived could lose the
    # close (asyncio.wait_for on Python 3.12.1 dropped it once: the loop
    # then ran to its limit).
    reading: asyncio.Future[Any] | None = None
    while True:
        elapsed = time.monotonic() - one.opened_at
        if elapsed > limit:
            if reading is not None:
                reading.cancel()
            raise AssertionError(f"still open after {elapsed:.1f} s (limit {limit:g} s)")
        if one.open:
            message = f"tick {n}"
            n += 1
            one.sent.append(message)
            sent_at.append(time.monotonic())
            with contextlib.suppress(WebSocketClosedError):
                await one.conn.write_message(message)
        deadline = time.monotonic() + every
        while (left := deadline - time.monotonic()) > 0:
            if reading is None:
                reading = asyncio.ensure_future(one.conn.read_message())
            done, _ = await asyncio.wait({reading}, timeout=left)
            if not done:
                break
            echo, reading = reading.result(), None
            if echo is None:
                one.closed_at = time.monotonic()
                lost = len(one.sent) - len(one.received)
                return Lifetime(
                    echoes,
                    one.closed_at - one.opened_at,
                    one.close_code,
                    one.conn.close_reason,
                    lost,
                    one.closed_at - sent_at[len(one.received)] if lost else 0.0,
                )
            one.received.append(str(echo))
            echoes.append(time.monotonic() - one.opened_at)


async def drain(held: list[Held], delete: Callable[[], Any], in_flight: int = 50) -> None:
    """Send ``in_flight`` messages on every connection, run ``delete`` (which
    takes the pod away under them) on another thread, then read every
    connection to its close. Each :class:`Held` records what it sent and got
    back; its ``conn.close_code`` is the close code the server sent."""
    for i, one in enumerate(held):
        one.sent = [f"in flight {i}.{n}" for n in range(in_flight)]
        one.received = []
    # Read while sending, as a real client does: a client that stops
    # reading also stops answering pings (Tornado's client reads pings in
    # the same loop as messages), and the server fails it with 1011.
    readers = [asyncio.ensure_future(_read_until_closed(one)) for one in held]
    for one in held:
        for message in one.sent:
            await one.conn.write_message(message)
    await in_thread(delete)
    await asyncio.gather(*readers)


def assert_drained(held: list[Held], codes: tuple[int, ...]) -> None:
    """Every connection got every in-flight message back, then a close with
    one of ``codes`` - not a reset (1006, no close frame)."""
    for i, one in enumerate(held):
        lost = len(one.sent) - len(one.received)
        assert one.received == one.sent, f"connection {i}: {lost} echoes lost in the drain"
        assert one.conn.close_code in codes, (
            f"connection {i}: close {one.conn.close_code} {one.conn.close_reason!r}, "
            f"expected one of {codes}"
        )
