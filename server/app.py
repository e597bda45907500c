"""The composition root: settings become components, components an app.

:func:`build_service` splits the validated :class:`~server.config.Settings`
into each component's typed parameters (handshake policy, send limits, the
message log, keepalive, the drain) and builds the connection registry and
metrics once. :func:`make_app` routes the probes, ``/metrics``, an app's
WebSocket routes (``/ws`` to the echo by default), its plain HTTP handlers
and the echo console; :func:`make_http_server` is
Tornado's HTTP server with the limits of a public endpoint; :func:`serve`
runs it with signals until SIGTERM, then drains.

``__main__`` imports this module; so do apps that run :func:`serve` in an
event loop of their own, and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.routing
import tornado.web
from tornado.iostream import IOStream, UnsatisfiableReadError

from .accept import GuardedHTTPServer
from .backplane import make_backplane
from .base import (
    SERVICE_SETTING,
    Forwarding,
    HandshakePolicy,
    KnativeWebSocketHandler,
    MessageLog,
    Service,
)
from .config import Settings
from .connections import STOP_SIGNALS, Connections, DrainPolicy, Keepalive, MaxAge, Registry
from .echo import EchoWebSocket
from .events import EVENT_LOGGER, EventBudget, count_drops_in, emit
from .http import ConsoleHandler, HealthHandler, MetricsHandler, ReadyHandler, warm_up_metrics
from .kinds import ErrorKind
from .metrics import Metrics
from .telemetry import record_error
from .transport import SendLimits
from .wire import COMPILED

if TYPE_CHECKING:  # imported with workers only (server.workers): one server skips mmap
    from .podstate import Worker

__all__ = [
    "RESERVED_PATHS",
    "WebSocketRoute",
    "build_service",
    "connections",
    "make_app",
    "make_http_server",
    "serve",
    "websocket_rules",
]

#: Request heads over this many bytes get 431.
MAX_HEADER_BYTES = 16384
#: Idle keep-alive HTTP connections are closed after this many seconds by
#: default (longer than the usual load balancer's 60 s, so the balancer closes first).
IDLE_CONNECTION_TIMEOUT = 75.0


def build_service(settings: Settings, metrics: Metrics | None = None) -> Service:
    """Each component's parameters, from the one validated settings object."""
    metrics = metrics or Metrics()
    return Service(
        metrics=metrics,
        registry=Registry(
            Keepalive(settings.ping_interval, settings.ping_timeout),
            DrainPolicy(settings.drain_timeout, spread=settings.drain_spread),
            MaxAge(settings.max_connection_age),
        ),
        policy=HandshakePolicy(
            allowed_origins=settings.allowed_origins,
            max_connections=settings.max_connections,
            compression=settings.compression,
            max_message_bytes=settings.max_message_bytes,
        ),
        limits=SendLimits(send_timeout=settings.send_timeout),
        message_log=MessageLog(
            enabled=settings.log_messages,
            content=settings.log_content,
            preview_bytes=settings.log_preview_bytes,
            rate=settings.log_message_rate,
            burst=settings.log_message_burst,
        ),
        forwarding=Forwarding(settings.trusted_proxies, settings.forwarded_header),
        backplane=make_backplane(settings.backplane_url, settings.backplane_retention, metrics),
    )


def _log_request(budget: EventBudget, handler: tornado.web.RequestHandler) -> None:
    """Request log: probes and scrapes at debug, WebSocket traffic is logged
    by its own events, everything else at info, within ``budget`` for the
    process and for each keep-alive connection (the count of those left
    out is on the next one logged)."""
    status = handler.get_status()
    request = handler.request
    if isinstance(handler, KnativeWebSocketHandler) and status < 500:
        return  # refusals are error events already
    level = logging.DEBUG if request.path in ("/healthz", "/readyz", "/metrics") else logging.INFO
    if status >= 500:
        level = logging.ERROR
    if not EVENT_LOGGER.isEnabledFor(level):
        return
    logged = budget.allow(getattr(request.connection, "context", None))
    if logged is None:
        return
    emit(
        "request",
        level,
        method=request.method,
        path=request.path,
        status=status,
        ms=round(1000.0 * request.request_time(), 2),
        peer=request.remote_ip,
        **logged,
    )


#: A WebSocket route: a Tornado URL pattern (its groups are ``open()``'s
#: arguments), a :class:`~server.base.KnativeWebSocketHandler` subclass, and
#: optionally the keyword arguments of its ``initialize()``.
WebSocketRoute = (
    tuple[str, type[KnativeWebSocketHandler]]
    | tuple[str, type[KnativeWebSocketHandler], dict[str, Any]]
)

