"""The echo service: the Knative sample's four callbacks on the base handler.

Like ``websockets-go``'s ``OnOpen``/``OnMessage``/``OnClose``/``OnError``,
the app is only what it does with a connection: each message goes back
with its type, text as text and binary as binary. Everything else - the
handshake policy, limits, event logs, metrics, keepalive, the drain - is
:class:`~server.base.KnativeWebSocketHandler`'s.
"""

from __future__ import annotations

from .base import KnativeWebSocketHandler
from .codes import ErrorKind

__all__ = ["EchoWebSocket"]


class EchoWebSocket(KnativeWebSocketHandler):
    """Echoes every message back with its type."""

    def open(self, *args: str, **kwargs: str) -> None:
        """A client connected (the base logs the ``open`` event)."""

    def on_message(self, message: str | bytes) -> None:
        """Echo ``message``: text as text, binary as binary. Backpressure is
        the transport's: a client that stops reading stops being read."""
        self.write_message(message, binary=type(message) is bytes)

    def on_close(self) -> None:
        """The client left (the base logs the ``close`` event)."""

    def on_error(self, kind: ErrorKind, detail: str) -> None:
        """The connection failed (the base logs and counts the ``error`` event)."""
