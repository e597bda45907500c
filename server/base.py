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
import concurrent.futures
import dataclasses
import http
import logging
import math
import re
import sys
import time
from collections.abc import Awaitable, Iterable
from logging import INFO
from threading import get_ident
from typing import Any
from urllib.parse import urlsplit

import tornado.escape
import tornado.httputil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from . import wire
from .accept import answer_and_close
from .backplane import Backplane, LocalBackplane
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

__all__ = [
    "OVERRIDABLE",
    "SERVICE_SETTING",
    "HandshakePolicy",
    "KnativeWebSocketHandler",
    "MessageLog",
    "Service",
    "broadcast",
]

#: The Tornado application setting that carries the :class:`Service` (set
#: by :func:`server.app.make_app`): ``initialize()`` is the app's own.
SERVICE_SETTING = "knative_websocket_service"


class _ReleasedHeaders(tornado.httputil.HTTPHeaders):
    """The handshake's request headers once ``open()`` is done: one object
    stands in for them on every connection, and reading or writing it
    raises an error that names the fix (an empty answer would be wrong
    without a word: a cookie read in ``on_message`` would be missing)."""

    def _released(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "the upgrade request's headers (and cookies) are released once open() "
            "returns, to save memory per connection: read what you need of them in "
            "open() (self.current_user too) and keep it"
        )

    add = __setitem__ = __delitem__ = _released
    __getitem__ = __contains__ = __iter__ = get = get_list = get_all = _released


#: Stands in for the handshake's request headers once the connection is open.
_NO_HEADERS = _ReleasedHeaders()

_NOT_A_WEBSOCKET = (
    "400 Bad Request: this is a WebSocket endpoint. Connect with a WebSocket client "
    "(a GET with 'Upgrade: websocket' and 'Connection: Upgrade')\n"
)


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
    #: Fan-out across processes (WS_BACKPLANE_URL; in-process by default).
    backplane: Backplane = dataclasses.field(default_factory=LocalBackplane)
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


#: The names an app may override (Tornado's hooks and API, and the base's
#: ``on_error`` and ``authorize``); every other name the base defines is its
#: own, and a subclass that redefines one is refused (see __init_subclass__).
OVERRIDABLE = frozenset(
    {
        "initialize",
        "prepare",
        "authorize",
        "open",
        "on_message",
        "on_close",
        "on_error",
        "on_ping",
        "on_pong",
        "check_origin",
        "select_subprotocol",
        "get_compression_options",
        "write_message",
        "close",
        "ping",
        "set_nodelay",
    }
)


