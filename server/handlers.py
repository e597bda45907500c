"""HTTP and WebSocket handlers: ``/ws``, ``/healthz``, ``/readyz``, ``/metrics``, ``/``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import time
from asyncio import Future
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import tornado.httputil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from .config import Settings
from .events import EVENT_LOGGER, MessageLogBudget, emit, emit_message
from .forwarded import resolve_peer
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .protocol import CloseCode, StrictProtocol

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

__all__ = [
    "ConsoleHandler",
    "EchoWebSocket",
    "HealthHandler",
    "MetricsHandler",
    "ReadyHandler",
]

#: Stands in for the handshake's request and response headers once the
#: connection is open; nothing writes to it.
_NO_HEADERS = tornado.httputil.HTTPHeaders()
#: Echo bytes that may wait in the write buffer before reading pauses.
_WRITE_HIGH_WATER = 1024 * 1024
_EVENTS_ON = functools.partial(EVENT_LOGGER.isEnabledFor, logging.INFO)

_NOT_A_WEBSOCKET = (
    "400 Bad Request: /ws is a WebSocket endpoint. Connect with a WebSocket client "
    "(a GET with 'Upgrade: websocket' and 'Connection: Upgrade'), e.g. "
    "wscat -c ws://HOST/ws\n"
)


def _client_address(
    request: tornado.httputil.HTTPServerRequest, settings: Settings
) -> tuple[str, str]:
    """(peer, socket address): the client as the trusted proxies name it
    (server/forwarded.py: the right-most address no trusted proxy added),
    and the TCP peer. Behind Knative's queue-proxy the TCP peer is always
    the proxy, on loopback."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    header = settings.forwarded_header
    values = request.headers.get_list(header) if header != "none" else []
    return resolve_peer(address, request.remote_ip, values, settings.trusted_proxies, header)


def _preview(message: str | bytes, limit: int) -> tuple[str, bool]:
    """The first ``limit`` characters of text, or bytes as hex."""
    if isinstance(message, bytes):
        return message[:limit].hex(), len(message) > limit
    return message[:limit], len(message) > limit


