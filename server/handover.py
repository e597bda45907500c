"""The hand-over: Tornado parsed the upgrade request; this takes the socket.

:func:`take_over` takes the socket from Tornado through public API only
(``RequestHandler.detach()``, then the stream's ``read_bytes(partial=True)``
for bytes it had already read past the request head, ``fileno()`` and
``close()``) and returns a duplicate of it for the event loop, where
:class:`server.transport.WebSocketTransport` runs the connection; no Tornado
code runs for it after that. :func:`release_request` lets go of Tornado's
HTTP objects the request still links to.

This is the only module of the package that may import a private Tornado
name (import-linter, ``tests/contracts.py``); today it needs none. The
Tornado names relied on are listed in :data:`TORNADO_NAMES` and checked by
``tests/test_tornado_contract.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream, StreamClosedError

__all__ = ["REQUEST_LINKS", "TORNADO_NAMES", "release_request", "take_over"]

#: Every Tornado name the hand-over (and the transport) uses, all public;
#: tests/test_tornado_contract.py fails with the missing name when a Tornado
#: release lacks one.
TORNADO_NAMES = (
    "tornado.web.RequestHandler.detach",
    "tornado.iostream.IOStream.read_bytes",
    "tornado.iostream.IOStream.fileno",
    "tornado.iostream.IOStream.close",
    "tornado.iostream.StreamClosedError",
    "tornado.httputil.HTTPServerRequest",
)
#: The attributes of a request (public constructor arguments of
#: ``HTTPServerRequest``, kept as attributes of the same names) that
#: :func:`release_request` clears.
REQUEST_LINKS = ("connection", "server_connection")

#: The most bytes one buffered read takes from the socket at a time.
_READ_SIZE = 256 * 1024


def take_over(stream: IOStream) -> tuple[socket.socket, bytes]:
    """The socket under a detached Tornado stream, and the bytes the stream
    had already read past the request head (a client may send frames right
    behind its upgrade request). The stream is closed; the returned socket
    is a duplicate that the caller owns.

    Raises StreamClosedError when the client has already gone, and OSError
    when no descriptor is left for the duplicate (the client is then
    answered 503 and the stream closed)."""
    if stream.closed():
        raise StreamClosedError()
    pending = asyncio.ensure_future(stream.read_bytes(_READ_SIZE, partial=True))
    leftover = b""
    if pending.done():
        with contextlib.suppress(StreamClosedError):
            leftover = pending.result()
    else:
        # Nothing buffered and nothing in the kernel yet: the read is
        # cancelled by closing the stream below, before the loop runs again.
        pending.add_done_callback(lambda f: f.exception())
    fd = stream.fileno()  # IOStream: the socket itself (None once closed)
    if stream.closed() or fd is None:
        # The read above found the client gone (a reset or a FIN right
        # behind the request): the stream closed itself and has no socket.
        raise StreamClosedError()
    try:
        duplicate = os.dup(fd if isinstance(fd, int) else fd.fileno())
    except OSError:
        written = stream.write(_NO_DESCRIPTOR)  # a small write goes out at once
        written.add_done_callback(lambda f: f.exception())
        stream.close()
        raise
    sock = socket.socket(fileno=duplicate)
    stream.close()
    sock.setblocking(False)
    return sock, leftover


def release_request(request: HTTPServerRequest) -> None:
    """Let go of Tornado's HTTP objects once the socket is taken over.

    A request keeps its HTTP/1 connection and, through it, the closed
    stream, its buffers and the finished task that read the request: about
    4 KiB that every open WebSocket would carry for its whole life. The
    request keeps what a handler reads (``method``, ``uri``, ``headers``,
    ``remote_ip``, ``protocol``, ``host``); its ``connection`` is None from
    here on, as there is no HTTP connection left to use."""
    for name in REQUEST_LINKS:
        setattr(request, name, None)


_NO_DESCRIPTOR = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nContent-Length: 44\r\nConnection: close\r\n\r\n"
    b"503 Service Unavailable: out of descriptors\n"
)
