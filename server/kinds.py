"""The server's vocabulary for what went wrong and what ended a connection:
the ``kind`` of an ``error`` event and the ``cause`` of a ``close`` event,
and the label values of the metrics that count them.

The protocol core (:mod:`server.wire`) knows only the protocol's failures
(:class:`~server.wire.FailureKind`); every other kind (a refusal, a
timeout, the handler, the process) is the server's and lives here, so a
new label never touches (or recompiles) the protocol core.
:func:`error_kind` is the one mapping from a failure's kind to an
:class:`ErrorKind`; the values are the same strings.
"""

from __future__ import annotations

import enum

from .wire import FailureKind

__all__ = ["REFUSALS", "CloseCause", "ErrorKind", "error_kind"]


class ErrorKind(enum.StrEnum):
    """Why something went wrong: the ``kind`` of an ``error`` event, and the
    label of ``websocket_errors_total`` and ``websocket_handshakes_rejected_total``.

    Each member's docstring says what happened and what the client gets;
    docs/reference/events.md's table is generated from them
    (``python scripts/gen_docs.py``)."""

    # The connection failed (a close frame with a code was sent): the
    # protocol's failures (wire.FailureKind, same values), then the server's.
    PROTOCOL_ERROR = FailureKind.PROTOCOL_ERROR.value
    """Unmasked frame, reserved bits, unknown opcode, bad fragmentation, invalid close code.

    The client gets: close 1002."""

    INVALID_PAYLOAD = FailureKind.INVALID_PAYLOAD.value
    """Text (or a close reason) that is not UTF-8.

    The client gets: close 1007."""

    MESSAGE_TOO_BIG = FailureKind.MESSAGE_TOO_BIG.value
    """A message over ``WS_MAX_MESSAGE_BYTES``.

    The client gets: close 1009."""

    PING_TIMEOUT = "ping_timeout"
    """No pong within ``WS_PING_TIMEOUT``.

    The client gets: close 1011."""

    SLOW_CONSUMER = "slow_consumer"
    """Past ``WS_MAX_BACKLOG`` bytes queued unread (echoes, ``write_message``, ``broadcast``:
    closed at once, the queue dropped), or over 1 MiB left unread for ``WS_SEND_TIMEOUT``
    (reading it stopped at 1 MiB).

    The client gets: close 1008 ``slow_consumer``, then dropped 2 s later if it still reads
    nothing."""

    HANDLER_EXCEPTION = "handler_exception"
    """A bug: an exception in the handler (logged with its traceback).

    The client gets: close 1011; before the 101 (in ``authorize()``, ``prepare()``,
    ``select_subprotocol()``): 500."""

    # The connection ended without a close handshake.
    ABNORMAL_CLOSURE = "abnormal_closure"
    """The peer dropped the TCP connection without a close frame (also around the 101, before
    the handler opened: then no ``open`` or ``close`` event).

    The client gets: nothing (logged as code 1006)."""

    WRITE_FAILED = "write_failed"
    """The connection closed before an echo (or an app's write) could be
    written: every one counted, one line a connection.

    The client gets: nothing."""

    # The upgrade was refused (an HTTP status, no connection).
    BAD_HANDSHAKE = "bad_handshake"
    """Not an upgrade, no ``Connection: Upgrade``, a bad ``Sec-WebSocket-Key``, or a
    ``Sec-WebSocket-Version`` other than 13.

    The client gets: 400 with a body saying which; for the version, 426 with
    ``Sec-WebSocket-Version: 13``."""

    ORIGIN_REJECTED = "origin_rejected"
    """A browser page from another origin (``WS_ALLOWED_ORIGINS``).

    The client gets: 403."""

    DRAINING = "draining"
    """An upgrade during shutdown.

    The client gets: 503 with ``Retry-After``."""

    OVER_CAPACITY = "over_capacity"
    """``WS_MAX_CONNECTIONS`` open already.

    The client gets: 503 with ``Retry-After``."""

    HEADERS_TOO_LARGE = "headers_too_large"
    """A request head over 16 KiB (logged 100 at once, then 10 a second, with ``unlogged``).

    The client gets: 431 with a body saying the limit."""

    REQUEST_HEAD_TIMEOUT = "request_head_timeout"
    """No complete request head within ``WS_REQUEST_HEAD_TIMEOUT`` of connecting (logged at most
    every 10 s, with ``count``).

    The client gets: 408, then the connection is closed."""

    # The app refused the upgrade (KnativeWebSocketHandler.authorize / prepare).
    UNAUTHORIZED = "unauthorized"
    """The app's ``authorize()`` or ``prepare()`` refused the upgrade with 401.

    The client gets: 401."""

    FORBIDDEN = "forbidden"
    """The app's ``authorize()`` or ``prepare()`` refused the upgrade with 403.

    The client gets: 403."""

    RATE_LIMITED = "rate_limited"
    """The app's ``authorize()`` or ``prepare()`` refused the upgrade with 429.

    The client gets: 429 with ``Retry-After``."""

    APP_REFUSED = "app_refused"
    """The app's ``authorize()`` or ``prepare()`` refused the upgrade with another status.

    The client gets: that status."""

    # A plain HTTP connection was dropped.
    SLOW_HTTP_CLIENT = "slow_http_client"
    """A plain HTTP connection's responses waited on the client for ``WS_SEND_TIMEOUT``: it
    pipelined requests, or sent more heads at once than the kernel's buffers hold answers for,
    and read none (logged at most every 10 s, with ``count``).

    The client gets: the connection is reset."""

    # The listener.
    DESCRIPTORS_EXHAUSTED = "descriptors_exhausted"
    """``accept`` failed with EMFILE/ENFILE (or ENOBUFS/ENOMEM): the listener pauses 50 ms,
    doubling to 1 s while it lasts (logged at most every 10 s, with ``count``, ``total``,
    ``limit``).

    The client gets: waits in the listen backlog."""

    # The backplane (server/backplane.py).
    BACKPLANE_UNAVAILABLE = "backplane_unavailable"
    """``WS_BACKPLANE_URL``'s Redis is unreachable or failed (logged once an outage, with the
    URL's password as ``***``; a ``backplane`` event with ``state=connected`` when it is back).
    Local delivery goes on; the reader reconnects with capped exponential backoff.

    The client gets: nothing; members in other processes miss its messages until Redis is back
    (a resuming client gets them from the stream if they were published there)."""

    BACKPLANE_OVERFLOW = "backplane_overflow"
    """A process's publishes waiting for Redis reached ``PUBLISH_QUEUE`` (10 000: Redis is
    stalled or slower than the publishers): each publish past it is dropped - delivered nowhere,
    counted here - until the queue has room again (logged at most once a minute, with
    ``queued``). The publishes that were taken keep their order everywhere.

    The client gets: nothing; its message reaches no one (a client that resumes sees the stream,
    which does not have it)."""

    # The process.
    WORKER_FAILED = "worker_failed"
    """With ``WS_WORKERS`` > 1: a worker could not start.

    The client gets: nothing."""

    WORKER_EXITED = "worker_exited"
    """With ``WS_WORKERS`` > 1: a worker died (it is started again).

    The client gets: nothing."""


