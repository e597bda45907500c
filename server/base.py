"""A reusable base for WebSocket services on Knative.

:class:`KnativeWebSocketHandler` is a Tornado ``WebSocketHandler`` with the
API users know - ``open``, ``on_message``, ``on_close``, ``write_message``,
``close``, ``ping``, ``check_origin``, ``select_subprotocol``,
``get_compression_options`` - plus one hook from the Knative sample,
``on_error``. Subclass it, write those callbacks, and the service gets what
makes the echo server fit for Knative:

- handshake policy: every refusal (not an upgrade, a bad key or version,
  HTTP/1.0, a foreign origin, draining, over capacity) gets a specific
  status and body with ``Connection: close``, a count, and one ``error``
  event within the process's budget for refusals; the connection cap
  counts an upgrade from its checks on;
- permessage-deflate negotiated by the wire core (an invalid offer is
  declined, never a 500);
- limits: the message size (1009), backpressure with a send timeout (1008);
- ``open``/``message``/``close``/``error`` events with the peer, and metrics;
- keepalive and the SIGTERM drain (the connection registry).

The protocol itself is :mod:`server.wire`; the socket, :mod:`server.transport`.
Settings come in one :class:`Service` object, from the application's
settings (:data:`SERVICE_SETTING`); ``initialize()`` is the app's own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import tornado.escape
import tornado.httputil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from . import wire
from .accept import answer_and_close
from .connections import Connections, Registry
from .events import EVENT_LOGGER, EventBudget, MessageLogBudget, emit, emit_message
from .forwarded import resolve_peer
from .handover import release_request, take_over
from .kinds import CloseCause, ErrorKind, error_kind
from .metrics import Metrics
from .telemetry import record_error
from .tracecontext import trace_id
from .transport import Outcome, SendLimits, WebSocketTransport
from .wire import CloseCode

__all__ = ["SERVICE_SETTING", "HandshakePolicy", "KnativeWebSocketHandler", "MessageLog", "Service"]

#: The Tornado application setting that carries the :class:`Service` (set
#: by :func:`server.app.make_app`): ``initialize()`` is the app's own.
SERVICE_SETTING = "knative_websocket_service"


class _ReleasedHeaders(tornado.httputil.HTTPHeaders):
    """The handshake's request headers once ``open()`` is done: empty, and
    read-only, as one object stands in for them on every connection (a
    write would show on all the others)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "the upgrade request's headers are released once open() returns: "
            "keep what you need of them in open()"
        )

    add = __setitem__ = __delitem__ = _read_only


#: Stands in for the handshake's request headers once the connection is open.
_NO_HEADERS = _ReleasedHeaders()

_NOT_A_WEBSOCKET = (
    "400 Bad Request: this is a WebSocket endpoint. Connect with a WebSocket client "
    "(a GET with 'Upgrade: websocket' and 'Connection: Upgrade')\n"
)
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    426: "Upgrade Required",
    503: "Service Unavailable",
}


@dataclasses.dataclass(frozen=True)
class HandshakePolicy:
    """Which upgrades are accepted, and what a connection may send."""

    #: Extra browser origins allowed ("*": any); same-origin pages always are.
    allowed_origins: tuple[str, ...] = ()
    #: Open connections allowed at once (0: no cap).
    max_connections: int = 10_000
    #: Negotiate permessage-deflate with clients that offer it.
    compression: bool = False
    #: The largest message accepted, before and after inflation.
    max_message_bytes: int = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class MessageLog:
    """The per-message ``message`` event."""

    enabled: bool = True
    content: bool = True
    preview_bytes: int = 64
    #: Events a connection may log per second after its first ``burst``
    #: (0: every message); the rest are counted on its ``close`` event.
    rate: float = 10.0
    burst: int = 100


@dataclasses.dataclass(frozen=True)
class Forwarding:
    """Whose forwarded headers name the client (see :mod:`server.forwarded`)."""

    trusted_proxies: tuple[str, ...] = ("private",)
    header: str = "x-forwarded-for"