#: The paths of the endpoints every app keeps; they are matched first.
RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")


def websocket_rules(routes: Sequence[WebSocketRoute]) -> list[tornado.routing.URLSpec]:
    """Tornado's rules for ``routes``, each checked: a clear TypeError or
    ValueError at start, not a 500 on the first upgrade."""
    if not routes:
        raise ValueError("an app needs at least one WebSocket route")
    rules = []
    for route in routes:
        if not isinstance(route, tuple) or len(route) not in (2, 3):
            raise TypeError(f"a WebSocket route is (pattern, handler[, kwargs]), not {route!r}")
        pattern, cls, *rest = route
        if not (isinstance(cls, type) and issubclass(cls, KnativeWebSocketHandler)):
            raise TypeError(
                f"the handler of route {pattern!r} must subclass KnativeWebSocketHandler: {cls!r}"
            )
        kwargs = rest[0] if rest else {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"the initialize() arguments of route {pattern!r} must be a dict")
        rule = tornado.routing.URLSpec(pattern, cls, kwargs)
        for path in RESERVED_PATHS:
            if rule.regex.match(path):
                raise ValueError(f"route {pattern!r} would match {path}, which the server serves")
        rules.append(rule)
    return rules


def connections(app: tornado.web.Application) -> Connections:
    """The open WebSocket connections of ``app`` (made by :func:`make_app`),
    read-only: for a plain HTTP handler, ``connections(self.application)``
    (a WebSocket handler has ``self.connections``)."""
    service: Service = app.settings[SERVICE_SETTING]
    return service.registry.view


def make_app(
    service: Service,
    handler: type[KnativeWebSocketHandler] | None = None,
    worker: Worker | None = None,
    *,
    routes: Sequence[WebSocketRoute] | None = None,
    http_routes: Sequence[Any] = (),
    console: bool | None = None,
) -> tornado.web.Application:
    """The Tornado application: the probes and ``/metrics`` (with
    ``worker``, ``/readyz`` and ``/metrics`` answer for the pod), the
    WebSocket ``routes`` (by default ``handler``, the echo if None, at
    ``/ws``), the plain HTTP handlers of ``http_routes`` (Tornado rules,
    after the WebSocket routes), and the echo console at ``/`` (``console``:
    by default only when serving the echo at ``/ws``).

    Every WebSocket route shares the one ``service``: its registry (the cap,
    keepalive, the drain, the connection view), limits, events and metrics.
    """
    if routes is not None and handler is not None:
        raise TypeError("make_app takes handler (one /ws route) or routes, not both")
    if routes is None:
        routes = [(r"/ws", handler or EchoWebSocket)]
        if console is None:
            console = True
    rules: list[Any] = [
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler, {"registry": service.registry, "worker": worker}),
        (r"/metrics", MetricsHandler, {"metrics": service.metrics, "worker": worker}),
        *websocket_rules(routes),
        *http_routes,
    ]
    if console:
        rules.append((r"/", ConsoleHandler))
    settings: dict[str, Any] = {SERVICE_SETTING: service}
    return tornado.web.Application(
        rules,
        log_function=functools.partial(_log_request, service.request_log),
        **settings,
    )


