"""Moves bytes between a client's socket and its :class:`wire.Connection`.

Once :mod:`server.handover` has taken the socket from Tornado, the event
loop runs it with an :class:`asyncio.Protocol` (:class:`WebSocketTransport`):
no Future per read, no copy into and out of a stream buffer, writes through
the event loop's transport (uvloop's, by default).

Its one job is the connection's I/O on the event loop, through its
:class:`Phase` (OPEN, CLOSING, LINGERING, CLOSED):

- feed what arrives to the wire core and hand the events, in order, to the
  handler (the :class:`Endpoint`); a handler's awaitable result pauses
  reading until it is done, as Tornado's ``on_message`` does, and no
  message reaches the handler once our close frame is out;
- fairness: a connection parses at most ``FRAMES_PER_TURN`` frames and
  ``BYTES_PER_TURN`` bytes per event-loop turn (the wire core stops there
  and keeps the rest); then it stops reading and goes on at the next turn
  (``loop.call_soon``), after every other connection had its turn;
- backpressure, on the decisions of its :class:`~server.sendqueue.SendQueue`
  (which batches, queues and merges the frames and counts the backlog):
  past ``high_water`` bytes of backlog reading pauses, and a client that
  leaves it unread for ``send_timeout`` seconds fails with 1008;
- the closing handshake and the lingering close: after our close frame it
  shuts down its sending side and reads and discards until the client's FIN
  or ``LINGER_SECONDS``, so that the client's TCP stack does not receive a
  reset that would destroy our last frames (the kernel's queues are read
  with :mod:`server.tcp`);
- what keepalive and drain need (:mod:`server.connections` drives it through
  its ``ping``, ``check_pong``, ``go_away`` and ``abort``).

The one Tornado name used here, ``StreamClosedError``, is public and listed
in :data:`server.handover.TORNADO_NAMES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import socket
import sys
from collections.abc import Awaitable
from time import monotonic as _monotonic
from typing import Any, Protocol, cast

from tornado.iostream import StreamClosedError

from . import wire
from .kinds import ErrorKind
from .sendqueue import DISCARD, SendQueue
from .tcp import unread_bytes, unsent_bytes
from .wire import CloseCode

__all__ = [
    "LINGER_SECONDS",
    "Endpoint",
    "Outcome",
    "Phase",
    "SendLimits",
    "WebSocketTransport",
]

#: How long a closing connection keeps reading (and discarding) before it drops.
LINGER_SECONDS = 2.0
#: How long a closing connection may linger in all while the client is
#: still reading what was sent before the close frame.
LINGER_MAX_SECONDS = 30.0
#: How long we wait for the client's close frame after sending ours.
CLOSE_TIMEOUT = 5.0
#: The event loop's own write buffer: once anything waits in it (the kernel's
#: send buffer is full), frames wait in our queue instead, where small ones
#: are merged, control frames jump ahead and pongs are answered only for the
#: latest ping; so the event loop holds at most one write of a connection's
#: backlog, and the backlog counts what it costs.
_TRANSPORT_HIGH_WATER = 0
#: What one connection may parse per turn of the event loop: frames and
#: bytes (and about one message limit of inflated data). Past that it stops
#: reading and goes on at the next turn, after every other connection had
#: its turn: 0.2-0.4 ms of parsing (docs/guides/security.md, "Threat model").
FRAMES_PER_TURN = 256
BYTES_PER_TURN = 256 * 1024


class Phase(enum.IntEnum):
    """Where a connection is in its life, as RFC 6455 sections 4 and 7 name
    the states (CONNECTING is Tornado's, before the hand-over), with the
    lingering close of section 7.1.1 apart. It only moves forward."""

    #: The 101 is out: messages flow (once the handler's open() is done).
    OPEN = 1
    #: Our close frame is out (or we close without reading): no message
    #: reaches the handler any more; we wait for the client's close frame.
    CLOSING = 2
    #: Both close frames are out, or the connection failed: our sending
    #: side is shut; we read and discard until the client's FIN.
    LINGERING = 3
    #: The TCP connection is gone (``connection_lost`` has run).
    CLOSED = 4


# Python 3.11's EnumType has a __getattr__, so each ``Phase.X`` read on a
# class is a slow lookup (a slot wrapper call, ~100 instructions): the
# per-message path compares against these module names instead.
_OPEN, _CLOSING, _LINGERING, _CLOSED = Phase.OPEN, Phase.CLOSING, Phase.LINGERING, Phase.CLOSED


@dataclasses.dataclass(frozen=True)
class SendLimits:
    """Backpressure: reading pauses past ``high_water`` bytes of unsent
    echoes; ``send_timeout`` seconds later (0: never) the client fails with
    1008. Past ``max_backlog`` bytes written to it and unread (whoever wrote
    them: its echoes, other connections' broadcasts) it fails at once with
    1008, its queue dropped."""

    high_water: int = 1024 * 1024
    send_timeout: float = 30.0
    max_backlog: int = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a connection ended."""

    #: The close code: the client's (1005 if its close frame had none), the
    #: one we failed it with, the one we sent unanswered, or 1006.
    code: int
    reason: str
    #: Why the server failed the connection, if it did.
    failure: wire.Failed | None = None
    #: The traceback of the handler's exception (a 1011 failure).
    exc_info: Any = None
    #: False when our close frame went unanswered or no close frame was seen.
    clean: bool = True
    #: The client's close frame, if one was read.
    close_received: wire.Close | None = None


#: CPython 3.12.0 to 3.12.8 and 3.13.0 to 3.13.1: asyncio's selector
#: transport's ``writelines()`` never pauses the protocol (gh-127655), so a
#: client that stops reading is never paused and its echoes fill memory.
#: There, the send queue writes through :class:`_JoinedWrites`.
_WRITELINES_PAUSES = not (
    (3, 12) <= sys.version_info[:3] < (3, 12, 9) or (3, 13) <= sys.version_info[:3] < (3, 13, 2)
)


class _JoinedWrites:
    """A transport whose ``writelines()`` joins the parts and ``write()``s
    them, which does pause the protocol (see ``_WRITELINES_PAUSES``)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.write(b"".join(list_of_data))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()


class Endpoint(Protocol):
    """What a transport hands events to: the handler."""

    def ws_message(self, data: str | bytes) -> Awaitable[None] | None: ...

    def ws_ping(self, data: bytes) -> None: ...

    def ws_pong(self, data: bytes) -> None: ...

    def ws_closed(self, outcome: Outcome) -> None: ...


class WebSocketTransport(asyncio.Protocol):
    """One connection's I/O: an asyncio protocol over the client's socket."""

    __slots__ = (
        "_ahead_at_ping",
        "_backpressure",
        "_close_reason",
        "_close_timer",
        "_drained",
        "_eof_before_start",
        "_exc_info",
        "_handler_busy",
        "_leftover",
        "_more",
        "_paused_since_ping",
        "_pending",
        "_phase",
        "_pong",
        "_reading_paused",
        "_response",
        "_send_timer",
        "_sendq",
        "_started",
        "conn",
        "endpoint",
        "last_read",
        "limits",
        "transport",
    )

    def __init__(
        self,
        conn: wire.Connection,
        endpoint: Endpoint,
        limits: SendLimits,
        handshake_response: bytes,
        leftover: bytes,
    ) -> None:
        self.conn = conn
        conn.max_frames_per_call = FRAMES_PER_TURN
        conn.max_bytes_per_call = BYTES_PER_TURN
        self.endpoint = endpoint
        self.limits = limits
        self._response = handshake_response
        self._leftover = leftover
        self.transport: asyncio.Transport | None = None
        # Frames on their way to the event loop's transport (set in
        # connection_made): batches, the queue while writing is paused,
        # backlog accounting.
        self._sendq = SendQueue(DISCARD, limits.high_water)
        self._reading_paused = False
        # Paused for backpressure (not for a handler's awaitable).
        self._backpressure = False
        # The handler's awaitable from on_message is running: True from
        # the dispatch until it is done, whatever happens to the connection
        # meanwhile (only _handler_done clears it).
        self._handler_busy = False
        self._pending: list[wire.Event] = []
        self._send_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        # The reason of the close frame close() sent: the outcome's when the
        # client never answers it.
        self._close_reason = ""
        self._pong = True
        # The call that parses on at the next turn, once a turn's budget is spent.
        self._more: asyncio.Handle | None = None
        self._paused_since_ping = False
        # Bytes ahead of the last ping (ours and the kernel's), when it was sent.
        self._ahead_at_ping = 0
        self._exc_info: Any = None
        self._phase = _OPEN
        #: time.monotonic() of the last read (quiescent(), the message-event budget).
        self.last_read = 0.0
        # One Future for every writer waiting while writing is paused.
        self._drained: asyncio.Future[None] | None = None
        self._started = False
        self._eof_before_start = False

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=_TRANSPORT_HIGH_WATER)
        self._sendq.sink = transport if _WRITELINES_PAUSES else _JoinedWrites(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self._response)
        self._response = b""
        # Nothing is read until the handler's open() is done (see start()).
        transport.pause_reading()
        self._reading_paused = True

    def start(self) -> None:
        """The handler is open: handle what came with the upgrade (and
        before it opened), then read."""
        if self._phase is _CLOSED or self._started:
            return
        self._started = True
        leftover, self._leftover = self._leftover, b""
        if leftover:
            self.data_received(leftover)
        if self._eof_before_start:
            self.eof_received()
            return
        self._maybe_resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_read = _monotonic()
        if not self._started:  # before the handler is open: keep it for start()
            self._leftover += data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.conn.receive_data(data)
        self._parsed()

    def _parsed(self) -> None:
        """Handle the events of what was parsed; when the turn's budget
        stopped the parser, stop reading and go on at the next turn."""
        conn = self.conn
        if conn.budget_spent:
            self._pause_reading()
            self._schedule_more()
        events = conn.events_received()
        if not events:
            return
        # _must_wait() inlined: this runs once per read.
        if self._pending or (self._handler_busy and self._phase is _OPEN):
            self._pending.extend(events)
            return
        # Every frame the turn's events produce goes out in one write.
        sendq = self._sendq
        sendq.begin_batch()
        try:
            self._dispatch(events)
        finally:
            if sendq.end_batch():
                self._over_high_water()

    def _parse_more(self) -> None:
        """A new turn: parse on where the budget stopped."""
        self._more = None
        if self._phase is _CLOSED or self._pending or self._must_wait():
            return  # _handler_done goes on
        self.conn.receive_data(b"")
        self._parsed()
        self._go_on()

    def _must_wait(self) -> bool:
        """What is received waits for the handler: its awaitable runs and
        the connection is open (once our close frame is out, no message
        reaches the handler, and control frames are answered at once)."""
        return self._handler_busy and self._phase is _OPEN

    def _schedule_more(self) -> None:
        if self._more is None:
            self._more = asyncio.get_running_loop().call_soon(self._parse_more)

    def _go_on(self) -> None:
        """Nothing received waits for a handler: parse on at the next turn
        if a budget stopped the parser, else finish after the client's FIN,
        else read."""
        if self._pending or self._must_wait() or self._phase is _CLOSED:
            return
        if self.conn.budget_spent:
            self._schedule_more()
        elif self.conn.eof_received:
            self._finish_after_eof()
        else:
            self._maybe_resume_reading()

    def eof_received(self) -> bool:
        if not self._started:  # handled in start(), after what came before it
            self._eof_before_start = True
            return True
        self.conn.receive_eof()
        if self._pending or self._must_wait() or self.conn.budget_spent:
            return True  # what came before is handled first; see _go_on
        self._finish_after_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase is _CLOSED:
            return
        self._phase = _CLOSED
        for timer in (self._send_timer, self._close_timer, self._more):
            if timer is not None:
                timer.cancel()
        self._sendq.close()
        self._wake_writers(StreamClosedError())
        self.endpoint.ws_closed(self._outcome())

    def pause_writing(self) -> None:
        self._sendq.pause()

    def resume_writing(self) -> None:
        sendq = self._sendq
        sendq.resume()
        if not sendq.paused:
            self._wake_writers(None)
        if self._backpressure and sendq.below_low_water():
            self._backpressure = False
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None
            self._maybe_resume_reading()

    # -- events -------------------------------------------------------------

    def _dispatch(self, events: list[wire.Event]) -> None:
        endpoint = self.endpoint
        message_type = wire.Message
        for index, event in enumerate(events):
            if type(event) is message_type:
                if self._phase is not _OPEN:
                    continue  # no data after our close frame (RFC 6455 5.5.1)
                try:
                    result = endpoint.ws_message(event.data)
                except Exception:
                    self.handler_failed(sys.exc_info())
                    return
                if result is not None:
                    self._wait_for_handler(result, events[index + 1 :])
                    return
            else:
                self._control_event(event)

    def _control_event(self, event: wire.Event) -> None:
        conn = self.conn
        if isinstance(event, wire.Ping):
            if conn.close_sent is None:
                self._send_pong(conn.send_pong(event.data))
            self.endpoint.ws_ping(event.data)
        elif isinstance(event, wire.Pong):
            self._pong = True
            self.endpoint.ws_pong(event.data)
        elif isinstance(event, wire.Close):
            if conn.close_sent is None:
                # Echo the client's code (RFC 6455 5.5.1), after every echo
                # of what came before its close frame.
                code = None if event.code == CloseCode.NO_STATUS_RCVD else event.code
                self._write_close(conn.send_close(code))
            self._linger()
        elif isinstance(event, wire.Failed):
            self._fail_now(event)

    def _wait_for_handler(self, result: Awaitable[None], rest: list[wire.Event]) -> None:
        """The handler returned an awaitable: read nothing more until it is done."""
        self._handler_busy = True
        self._pending[:0] = rest
        self._pause_reading()
        future = asyncio.ensure_future(result)
        future.add_done_callback(self._handler_done)

    def _handler_done(self, future: asyncio.Future[None]) -> None:
        self._handler_busy = False
        if not future.cancelled() and future.exception() is not None:
            exc = future.exception()
            assert exc is not None
            self.handler_failed((type(exc), exc, exc.__traceback__))
            return
        pending, self._pending = self._pending, []
        if pending:
            self._dispatch(pending)
        self._go_on()

    def handler_failed(self, exc_info: Any) -> None:
        """The handler raised: fail with 1011, keeping the traceback for the log."""
        if self._exc_info is None:
            self._exc_info = exc_info
        self.fail(ErrorKind.HANDLER_EXCEPTION, CloseCode.INTERNAL_ERROR, "internal server error")

    def _finish_after_eof(self) -> None:
        """The client sent its FIN: whatever it had sent has been handled
        (echoes written, a failure's close frame sent); close our side once
        the writes are out."""
        if self.transport is not None and self._phase is not _CLOSED:
            self._flush_queue_for_close()
            self.transport.close()

    # -- writing ------------------------------------------------------------

    def send(self, parts: list[bytes]) -> None:
        """Write one data frame (as built by the wire core), or queue it."""
        transport = self.transport
        if transport is None or self._phase is _CLOSED or transport.is_closing():
            raise StreamClosedError()
        if self._sendq.send(parts):
            self._over_high_water()

    def _send_pong(self, frame: bytes) -> None:
        """Answer a ping; while writing is paused, only the latest ping is
        answered (RFC 6455 5.5.3), when writing resumes."""
        if self._sending():
            self._sendq.send_pong(frame)

    def send_control(self, frame: bytes) -> None:
        """Write a control frame ahead of the data frames still queued."""
        if self._sending():
            self._sendq.send_control(frame)

    def _sending(self) -> bool:
        transport = self.transport
        return transport is not None and self._phase is not _CLOSED and not transport.is_closing()

    @property
    def lost(self) -> bool:
        """The connection is gone (``connection_lost`` has run)."""
        return self._phase is _CLOSED

    def closing(self) -> bool:
        """The connection is closing or gone: nothing more can be sent."""
        transport = self.transport
        return (
            self._phase is _CLOSED
            or transport is None
            or transport.is_closing()
            or self.conn.close_sent is not None
        )

    def _unsent(self) -> int:
        """Bytes we wrote that the client has not acknowledged: our backlog
        and the kernel's send queue (SIOCOUTQ)."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        queued = max(unsent_bytes(sock), 0) if sock is not None else 0
        return self.backlog() + queued

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        sendq = self._sendq  # SendQueue.backlog() inlined: write_message asks per message
        return sendq.sink.get_write_buffer_size() + sendq.queued

    def drained(self) -> asyncio.Future[None]:
        """A Future that resolves once the event loop's buffer takes writes
        again (one shared by every writer that asks while it is full)."""
        future = self._drained
        if future is None:
            future = self._drained = asyncio.get_running_loop().create_future()
            if not self._sendq.paused:
                future.set_result(None)
                self._drained = None
        return future

    def _wake_writers(self, error: BaseException | None) -> None:
        future, self._drained = self._drained, None
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # nobody may await it (an echo does not): no log line

    def _over_high_water(self) -> None:
        """The backlog is past ``high_water``: backpressure; past
        ``max_backlog``, the connection fails at once."""
        if self.backlog() > self.limits.max_backlog:
            self._too_far_behind()
        elif not self._backpressure:
            self._start_backpressure()

    def _too_far_behind(self) -> None:
        """Over ``max_backlog``: drop what waits (its memory is freed now),
        send the close frame (behind only what the event loop already
        holds), close without reading, drop after ``LINGER_SECONDS``."""
        if self.conn.close_sent is not None:
            return  # closing already: what was queued went out before the close frame
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self.fail(
            ErrorKind.SLOW_CONSUMER,
            CloseCode.POLICY_VIOLATION,
            f"slow_consumer: over {self.limits.max_backlog} bytes queued unread",
            linger=False,
        )

    def _start_backpressure(self) -> None:
        self._backpressure = True
        self._paused_since_ping = True
        self._pause_reading()
        timeout = self.limits.send_timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._send_timer = loop.call_later(timeout, self._too_slow, timeout)

    def _too_slow(self, timeout: float) -> None:
        self._send_timer = None
        self.fail(
            ErrorKind.SLOW_CONSUMER,
            CloseCode.POLICY_VIOLATION,
            f"client left {self.backlog()} bytes of echoes unread for {timeout:g} s",
        )

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and self._started
            and not self._backpressure
            and not self._must_wait()
            and not self.conn.budget_spent
            and self.transport is not None
            and self._phase is not _CLOSED
        ):
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    # -- closing ------------------------------------------------------------

    def close(self, code: int | None, reason: str = "") -> None:
        """Start the closing handshake: our close frame, then wait (at most
        ``CLOSE_TIMEOUT``) for the client's."""
        if self._phase is not _OPEN or self.conn.close_sent is not None:
            return
        frame = self.conn.send_close(code, reason)  # raises on a bad code: nothing changed
        self._phase = _CLOSING
        # As sent: cut to fit a control frame (after the 2-byte header and code).
        self._close_reason = frame[4:].decode("utf-8")
        self._write_close(frame)
        if self.conn.close_received is not None:
            self._linger()
            return
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(CLOSE_TIMEOUT, self.abort)
        # The client's close frame must be read even while paused, and
        # while a handler still runs (its flag stays: it is still running).
        # What waited for the handler is handled now: no message of it
        # reaches the handler after our close frame; control frames do.
        self._backpressure = False
        pending, self._pending = self._pending, []
        if pending:
            self._dispatch(pending)
        if self.conn.budget_spent:
            self._schedule_more()
        self._maybe_resume_reading()

    def fail(self, kind: ErrorKind, code: CloseCode, reason: str, linger: bool = True) -> None:
        """Fail the connection from outside the parser: close frame with
        ``code``, discard what follows, linger, drop. Without ``linger``
        (a client that reads nothing, or answers nothing) the connection is
        closed without reading once the close frame is out, or dropped
        after ``LINGER_SECONDS``."""
        self.conn.fail(kind, code, reason)
        failure = self.conn.failure
        assert failure is not None
        if linger:
            self._fail_now(failure)
            return
        self._pending.clear()
        self._sendq.clear()
        if self.conn.close_sent is None:
            self._write_close(self.conn.send_close(failure.code, failure.reason))
        self._phase = max(self._phase, _CLOSING)
        transport = self.transport
        if transport is not None and self._phase is not _CLOSED:
            # Close once the kernel takes what is buffered (the close frame
            # last), reading nothing more; drop it if that takes too long.
            self._flush_queue_for_close()
            transport.close()
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(LINGER_SECONDS, self.abort)

    def _fail_now(self, failure: wire.Failed) -> None:
        self._pending.clear()
        self._sendq.clear()
        if self.conn.close_sent is None:
            self._write_close(self.conn.send_close(failure.code, failure.reason))
        self._phase = max(self._phase, _CLOSING)
        self._linger()

    def _write_close(self, frame: bytes) -> None:
        transport = self.transport
        if transport is None or self._phase is _CLOSED or transport.is_closing():
            return
        self._flush_queue_for_close()
        transport.write(frame)

    def _flush_queue_for_close(self) -> None:
        """Hand every gathered and queued frame to the event loop (it writes
        them before closing)."""
        if self.transport is not None:
            self._sendq.flush_all()

    def _linger(self) -> None:
        """Both close frames are out (or the connection failed): stop
        sending, read and discard until the client's FIN, then drop."""
        transport = self.transport
        if transport is None or self._phase >= _LINGERING:
            return
        self._phase = _LINGERING
        self._flush_queue_for_close()
        if self._close_timer is not None:
            self._close_timer.cancel()
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(
            LINGER_SECONDS, self._linger_check, self._unsent(), loop.time() + LINGER_MAX_SECONDS
        )
        self._backpressure = False
        self._started = True
        self._maybe_resume_reading()
        if self.conn.eof_received:
            transport.close()
        elif transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()

    def _linger_check(self, unsent: int, give_up_at: float) -> None:
        """Linger on while the client still takes what we sent before our
        close frame (a slow reader then gets its close frame, not a reset),
        up to ``LINGER_MAX_SECONDS``; drop a client that takes nothing."""
        if self._phase is _CLOSED:
            return
        loop = asyncio.get_running_loop()
        now_unsent = self._unsent()
        if 0 < now_unsent < unsent and loop.time() < give_up_at:
            self._close_timer = loop.call_later(
                LINGER_SECONDS, self._linger_check, now_unsent, give_up_at
            )
            return
        if now_unsent == 0 and self.transport is not None:
            self.transport.close()  # all delivered; the client did not close
            return
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None and self._phase is not _CLOSED:
            self.transport.abort()

    # -- keepalive and drain (server.connections drives these) -----------------

    def ping(self) -> bool:
        """Send a keepalive ping; False when the connection is closing."""
        if self.conn.state is not wire.State.OPEN or self._phase is _CLOSED:
            return False
        self._pong = False
        self._paused_since_ping = self._reading_paused
        self._ahead_at_ping = self._unsent()
        self.send_control(self.conn.send_ping())
        return True

    def check_pong(self, timeout: float) -> None:
        """``timeout`` s after a ping: fail a client that did not answer with
        1011, unless its pong could not have arrived while it was alive:

        - its reading was paused for backpressure (the pong was not read):
          the send timeout judges it (1008);
        - the ping went out behind data still unsent or unacknowledged
          (ours or the kernel's), and the client has taken some of it since:
          it reads steadily, and the pong is on its way behind the data."""
        if self._pong or self._phase is _CLOSED or self.conn.state is not wire.State.OPEN:
            return
        if self._paused_since_ping or self._backpressure:
            return
        if self._ahead_at_ping and self._unsent() < self._ahead_at_ping:
            return
        detail = f"no pong within {timeout:g} s"
        self.fail(ErrorKind.PING_TIMEOUT, CloseCode.INTERNAL_ERROR, detail, linger=False)

    def quiescent(self, quiet: float) -> bool:
        """Nothing received is left unhandled: no partial frame or message,
        no handler at work, no bytes waiting in the kernel, and nothing read
        for ``quiet`` seconds. Closing now loses no message that reached us
        (nor, with a ``quiet`` moment, one a client had held back)."""
        if self._phase is _CLOSED or self._handler_busy or self._pending or not self.conn.idle:
            return False
        if _monotonic() - self.last_read < quiet:
            return False
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return sock is not None and unread_bytes(sock) == 0

    def go_away(
        self,
        force: bool,
        quiet: float,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "server shutting down",
    ) -> bool:
        """Drain or maximum age: close with ``code`` and ``reason`` once
        everything received has been handled and nothing came in for
        ``quiet`` seconds (or at once with ``force``); True once the close
        frame is sent."""
        if self.conn.close_sent is not None or self._phase is _CLOSED:
            return True
        if not (force or self.quiescent(quiet)):
            return False
        self.close(code, reason)
        return True

    # -- the outcome -------------------------------------------------------

    def _outcome(self) -> Outcome:
        conn = self.conn
        failure = conn.failure
        received = conn.close_received
        if failure is not None:
            return Outcome(
                failure.code, failure.reason, failure, self._exc_info, close_received=received
            )
        if received is not None:
            return Outcome(received.code, received.reason, close_received=received)
        if conn.close_sent is not None:
            return Outcome(conn.close_sent, self._close_reason, clean=False)
        return Outcome(CloseCode.ABNORMAL_CLOSURE, "", clean=False)