class KnativeWebSocketHandler(tornado.websocket.WebSocketHandler):
    """Tornado's handler API on the project's wire core and transport.

    Override ``open``, ``on_message``, ``on_close`` and ``on_error``;
    ``on_message`` may return an awaitable, and no further message is read
    until it is done. The base keeps its own state of the connection in one
    private attribute, ``_kws``; the names it adds to Tornado's API are
    ``on_error``, ``authorize``, ``peer``, ``connections``, ``backlog``,
    ``send_timeout``, ``backplane`` and ``write_message_threadsafe``
    (``initialize()`` is the app's own).
    """

    _kws: _Connection
    #: When an upgrade last failed for want of a descriptor was logged (once per 10 s).
    _descriptors_logged_at = -1e9

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = {*vars(KnativeWebSocketHandler), *KnativeWebSocketHandler.__annotations__}
        # Every class that comes before the base in the MRO, mixins included:
        # a mixin's ``get`` or ``peer`` shadows the base's as surely as the
        # subclass's own would.
        above = [c for c in cls.__mro__ if c not in KnativeWebSocketHandler.__mro__]
        clash = sorted(
            {
                name
                for klass in above
                for name in (*vars(klass), *vars(klass).get("__annotations__", {}))
                if name in own and name not in OVERRIDABLE and not name.startswith("__")
            }
        )
        if clash:
            raise TypeError(
                f"{cls.__qualname__} redefines {', '.join(clash)} of KnativeWebSocketHandler: "
                "the base needs these names; give yours another name (an app may "
                f"override only {', '.join(sorted(OVERRIDABLE))})"
            )

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
        self._kws = _Connection(self, service, request)
        # Every attribute a handler will have is set here, while it is made:
        # CPython 3.11 shares one key table (of at most 30 names) among a
        # class's instances, and a name that does not fit gives every later
        # handler a dict of its own: about 1.3 KiB more for each open
        # connection. Tornado sets these again in ``_execute`` and ``get``.
        # The base's own state is one name, ``_kws``: a subclass has about
        # ten names left for its own attributes (tests/test_idle_memory.py).
        self.path_args: list[str] = []
        self.path_kwargs: dict[str, str] = {}
        super().__init__(application, request, **kwargs)

    @property
    def peer(self) -> str:
        """The client's address, as the trusted proxies name it (the ``peer``
        of its events)."""
        return self._kws.peer

    @property
    def connections(self) -> Connections:
        """The open connections of every route (read-only; see :class:`Connections`)."""
        return self._kws.service.registry.view

    @property
    def backplane(self) -> Backplane:
        """The process's backplane (:mod:`server.backplane`): publish to a
        channel, subscribe this process's members to it."""
        return self._kws.service.backplane

    # -- the handshake -------------------------------------------------------

    def _refuse(
        self,
        status: int,
        kind: ErrorKind,
        detail: str,
        body: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        phrase: str | None = None,
        level: int = logging.WARNING,
        exc_info: Any = None,
    ) -> None:
        """Answer ``status`` with ``Connection: close`` and close the
        connection (a client pipelining upgrades gets one answer, not one
        each), and log one ``error`` event within the service's budget for
        refusals (the count of those left out is on the next one)."""
        k = self._kws
        allowed = k.service.refusal_log.allow()
        logged: dict[str, Any] = dict(allowed or {})
        if allowed is not None:
            origin = self.request.headers.get("Origin")
            if origin is not None:
                logged["origin"] = origin
            if k.via is not None:
                logged["via"] = k.via
        record_error(
            k.service.metrics,
            kind,
            detail,
            refused=True,
            log=allowed is not None,
            level=level,
            exc_info=exc_info if allowed is not None else None,
            status=status,
            peer=k.peer,
            **logged,
        )
        if status == 503:
            headers += (("Retry-After", "1"),)
        reason = phrase or _phrase(status)
        text = body if body is not None else f"{status} {reason}: {detail}\n"
        answer_and_close(self.detach(), status, reason, text, headers)

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
        if headers.get("Sec-WebSocket-Version") != "13":
            self._refuse(
                426,
                bad,
                "unsupported Sec-WebSocket-Version (this server speaks 13)",
                headers=(("Sec-WebSocket-Version", "13"),),
            )
            return False
        try:
            key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True))
        except (binascii.Error, ValueError):
            key_ok = 0
        if key_ok != 16:
            self._refuse(400, bad, "Sec-WebSocket-Key must be 16 bytes in base64")
            return False
        origin = headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            self._refuse(403, ErrorKind.ORIGIN_REJECTED, f"origin {origin!r} is not allowed")
            return False
        registry = self._kws.service.registry
        if registry.draining:
            self._refuse(503, ErrorKind.DRAINING, "server is shutting down; reconnect")
            return False
        # The cap counts upgrades from here, not from their hand-over: a
        # burst that arrives in one loop turn would all pass a check of the
        # open connections alone. ``get`` gives the place back.
        limit = self._kws.service.policy.max_connections
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
        subprotocol = self._kws.subprotocol
        if subprotocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        if deflate is not None:
            lines.append(f"Sec-WebSocket-Extensions: {deflate.response()}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """The upgrade: the base's handshake checks, then :meth:`authorize`
        (and Tornado's ``prepare()``), then the 101 and ``open()``; a refusal
        is its status with ``Connection: close``, one ``error`` event and a
        count. Not to be overridden (a subclass that does is a ``TypeError``)."""
        self.open_args = args
        self.open_kwargs = kwargs
        if not self._check_handshake():
            return
        k = self._kws
        try:
            try:
                allowed = self.authorize()
                if allowed is not None:
                    await allowed
            except tornado.web.HTTPError as exc:
                self._refuse_for_app(exc)
                return
            await self._upgrade(*args, **kwargs)
        finally:
            if not k.opened_at:  # every path that did not open
                k.service.registry.release()

    def authorize(self) -> Awaitable[None] | None:
        """Refuse the upgrade before any 101: raise
        ``tornado.web.HTTPError(status, log_message)`` (401, 403, 429, ...).
        Runs after the base's own checks (the handshake, the origin, the
        drain, the connection cap); ``self.request`` has the upgrade
        request (headers, cookies, the ``Sec-WebSocket-Protocol`` offer).
        May be a coroutine. The refusal is answered with ``Connection:
        close``, logged as an ``error`` event (``detail`` is the
        log_message, which the client does not see) and counted in
        ``websocket_handshakes_rejected_total`` under ``unauthorized``
        (401), ``forbidden`` (403), ``rate_limited`` (429) or
        ``app_refused``. The default lets every upgrade through."""
        return None

    def _before_upgrade(self) -> bool:
        """The request is still Tornado's: no 101 has gone, the socket is not taken."""
        k = getattr(self, "_kws", None)
        return k is not None and not k.opened_at and self.request.connection is not None

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Tornado's: before the upgrade, an ``HTTPError`` raised in
        ``prepare()`` is a refusal like one from ``authorize()``, and any
        other exception there (or in ``authorize()``, ``select_subprotocol()``
        ...) a 500 refusal counted and logged as ``handler_exception``."""
        exc_info = kwargs.get("exc_info", (None, None, None))
        exc = exc_info[1]
        if self._before_upgrade():
            if isinstance(exc, tornado.web.HTTPError) or (exc is None and status_code < 500):
                if not isinstance(exc, tornado.web.HTTPError):
                    exc = tornado.web.HTTPError(status_code, reason=kwargs.get("reason"))
                self._refuse_for_app(exc)
                return
            detail = f"{type(exc).__name__} before the upgrade" if exc is not None else "error"
            self._refuse(
                500,
                ErrorKind.HANDLER_EXCEPTION,
                detail,
                "500 Internal Server Error\n",
                level=logging.ERROR,
                exc_info=exc_info if exc is not None else None,
            )
            return
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        """Tornado's, but an exception before the upgrade is its refusal's
        ``error`` event (within the refusal budget; see ``send_error``),
        not one more line of Tornado's."""
        if self._before_upgrade():
            return
        super().log_exception(typ, value, tb)

    def get_websocket_protocol(self) -> None:
        """Not used: the protocol is :mod:`server.wire` on the base's own
        transport, and ``ws_connection`` (not None while open) stands in
        for Tornado's ``WebSocketProtocol``."""
        raise NotImplementedError(
            "KnativeWebSocketHandler speaks WebSocket through server.wire and "
            "server.transport, not Tornado's WebSocketProtocol; use ws_connection "
            "(is_closing()) and the handler's own methods"
        )

    def _refuse_for_app(self, exc: tornado.web.HTTPError) -> None:
        status = exc.status_code
        kind = _APP_REFUSALS.get(status, ErrorKind.APP_REFUSED)
        phrase = exc.reason or _phrase(status)
        if "<" in phrase or not _REASON_PHRASE.fullmatch(phrase):
            # As Tornado's set_status does: the phrase goes into the status
            # line as it is (CR LF would split the response, a character
            # outside Latin-1 would not encode).
            phrase = "Unknown"
        detail = (
            (exc.log_message % exc.args if exc.args else exc.log_message)
            if exc.log_message
            else phrase
        )
        headers = (("Retry-After", "1"),) if status == 429 else ()
        self._refuse(status, kind, detail, f"{status} {phrase}\n", headers, phrase)

    def _deflate(self) -> wire.Deflate | None:
        """permessage-deflate, if ``get_compression_options()`` asks for it
        and the client offers it."""
        options = self.get_compression_options()
        if options is None:
            return None
        if options:
            raise ValueError(
                f"get_compression_options() returned {options!r}: this server's "
                "permessage-deflate takes no options (zlib's defaults, the "
                "windows negotiated with the client); return {} or None"
            )
        return wire.negotiate_deflate(self.request.headers.get_list("Sec-WebSocket-Extensions"))

    async def _upgrade(self, *args: Any, **kwargs: Any) -> None:
        k = self._kws
        headers = self.request.headers
        offered = [
            p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        selected = self.select_subprotocol(offered)  # Tornado calls it with [] too
        if selected is not None:
            if selected not in offered:
                raise ValueError(
                    f"select_subprotocol() chose {selected!r}, which the client did not "
                    f"offer ({offered}): return one of them, or None"
                )
            k.subprotocol = selected
        for name in _PING_SETTINGS:
            if name in self.settings:
                raise RuntimeError(
                    f"the {name} application setting does not apply: one keepalive pings "
                    "every connection of the process; set WS_PING_INTERVAL and "
                    "WS_PING_TIMEOUT instead"
                )
        deflate = self._deflate()
        response = self._response(deflate)
        conn = wire.Connection(self.max_message_size, deflate)
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
                k.service.metrics,
                ErrorKind.DESCRIPTORS_EXHAUSTED,
                f"no descriptor for an upgraded connection ({exc.strerror}); answered 503",
                log=log,
                **k.who(),
            )
            return
        release_request(self.request)
        loop = asyncio.get_running_loop()
        try:
            _, ws = await loop.connect_accepted_socket(
                lambda: WebSocketTransport(conn, k, k.service.limits, response, leftover),
                sock,
            )
        except OSError:
            sock.close()
            self._left_during_upgrade()
            return
        if ws.lost:
            self._left_during_upgrade()
            return
        k.ws = ws
        k.thread = get_ident()
        k.loop = loop
        self._opened(deflate)
        try:
            result = self.open(*args, **kwargs)
            if result is not None:
                await result
            # An app's current_user is resolved before the headers go (from
            # a cookie, say), and the locale (Accept-Language, which
            # render_string reads): in on_message they work as in Tornado.
            if type(self).get_current_user is not tornado.web.RequestHandler.get_current_user:
                self.current_user  # noqa: B018 - Tornado caches it
            self.locale  # noqa: B018 - Tornado caches it (a shared Locale object)
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
        k = self._kws
        record_error(k.service.metrics, ErrorKind.ABNORMAL_CLOSURE, detail, **k.who())

    def _opened(self, deflate: wire.Deflate | None) -> None:
        k = self._kws
        assert k.ws is not None
        # The registry counts it from here, instead of its place. (No
        # attribute tracks the place: ``opened_at`` says it was given back.)
        k.opened_at = time.monotonic()
        registry = k.service.registry
        registry.release()
        registry.add(k.ws, self)
        # Tornado's get_status() of an open WebSocket (set_status itself is
        # refused from here on, as in Tornado).
        tornado.web.RequestHandler.set_status(self, 101)
        self.ws_connection = k  # type: ignore[assignment]  # is_closing(), as Tornado's
        m = k.service.metrics
        m.connections_opened.inc()
        m.open_connections.inc()
        fields: dict[str, Any] = {"peer": k.peer, "path": self.request.path}
        if k.via is not None:
            fields["via"] = k.via
        if deflate is not None:
            fields["compression"] = deflate.response()
        if k.subprotocol is not None:
            fields["subprotocol"] = k.subprotocol
        trace = trace_id(self.request.headers.get)
        if trace is not None:
            fields["trace_id"] = trace
        emit("open", **fields)

    def check_origin(self, origin: str) -> bool:
        """Same-origin pages always; other origins only when configured."""
        allowed = self._kws.service.policy.allowed_origins
        if "*" in allowed:
            return True
        origin = origin.lower().rstrip("/")
        if origin in allowed:
            return True
        return urlsplit(origin).netloc == self.request.headers.get("Host", "").lower()

    def get_compression_options(self) -> dict[str, Any] | None:
        """``{}`` to negotiate permessage-deflate, None not to (Tornado's
        hook; options such as ``compression_level`` are refused: see
        "Differences from Tornado" in docs/guides/write-a-service.md)."""
        return {} if self._kws.service.policy.compression else None

    # -- Tornado's settings, as this server applies them ---------------------

    @property
    def max_message_size(self) -> int:
        """The largest message accepted: Tornado's ``websocket_max_message_size``
        application setting if given, else ``WS_MAX_MESSAGE_BYTES``."""
        limit: int = self.settings.get(
            "websocket_max_message_size", self._kws.service.policy.max_message_bytes
        )
        return limit

    @property
    def ping_interval(self) -> float | None:
        """Seconds between keepalive pings (``WS_PING_INTERVAL``; 0: none)."""
        return self._kws.service.registry.keepalive.interval

    @property
    def ping_timeout(self) -> float | None:
        """Seconds to wait for a pong (``WS_PING_TIMEOUT``; 0: forever)."""
        return self._kws.service.registry.keepalive.timeout

    @property
    def send_timeout(self) -> float:
        """Seconds a client may leave what it is sent unread before it is
        closed with 1008 (``WS_SEND_TIMEOUT``; 0: never): how long an app
        that waits for a client to read (a paced replay) should wait."""
        return self._kws.service.limits.send_timeout

    # -- the API a service uses ----------------------------------------------

    def write_message(
        self, message: bytes | str | dict[str, Any], binary: bool = False
    ) -> asyncio.Future[None]:
        """Send a message (a dict is sent as JSON text). Returns a Future
        that resolves once the event loop's write buffer takes more; raises
        ``WebSocketClosedError`` once the connection is closing (and the
        Future does, if the connection goes while it waits). Call it on the
        event loop's thread; from another, use ``write_message_threadsafe``."""
        k = self._kws
        ws = k.ws
        if ws is None:
            raise tornado.websocket.WebSocketClosedError()
        conn = ws.conn
        if conn.close_sent is not None:
            raise tornado.websocket.WebSocketClosedError()
        if k.thread != get_ident():  # per message: one global, no attribute
            _off_loop("write_message")
        # bytes first (an echo's binary message), then text, then a dict as JSON.
        payload: Any
        if type(message) is bytes:
            payload = message
        elif isinstance(message, str):
            payload = message.encode("utf-8")
        elif isinstance(message, dict):
            payload = tornado.escape.json_encode(message).encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            payload = message
        else:
            raise TypeError(f"write_message takes bytes, str or dict, not {type(message).__name__}")
        try:
            ws.send(conn.send_message(payload, binary))
        except StreamClosedError:
            # Every failed write counted; one line a connection (an app that
            # writes on after the error must not fill the log).
            k.write_failures += 1
            record_error(
                k.service.metrics,
                ErrorKind.WRITE_FAILED,
                "connection closed before the message was written",
                log=k.write_failures == 1,
                **k.who(),
            )
            raise tornado.websocket.WebSocketClosedError() from None
        k.messages_out += 1
        counts = k.counts
        counts.messages_out[binary] += 1
        counts.bytes_out[binary] += len(payload)
        if ws.backlog():
            drained = ws.drained()
            if drained is not k.drained:  # one relay for every writer of one wait
                k.drained = drained
                k.relay = _closed_as_websocket(drained)
            assert k.relay is not None
            return k.relay
        written = k.written
        if written is None:  # one resolved Future per connection, made on first use
            written = k.written = asyncio.get_running_loop().create_future()
            written.set_result(None)
        return written

    @property
    def backlog(self) -> int:
        """Bytes written to this connection that the kernel has not yet
        taken (its echoes, ``write_message``, :func:`broadcast`): 0 once it
        is gone. Past ``WS_MAX_BACKLOG`` the connection is closed with 1008
        ``slow_consumer``; an app may read it to skip or shed a member
        before that."""
        ws = self._kws.ws
        return 0 if ws is None or ws.lost else ws.backlog()

    def write_message_threadsafe(
        self, message: bytes | str | dict[str, Any], binary: bool = False
    ) -> concurrent.futures.Future[None]:
        """``write_message`` from any thread: hops to the connection's event
        loop and returns a ``concurrent.futures.Future`` that resolves once
        the message is handed to the transport (``.result()`` raises
        ``WebSocketClosedError`` if the connection was closing). Call it
        only after ``open()`` has started."""
        loop = self._kws.loop
        if loop is None:
            raise tornado.websocket.WebSocketClosedError()
        result: concurrent.futures.Future[None] = concurrent.futures.Future()

        def send() -> None:
            if not result.set_running_or_notify_cancel():
                return
            try:
                self.write_message(message, binary)
            except BaseException as exc:
                result.set_exception(exc)
            else:
                result.set_result(None)

        try:
            loop.call_soon_threadsafe(send)
        except RuntimeError:  # the loop is closed: the server has stopped
            raise tornado.websocket.WebSocketClosedError() from None
        return result

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake with ``code`` (1000 if a reason is
        given). The reason is cut to 123 bytes (what a control frame holds),
        at a character boundary. A code no endpoint may send (RFC 6455 7.4:
        1004, 1015, below 1000, 1016-2999, 5000 and up) raises
        ``ValueError`` at once; 1005 and 1006 send a close frame without a
        status."""
        wire.check_close_code(code)  # before anything changes
        k = self._kws
        ws = k.ws
        if ws is not None:
            if k.thread != get_ident():
                _off_loop("close")
            if code is None and reason is not None:
                code = CloseCode.NORMAL_CLOSURE
            if not ws.closing():  # the handler starts the close: cause "app"
                k.service.registry.set_cause(ws, CloseCause.APP)
            ws.close(code, reason or "")

    def ping(self, data: str | bytes = b"") -> None:
        """Send a ping (at most 125 bytes)."""
        k = self._kws
        ws = k.ws
        if ws is None or ws.conn.close_sent is not None:
            raise tornado.websocket.WebSocketClosedError()
        if k.thread != get_ident():
            _off_loop("ping")
        payload = data.encode("utf-8") if isinstance(data, str) else data
        ws.send_control(ws.conn.send_ping(payload))

    @property
    def selected_subprotocol(self) -> str | None:
        """The subprotocol :meth:`select_subprotocol` chose, or None."""
        return self._kws.subprotocol

    # Tornado's RequestHandler methods that make no sense once the 101 is
    # out raise there, as Tornado's own WebSocketHandler makes them do (it
    # sets seven attributes on each handler; this costs none).
    def write(self, *args: Any, **kwargs: Any) -> None:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("write")
        super().write(*args, **kwargs)

    def redirect(self, *args: Any, **kwargs: Any) -> None:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("redirect")
        super().redirect(*args, **kwargs)

    def set_header(self, *args: Any, **kwargs: Any) -> None:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("set_header")
        super().set_header(*args, **kwargs)

    def set_cookie(self, *args: Any, **kwargs: Any) -> None:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("set_cookie")
        super().set_cookie(*args, **kwargs)

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("set_status")
        super().set_status(*args, **kwargs)

    def flush(self, *args: Any, **kwargs: Any) -> Any:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("flush")
        return super().flush(*args, **kwargs)

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        """Tornado's, before the upgrade; a ``RuntimeError`` once open."""
        self._http_only("finish")
        return super().finish(*args, **kwargs)

    def _http_only(self, name: str) -> None:
        k = getattr(self, "_kws", None)  # None in __init__ (set_default_headers)
        if k is not None and k.opened_at:
            raise RuntimeError(
                f"Method not supported for Web Sockets: {name}() once the connection is open"
            )

    def set_nodelay(self, value: bool) -> None:
        """Kept for the API: every connection already runs with TCP_NODELAY."""

    def on_error(self, kind: ErrorKind, detail: str) -> None:
        """The connection failed or dropped (the sample's ``OnError``);
        ``on_close`` follows."""


#: The ``reason`` of an app's refusal, by status (any other: ``app_refused``).
_APP_REFUSALS = {
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    429: ErrorKind.RATE_LIMITED,
}


#: RFC 9112's ``reason-phrase`` (HTAB, SP, VCHAR, obs-text), as Tornado checks it.
_REASON_PHRASE = re.compile(r"[\t\x20-\x7e\x80-\xff]+")


def broadcast(
    message: bytes | str | dict[str, Any],
    connections: Iterable[KnativeWebSocketHandler],
    binary: bool = False,
) -> int:
    """Send one message to many connections, framed once: the same frame
    bytes are queued to each open connection (as ``write_message`` with the
    same ``message`` and ``binary`` would: a dict as JSON text, a str as
    text unless ``binary``). Closing and closed connections are skipped,
    never an error. Returns how many connections it was queued to.

    Fire and forget: nothing waits for a slow member. Each member's queue
    is bounded by ``WS_MAX_BACKLOG``; one over it is closed with 1008
    ``slow_consumer`` and the others go on.

    permessage-deflate: members without it share one frame; members that
    reset their compressor after each message (``server_no_context_takeover``)
    share one compressed frame per window size; members that keep their
    compression context each get their own (their compressor's state is
    theirs alone). Call it on the event loop's thread."""
    if isinstance(message, dict):
        message = tornado.escape.json_encode(message)
    payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    plain: list[bytes] | None = None
    shared: dict[int, list[bytes]] = {}  # compressed, by window bits
    thread = get_ident()
    sent = 0
    counts = None
    for handler in connections:
        k = handler._kws
        ws = k.ws
        if ws is None or ws.closing():
            continue
        if k.thread != thread:
            _off_loop("broadcast")
        conn = ws.conn
        deflate = conn.deflate
        if deflate is None:
            if plain is None:
                plain = _frame(payload, binary)
            parts = plain
        elif deflate.server_no_context_takeover:
            bits = deflate.server_max_window_bits
            parts = shared.get(bits)  # type: ignore[assignment]
            if parts is None:  # a fresh compressor: the same bytes for each
                parts = shared[bits] = conn.send_message(payload, binary)
        else:
            parts = conn.send_message(payload, binary)
        try:
            ws.send(parts)
        except StreamClosedError:
            continue
        if conn.close_sent is not None:  # that send put it over WS_MAX_BACKLOG
            continue
        k.messages_out += 1
        counts = k.counts
        sent += 1
    if counts is not None:
        counts.messages_out[binary] += sent
        counts.bytes_out[binary] += len(payload) * sent
    return sent


def _frame(payload: bytes, binary: bool) -> list[bytes]:
    """An uncompressed data frame, as :meth:`wire.Connection.send_message`
    builds it (one buffer, or header and payload apart when large)."""
    head = wire.frame_header(0x82 if binary else 0x81, len(payload))
    if len(payload) < wire.GATHER_SIZE:
        return [head + payload]
    return [head, payload]


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Refused"


#: Tornado's keepalive settings, which this server takes from the environment.
_PING_SETTINGS = ("websocket_ping_interval", "websocket_ping_timeout")


def _off_loop(method: str) -> None:
    raise RuntimeError(
        f"{method}() called off the event loop's thread: a connection is not "
        "thread-safe; from another thread use handler.write_message_threadsafe(...) "
        "or loop.call_soon_threadsafe(...)"
    )


async def _cancelled_as_error(result: Awaitable[None]) -> None:
    """An awaitable ``on_message`` result, failing if it is cancelled (as
    Tornado's handler does) rather than being taken as done."""
    try:
        await result
    except asyncio.CancelledError as exc:
        raise RuntimeError("on_message's awaitable was cancelled") from exc


def _closed_as_websocket(future: asyncio.Future[None]) -> asyncio.Future[None]:
    """``future``, failing with ``WebSocketClosedError`` instead of the
    transport's ``StreamClosedError`` (Tornado's contract since 5.0)."""
    if future.done() and future.exception() is None:
        return future
    outer: asyncio.Future[None] = future.get_loop().create_future()

    def relay(f: asyncio.Future[None]) -> None:
        if outer.done():
            return
        exc = f.exception()
        if exc is None:
            outer.set_result(None)
        else:
            if isinstance(exc, StreamClosedError):
                exc = tornado.websocket.WebSocketClosedError()
            outer.set_exception(exc)
            outer.exception()  # nobody may await it (an echo does not): no log line

    future.add_done_callback(relay)
    return outer


class _Connection:
    """The base's own state of one connection, behind the handler's one
    private attribute ``_kws``: nothing an app sets on its handler can
    shadow it. It is also what the transport hands events to (the
    :class:`~server.transport.Endpoint`), and Tornado's ``ws_connection``
    while the connection is open."""

    __slots__ = (
        "bytes_in",
        "counts",
        "drained",
        "handler",
        "log_budget",
        "loop",
        "messages_in",
        "messages_out",
        "opened_at",
        "peer",
        "relay",
        "service",
        "subprotocol",
        "thread",
        "via",
        "write_failures",
        "written",
        "ws",
    )

    def __init__(
        self,
        handler: KnativeWebSocketHandler,
        service: Service,
        request: tornado.httputil.HTTPServerRequest,
    ) -> None:
        self.handler = handler
        self.service = service
        self.counts = service.metrics.messages
        self.peer, socket_peer = _client_address(request, service.forwarding)
        #: The socket peer, on every event, when the client came through a proxy.
        self.via = socket_peer if socket_peer != self.peer else None
        log = service.message_log
        self.log_budget = MessageLogBudget(log.rate, log.burst)
        if not log.enabled:
            self.log_budget.due = math.inf  # no message events: none is ever due
        self.bytes_in = 0
        self.opened_at = 0.0
        self.messages_in = 0
        self.messages_out = 0
        #: write_message calls that found the stream closed (logged once).
        self.write_failures = 0
        self.subprotocol: str | None = None
        self.written: asyncio.Future[None] | None = None
        #: The transport's Future of the last wait for its buffer, and the
        #: one write_message gave out for it (WebSocketClosedError, not
        #: StreamClosedError, if the connection goes).
        self.drained: asyncio.Future[None] | None = None
        self.relay: asyncio.Future[None] | None = None
        #: The connection's transport, once open.
        self.ws: WebSocketTransport | None = None
        #: The event loop's thread (write_message and friends run there only).
        self.thread = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- Tornado's WebSocketProtocol, as far as a handler reaches it ----------

    def is_closing(self) -> bool:
        """The connection is closing or gone: nothing more can be sent."""
        ws = self.ws
        return ws is None or ws.closing()

    @property
    def selected_subprotocol(self) -> str | None:
        return self.subprotocol

    def on_connection_close(self) -> None:
        """Tornado's handler calls this as it closes: nothing left to do."""

    # -- what the transport calls (server.transport.Endpoint) ----------------

    def ws_message(self, data: str | bytes) -> Awaitable[None] | None:
        binary = type(data) is bytes
        # Payload bytes: str.isascii() is O(1) (CPython keeps the flag).
        size = len(data) if binary or data.isascii() else len(data.encode())  # type: ignore[union-attr]
        self.messages_in += 1
        self.bytes_in += size
        counts = self.counts
        counts.messages_in[binary] += 1
        counts.bytes_in[binary] += size
        # The message-event budget: one comparison per message, against the
        # time of the read that brought it (the transport's clock reading).
        budget = self.log_budget
        ws = self.ws
        now = ws.last_read if ws is not None else time.monotonic()
        if now >= budget.due and EVENT_LOGGER.isEnabledFor(INFO):
            budget.spend(now, size)
            log = self.service.message_log
            content: str | None = None
            truncated = False
            if log.content:
                content, truncated = _preview(data, log.preview_bytes)
            kind = "binary" if binary else "text"
            emit_message(self.peer, kind, size, content, truncated, self.via)
        try:
            result = self.handler.on_message(data)
        except tornado.websocket.WebSocketClosedError:
            ws = self.ws
            if ws is not None and ws.closing():
                return None  # the connection went away under the handler: not a bug
            raise
        except asyncio.CancelledError as exc:  # a BaseException: an error here, as in Tornado
            raise RuntimeError("on_message raised asyncio.CancelledError") from exc
        if result is None:
            return None
        return _cancelled_as_error(result)

    def ws_ping(self, data: bytes) -> None:
        self.handler.on_ping(data)

    def ws_pong(self, data: bytes) -> None:
        self.handler.on_pong(data)

    def ws_closed(self, outcome: Outcome) -> None:
        ws = self.ws
        cause = self.service.registry.discard(ws) if ws is not None else None
        if not self.opened_at:
            return
        m = self.service.metrics
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
                **self.who(),
            )
            self.call_on_error(kind, failure.reason)
        elif outcome.close_received is None and code == CloseCode.ABNORMAL_CLOSURE:
            detail = "connection dropped without a close frame"
            record_error(m, ErrorKind.ABNORMAL_CLOSURE, detail, code=int(code), **self.who())
            self.call_on_error(ErrorKind.ABNORMAL_CLOSURE, detail)
        elif not outcome.clean:
            # We started the closing handshake and the peer never answered. A
            # failure (an error event) waits for no answer (RFC 6455 7.1.7).
            fields["clean"] = False
        if failure is not None:
            slow = failure.kind == ErrorKind.SLOW_CONSUMER
            cause = CloseCause.SLOW_CONSUMER if slow else CloseCause.ERROR
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
        if self.service.message_log.enabled:  # message events left out
            fields.update(self.log_budget.summary(self.messages_in, self.bytes_in))
        emit("close", **fields)
        handler = self.handler
        # Tornado's close_code and close_reason: the client's close frame
        # only (None without one, or without a code or a reason in it).
        received = outcome.close_received
        if received is not None and received.code != CloseCode.NO_STATUS_RCVD:
            handler.close_code = received.code
            handler.close_reason = received.reason or None
        handler.on_connection_close()  # Tornado's: calls on_close() once

    # -- helpers ---------------------------------------------------------------

    def who(self) -> dict[str, Any]:
        """The peer fields of an error event."""
        if self.via is None:
            return {"peer": self.peer}
        return {"peer": self.peer, "via": self.via}

    def call_on_error(self, kind: ErrorKind, detail: str) -> None:
        try:
            self.handler.on_error(kind, detail)
        except Exception:
            detail = "on_error raised"
            record_error(
                None,
                ErrorKind.HANDLER_EXCEPTION,
                detail,
                level=logging.ERROR,
                exc_info=sys.exc_info(),
                **self.who(),
            )
