"""Accepting connections when the process runs out of file descriptors.

Tornado's accept handler (``tornado.netutil.add_accept_handler``) lets
``EMFILE``/``ENFILE`` escape to the event loop. The listening socket stays
readable - the connection is still waiting in the backlog - so the loop
calls the handler again at once: one core spent on ``accept(2)`` failing,
and an error line each time.

:func:`add_accept_handler` here has the same contract (it returns the
function that removes it, as :class:`tornado.tcpserver.TCPServer` expects)
but, when ``accept`` fails for want of descriptors or memory, it *pauses*
the listener: it stops watching the socket for :data:`BACKOFF` seconds
(doubling up to :data:`MAX_BACKOFF` while the shortage lasts), then tries
again. Waiting clients stay in the kernel's backlog meanwhile. Connections
already open (and so ``/healthz`` on a kept-alive connection) are not
touched, and as soon as a descriptor is free the next probe gets in.

Each failure is counted (:class:`AcceptErrors`, reported as the metric
``websocket_accept_errors_total``), and logged as one ``error`` event
``descriptors_exhausted`` per :data:`LOG_INTERVAL` with the count since the
last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import tornado.httpserver
import tornado.httputil
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from .events import EventBudget
from .kinds import ErrorKind
from .metrics import Metrics
from .telemetry import record_error

__all__ = [
    "BACKOFF",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "LOG_INTERVAL",
    "MAX_BACKOFF",
    "SWEEP_INTERVAL",
    "AcceptErrors",
    "GuardedHTTPServer",
    "add_accept_handler",
    "answer_and_close",
]

#: First pause after a failed accept, in seconds; it doubles while accepts
#: keep failing, up to MAX_BACKOFF, and starts again at BACKOFF once one works.
BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: At most one log line per this many seconds while accepts fail.
LOG_INTERVAL = 10.0
#: How many connections one readiness event may accept (Tornado's heuristic).
_BATCH = 128

_SHORTAGE = {
    errno.EMFILE: "EMFILE",
    errno.ENFILE: "ENFILE",
    errno.ENOBUFS: "ENOBUFS",
    errno.ENOMEM: "ENOMEM",
}


#: After a final answer, at most this many seconds and bytes of what the
#: client still sends (pipelined requests) are read and dropped before the
#: socket is closed: closing with unread data makes the kernel send a
#: reset, which can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20

_answering: set[asyncio.Future[None]] = set()

#: How often the plain HTTP connections are looked at for responses the
#: client does not take: every second (four times per ``send_timeout`` when
#: that is shorter, but at most ten times a second).
SWEEP_INTERVAL = 1.0


def answer_and_close(
    stream: IOStream,
    status: int,
    reason: str,
    body: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Write a whole response with ``Connection: close`` to ``stream`` (a
    connection taken from Tornado), then close it: nothing more is read
    from it as a request."""
    payload = body.encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
    task = asyncio.ensure_future(_write_and_linger(stream, data))
    _answering.add(task)
    task.add_done_callback(_answering.discard)