def error_kind(kind: str) -> ErrorKind:
    """The :class:`ErrorKind` of a failure's kind (``wire.Failed.kind``: a
    :class:`~server.wire.FailureKind`, or an ErrorKind the server gave
    ``Connection.fail``)."""
    return ErrorKind(kind)


#: The kinds that refuse an upgrade (``websocket_handshakes_rejected_total``).
REFUSALS = (
    ErrorKind.BAD_HANDSHAKE,
    ErrorKind.ORIGIN_REJECTED,
    ErrorKind.DRAINING,
    ErrorKind.OVER_CAPACITY,
    ErrorKind.HEADERS_TOO_LARGE,
    ErrorKind.UNAUTHORIZED,
    ErrorKind.FORBIDDEN,
    ErrorKind.RATE_LIMITED,
    ErrorKind.APP_REFUSED,
)


class CloseCause(enum.StrEnum):
    """What ended a connection: the ``cause`` of a ``close`` event, and the
    label of ``websocket_connections_closed_by_cause_total``."""

    CLIENT = "client"
    """The client's close frame came first."""

    DROPPED = "dropped"
    """The TCP connection ended without a close frame (code 1006)."""

    ERROR = "error"
    """The server failed the connection (1002, 1007, 1008, 1009, 1011)."""

    SLOW_CONSUMER = "slow_consumer"
    """The server failed a client that left what was sent to it unread (1008): past
    ``WS_MAX_BACKLOG`` bytes queued, or for ``WS_SEND_TIMEOUT``."""

    APP = "app"
    """The handler called ``close()``."""

    MAX_AGE = "max_age"
    """``WS_MAX_CONNECTION_AGE`` was reached (1001 "max connection age")."""

    DRAIN = "drain"
    """The SIGTERM drain (1001 "server shutting down")."""
