"""The composition root: settings become components, components an app.

:func:`build_service` splits the validated :class:`~server.config.Settings`
into each component's typed parameters (handshake policy, send limits, the
message log, keepalive, the drain) and builds the connection registry and
metrics once. :func:`make_app` routes ``/ws`` to a handler class (the echo
by default) and the plain HTTP endpoints; :func:`make_http_server` is
Tornado's HTTP server with the limits of a public endpoint; :func:`serve`
runs it with signals until SIGTERM, then drains.

Only ``__main__`` and tests import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import IOStream, UnsatisfiableReadError

from .accept import GuardedHTTPServer
from .base import Forwarding, HandshakePolicy, KnativeWebSocketHandler, MessageLog, Service
from .config import Settings
from .connections import STOP_SIGNALS, DrainPolicy, Keepalive, MaxAge, Registry
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

__all__ = ["build_service", "make_app", "make_http_server", "serve"]

#: Request heads over this many bytes get 431.
MAX_HEADER_BYTES = 16384
#: Idle keep-alive HTTP connections are closed after this many seconds by
#: default (longer than the usual load balancer's 60 s, so the balancer closes first).
IDLE_CONNECTION_TIMEOUT = 75.0


def build_service(settings: Settings, metrics: Metrics | None = None) -> Service:
    """Each component's parameters, from the one validated settings object."""
    return Service(
        metrics=metrics or Metrics(),
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


def make_app(
    service: Service,
    handler: type[KnativeWebSocketHandler] = EchoWebSocket,
    worker: Worker | None = None,
) -> tornado.web.Application:
    """The Tornado application: ``handler`` at /ws, and the HTTP endpoints
    (with ``worker``, ``/readyz`` and ``/metrics`` answer for the pod)."""
    return tornado.web.Application(
        [
            (r"/ws", handler, {"service": service}),
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"registry": service.registry, "worker": worker}),
            (r"/metrics", MetricsHandler, {"metrics": service.metrics, "worker": worker}),
            (r"/", ConsoleHandler),
        ],
        log_function=functools.partial(_log_request, service.request_log),
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
) -> tornado.httpserver.HTTPServer:
    """The HTTP server, with limits fit for a public endpoint: request heads
    over 16 KiB get 431, a first request head not complete within
    ``head_timeout`` s gets 408, idle keep-alive connections are closed after
    ``idle_timeout`` s (75: longer than the usual load balancer's 60 s, so
    the balancer closes first), request bodies (no route takes one) are
    capped at 64 KiB, and the listener pauses when descriptors run out."""
    return _HTTPServer(
        app,
        idle_connection_timeout=idle_timeout or None,
        max_header_size=MAX_HEADER_BYTES,
        body_timeout=head_timeout or None,
        max_body_size=65536,
        head_timeout=head_timeout or None,
        metrics=metrics,
    )


#: Seconds after listening when the ``/metrics`` code is imported, on a thread
#: (kept out of the start that Knative's scale from zero waits on).
_METRICS_WARM_UP = 1.0


async def serve(
    settings: Settings,
    started: float | None = None,
    reuse_port: bool = False,
    handler: type[KnativeWebSocketHandler] = EchoWebSocket,
    worker: Worker | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, drain, and return the exit status.

    ``reuse_port`` binds with ``SO_REUSEPORT``, for workers sharing a port;
    ``worker`` is this worker's part of the pod's shared numbers and state."""
    service = build_service(settings, None if worker is None else worker.metrics)
    if worker is not None:
        dropped = worker.metrics.log_events_dropped
        assert dropped is not None
        count_drops_in(dropped.inc)
    app = make_app(service, handler, worker)
    server = make_http_server(
        app, service.metrics, settings.request_head_timeout, settings.idle_timeout
    )
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
    emit("exit", status=0)
    return 0