async def _write_and_linger(stream: IOStream, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    try:
        await stream.write(data)
        if stream.socket is not None:
            stream.socket.shutdown(socket.SHUT_WR)
        deadline = loop.time() + LINGER_SECONDS
        left = LINGER_BYTES
        while left > 0 and (wait := deadline - loop.time()) > 0:
            left -= len(await asyncio.wait_for(stream.read_bytes(65536, partial=True), wait))
    except (TimeoutError, StreamClosedError, OSError):
        pass
    finally:
        stream.close()


class AcceptErrors:
    """Failed accepts: counted, logged once per interval, reported to ``count``."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def failed(self, name: str, exc: OSError, pause: float) -> None:
        self.total += 1
        self._unlogged += 1
        if self.metrics is not None:
            self.metrics.accept_errors.labels(name).inc()
        now = self.clock()
        log = self._logged_at is None or now - self._logged_at >= self.interval
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        record_error(
            self.metrics,
            ErrorKind.DESCRIPTORS_EXHAUSTED,
            f"accept failed with {name} ({exc.strerror}); pausing the listener "
            f"for {pause:g} s at a time",
            log=log,
            errno=name,
            count=self._unlogged,
            total=self.total,
            limit=soft,
        )
        if log:
            self._unlogged = 0
            self._logged_at = now


class _OncePer:
    """A repeated error logged at most once per ``interval`` seconds, with
    how many there were since the last line (``count``)."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._unlogged = 0
        self._logged_at: float | None = None

    def due(self) -> int | None:
        """Note one; the count to log with it, or None to leave it unlogged."""
        self._unlogged += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            return None
        count, self._unlogged, self._logged_at = self._unlogged, 0, now
        return count


def add_accept_handler(
    sock: socket.socket,
    callback: Callable[[socket.socket, Any], None],
    errors: AcceptErrors | None = None,
) -> Callable[[], None]:
    """Accept connections on ``sock`` and pass each to ``callback(connection,
    address)``; pause the listener on a shortage. Returns the remover."""
    io_loop = IOLoop.current()
    errors = errors if errors is not None else AcceptErrors()
    state: dict[str, Any] = {"removed": False, "watching": False, "timer": None, "pause": BACKOFF}

    def watch() -> None:
        state["timer"] = None
        if state["removed"] or state["watching"]:
            return
        io_loop.add_handler(sock, on_readable, IOLoop.READ)
        state["watching"] = True

    def pause(name: str, exc: OSError) -> None:
        delay = state["pause"]
        state["pause"] = min(delay * 2, MAX_BACKOFF)
        if state["watching"]:
            io_loop.remove_handler(sock)
            state["watching"] = False
        state["timer"] = io_loop.call_later(delay, watch)
        errors.failed(name, exc, delay)

    def on_readable(fd: Any, events: int) -> None:
        for _ in range(_BATCH):
            if state["removed"] or not state["watching"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                name = _SHORTAGE.get(exc.errno or 0)
                if name is None:
                    # Anything else (EPERM from a firewall, EPROTO...) is about
                    # that one connection: skip it, as accept(2) advises.
                    if exc.errno in (errno.EPERM, errno.EPROTO, errno.ECONNRESET):
                        continue
                    name = "other"
                pause(name, exc)
                return
            state["pause"] = BACKOFF
            callback(connection, address)

    def remove() -> None:
        state["removed"] = True
        if state["timer"] is not None:
            io_loop.remove_timeout(state["timer"])
            state["timer"] = None
        if state["watching"]:
            io_loop.remove_handler(sock)
            state["watching"] = False

    watch()
    return remove


class _HeadWatch(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through; tells the server when its head is in."""

    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate, seen: Callable[[], None]):
        self.inner = inner
        self.seen = seen

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.seen()
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class _Plain:
    """What the server watches on one plain HTTP connection (until it is
    closed or handed over to a WebSocket transport, which closes its stream)."""

    __slots__ = ("address", "head_timer", "stalled_since")

    def __init__(self, address: tuple[Any, ...]) -> None:
        self.address = address
        #: The request-head timeout's timer, until the first head is in.
        self.head_timer: object | None = None
        #: Since when (monotonic) the stream has been seen writing, on every sweep.
        self.stalled_since: float | None = None


def _peer(address: tuple[Any, ...]) -> str:
    return f"{address[0]}:{address[1]}" if len(address) >= 2 else str(address)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server, with the edges a hostile client reaches guarded:

    - the listener pauses instead of spinning when descriptors run out
      (:func:`add_accept_handler`; ``accept_errors`` counts);
    - a connection whose first request head is not complete within
      ``head_timeout`` seconds of being accepted gets ``408 Request
      Timeout`` and is closed (Tornado's own timeout for this is its idle
      timeout, 75 s here). Later requests on a kept-alive connection have
      the idle timeout (``idle_connection_timeout``) for their heads;
    - a connection whose responses the client does not take - the stream
      still writing, the kernel's send buffer full, on every sweep for
      ``send_timeout`` seconds - is dropped with a reset (which frees the
      send queue the kernel holds for it, up to about 4 MB) and counted as
      ``slow_http_client``. Tornado reads no request while a response is
      being written, and its write has no timeout: a client pipelining
      requests without reading held its connection forever. One timer
      sweeps every plain HTTP connection (:data:`SWEEP_INTERVAL`), while
      there are any; a WebSocket's stream is closed when its socket is
      handed over, and from then on it is not looked at.

    :meth:`add_sockets` and :meth:`stop` replace Tornado's with this
    module's accept handler; each accepted socket becomes an ``IOStream``
    handed to ``handle_stream``, TCPServer's documented extension point.
    Only public Tornado names are used.
    """

    def initialize(
        self,
        *args: Any,
        head_timeout: float | None = None,
        send_timeout: float | None = None,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().initialize(*args, **kwargs)
        self.metrics = metrics
        self._listeners: list[tuple[socket.socket, Callable[[], None]]] = []
        self.head_timeout = head_timeout
        self.send_timeout = send_timeout
        self.accept_errors = AcceptErrors(metrics)
        #: The plain HTTP connections, by stream (weakly: a stream handed
        #: over to a WebSocket leaves with its last reference).
        self._plain: weakref.WeakKeyDictionary[IOStream, _Plain] = weakref.WeakKeyDictionary()
        self._sweeper: object | None = None
        self.head_timeouts = 0
        self.slow_clients = 0
        #: ``error`` events of requests refused before a handler runs (431):
        #: 100, then 10 a second.
        self.refusal_log = EventBudget(10.0, 100)
        self._head_log = _OncePer()
        self._slow_log = _OncePer()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            remove = add_accept_handler(sock, self._accepted, self.accept_errors)
            self._listeners.append((sock, remove))

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        stream = IOStream(
            connection,
            max_buffer_size=self.max_buffer_size,
            read_chunk_size=self.read_chunk_size,
        )
        self.handle_stream(stream, address)

    def stop(self) -> None:
        """Stop listening (connections already open stay)."""
        listeners, self._listeners = self._listeners, []
        for sock, remove in listeners:
            remove()
            sock.close()
        super().stop()

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        if self.head_timeout or self.send_timeout:
            watch = self._plain[stream] = _Plain(address)
            if self.head_timeout:
                watch.head_timer = IOLoop.current().call_later(
                    self.head_timeout, self._head_too_slow, stream
                )
            if self.send_timeout and self._sweeper is None:
                self._sweeper = IOLoop.current().call_later(self._sweep_interval(), self._sweep)
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        stream = getattr(server_conn, "stream", None)
        watch = None if stream is None else self._plain.get(stream)
        if watch is None or watch.head_timer is None:
            return delegate

        def seen() -> None:
            if watch.head_timer is not None:
                IOLoop.current().remove_timeout(watch.head_timer)
                watch.head_timer = None

        return _HeadWatch(delegate, seen)

    def _head_too_slow(self, stream: IOStream) -> None:
        watch = self._plain.get(stream)
        if watch is None or watch.head_timer is None or stream.closed():
            return
        watch.head_timer = None
        self.head_timeouts += 1
        count = self._head_log.due()
        record_error(
            self.metrics,
            ErrorKind.REQUEST_HEAD_TIMEOUT,
            f"no complete request head within {self.head_timeout:g} s",
            log=count is not None,
            peer=_peer(watch.address),
            count=count,
        )
        body = f"408 Request Timeout: no complete request within {self.head_timeout:g} s\n"
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        if stream.socket is not None:
            with contextlib.suppress(OSError):
                stream.socket.send((head + body).encode())
        stream.close()

    def _sweep_interval(self) -> float:
        return max(0.1, min(SWEEP_INTERVAL, (self.send_timeout or 0.0) / 4))

    def _sweep(self) -> None:
        """Drop the connections whose writes have waited on the client for
        ``send_timeout``: seen writing on every sweep since (the sweep that
        first saw it counts from its own time, so a connection is dropped
        ``send_timeout`` to ``send_timeout`` + 2 sweeps after its stall)."""
        self._sweeper = None
        timeout = self.send_timeout
        if not timeout:
            return
        now = time.monotonic()
        watching = False
        for stream, watch in list(self._plain.items()):
            if stream.closed():
                if watch.head_timer is None:
                    del self._plain[stream]
            elif not stream.writing():
                watch.stalled_since = None
                watching = True
            elif watch.stalled_since is None:
                watch.stalled_since = now
                watching = True
            elif now - watch.stalled_since >= timeout:
                self._drop_slow_reader(stream, watch)
            else:
                watching = True
        if watching:
            self._sweeper = IOLoop.current().call_later(self._sweep_interval(), self._sweep)

    def _drop_slow_reader(self, stream: IOStream, watch: _Plain) -> None:
        self.slow_clients += 1
        count = self._slow_log.due()
        record_error(
            self.metrics,
            ErrorKind.SLOW_HTTP_CLIENT,
            f"client left responses unread for {self.send_timeout:g} s; connection dropped",
            log=count is not None,
            peer=_peer(watch.address),
            count=count,
        )
        # A reset, not a FIN: the kernel would otherwise keep the unread
        # responses (its send queue) for an orphaned socket for minutes.
        if stream.socket is not None:
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        stream.close()