class _HTTPServer(GuardedHTTPServer):
    """Tornado's HTTP server with the guards of :mod:`server.accept`, and a
    request head over the size limit gets ``431 Request Header Fields Too
    Large`` and an error event.

    Tornado's stream closes itself the moment the head passes the limit
    (an ``UnsatisfiableReadError``), and offers no hook before the socket
    is gone: the client would see the connection drop without a word. So
    each new stream's ``close`` is wrapped (``handle_stream`` is the
    documented extension point) to answer first, while the socket is open.
    """

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        close = stream.close

        def close_answering_431(exc_info: Any = False) -> None:
            if isinstance(exc_info, UnsatisfiableReadError) and not stream.closed():
                self._refuse_oversized_head(stream, address)
            close(exc_info)

        stream.close = close_answering_431  # type: ignore[method-assign]
        super().handle_stream(stream, address)

    def _refuse_oversized_head(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        peer = f"{address[0]}:{address[1]}" if len(address) >= 2 else str(address)
        detail = f"request head over {MAX_HEADER_BYTES} bytes"
        logged = self.refusal_log.allow()
        record_error(
            self.metrics,
            ErrorKind.HEADERS_TOO_LARGE,
            detail,
            refused=True,
            log=logged is not None,
            peer=peer,
            **(logged or {}),
        )
        body = f"431 Request Header Fields Too Large: the limit is {MAX_HEADER_BYTES} bytes\n"
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        # One small write to a socket that has not been written to: the
        # kernel takes it whole; if not, the client gets what fits.
        with contextlib.suppress(OSError):
            stream.socket.send((head + body).encode())


def make_http_server(
    app: tornado.web.Application,
    metrics: Metrics | None = None,
    head_timeout: float = 5.0,
    idle_timeout: float = IDLE_CONNECTION_TIMEOUT,
    send_timeout: float = 30.0,
) -> tornado.httpserver.HTTPServer:
    """The HTTP server, with limits fit for a public endpoint: request heads
    over 16 KiB get 431, a first request head not complete within
    ``head_timeout`` s gets 408, idle keep-alive connections are closed after
    ``idle_timeout`` s (75: longer than the usual load balancer's 60 s, so
    the balancer closes first), a connection whose responses the client
    leaves unread for ``send_timeout`` s is dropped, request bodies (no
    route takes one) are capped at 64 KiB, and the listener pauses when
    descriptors run out."""
    return _HTTPServer(
        app,
        idle_connection_timeout=idle_timeout or None,
        max_header_size=MAX_HEADER_BYTES,
        body_timeout=head_timeout or None,
        max_body_size=65536,
        head_timeout=head_timeout or None,
        send_timeout=send_timeout or None,
        metrics=metrics,
    )


#: Seconds after listening when the ``/metrics`` code is imported, on a thread
#: (kept out of the start that Knative's scale from zero waits on).
_METRICS_WARM_UP = 1.0


async def serve(
    settings: Settings,
    started: float | None = None,
    reuse_port: bool = False,
    handler: type[KnativeWebSocketHandler] | None = None,
    worker: Worker | None = None,
    *,
    routes: Sequence[WebSocketRoute] | None = None,
    http_routes: Sequence[Any] = (),
    console: bool | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, drain, and return the exit status.

    ``handler``, ``routes``, ``http_routes`` and ``console`` are
    :func:`make_app`'s; ``reuse_port`` binds with ``SO_REUSEPORT``, for
    workers sharing a port; ``worker`` is this worker's part of the pod's
    shared numbers and state."""
    service = build_service(settings, None if worker is None else worker.metrics)
    if worker is not None:
        dropped = worker.metrics.log_events_dropped
        assert dropped is not None
        count_drops_in(dropped.inc)
    app = make_app(
        service, handler, worker, routes=routes, http_routes=http_routes, console=console
    )
    server = make_http_server(
        app,
        service.metrics,
        settings.request_head_timeout,
        settings.idle_timeout,
        settings.send_timeout,
    )
    await service.backplane.start()
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

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    # A worker starts with them blocked (server/workers.py): one that came
    # while it started is delivered now, to on_signal.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if worker is not None and worker.stopping():
        # The pod is stopping and the supervisor's signal may have missed
        # this worker (sent while it was being forked): drain now. A signal
        # that did reach it is then taken as the first one still.
        stop.set()

    fields: dict[str, Any] = {
        "address": f"{settings.host}:{settings.port}",
        "pid": os.getpid(),
        "max_message_bytes": settings.max_message_bytes,
        "ping_interval": settings.ping_interval,
        "max_connection_age": settings.max_connection_age,
        "max_connections": settings.max_connections,
        "compression": settings.compression,
        "event_loop": settings.event_loop,
        "wire": "compiled" if COMPILED else "python",
    }
    if started is not None:
        fields["startup_ms"] = round(1000 * (time.perf_counter() - started), 1)
    emit("listening", **fields)
    if worker is not None:
        worker.ready()
    warm_up_metrics(_METRICS_WARM_UP)

    await stop.wait()
    if worker is not None:
        worker.draining()
    registry = service.registry
    drain_start = loop.time()
    service.metrics.drain_started.value = time.time()
    emit(
        "drain",
        open=len(registry),
        timeout=settings.drain_timeout,
        spread=registry.drain_policy.window(settings.drain_timeout),
    )
    aborted = await registry.drain()
    emit(
        "drained",
        logging.WARNING if aborted else logging.INFO,
        seconds=round(loop.time() - drain_start, 3),
        aborted=aborted,
    )
    server.stop()
    await server.close_all_connections()
    await service.backplane.close()
    emit("exit", status=0)
    return 0