@dataclasses.dataclass(frozen=True)
class Service:
    """Everything a handler needs, built once by :mod:`server.app`."""

    metrics: Metrics
    registry: Registry
    policy: HandshakePolicy = dataclasses.field(default_factory=HandshakePolicy)
    limits: SendLimits = dataclasses.field(default_factory=SendLimits)
    message_log: MessageLog = dataclasses.field(default_factory=MessageLog)
    forwarding: Forwarding = dataclasses.field(default_factory=Forwarding)
    #: ``error`` events of refused upgrades: 100, then 10 a second.
    refusal_log: EventBudget = dataclasses.field(default_factory=lambda: EventBudget(10.0, 100))
    #: ``request`` events: 100, then 10 a second; on one connection 10,
    #: then 1 a second.
    request_log: EventBudget = dataclasses.field(
        default_factory=lambda: EventBudget(10.0, 100, 1.0, 10)
    )


def _client_address(
    request: tornado.httputil.HTTPServerRequest, forwarding: Forwarding
) -> tuple[str, str]:
    """(peer, socket address): the client as the trusted proxies name it
    (the right-most address no trusted proxy added), and the TCP peer."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    header = forwarding.header
    values = request.headers.get_list(header) if header != "none" else []
    return resolve_peer(address, request.remote_ip, values, forwarding.trusted_proxies, header)


def _preview(message: str | bytes, limit: int) -> tuple[str, bool]:
    """The first ``limit`` characters of text, or bytes as hex."""
    if isinstance(message, bytes):
        return message[:limit].hex(), len(message) > limit
    return message[:limit], len(message) > limit


def _events_on() -> bool:
    return EVENT_LOGGER.isEnabledFor(logging.INFO)


class KnativeWebSocketHandler(tornado.websocket.WebSocketHandler):
    """Tornado's handler API on the project's wire core and transport.

    Override ``open``, ``on_message``, ``on_close`` and ``on_error``;
    ``on_message`` may return an awaitable, and no further message is read
    until it is done.
    """

    service: Service
    #: The connection's transport, once open.
    ws: WebSocketTransport | None = None
    #: When an upgrade last failed for want of a descriptor was logged (once per 10 s).
    _descriptors_logged_at = -1e9

    def __init__(
        self,
        application: tornado.web.Application,
        request: tornado.httputil.HTTPServerRequest,
        **kwargs: Any,
    ) -> None:
        # The base's set-up comes first, from the application's settings:
        # Tornado then calls ``initialize(**kwargs)``, the app's own hook.
        service = application.settings.get(SERVICE_SETTING)
        if service is None:
            raise RuntimeError("no Service in the application's settings: use server.app.make_app")
        self._set_up(service, request)
        super().__init__(application, request, **kwargs)

    def _set_up(self, service: Service, request: tornado.httputil.HTTPServerRequest) -> None:
        self.service = service
        self.counts = service.metrics.messages
        self.peer, socket_peer = _client_address(request, service.forwarding)
        #: The socket peer, on every event, when the client came through a proxy.
        self.via = socket_peer if socket_peer != self.peer else None
        log = service.message_log
        self.log_budget = MessageLogBudget(log.rate, log.burst)
        self.opened_at = 0.0
        self.messages_in = 0
        self.messages_out = 0
        self._subprotocol: str | None = None
        self._written: asyncio.Future[None] | None = None
        # Every attribute a handler will have is set here, while it is made:
        # CPython 3.11 shares one key table among a class's instances only
        # for the names set while the first few instances are made, and a
        # burst of upgrades makes many handlers before any runs ``get``.
        # A name first set later gives every later handler a dict of its
        # own: about 1.3 KiB more for each open connection. Tornado sets
        # these two again in ``_execute``; ``ws`` is set once open.
        self.path_args: list[str] = []
        self.path_kwargs: dict[str, str] = {}
        self.ws = None

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    @property
    def connections(self) -> Connections:
        """The open connections of every route (read-only; see :class:`Connections`)."""
        return self.service.registry.view

    # -- the handshake -------------------------------------------------------

    def _refuse(
        self,
        status: int,
        kind: ErrorKind,
        detail: str,
        body: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer ``status`` with ``Connection: close`` and close the
        connection (a client pipelining upgrades gets one answer, not one
        each), and log one ``error`` event within the service's budget for
        refusals (the count of those left out is on the next one)."""
        allowed = self.service.refusal_log.allow()
        logged: dict[str, Any] = dict(allowed or {})
        if allowed is not None:
            origin = self.request.headers.get("Origin")
            if origin is not None:
                logged["origin"] = origin
            if self.via is not None:
                logged["via"] = self.via
        record_error(
            self.metrics,
            kind,
            detail,
            refused=True,
            log=allowed is not None,
            status=status,
            peer=self.peer,
            **logged,
        )
        if status == 503:
            headers += (("Retry-After", "1"),)
        text = body if body is not None else f"{status} {_REASONS[status]}: {detail}\n"
        answer_and_close(self.detach(), status, _REASONS[status], text, headers)

    def _check_handshake(self) -> bool:
        """Refuse the upgrade with a specific answer; True if it may proceed."""
        request = self.request
        headers = request.headers
        bad = ErrorKind.BAD_HANDSHAKE
        if "websocket" not in (t.strip().lower() for t in headers.get("Upgrade", "").split(",")):
            self._refuse(400, bad, "not a WebSocket upgrade", _NOT_A_WEBSOCKET)
            return False
        if request.version != "HTTP/1.1":
            self._refuse(400, bad, f"WebSocket upgrades need HTTP/1.1, not {request.version}")
            return False
        if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
            self._refuse(400, bad, "the Connection header must include Upgrade")
            return False
        try:
            key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True))
        except (binascii.Error, ValueError):
            key_ok = 0
        if key_ok != 16:
            self._refuse(400, bad, "Sec-WebSocket-Key must be 16 bytes in base64")
            return False
        if headers.get("Sec-WebSocket-Version") != "13":
            self._refuse(
                426,
                bad,
                "unsupported Sec-WebSocket-Version (this server speaks 13)",
                headers=(("Sec-WebSocket-Version", "13"),),
            )
            return False
        origin = headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            self._refuse(403, ErrorKind.ORIGIN_REJECTED, f"origin {origin!r} is not allowed")
            return False
        registry = self.service.registry
        if registry.draining:
            self._refuse(503, ErrorKind.DRAINING, "server is shutting down; reconnect")
            return False
        # The cap counts upgrades from here, not from their hand-over: a
        # burst that arrives in one loop turn would all pass a check of the
        # open connections alone. ``get`` gives the place back.
        limit = self.service.policy.max_connections
        if not registry.reserve(limit):
            detail = f"connection limit of {limit} reached; try again later"
            self._refuse(503, ErrorKind.OVER_CAPACITY, detail)
            return False
        return True

    def _response(self, deflate: wire.Deflate | None) -> bytes:
        key = self.request.headers["Sec-WebSocket-Key"]
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {wire.accept_key(key)}",
        ]
        if self._subprotocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {self._subprotocol}")
        if deflate is not None:
            lines.append(f"Sec-WebSocket-Extensions: {deflate.response()}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self._check_handshake():
            return
        try:
            await self._upgrade(*args, **kwargs)
        finally:
            if not self.opened_at:  # every path that did not open
                self.service.registry.release()

    async def _upgrade(self, *args: Any, **kwargs: Any) -> None:
        headers = self.request.headers
        offered = [
            p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        if offered:
            selected = self.select_subprotocol(offered)
            if selected is not None and selected in offered:
                self._subprotocol = selected
        deflate = None
        if self.get_compression_options() is not None:
            deflate = wire.negotiate_deflate(headers.get_list("Sec-WebSocket-Extensions"))
        response = self._response(deflate)
        policy = self.service.policy
        conn = wire.Connection(policy.max_message_bytes, deflate)
        try:
            sock, leftover = take_over(self.detach())
        except StreamClosedError:
            self._left_during_upgrade()
            return
        except OSError as exc:  # no descriptor left: answered 503
            now = time.monotonic()
            log = now - KnativeWebSocketHandler._descriptors_logged_at >= 10.0
            if log:
                KnativeWebSocketHandler._descriptors_logged_at = now
            record_error(
                self.metrics,
                ErrorKind.DESCRIPTORS_EXHAUSTED,
                f"no descriptor for an upgraded connection ({exc.strerror}); answered 503",
                log=log,
                **self._who(),
            )
            return
        release_request(self.request)
        loop = asyncio.get_running_loop()
        try:
            _, ws = await loop.connect_accepted_socket(
                lambda: WebSocketTransport(conn, self, self.service.limits, response, leftover),
                sock,
            )
        except OSError:
            sock.close()
            self._left_during_upgrade()
            return
        if ws.lost:
            self._left_during_upgrade()
            return
        self.ws = ws
        self._opened(deflate)
        try:
            result = self.open(*args, **kwargs)
            if result is not None:
                await result
        except Exception:
            ws.handler_failed(sys.exc_info())
            return
        # open() has read what it needs of the handshake's headers (the peer
        # is known): freeing them saves memory for the life of the connection.
        self.request.headers = _NO_HEADERS
        ws.start()

    def _left_during_upgrade(self) -> None:
        """The client reset or closed its connection around the 101, before
        the handler opened: an abnormal closure (counted, one event)."""
        detail = "connection dropped during the upgrade"
        record_error(self.metrics, ErrorKind.ABNORMAL_CLOSURE, detail, **self._who())

    def _opened(self, deflate: wire.Deflate | None) -> None:
        assert self.ws is not None
        # The registry counts it from here, instead of its place. (No
        # attribute of the handler tracks the place: see _set_up.)
        self.opened_at = time.monotonic()
        self.service.registry.release()
        self.service.registry.add(self.ws, self)
        m = self.metrics
        m.connections_opened.inc()
        m.open_connections.inc()
        fields: dict[str, Any] = {"peer": self.peer, "path": self.request.path}
        if self.via is not None:
            fields["via"] = self.via
        if deflate is not None:
            fields["compression"] = deflate.response()
        if self._subprotocol is not None:
            fields["subprotocol"] = self._subprotocol
        trace = trace_id(self.request.headers.get)
        if trace is not None:
            fields["trace_id"] = trace
        emit("open", **fields)

    def check_origin(self, origin: str) -> bool:
        """Same-origin pages always; other origins only when configured."""
        allowed = self.service.policy.allowed_origins
        if "*" in allowed:
            return True
        origin = origin.lower().rstrip("/")
        if origin in allowed:
            return True
        return urlsplit(origin).netloc == self.request.headers.get("Host", "").lower()

    def get_compression_options(self) -> dict[str, Any] | None:
        """``{}`` to negotiate permessage-deflate, None not to (Tornado's hook)."""
        return {} if self.service.policy.compression else None

    # -- the API a service uses ----------------------------------------------

    def write_message(
        self, message: bytes | str | dict[str, Any], binary: bool = False
    ) -> asyncio.Future[None]:
        """Send a message (a dict is sent as JSON text). Returns a Future
        that resolves once the event loop's write buffer takes more; raises
        ``WebSocketClosedError`` once the connection is closing."""
        ws = self.ws
        if ws is None or ws.conn.close_sent is not None:
            raise tornado.websocket.WebSocketClosedError()
        if isinstance(message, dict):
            message = tornado.escape.json_encode(message)
        payload = message.encode("utf-8") if isinstance(message, str) else message
        try:
            ws.send(ws.conn.send_message(payload, binary))
        except StreamClosedError:
            record_error(
                self.metrics,
                ErrorKind.WRITE_FAILED,
                "connection closed before the message was written",
                **self._who(),
            )
            raise tornado.websocket.WebSocketClosedError() from None
        self.messages_out += 1
        counts = self.counts
        counts.messages_out[binary] += 1
        counts.bytes_out[binary] += len(payload)
        if ws.backlog():
            return ws.drained()
        written = self._written
        if written is None:  # one resolved Future per connection, made on first use
            written = self._written = asyncio.get_running_loop().create_future()
            written.set_result(None)
        return written

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake with ``code`` (1000 if a reason is given)."""
        if self.ws is not None:
            if code is None and reason:
                code = CloseCode.NORMAL_CLOSURE
            if not self.ws.closing():  # the handler starts the close: cause "app"
                self.service.registry.set_cause(self.ws, CloseCause.APP)
            self.ws.close(code, reason or "")

    def ping(self, data: str | bytes = b"") -> None:
        """Send a ping (at most 125 bytes)."""
        ws = self.ws
        if ws is None or ws.conn.close_sent is not None:
            raise tornado.websocket.WebSocketClosedError()
        payload = data.encode("utf-8") if isinstance(data, str) else data
        ws.send_control(ws.conn.send_ping(payload))

    @property
    def selected_subprotocol(self) -> str | None:
        return self._subprotocol

    def set_nodelay(self, value: bool) -> None:
        """Kept for the API: every connection already runs with TCP_NODELAY."""

    def on_error(self, kind: ErrorKind, detail: str) -> None:
        """The connection failed or dropped (the sample's ``OnError``);
        ``on_close`` follows."""

    # -- what the transport calls --------------------------------------------

    def ws_message(self, data: str | bytes) -> Awaitable[None] | None:
        binary = type(data) is bytes
        # Payload bytes: str.isascii() is O(1) (CPython keeps the flag).
        size = len(data) if binary or data.isascii() else len(data.encode())  # type: ignore[union-attr]
        self.messages_in += 1
        counts = self.counts
        counts.messages_in[binary] += 1
        counts.bytes_in[binary] += size
        log = self.service.message_log
        if log.enabled and _events_on() and self.log_budget.allow(size):
            content: str | None = None
            truncated = False
            if log.content:
                content, truncated = _preview(data, log.preview_bytes)
            kind = "binary" if binary else "text"
            emit_message(self.peer, kind, size, content, truncated, self.via)
        try:
            return self.on_message(data)
        except tornado.websocket.WebSocketClosedError:
            ws = self.ws
            if ws is not None and ws.closing():
                return None  # the connection went away under the handler: not a bug
            raise

    def ws_ping(self, data: bytes) -> None:
        self.on_ping(data)

    def ws_pong(self, data: bytes) -> None:
        self.on_pong(data)

    def ws_closed(self, outcome: Outcome) -> None:
        ws = self.ws
        cause = self.service.registry.discard(ws) if ws is not None else None
        if not self.opened_at:
            return
        m = self.metrics
        m.open_connections.dec()
        duration = time.monotonic() - self.opened_at
        m.connection_duration.observe(duration)
        fields: dict[str, Any] = {"peer": self.peer}
        if self.via is not None:
            fields["via"] = self.via
        failure = outcome.failure
        code = outcome.code
        if failure is not None:
            level = logging.ERROR if outcome.exc_info else logging.WARNING
            kind = error_kind(failure.kind)
            record_error(
                m,
                kind,
                failure.reason,
                level=level,
                exc_info=outcome.exc_info,
                code=int(code),
                **self._who(),
            )
            self._call_on_error(kind, failure.reason)
        elif outcome.close_received is None and code == CloseCode.ABNORMAL_CLOSURE:
            detail = "connection dropped without a close frame"
            record_error(m, ErrorKind.ABNORMAL_CLOSURE, detail, code=int(code), **self._who())
            self._call_on_error(ErrorKind.ABNORMAL_CLOSURE, detail)
        elif not outcome.clean:
            fields["clean"] = False  # we sent a close frame, the peer never answered
        if failure is not None:
            cause = CloseCause.ERROR
        elif cause is None:
            cause = CloseCause.CLIENT if outcome.close_received is not None else CloseCause.DROPPED
        m.connections_closed.labels(str(int(code))).inc()
        m.closed_by_cause.labels(cause).inc()
        fields.update(
            code=int(code),
            reason=outcome.reason,
            cause=cause.value,
            duration=round(duration, 3),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
        )
        fields.update(self.log_budget.summary())  # message events left out
        emit("close", **fields)
        self.close_code = int(code)
        self.close_reason = outcome.reason
        self.on_connection_close()  # Tornado's: calls on_close() once

    def _who(self) -> dict[str, Any]:
        """The peer fields of an error event."""
        if self.via is None:
            return {"peer": self.peer}
        return {"peer": self.peer, "via": self.via}

    def _call_on_error(self, kind: ErrorKind, detail: str) -> None:
        try:
            self.on_error(kind, detail)
        except Exception:
            detail = "on_error raised"
            record_error(
                None,
                ErrorKind.HANDLER_EXCEPTION,
                detail,
                level=logging.ERROR,
                exc_info=sys.exc_info(),
                **self._who(),
            )
