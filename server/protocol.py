"""RFC 6455 framing, with the checks Tornado leaves out.

Tornado's :class:`~tornado.websocket.WebSocketProtocol13` drops the TCP
connection without a close frame when a client sends invalid UTF-8, a frame
with reserved bits, an unknown opcode or an unmasked frame, and it echoes
close codes that the RFC forbids. A client then sees 1006 (abnormal closure)
and cannot tell what it did wrong, and operators see nothing in the logs.

:class:`StrictProtocol` keeps Tornado's handler API and its reading loop but
*fails the connection* the way RFC 6455 section 7.1.7 asks: it sends a close
frame with the specific code (1002 protocol error, 1007 invalid payload, 1009
too big, 1011 keepalive timeout), keeps reading and discarding what the
client still sends for a moment (a "lingering close", so the client's TCP
stack does not throw our close frame away on a reset), then drops the socket.
Why it failed is kept in :attr:`StrictProtocol.failure` for the handler to
log and count.

This reaches into Tornado internals (``_receive_frame_loop``,
``_handle_message``, ``_abort``, and the stream's read and write state);
``pyproject.toml`` holds Tornado to the minors tested here.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import socket
import struct
import sys
import zlib
from asyncio import Future
from collections.abc import Callable
from typing import Any

from tornado import gen
from tornado.concurrent import future_add_done_callback, future_set_result_unless_cancelled
from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import (
    _FRAME_YIELD_COST,
    _YIELD_THRESHOLD,
    WebSocketProtocol13,
    _DecompressTooLargeError,
)

__all__ = ["CloseCode", "Failure", "StrictProtocol", "is_valid_close_code"]


class CloseCode:
    """Close codes used here, as RFC 6455 section 7.4.1 names them."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS_RECEIVED = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


_KNOWN_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")
#: The reading tasks of open connections (see _receive_frame_loop).
_READERS: set[asyncio.Future[None]] = set()
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
#: Most bytes one read may return (the stream reads at most its
#: ``read_chunk_size`` from the socket at a time anyway).
_READ_CHUNK = 1 << 20
#: The stream's read size to start with. Tornado allocates (and zeroes) a
#: buffer of its read size for every read: 64 KiB by default, which is most
#: of the cost of reading a small message. A connection that sends larger
#: frames gets a read size that fits them (up to _LARGE_CHUNK), and gets
#: the small one back once its reads are much smaller than that.
_SMALL_CHUNK = 16384
_LARGE_CHUNK = 1 << 20
#: Frames at least this big are sent with sendmsg (header and payload as
#: two buffers) instead of being copied into one.
_GATHER_SIZE = 4096
#: How long a failed connection keeps reading (and discarding) before it drops.
LINGER_SECONDS = 2.0