class EchoWebSocket(tornado.websocket.WebSocketHandler):
    """Echoes every message back with its type, and logs every event.

    Handshakes are checked here before Tornado's own checks so that every
    refusal gets a specific status and body, is logged once as an ``error``
    event and counted.
    """

    settings_: Settings
    metrics: Metrics
    lifecycle: Lifecycle

    def initialize(self, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
        self.settings_ = settings
        self.metrics = metrics
        self.counts = metrics.messages
        self.lifecycle = lifecycle
        self.peer, self.socket_peer = _client_address(self.request, settings)
        # issue 11: the socket peer on every event; message events bounded.
        self.via = self.socket_peer if self.socket_peer != self.peer else None
        self.log_budget = MessageLogBudget(settings.log_message_rate, settings.log_message_burst)
        self.opened_at = 0.0
        self.messages_in = 0
        self.messages_out = 0
        self.going_away = False
        self.protocol: StrictProtocol | None = None

    # -- handshake ----------------------------------------------------------

    def _refuse(self, status: int, reason: str, detail: str, body: str | None = None) -> None:
        self.metrics.handshakes_rejected.labels(reason).inc()
        origin = self.request.headers.get("Origin")
        extra: dict[str, Any] = {"origin": origin} if origin is not None else {}
        self._error(reason, detail, status=status, **extra)
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if status == 503:
            self.set_header("Retry-After", "1")
        self.finish(body if body is not None else f"{status} {self._reason}: {detail}\n")

    async def get(self, *args: Any, **kwargs: Any) -> None:
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            return self._refuse(400, "bad_handshake", "not a WebSocket upgrade", _NOT_A_WEBSOCKET)
        if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
            return self._refuse(400, "bad_handshake", "the Connection header must include Upgrade")
        key = headers.get("Sec-WebSocket-Key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            key_ok = False
        if not key_ok:
            return self._refuse(
                400, "bad_handshake", "Sec-WebSocket-Key must be 16 bytes in base64"
            )
        if headers.get("Sec-WebSocket-Version") != "13":
            self.set_header("Sec-WebSocket-Version", "13")
            return self._refuse(
                426, "bad_handshake", "unsupported Sec-WebSocket-Version (this server speaks 13)"
            )
        origin = headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            return self._refuse(403, "origin_rejected", f"origin {origin!r} is not allowed")
        if self.lifecycle.draining:
            return self._refuse(503, "draining", "server is shutting down; reconnect")
        limit = self.settings_.max_connections
        if limit and len(self.lifecycle.connections) >= limit:
            return self._refuse(
                503, "over_capacity", f"connection limit of {limit} reached; try again later"
            )
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Same-origin pages always; other origins only when configured."""
        allowed = self.settings_.allowed_origins
        if "*" in allowed:
            return True
        origin = origin.lower().rstrip("/")
        if origin in allowed:
            return True
        return urlsplit(origin).netloc == self.request.headers.get("Host", "").lower()

    def get_compression_options(self) -> dict[str, Any] | None:
        return {} if self.settings_.compression else None

    def get_websocket_protocol(self) -> StrictProtocol | None:
        protocol = super().get_websocket_protocol()
        if protocol is None:
            return None
        # Kept past the close: Tornado drops ws_connection before on_close.
        self.protocol = StrictProtocol(self, False, protocol.params)  # type: ignore[attr-defined]
        return self.protocol

    # -- events --------------------------------------------------------------

    def open(self, *args: str, **kwargs: str) -> None:
        self.opened_at = time.monotonic()
        s = self.settings_
        self.lifecycle.register(self, s.ping_interval, s.ping_timeout)
        self.metrics.connections_opened.inc()
        self.metrics.open_connections.inc()
        self.set_nodelay(True)
        fields: dict[str, Any] = {"peer": self.peer, "path": self.request.path}
        if self.socket_peer != self.peer:
            fields["via"] = self.socket_peer
        protocol = self.protocol
        if protocol is not None and protocol._compressor is not None:
            fields["compression"] = "permessage-deflate"
        emit("open", **fields)
        # Nothing reads the handshake's headers again (the peer is known):
        # freeing them saves about 1.5 KiB for the life of the connection.
        self.request.headers = _NO_HEADERS
        self._headers = _NO_HEADERS

    def on_message(self, message: str | bytes) -> Future[None] | None:
        """Echo ``message`` with its type; log and count it.

        The echo is written at once, without a task per message. Only when
        the client stops reading and more than ``_WRITE_HIGH_WATER`` bytes
        wait to be sent does this return a Future: Tornado then stops
        reading this connection until the backlog drains, so a client that
        does not read its echoes cannot grow our memory.
        """
        binary = isinstance(message, bytes)
        payload = message if isinstance(message, bytes) else message.encode("utf-8")
        size = len(payload)
        self.messages_in += 1
        counts = self.counts
        counts.messages_in[binary] += 1
        counts.bytes_in[binary] += size
        s = self.settings_
        if s.log_messages and _EVENTS_ON() and self.log_budget.allow(size):
            content: str | None = None
            truncated = False
            if s.log_content:
                content, truncated = _preview(message, s.log_preview_bytes)
            kind = "binary" if binary else "text"
            emit_message(self.peer, kind, size, content, truncated, self.via)
        protocol = self.protocol
        if protocol is None or protocol.server_terminated:
            return None
        try:
            written = protocol.send(payload, binary)
        except StreamClosedError:
            self._write_failed()
            return None
        self.messages_out += 1
        counts.messages_out[binary] += 1
        counts.bytes_out[binary] += size
        if written is None or protocol.write_backlog() <= _WRITE_HIGH_WATER:
            return None
        return self._wait_for_reader(written, protocol)

    def _wait_for_reader(self, written: Future[None], protocol: StrictProtocol) -> Future[None]:
        """A Future that resolves when ``written`` is out: until then Tornado
        reads nothing more from this client. A client that leaves it
        unread for ``send_timeout`` seconds is closed with 1008."""
        drained: Future[None] = Future()
        timeout = self.settings_.send_timeout
        timer = None
        if timeout:

            def too_slow() -> None:
                backlog = protocol.write_backlog()
                protocol.fail_now(
                    "slow_consumer",
                    CloseCode.POLICY_VIOLATION,
                    f"client left {backlog} bytes of echoes unread for {timeout:g} s",
                )

            timer = asyncio.get_running_loop().call_later(timeout, too_slow)

        def on_written(f: Future[None]) -> None:
            if timer is not None:
                timer.cancel()
            if f.exception() is not None and protocol.failure is None:
                self._write_failed()
            drained.set_result(None)

        written.add_done_callback(on_written)
        return drained

    def _write_failed(self) -> None:
        self._error("write_failed", "connection closed before the echo was written")

    def _error(
        self,
        kind: str,
        detail: str,
        level: int = logging.WARNING,
        exc_info: Any = None,
        **extra: Any,
    ) -> None:
        """Count an error of ``kind`` and log it as an ``error`` event, once."""
        self.metrics.errors.labels(kind).inc()
        if self.via is not None:  # issue 11
            extra["via"] = self.via
        emit("error", level, exc_info=exc_info, kind=kind, detail=detail, peer=self.peer, **extra)

    def go_away(self, force: bool) -> None:
        """Drain: close with 1001 once everything received has been echoed
        (or at once with ``force``)."""
        protocol = self.protocol
        if self.going_away or protocol is None:
            return
        if force or protocol.quiescent():
            self.going_away = True
            self.close(CloseCode.GOING_AWAY, "server shutting down")

    def on_close(self) -> None:
        if not self.opened_at:
            return
        self.lifecycle.unregister(self)
        m = self.metrics
        m.open_connections.dec()
        duration = time.monotonic() - self.opened_at
        m.connection_duration.observe(duration)
        protocol = self.protocol
        fields: dict[str, Any] = {"peer": self.peer}
        if self.via is not None:  # issue 11
            fields["via"] = self.via
        failure = protocol.failure if protocol else None
        if failure is not None:
            code, reason = failure.code, failure.reason
            level = logging.ERROR if failure.exc_info else logging.WARNING
            self._error(failure.kind, reason, level=level, exc_info=failure.exc_info, code=code)
        elif protocol is not None and protocol.close_received:
            code = self.close_code if self.close_code is not None else CloseCode.NO_STATUS_RECEIVED
            reason = self.close_reason or ""
        elif protocol is not None and protocol.close_sent is not None:
            code, reason = protocol.close_sent, ""
            fields["clean"] = False  # we sent a close frame, the peer never answered
        else:
            code, reason = CloseCode.ABNORMAL_CLOSURE, ""
            self._error("abnormal_closure", "connection dropped without a close frame", code=code)
        m.connections_closed.labels(str(code)).inc()
        fields.update(
            code=code,
            reason=reason,
            duration=round(duration, 3),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
        )
        fields.update(self.log_budget.summary())  # issue 11: messages not logged
        emit("close", **fields)


class _JsonHandler(tornado.web.RequestHandler):
    def write_json(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc) + "\n")


class HealthHandler(_JsonHandler):
    """Liveness: the event loop answers."""

    def get(self) -> None:
        self.write_json(200, {"status": "ok"})

    head = get


class ReadyHandler(_JsonHandler):
    """Readiness: 503 from the moment a drain starts, so no new traffic comes."""

    def initialize(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def get(self) -> None:
        open_now = len(self.lifecycle.connections)
        if self.lifecycle.draining:
            self.write_json(503, {"status": "draining", "connections": open_now})
        else:
            self.write_json(200, {"status": "ready", "connections": open_now})

    head = get


class MetricsHandler(tornado.web.RequestHandler):
    """Prometheus text exposition."""

    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.render())


CONSOLE_HTML = resources.files("server").joinpath("static/console.html").read_bytes()


class ConsoleHandler(tornado.web.RequestHandler):
    """The echo console: one self-contained page, no external assets."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        # issue 11: what a security scanner expects on an HTML page.
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.finish(CONSOLE_HTML)
