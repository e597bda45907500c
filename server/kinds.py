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
    label of ``websocket_errors_total`` and ``websocket_handshakes_rejected_total``."""

    # The connection failed (a close frame with a code was sent): the
    # protocol's failures (wire.FailureKind, same values), then the server's.
    PROTOCOL_ERROR = FailureKind.PROTOCOL_ERROR.value
    INVALID_PAYLOAD = FailureKind.INVALID_PAYLOAD.value
    MESSAGE_TOO_BIG = FailureKind.MESSAGE_TOO_BIG.value
    PING_TIMEOUT = "ping_timeout"
    SLOW_CONSUMER = "slow_consumer"
    HANDLER_EXCEPTION = "handler_exception"
    # The connection ended without a close handshake.
    ABNORMAL_CLOSURE = "abnormal_closure"
    WRITE_FAILED = "write_failed"
    # The upgrade was refused (an HTTP status, no connection).
    BAD_HANDSHAKE = "bad_handshake"
    ORIGIN_REJECTED = "origin_rejected"
    DRAINING = "draining"
    OVER_CAPACITY = "over_capacity"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_HEAD_TIMEOUT = "request_head_timeout"
    # The app refused the upgrade (KnativeWebSocketHandler.authorize / prepare).
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    APP_REFUSED = "app_refused"
    # A plain HTTP connection was dropped.
    SLOW_HTTP_CLIENT = "slow_http_client"
    # The listener.
    DESCRIPTORS_EXHAUSTED = "descriptors_exhausted"
    # The backplane (server/backplane.py): Redis unreachable.
    BACKPLANE_UNAVAILABLE = "backplane_unavailable"
    # The process.
    WORKER_FAILED = "worker_failed"
    WORKER_EXITED = "worker_exited"


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

    #: The client's close frame came first.
    CLIENT = "client"
    #: The TCP connection ended without a close frame (code 1006).
    DROPPED = "dropped"
    #: The server failed the connection (1002, 1007, 1008, 1009, 1011).
    ERROR = "error"
    #: The handler called ``close()``.
    APP = "app"
    #: ``WS_MAX_CONNECTION_AGE`` was reached (1001 "max connection age").
    MAX_AGE = "max_age"
    #: The SIGTERM drain (1001 "server shutting down").
    DRAIN = "drain"