def is_valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why the server failed a connection: an error ``kind`` and the code sent."""

    kind: str
    code: int
    reason: str
    exc_info: Any = None


class StrictProtocol(WebSocketProtocol13):
    """Tornado's protocol, failing bad input with the right close code."""

    # Class-level defaults, set on the instance only when they change: a
    # Python object keeps a compact, shared-key attribute dict only up to 30
    # attributes, Tornado's protocol has 29 once open, and a 31st would
    # cost every idle connection 1.3 KiB. (For the same reason the reading
    # loop keeps no state here: see _read_frames and quiescent.)

    #: Why the server failed the connection, if it did.
    failure: Failure | None = None
    #: True once a close frame from the peer has been read.
    close_received = False
    #: The code of the close frame we sent, if we sent one.
    close_sent: int | None = None
    #: Checks a fragmented, uncompressed text message fragment by fragment.
    _text_decoder: codecs.IncrementalDecoder | None = None

    # -- state the drain logic reads ---------------------------------------

    def quiescent(self) -> bool:
        """Nothing received is left unprocessed: the reading loop waits for
        the next frame (its partial read; a cut-short frame is finished with
        an exact read), and no bytes wait in Tornado or in the kernel.
        Closing now loses no message that reached us."""
        stream = self.stream
        if stream.closed() or stream._read_future is None or not stream._read_partial:
            return False
        if stream._read_buffer_size:
            return False
        sock = stream.socket
        if sock is None:
            return False
        try:
            return not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": EOF
        except BlockingIOError:
            return True
        except OSError:
            return False

    # -- closing ----------------------------------------------------------

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated and self.close_sent is None and not self.stream.closed():
            self.close_sent = code if code is not None else (1000 if reason else None)
        super().close(code, reason)

    async def fail(self, kind: str, code: int, reason: str, *, linger: bool = True) -> None:
        """Fail the connection: close frame with ``code``, linger, drop.

        Only the reading loop may linger (it owns the stream's reads); other
        callers pass ``linger=False`` and the socket is dropped at once.
        """
        if not linger:
            self.fail_now(kind, code, reason)
            return
        if self.failure is None:
            self.failure = Failure(kind, code, reason)
        stream = self.stream
        self.close(code, reason)
        # Stop the reading loop after this frame; it then tears down.
        self.client_terminated = True
        if self._waiting is not None:
            stream.io_loop.remove_timeout(self._waiting)
            self._waiting = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        try:
            sock = stream.socket
            if sock is not None and not stream.closed():
                # Flush the close frame (an empty write resolves once all
                # earlier writes are out), then tell the peer we send no more.
                await asyncio.wait_for(stream.write(b""), LINGER_SECONDS)
                sock.shutdown(socket.SHUT_WR)
            while loop.time() < deadline:
                await asyncio.wait_for(
                    stream.read_bytes(65536, partial=True), deadline - loop.time()
                )
        except (StreamClosedError, OSError, asyncio.TimeoutError):
            pass
        self._abort()

    # -- writing ------------------------------------------------------------

    def send(self, payload: bytes, binary: bool) -> Future[None] | None:
        """Write one data message now, without a task per message.

        When nothing is queued before it, the frame goes straight to the
        socket; only what the kernel does not take is queued on the stream.
        Returns None when the kernel took the whole frame, else the stream's
        Future for the rest. Raises StreamClosedError when the connection
        is gone.
        """
        first = 0x82 if binary else 0x81
        if self._compressor is not None:
            payload = self._compressor.compress(payload)
            first |= self.RSV1
        size = len(payload)
        if size < 126:
            head = bytes((first, size))
        elif size <= 0xFFFF:
            head = _HEADER_16.pack(first, 126, size)
        else:
            head = _HEADER_64.pack(first, 127, size)
        stream = self.stream
        sock = stream.socket
        if not stream._write_buffer and sock is not None and not stream.closed():
            big = size >= _GATHER_SIZE
            try:
                sent = sock.sendmsg((head, payload)) if big else sock.send(head + payload)
            except OSError:  # full, or broken: the stream's write sorts it out
                sent = 0
            total = len(head) + size
            if sent == total:
                return None
            if sent:
                rest = memoryview(head + payload)[sent:]
                return stream.write(rest)
        return stream.write(head + payload)

    def write_backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel."""
        return len(self.stream._write_buffer)

    # -- handler callbacks -------------------------------------------------

    def _run_callback(
        self, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Future[None] | None:
        """Tornado's, except that an exception in the handler closes the
        connection with 1011 (internal error) instead of a bare reset."""
        try:
            result = callback(*args, **kwargs)
        except Exception:
            self._callback_failed(sys.exc_info())
            return None
        if result is None:
            return None
        done: Future[None] = Future()

        def on_done(f: Future[Any]) -> None:
            try:
                f.result()
            except Exception:
                self._callback_failed(sys.exc_info())
            future_set_result_unless_cancelled(done, None)

        future_add_done_callback(gen.convert_yielded(result), on_done)
        return done

    def _callback_failed(self, exc_info: Any) -> None:
        reason = "internal server error"
        if self.failure is None:  # keep the traceback for the error event
            self.failure = Failure("handler_exception", 1011, reason, exc_info)
        self.fail_now("handler_exception", 1011, reason)

    def fail_now(self, kind: str, code: int, reason: str) -> None:
        """Fail the connection without lingering: close frame, then drop."""
        if self.failure is None:
            self.failure = Failure(kind, code, reason)
        self.close(code, reason)
        self._abort()

    # -- reading ----------------------------------------------------------

    async def _receive_frame_loop(self) -> None:
        """Start reading frames in a task of their own, and return.

        Tornado awaits its reading loop at the bottom of the request's own
        chain of coroutines (``_execute``, ``get``, ``accept_connection``,
        ``_accept_connection``), which then stay suspended for the whole
        life of the connection. Returning lets that chain finish; an idle
        connection then holds one suspended coroutine instead of six (about
        2 KiB less).
        """
        # The loop holds tasks weakly; the set holds each until it is done
        # (a set entry, not a 31st attribute: see the class's defaults).
        reader = asyncio.ensure_future(self._read_frames())
        _READERS.add(reader)
        reader.add_done_callback(_READERS.discard)

    async def _read_frames(self) -> None:
        """Read what the socket has with one await, then handle every
        complete frame in it without awaiting again.

        Tornado's loop awaits the stream four times per frame (header,
        length, mask, payload); each await is a Future and a trip through
        the event loop, which is most of the cost of a small echo. Here a
        frame costs an await only when it is not complete in what was read,
        and then one for exactly its missing bytes. So the one *partial*
        read is always the wait between frames (see :meth:`quiescent`).
        """
        stream = self.stream
        stream.read_chunk_size = _SMALL_CHUNK
        work = 0
        destroyed = False
        try:
            while not self.client_terminated:
                chunk = await stream.read_bytes(_READ_CHUNK, partial=True)
                self._wire_bytes_in += len(chunk)
                if len(chunk) < stream.read_chunk_size >> 2:
                    stream.read_chunk_size = _SMALL_CHUNK  # large frames stopped
                frames = await self._receive_frames(chunk)
                # Like Tornado's loop: a peer that always has more to send
                # must not keep the others waiting.
                work += len(chunk) + frames * _FRAME_YIELD_COST
                if work >= _YIELD_THRESHOLD:
                    work = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            self._abort()
        except GeneratorExit:
            # Collected unfinished because its event loop is gone (a test's,
            # or the interpreter's at exit): there is no one left to tell.
            destroyed = True
            raise
        finally:
            if not destroyed:
                self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    async def _read_more(self, data: bytes, pos: int, count: int) -> bytes:
        """``data`` from ``pos`` on, followed by exactly ``count`` more bytes.

        A frame that did not fit in one read raises the stream's read size
        to the frame's size, so that the next such frame comes in one read."""
        stream = self.stream
        wanted = len(data) - pos + count
        if stream.read_chunk_size < wanted:
            stream.read_chunk_size = min(wanted, _LARGE_CHUNK)
        more = await stream.read_bytes(count)
        self._wire_bytes_in += count
        return data[pos:] + more

    async def _receive_frames(self, data: bytes) -> int:
        """Handle every frame that starts in ``data``, reading the rest of
        the last one if it is cut short; return how many were handled."""
        pos = 0
        end = len(data)
        frames = 0
        max_size = self.params.max_message_size
        while pos < end and not self.client_terminated:
            if end - pos < 2:
                data, pos = await self._read_more(data, pos, 2 - (end - pos)), 0
                end = len(data)
            header = data[pos]
            mask_payloadlen = data[pos + 1]
            is_final_frame = header & 0x80
            reserved_bits = header & 0x70
            opcode = header & 0x0F
            opcode_is_control = opcode & 0x8
            if self._decompressor is not None and opcode != 0:
                self._frame_compressed = bool(reserved_bits & self.RSV1)
                reserved_bits &= ~self.RSV1
            if reserved_bits:
                await self.fail("protocol_error", 1002, "reserved bits set")
                return frames
            if opcode not in _KNOWN_OPCODES:
                await self.fail("protocol_error", 1002, f"unknown opcode {opcode:#x}")
                return frames
            if not mask_payloadlen & 0x80:
                await self.fail("protocol_error", 1002, "client frames must be masked")
                return frames
            payloadlen = mask_payloadlen & 0x7F
            if opcode_is_control and payloadlen >= 126:
                await self.fail("protocol_error", 1002, "control frame too long")
                return frames
            if opcode_is_control and not is_final_frame:
                await self.fail("protocol_error", 1002, "fragmented control frame")
                return frames
            header_len = 6 if payloadlen < 126 else 8 if payloadlen == 126 else 14
            if end - pos < header_len:
                data, pos = await self._read_more(data, pos, header_len - (end - pos)), 0
                end = len(data)
            if payloadlen == 126:
                payloadlen = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif payloadlen == 127:
                payloadlen = int.from_bytes(data[pos + 2 : pos + 10], "big")
            buffered = self._fragmented_message_buffer
            if opcode == 0 and buffered is None:
                await self.fail(
                    "protocol_error", 1002, "continuation frame with nothing to continue"
                )
                return frames
            if opcode in (0x1, 0x2) and buffered is not None:
                await self.fail("protocol_error", 1002, "new message inside a fragmented one")
                return frames
            size = payloadlen + (len(buffered) if buffered is not None and opcode == 0 else 0)
            if size > max_size:
                await self.fail(
                    "message_too_big", 1009, f"message too big: limit is {max_size} bytes"
                )
                return frames
            frame_end = pos + header_len + payloadlen
            if frame_end > end:  # the rest of this frame is on its way
                data = await self._read_more(data, pos, frame_end - end)
                frame_end -= pos
                pos = 0
                end = len(data)
            mask_at = pos + header_len - 4
            payload = _websocket_mask(data[mask_at : mask_at + 4], data[mask_at + 4 : frame_end])
            pos = frame_end
            frames += 1

            if opcode == 0:
                assert buffered is not None
                buffered.extend(payload)
                if self._text_decoder is not None and not await self._check_text(
                    payload, bool(is_final_frame)
                ):
                    return frames
                if not is_final_frame:
                    continue
                opcode = self._fragmented_message_opcode  # type: ignore[assignment]
                payload = bytes(buffered)
                self._fragmented_message_buffer = None
                self._text_decoder = None
            elif not opcode_is_control and not is_final_frame:
                self._fragmented_message_opcode = opcode  # type: ignore[assignment]
                self._fragmented_message_buffer = bytearray(payload)
                if opcode == 0x1 and not self._frame_compressed:
                    self._text_decoder = _UTF8_DECODER()
                    if not await self._check_text(payload, False):
                        return frames
                continue

            handled = self._handle_message(opcode, payload)
            if handled is not None:
                await handled
        return frames

    async def _check_text(self, fragment: bytes, final: bool) -> bool:
        """Validate a fragment of a text message as it arrives (RFC 6455
        8.1: fail as soon as the UTF-8 is invalid, not at the message's
        end); on invalid UTF-8 fail the connection with 1007 and say False."""
        assert self._text_decoder is not None
        try:
            self._text_decoder.decode(fragment, final)
        except UnicodeDecodeError:
            self._text_decoder = None
            await self.fail("invalid_payload", 1007, "text message is not valid UTF-8")
            return False
        return True

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        if self.client_terminated:
            return None
        if self._frame_compressed and opcode in (0x1, 0x2):
            assert self._decompressor is not None
            try:
                data = self._decompressor.decompress(data)
            except _DecompressTooLargeError:
                return self._fail_soon(
                    "message_too_big",
                    1009,
                    f"message too big after decompression: limit is "
                    f"{self.params.max_message_size} bytes",
                )
            except zlib.error:
                return self._fail_soon("protocol_error", 1002, "invalid compressed data")
        if opcode == 0x1:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return self._fail_soon("invalid_payload", 1007, "text message is not valid UTF-8")
            if self.server_terminated:
                return None  # no data after our close frame (RFC 6455 5.5.1)
            return self._run_callback(self.handler.on_message, text)
        if opcode == 0x2:
            if self.server_terminated:
                return None
            return self._run_callback(self.handler.on_message, data)
        if opcode == 0x8:
            return self._on_close_frame(data)
        if opcode == 0x9:
            self._send_pong(data)
            self._run_callback(self.handler.on_ping, data)
            return None
        # 0xA, pong: the other opcodes were rejected when the frame was read.
        self._received_pong = True
        return self._run_callback(self.handler.on_pong, data)

    def _on_close_frame(self, data: bytes) -> asyncio.Future[None] | None:
        if len(data) == 1:
            return self._fail_soon("protocol_error", 1002, "close frame with a 1-byte payload")
        code: int | None = None
        reason: str | None = None
        if len(data) >= 2:
            code = struct.unpack(">H", data[:2])[0]
            if not is_valid_close_code(code):
                return self._fail_soon("protocol_error", 1002, f"invalid close code {code}")
            try:
                reason = data[2:].decode("utf-8") if len(data) > 2 else None
            except UnicodeDecodeError:
                return self._fail_soon("invalid_payload", 1007, "close reason is not valid UTF-8")
        self.client_terminated = True
        self.close_received = True
        self.close_code = code
        self.close_reason = reason
        self.close(code)  # echo the peer's code (RFC 6455 5.5.1)
        return None

    def _fail_soon(self, kind: str, code: int, reason: str) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.fail(kind, code, reason))

    # -- keepalive --------------------------------------------------------
    #
    # Pings are sent by one timer for all connections (Lifecycle.keep_alive):
    # Tornado's own keepalive runs a task per connection, about 1.5 KiB each.

    def start_pinging(self) -> None:
        """No per-connection ping task; see :meth:`keepalive_ping`."""

    def keepalive_ping(self) -> bool:
        """Send a keepalive ping; False when the connection is closing."""
        if self.is_closing():
            return False
        self._received_pong = False
        try:
            self.write_ping(b"")
        except StreamClosedError:
            return False
        return True

    def keepalive_check(self, timeout: float) -> None:
        """After ``timeout``: fail a peer that has not answered with 1011."""
        if not self._received_pong and not self.is_closing():
            self.fail_now("ping_timeout", 1011, f"no pong within {timeout:g} s")
