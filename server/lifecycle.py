"""The process's life on Knative: start, serve, drain on SIGTERM, exit.

Knative sends SIGTERM when it scales a pod down or rolls out a new
revision. Tornado's ``HTTPServer.close_all_connections()`` does not reach
upgraded WebSockets, so :class:`Lifecycle` tracks every open handler and
drains them itself:

1. ``/readyz`` answers 503 and new upgrades get 503 (the listener stays open
   so probes and refusals are answered, not reset);
2. each connection is sent close 1001 (going away) as soon as everything it
   had sent us has been echoed, or after a grace period if it never pauses;
3. the process exits 0 once every connection is gone, or when the drain
   timeout runs out. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import IOStream, UnsatisfiableReadError

from .accept import AcceptErrors, GuardedHTTPServer
from .config import Settings
from .events import emit
from .metrics import Metrics

if TYPE_CHECKING:
    from .handlers import EchoWebSocket

__all__ = ["Lifecycle", "make_app", "make_http_server", "serve"]

#: How often the drain loop looks at the connections still open.
_DRAIN_TICK = 0.01
#: A connection that never stops sending is closed anyway after this share of
#: the drain timeout (capped at _FORCE_AFTER_MAX seconds).
_FORCE_SHARE = 0.5
_FORCE_AFTER_MAX = 5.0


class Lifecycle:
    """Open connections and the draining flag, shared by the handlers."""

    def __init__(self) -> None:
        self.connections: set[EchoWebSocket] = set()
        self.draining = False
        self._keepalive: asyncio.Task[None] | None = None

    def register(self, handler: EchoWebSocket, ping_interval: float, ping_timeout: float) -> None:
        """Track an open connection; start the shared keepalive if needed."""
        self.connections.add(handler)
        if ping_interval > 0 and (self._keepalive is None or self._keepalive.done()):
            self._keepalive = asyncio.ensure_future(self.keep_alive(ping_interval, ping_timeout))

    def unregister(self, handler: EchoWebSocket) -> None:
        self.connections.discard(handler)
        if not self.connections and self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    async def keep_alive(self, interval: float, timeout: float) -> None:
        """Every ``interval`` s, ping every connection; ``timeout`` s later,
        fail those that did not answer (1011). One timer for all of them."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval
        while self.connections:
            await asyncio.sleep(max(0.0, next_ping - loop.time()))
            next_ping += interval
            pinged = [
                h.protocol
                for h in list(self.connections)
                if h.protocol and h.protocol.keepalive_ping()
            ]
            if timeout > 0 and pinged:
                await asyncio.sleep(timeout)
                for protocol in pinged:
                    protocol.keepalive_check(timeout)

    async def drain(self, timeout: float) -> int:
        """Close every WebSocket with 1001; return how many had to be aborted."""
        self.draining = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        force_at = start + min(timeout * _FORCE_SHARE, _FORCE_AFTER_MAX)
        emit("drain", open=len(self.connections), timeout=timeout)
        while self.connections and loop.time() < deadline:
            force = loop.time() >= force_at
            for handler in list(self.connections):
                handler.go_away(force)
            await asyncio.sleep(_DRAIN_TICK)
        aborted = len(self.connections)
        for handler in list(self.connections):
            protocol = handler.ws_connection
            if protocol is not None:
                protocol._abort()
        emit(
            "drained",
            logging.WARNING if aborted else logging.INFO,
            seconds=round(loop.time() - start, 3),
            aborted=aborted,
        )
        return aborted


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Request log: probes and scrapes at debug, WebSocket traffic is logged
    by its own events, everything else at info."""
    status = handler.get_status()
    request = handler.request
    if status == 101 or request.path == "/ws":
        return
    level = logging.DEBUG if request.path in ("/healthz", "/readyz", "/metrics") else logging.INFO
    if status >= 500:
        level = logging.ERROR
    emit(
        "request",
        level,
        method=request.method,
        path=request.path,
        status=status,
        ms=round(1000.0 * request.request_time(), 2),
        peer=request.remote_ip,
    )


def make_app(
    settings: Settings,
    metrics: Metrics,
    lifecycle: Lifecycle,
    handler: type[EchoWebSocket] | None = None,
) -> tornado.web.Application:
    """The Tornado application with every route; ``handler`` may be a
    subclass of :class:`~server.handlers.EchoWebSocket` to serve at /ws."""
    from .handlers import ConsoleHandler, EchoWebSocket, HealthHandler, MetricsHandler, ReadyHandler

    ws_args: dict[str, Any] = {"settings": settings, "metrics": metrics, "lifecycle": lifecycle}
    return tornado.web.Application(
        [
            (r"/ws", handler or EchoWebSocket, ws_args),
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"lifecycle": lifecycle}),
            (r"/metrics", MetricsHandler, {"metrics": metrics}),
            (r"/", ConsoleHandler),
        ],
        websocket_max_message_size=settings.max_message_bytes,
        log_function=_log_request,
        metrics=metrics,
    )


class _HTTPServer(GuardedHTTPServer):  # issue 11: accept backoff, head timeout (accept.py)
    """Tornado's HTTP server, except that a request head over the size
    limit gets ``431 Request Header Fields Too Large`` and an error event.

    Tornado's stream closes itself the moment the head passes the limit
    (an ``UnsatisfiableReadError``) and the client sees the connection
    drop without a word; each stream's ``close`` is wrapped to answer
    first, while the socket is still open."""

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        close = stream.close
        limit = self.conn_params.max_header_size

        def close_answering_431(exc_info: Any = False) -> None:
            if isinstance(exc_info, UnsatisfiableReadError) and not stream.closed():
                self._refuse_oversized_head(stream, address, limit)
            close(exc_info)

        stream.close = close_answering_431  # type: ignore[method-assign]
        super().handle_stream(stream, address)

    def _refuse_oversized_head(
        self, stream: IOStream, address: tuple[Any, ...], limit: int | None
    ) -> None:
        metrics = getattr(self.request_callback, "settings", {}).get("metrics")
        if isinstance(metrics, Metrics):
            metrics.handshakes_rejected.labels("headers_too_large").inc()
            metrics.errors.labels("headers_too_large").inc()
        peer = f"{address[0]}:{address[1]}" if len(address) >= 2 else str(address)
        detail = f"request head over {limit} bytes"
        emit("error", logging.WARNING, kind="headers_too_large", detail=detail, peer=peer)
        body = f"431 Request Header Fields Too Large: the limit is {limit} bytes\n".encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        # One small write to a socket that has not been written to: the
        # kernel takes it whole; if not, the client gets what fits.
        with contextlib.suppress(OSError):
            stream.socket.send(head.encode() + body)


def make_http_server(
    app: tornado.web.Application, head_timeout: float = 5.0, idle_timeout: float = 75.0
) -> tornado.httpserver.HTTPServer:
    """The HTTP server, with limits fit for a public endpoint: request heads
    over 16 KiB get 431, a first request head not complete within
    ``head_timeout`` s gets 408, idle keep-alive connections are closed after
    ``idle_timeout`` s (75: longer than the usual load balancer's 60 s, so the
    balancer closes first), request bodies (no route takes one) are capped at
    64 KiB, and the listener pauses when descriptors run out (accept.py)."""
    # issue 11: the accept errors counted into the app's metrics.
    metrics = app.settings.get("metrics")
    count = metrics.accept_errors.labels if isinstance(metrics, Metrics) else None
    return _HTTPServer(
        app,
        idle_connection_timeout=idle_timeout or None,
        max_header_size=16384,
        body_timeout=head_timeout or None,
        max_body_size=65536,
        head_timeout=head_timeout or None,
        accept_errors=AcceptErrors(
            count=(lambda name: count(name).inc()) if count is not None else None
        ),
    )


async def serve(settings: Settings, started: float | None = None, reuse_port: bool = False) -> int:
    """Serve until SIGTERM or SIGINT, drain, and return the exit status.

    ``reuse_port`` binds with ``SO_REUSEPORT``, for workers sharing a port."""
    metrics = Metrics()
    lifecycle = Lifecycle()
    app = make_app(settings, metrics, lifecycle)
    server = make_http_server(app, settings.request_head_timeout, settings.idle_timeout)
    sockets = tornado.netutil.bind_sockets(settings.port, settings.host, reuse_port=reuse_port)
    server.add_sockets(sockets)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            emit("signal", signal=name, action="drain")
            stop.set()
        else:
            emit("signal", logging.WARNING, signal=name, action="exit now")
            logging.shutdown()
            os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    fields: dict[str, Any] = {
        "address": f"{settings.host}:{settings.port}",
        "pid": os.getpid(),
        "max_message_bytes": settings.max_message_bytes,
        "ping_interval": settings.ping_interval,
        "max_connections": settings.max_connections,
        "compression": settings.compression,
        "event_loop": settings.event_loop,
    }
    if started is not None:
        fields["startup_ms"] = round(1000 * (time.perf_counter() - started), 1)
    emit("listening", **fields)

    await stop.wait()
    await lifecycle.drain(settings.drain_timeout)
    server.stop()
    await server.close_all_connections()
    emit("exit", status=0)
    return 0
