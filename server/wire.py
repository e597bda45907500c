"""The WebSocket protocol, sans I/O: RFC 6455 framing and RFC 7692
permessage-deflate, as a push parser and a frame builder.

Nothing here reads or writes a socket, imports Tornado or asyncio, or knows
the time. A :class:`Connection` is fed the bytes a client sent
(:meth:`~Connection.receive_data`, :meth:`~Connection.receive_eof`) and hands
back what they meant (:meth:`~Connection.events_received`): whole messages,
pings, pongs, the client's close frame, or why the connection failed. What
the server sends is built by the ``send_*`` methods, which return the bytes
to write. The transport (:mod:`server.transport`) moves those bytes; this
module decides what they are.

The parser's checks raise (:class:`ProtocolError`, :class:`InvalidPayload`,
:class:`MessageTooBig`), and one ``except`` in :meth:`Connection.receive_data`
maps them to a :class:`FailureKind` and a :class:`CloseCode` (``_FAILURES``).
After a failure the connection discards everything it still receives, as
RFC 6455 section 7.1.7 asks; so it does after the client's close frame.

Limits apply before bytes are kept: a frame's declared length is checked
against the message limit as soon as its header is read, and compressed
data is inflated at most one byte past what the limit leaves. Text is
validated as UTF-8 as it arrives, fragment by fragment and within a frame
that arrives in pieces, so invalid text fails at the first bad byte.

:class:`CloseCode` is the project's only vocabulary for close codes;
:class:`FailureKind` names the protocol's failures. The server's own error
kinds (refusals, timeouts, the process) live above this module, in
:mod:`server.kinds`: a new metric label never touches the protocol core.
"""

from __future__ import annotations

import base64
import codecs
import enum
import hashlib
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final, final

from .mask import apply_mask

__all__ = [
    "COMPILED",
    "GUID",
    "CloseCode",
    "Connection",
    "Deflate",
    "Event",
    "Failed",
    "FailureKind",
    "InvalidPayload",
    "Message",
    "MessageTooBig",
    "Opcode",
    "Ping",
    "Pong",
    "ProtocolError",
    "State",
    "WebSocketError",
    "accept_key",
    "check_close_code",
    "is_sendable_close_code",
    "is_valid_close_code",
    "negotiate_deflate",
    "parse_extensions",
]

#: Whether this module runs compiled by mypyc (scripts/build-speedups.sh)
#: or as the pure-Python source, which is also its fallback.
COMPILED: bool = not __file__.endswith((".py", ".pyc"))

#: RFC 6455 section 1.3: appended to the client's key for Sec-WebSocket-Accept.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class CloseCode(enum.IntEnum):
    """Close codes, as RFC 6455 section 7.4.1 and the IANA registry name them."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


class FailureKind(enum.StrEnum):
    """Why the parser failed a connection: the protocol's own failures.
    The server names these and its own kinds in :class:`server.kinds.ErrorKind`
    (same values)."""

    PROTOCOL_ERROR = "protocol_error"
    INVALID_PAYLOAD = "invalid_payload"
    MESSAGE_TOO_BIG = "message_too_big"


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class State(enum.IntEnum):
    """Where the closing handshake stands (RFC 6455 section 7)."""

    OPEN = 1
    #: One side's close frame has been sent or received, not both.
    CLOSING = 2
    #: Both close frames, or a failure: nothing more is read or sent.
    CLOSED = 3


# -- errors: each names its kind and code once; receive_data maps them ----


class WebSocketError(Exception):
    """A check on the client's bytes failed; the connection must fail."""

    kind = FailureKind.PROTOCOL_ERROR
    code = CloseCode.PROTOCOL_ERROR


class ProtocolError(WebSocketError):
    """The bytes break RFC 6455 or RFC 7692 framing (1002)."""


class InvalidPayload(WebSocketError):
    """Text, or a close reason, that is not UTF-8 (1007)."""


class MessageTooBig(WebSocketError):
    """A message over the limit, before or after inflation (1009)."""


#: The one place errors become close codes.
_FAILURES: dict[type[WebSocketError], tuple[FailureKind, CloseCode]] = {
    ProtocolError: (FailureKind.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR),
    InvalidPayload: (FailureKind.INVALID_PAYLOAD, CloseCode.INVALID_PAYLOAD),
    MessageTooBig: (FailureKind.MESSAGE_TOO_BIG, CloseCode.MESSAGE_TOO_BIG),
}


# -- events --------------------------------------------------------------


@final
class Message:
    """A whole data message: ``str`` for text, ``bytes`` for binary.

    Made once per message, so written out rather than a frozen dataclass
    like the other events (the same equality, hash and repr): compiled,
    its ``Final`` attribute is read-only and it is made in ~40 ns instead
    of ~210 ns (the frozen dataclass's ``__init__`` runs as Python code);
    in the pure-Python fallback, ``__setattr__`` keeps ``data`` read-only
    (made in ~200 ns there, ~110 ns without the guard)."""

    __slots__ = ("data",)
    # ClassVar: compiled, a bare class-level assignment in a native class is
    # an instance attribute's default, and ``case Message(data)`` raised.
    __match_args__: ClassVar[tuple[str]] = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data: Final = data

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Message:
            return NotImplemented
        return bool(self.data == other.data)

    def __hash__(self) -> int:
        return hash((self.data,))

    def __repr__(self) -> str:
        return f"Message(data={self.data!r})"


def _message_init(self: Message, data: str | bytes) -> None:
    object.__setattr__(self, "data", data)


def _message_read_only(self: Message, name: str, value: object = None) -> None:
    raise AttributeError(f"Message.{name} is read-only")


if not COMPILED:
    # Pure Python does not enforce Final: ``data`` read-only here too, as in
    # the compiled core and the frozen dataclass Message replaced.
    setattr(Message, "__init__", _message_init)  # noqa: B010
    setattr(Message, "__setattr__", _message_read_only)  # noqa: B010
    setattr(Message, "__delattr__", _message_read_only)  # noqa: B010


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The client's close frame: its code (1005 when it had none) and reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The connection failed: send a close frame with ``code``, then discard.
    ``kind`` is a :class:`FailureKind` when the parser failed it, or the
    kind the server passed to :meth:`Connection.fail`."""

    kind: str
    code: CloseCode
    reason: str


Event = Message | Ping | Pong | Close | Failed


def is_valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 7.4)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def is_sendable_close_code(code: int) -> bool:
    """Whether ``send_close`` takes ``code``: one a peer may send, or 1005
    and 1006 (sent as a close frame without a status)."""
    return is_valid_close_code(code) or code in (1005, 1006)


def check_close_code(code: int | None) -> None:
    """``ValueError`` unless ``send_close`` takes ``code`` (None included):
    the one place that says so, for the wire core and the handler's
    ``close()``."""
    if code is not None and not is_sendable_close_code(code):
        raise ValueError(
            f"close code {code!r} cannot be sent (RFC 6455 7.4: 1000-1003, "
            "1007-1014 or 3000-4999; None, 1005 or 1006 for none)"
        )


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


# -- permessage-deflate (RFC 7692) ---------------------------------------

# Each pattern is matched whole (fullmatch) against one piece of the header
# that str.strip() and a split at the first "=" have already cut out: no
# pattern has two unbounded repeats that could share a character, so the
# work is linear in the header's length (tests/test_regex_safety.py checks
# every pattern in server/ for that).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_ESCAPE = re.compile(r"\\(.)")
_WINDOW_BITS = re.compile(r"[1-9][0-9]?")
_TAIL = b"\x00\x00\xff\xff"
#: The most characters of ``Sec-WebSocket-Extensions`` (all its values
#: together) that are parsed; a longer header is declined, not parsed.
MAX_EXTENSIONS_LENGTH = 4096


Offer = tuple[str, list[tuple[str, str | None]]]


def parse_extensions(values: Iterable[str]) -> list[Offer] | None:
    """``Sec-WebSocket-Extensions`` values as (name, [(param, value)]) offers,
    in order; None if the header does not follow RFC 6455 section 9.1."""
    offers: list[Offer] = []
    for value in values:
        # Split on commas and semicolons outside quoted strings.
        for element in _split(value, ","):
            if not element.strip():
                continue  # RFC 7230 7: empty list elements are allowed
            parts = _split(element, ";")
            name = parts[0].strip()
            if not _TOKEN.fullmatch(name):
                return None
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                param = _param(part)
                if param is None:
                    return None
                params.append(param)
            offers.append((name.lower(), params))
    return offers


def _param(part: str) -> tuple[str, str | None] | None:
    """One extension parameter, ``name`` or ``name=value`` (a token or a
    quoted string, unescaped), with optional whitespace around each."""
    key, eq, value = part.partition("=")  # a token has no "=": the first one splits
    key = key.strip()
    if not _TOKEN.fullmatch(key):
        return None
    if not eq:
        return key.lower(), None
    value = value.strip()
    if _TOKEN.fullmatch(value):
        return key.lower(), value
    if _QUOTED.fullmatch(value):
        return key.lower(), _ESCAPE.sub(r"\1", value[1:-1])
    return None


def _split(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass(frozen=True, slots=True)
class Deflate:
    """Agreed permessage-deflate parameters."""

    #: We reset our compressor after each message (the client asked).
    server_no_context_takeover: bool = False
    #: The client resets its compressor after each message.
    client_no_context_takeover: bool = False
    #: Our LZ77 window (the client may cap it).
    server_max_window_bits: int = 15
    #: The offer named server_max_window_bits: accepting it means echoing it
    #: (RFC 7692 7.1.2.1), even at 15.
    server_max_window_bits_offered: bool = False

    def response(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value that accepts the offer."""
        parts = ["permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits_offered or self.server_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        return "; ".join(parts)


def _deflate_offer(params: list[tuple[str, str | None]]) -> Deflate | None:
    """The parameters to accept one permessage-deflate offer with, or None
    when RFC 7692 section 7.1 says to decline it (or zlib cannot honour it)."""
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits = 15
    bits_offered = False
    for name, value in params:
        if name in seen:
            return None  # 7.1: a parameter at most once
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            client_nct = True
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value is None:
                if name == "server_max_window_bits":
                    return None  # 7.1.2.1: it has a value
                continue  # 7.1.2.2: the client takes whatever we answer
            if not _WINDOW_BITS.fullmatch(value) or not 8 <= int(value) <= 15:
                return None
            if name == "server_max_window_bits":
                # zlib's raw deflate has no 8-bit window (it would use 9):
                # the offer cannot be honoured, so it is declined.
                if int(value) == 8:
                    return None
                server_bits = int(value)
                bits_offered = True
            # client_max_window_bits=N: the client compresses with at most
            # N bits; our inflater's 15-bit window reads any of them.
        else:
            return None  # an unknown parameter
    return Deflate(server_nct, client_nct, server_bits, bits_offered)


def negotiate_deflate(values: Iterable[str]) -> Deflate | None:
    """The first acceptable permessage-deflate offer in the client's
    ``Sec-WebSocket-Extensions`` headers, or None to decline them all
    (an invalid header or offer, or one over ``MAX_EXTENSIONS_LENGTH``
    characters, is declined, never an error)."""
    values = list(values)
    if sum(map(len, values)) > MAX_EXTENSIONS_LENGTH:
        return None
    offers = parse_extensions(values)
    if not offers:
        return None
    for name, params in offers:
        if name == "permessage-deflate":
            agreed = _deflate_offer(params)
            if agreed is not None:
                return agreed
    return None


# -- the connection --------------------------------------------------------

_UTF8 = codecs.getincrementaldecoder("utf-8")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")
#: Payloads at least this big are returned apart from their header (the
#: transport writes both with one gather write instead of joining them).
GATHER_SIZE = 4096
_CONTROL_MAX = 125


#: The 2-byte headers of data frames under 126 bytes (text and binary, with
#: and without RSV1), made once: one per message otherwise.
_SHORT_HEADS: dict[int, list[bytes]] = {
    first: [bytes((first, size)) for size in range(126)] for first in (0x81, 0x82, 0xC1, 0xC2)
}


def frame_header(first: int, size: int) -> bytes:
    """An unmasked (server) frame header: ``first`` byte, payload ``size``."""
    if size < 126:
        heads = _SHORT_HEADS.get(first)
        return heads[size] if heads is not None else bytes((first, size))
    if size < 65536:
        return _HEAD_16.pack(first, 126, size)
    return _HEAD_64.pack(first, 127, size)


class Connection:
    """One server-side WebSocket connection's protocol state.

    ``max_message_size`` bounds every message, before and after inflation;
    ``deflate`` holds the agreed permessage-deflate parameters, if any.
    """

    __slots__ = (
        "_budget_spent",
        "_buf",
        "_buf_pos",
        "_compressor",
        "_decoder",
        "_decompressor",
        "_discarding",
        "_events",
        "_frame_fin",
        "_frame_left",
        "_frame_mask",
        "_frame_offset",
        "_inflated",
        "_msg_buf",
        "_msg_compressed",
        "_msg_data",
        "_msg_op",
        "_msg_size",
        "close_received",
        "close_sent",
        "deflate",
        "eof_received",
        "failure",
        "max_bytes_per_call",
        "max_frames_per_call",
        "max_message_size",
        "state",
    )

    def __init__(self, max_message_size: int, deflate: Deflate | None = None) -> None:
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.state = State.OPEN
        #: The client's close frame, once read.
        self.close_received: Close | None = None
        #: The code of the close frame we sent (None: none yet, or one without a code).
        self.close_sent: int | None = None
        #: Why the connection failed, if it did.
        self.failure: Failed | None = None
        self.eof_received = False
        #: After a failure or the client's close frame: ignore all input.
        self._discarding = False
        self._events: list[Event] = []
        self._buf = b""
        self._buf_pos = 0  # where parsing resumes in _buf after a spent budget
        #: What one receive_data call may parse (0: all it is given): frame
        #: headers, and bytes of frames; and it inflates at most about
        #: ``max_message_size`` bytes. The rest stays buffered until the next
        #: call (see :attr:`budget_spent`).
        self.max_frames_per_call = 0
        self.max_bytes_per_call = 0
        self._budget_spent = False
        self._inflated = 0
        # The data frame being read: bytes of payload still to come, its
        # mask, how far into the mask it is, and whether it ends the message.
        self._frame_left = 0
        self._frame_mask = b""
        self._frame_offset = 0
        self._frame_fin = False
        # The message being read (when it is fragmented or arrives in pieces).
        self._msg_op: int = 0
        self._msg_compressed = False
        # Its payload so far: the first piece as it came, then one growing
        # buffer (a fragment costs its bytes, not an object).
        self._msg_data = b""
        self._msg_buf: bytearray | None = None
        self._msg_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        # Made at the first compressed message: an idle connection holds
        # no zlib state (about 45 KiB to inflate, 260 KiB to deflate).
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client; see :meth:`events_received`. With a
        budget (``max_frames_per_call``, ``max_bytes_per_call``) parsing may
        stop before the end: then :attr:`budget_spent` is true, and a call
        with no new bytes (``receive_data(b"")``) goes on."""
        if self._discarding:
            return  # RFC 6455 7.1.7 and 5.5.1: discard
        pos = 0
        if self._buf:
            if data:
                data = self._buf[self._buf_pos :] + data
            else:
                data, pos = self._buf, self._buf_pos
            self._buf = b""
            self._buf_pos = 0
        self._budget_spent = False
        self._inflated = 0
        try:
            self._parse(data, pos)
        except WebSocketError as exc:
            kind, code = _FAILURES[type(exc)]
            self._fail(kind, code, str(exc))
            self._events.append(Failed(kind, code, str(exc)))
        if self.eof_received and not self._budget_spent:
            self._buf = b""  # a partial frame that can never complete

    def receive_eof(self) -> None:
        """The client will send nothing more (its FIN). Bytes left unparsed
        by a spent budget are still parsed by the next calls."""
        self.eof_received = True
        if not self._budget_spent:
            self._buf = b""

    @property
    def budget_spent(self) -> bool:
        """The last :meth:`receive_data` stopped at its budget with bytes
        left to parse: call it again (with ``b""``) to go on."""
        return self._budget_spent

    @property
    def idle(self) -> bool:
        """No frame or message is partly received."""
        return not self._buf and not self._frame_left and not self._msg_op

    def events_received(self) -> list[Event]:
        """The events the bytes received so far completed, in order."""
        events = self._events
        if events:
            self._events = []
        return events

    def fail(self, kind: str, code: CloseCode, reason: str) -> None:
        """Fail the connection for a reason found outside the parser (a
        keepalive timeout, a slow consumer, the handler's exception): from
        now on everything received is discarded. The transport still sends
        the close frame (:meth:`send_close`)."""
        self._fail(kind, code, reason)

    def _fail(self, kind: str, code: CloseCode, reason: str) -> None:
        if self.failure is None:
            self.failure = Failed(kind, code, reason)
        if self.close_sent is not None:
            self.state = State.CLOSED
        self._discarding = True
        self._buf = b""
        self._budget_spent = False
        self._msg_data = b""
        self._msg_buf = None
        self._decoder = None
        self._frame_left = 0

    def _parse(self, data: bytes, pos: int) -> None:
        end = len(data)
        events = self._events
        limit = self.max_message_size
        frames_left = self.max_frames_per_call or -1
        bytes_until = pos + self.max_bytes_per_call if self.max_bytes_per_call else end
        budget = bool(self.max_frames_per_call or self.max_bytes_per_call)
        while pos < end:
            if budget and (frames_left == 0 or pos >= bytes_until or self._inflated > limit):
                self._budget_spent = True
                break
            if self._frame_left:
                pos = self._data_piece(data, pos, end)
                continue
            frames_left -= 1
            if end - pos < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            fin = first & 0x80
            rsv = first & 0x70
            if not second & 0x80:
                raise ProtocolError("client frames must be masked")
            size = second & 0x7F
            if opcode >= 0x8:
                if opcode > 0xA:
                    raise ProtocolError(f"unknown opcode {opcode:#x}")
                if rsv:
                    raise ProtocolError("reserved bits set on a control frame")
                if not fin:
                    raise ProtocolError("fragmented control frame")
                if size > _CONTROL_MAX:
                    raise ProtocolError("control frame too long")
                if end - pos < 6 + size:
                    break
                mask = data[pos + 2 : pos + 6]
                payload = apply_mask(mask, data[pos + 6 : pos + 6 + size])
                pos += 6 + size
                self._control(opcode, payload)
                if self._discarding:
                    return  # discard what follows the close frame
                continue
            if opcode > 0x2:
                raise ProtocolError(f"unknown opcode {opcode:#x}")
            compressed = False
            if rsv:
                if rsv != 0x40 or self.deflate is None or opcode == 0:
                    raise ProtocolError("reserved bits set")
                compressed = True
            if opcode == 0:
                if not self._msg_op:
                    raise ProtocolError("continuation frame with nothing to continue")
            elif self._msg_op:
                raise ProtocolError("new message inside a fragmented one")
            if size < 126:
                head = 6
            elif size == 126:
                head = 8
                if end - pos < head:
                    break
                size = (data[pos + 2] << 8) | data[pos + 3]
            else:
                head = 14
                if end - pos < head:
                    break
                size = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if size >> 63:
                    raise ProtocolError("frame length has its most significant bit set")
            if end - pos < head:
                break
            if self._msg_size + size > limit and not (compressed or self._msg_compressed):
                raise MessageTooBig(f"message too big: limit is {limit} bytes")
            if size > limit:  # compressed data bigger than the limit
                raise MessageTooBig(f"message too big: limit is {limit} bytes")
            mask = data[pos + head - 4 : pos + head]
            start = pos + head
            if fin and opcode and not compressed and start + size <= end:
                # The common case: a whole, unfragmented, uncompressed message.
                payload = apply_mask(mask, data[start : start + size])
                pos = start + size
                if opcode == 0x1:
                    try:
                        events.append(Message(payload.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise InvalidPayload("text message is not valid UTF-8") from None
                else:
                    events.append(Message(payload))
                continue
            if opcode:
                self._start_message(opcode, compressed)
            self._frame_left = size
            self._frame_mask = mask
            self._frame_offset = 0
            self._frame_fin = bool(fin)
            pos = start
            if not size:
                self._data_chunk(b"", fin=bool(fin))
        if pos < end:
            if self._budget_spent:
                self._buf, self._buf_pos = data, pos  # no copy: parsed from pos next time
            else:
                self._buf = data[pos:]

    def _start_message(self, opcode: int, compressed: bool) -> None:
        self._msg_op = opcode
        self._msg_compressed = compressed
        self._msg_data = b""
        self._msg_buf = None
        self._msg_size = 0
        self._decoder = _UTF8() if opcode == 0x1 else None
        if compressed and self._decompressor is None:
            self._decompressor = zlib.decompressobj(-15)

    def _data_piece(self, data: bytes, pos: int, end: int) -> int:
        """Unmask and take as much of the current data frame as ``data`` holds."""
        take = min(self._frame_left, end - pos)
        offset = self._frame_offset & 3
        mask = self._frame_mask
        if offset:
            mask = mask[offset:] + mask[:offset]
        chunk = apply_mask(mask, data[pos : pos + take])
        self._frame_left -= take
        self._frame_offset += take
        self._data_chunk(chunk, fin=self._frame_fin and not self._frame_left)
        return pos + take

    def _data_chunk(self, chunk: bytes, fin: bool) -> None:
        """Add a piece of the current message; complete it when ``fin``."""
        limit = self.max_message_size
        if self._msg_compressed:
            assert self._decompressor is not None
            room = limit - self._msg_size
            decompressor = self._decompressor
            if decompressor.eof:
                # The client ended a message with a final block (RFC 7692
                # 7.2.3.3): what follows starts a new deflate stream.
                decompressor = self._decompressor = zlib.decompressobj(-15)
            try:
                out = decompressor.decompress(chunk, room + 1)
                if len(out) <= room and not decompressor.unconsumed_tail and fin:
                    out += decompressor.decompress(_TAIL, room + 1 - len(out))
            except zlib.error:
                raise ProtocolError("invalid compressed data") from None
            if len(out) > room or decompressor.unconsumed_tail:
                raise MessageTooBig(f"message too big after decompression: limit is {limit} bytes")
            chunk = out
            self._inflated += len(out)
        self._msg_size += len(chunk)
        decoder = self._decoder
        whole = fin and not self._msg_data and self._msg_buf is None
        text = ""
        if decoder is not None:
            # Validated as it arrives (the text is made once, at the end,
            # unless this one piece is the whole message).
            try:
                text = decoder.decode(chunk, fin)
            except UnicodeDecodeError:
                raise InvalidPayload("text message is not valid UTF-8") from None
            pending = decoder.getstate()[0]
            if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:
                # A UTF-16 surrogate (U+D800-U+DFFF): Python's decoder only
                # says so at the third byte; RFC 3629 makes the second invalid.
                raise InvalidPayload("text message is not valid UTF-8")
        if whole:
            pass
        elif self._msg_buf is not None:
            self._msg_buf += chunk
        elif not self._msg_data:
            self._msg_data = chunk
        elif chunk:
            self._msg_buf = bytearray(self._msg_data)
            self._msg_buf += chunk
            self._msg_data = b""
        if not fin:
            return
        message: str | bytes
        if not whole:
            chunk = self._msg_data if self._msg_buf is None else bytes(self._msg_buf)
        if decoder is None:
            message = chunk
        elif whole:
            message = text
        else:
            message = chunk.decode("utf-8")  # validated above
        self._msg_op = 0
        self._msg_data = b""
        self._msg_buf = None
        self._msg_size = 0
        self._decoder = None
        if (
            self._msg_compressed
            and self._decompressor is not None
            and (
                self._decompressor.eof
                or (self.deflate is not None and self.deflate.client_no_context_takeover)
            )
        ):
            self._decompressor = None  # a fresh one at the next compressed message
        self._msg_compressed = False
        self._events.append(Message(message))

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:
            self._events.append(Ping(payload))
        elif opcode == 0xA:
            self._events.append(Pong(payload))
        else:
            self._close_frame(payload)

    def _close_frame(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise ProtocolError("close frame with a 1-byte payload")
        code: int = CloseCode.NO_STATUS_RCVD
        reason = ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise ProtocolError(f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPayload("close reason is not valid UTF-8") from None
        close = Close(code, reason)
        self.close_received = close
        self.state = State.CLOSED if self.close_sent is not None else State.CLOSING
        self._discarding = True
        self._buf = b""
        self._budget_spent = False
        self._events.append(close)

    # -- sending -----------------------------------------------------------

    def send_message(self, data: bytes, binary: bool) -> list[bytes]:
        """One data message (``data`` already encoded), as the bytes to
        write: one buffer, or header and payload apart when large."""
        first = 0x82 if binary else 0x81
        if self.deflate is not None:
            data = self._compress(data)
            first |= 0x40
        head = frame_header(first, len(data))
        if len(data) < GATHER_SIZE:
            return [head + data]
        return [head, data]

    def send_text(self, text: str) -> list[bytes]:
        """A text message, as the bytes to write (see :meth:`send_message`)."""
        return self.send_message(text.encode("utf-8"), binary=False)

    def send_binary(self, data: bytes) -> list[bytes]:
        """A binary message, as the bytes to write (see :meth:`send_message`)."""
        return self.send_message(data, binary=True)

    def send_ping(self, data: bytes = b"") -> bytes:
        """A ping frame; a payload over 125 bytes is a ``ValueError``."""
        if len(data) > _CONTROL_MAX:
            raise ValueError("a ping's payload is at most 125 bytes")
        return bytes((0x89, len(data))) + data

    def send_pong(self, data: bytes = b"") -> bytes:
        """A pong frame, its payload cut to 125 bytes."""
        data = data[:_CONTROL_MAX]
        return bytes((0x8A, len(data))) + data

    def send_close(self, code: int | None = None, reason: str = "") -> bytes:
        """Our close frame; ``code`` None (or 1005, 1006) sends one without a
        status. The reason is cut to fit a control frame (123 bytes), at a
        character boundary. A code a peer may not send (RFC 6455 7.4) raises
        ``ValueError``, before anything changes."""
        check_close_code(code)
        if code is None or code in (CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE):
            payload = b""
            self.close_sent = CloseCode.NO_STATUS_RCVD
        else:
            raw = reason.encode("utf-8")[: _CONTROL_MAX - 2]
            raw = raw.decode("utf-8", "ignore").encode("utf-8")
            payload = struct.pack("!H", code) + raw
            self.close_sent = code
        done = self.close_received is not None or self.failure is not None
        self.state = State.CLOSED if done else State.CLOSING
        return bytes((0x88, len(payload))) + payload

    def _compress(self, data: bytes) -> bytes:
        deflate = self.deflate
        assert deflate is not None
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -deflate.server_max_window_bits
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = None if deflate.server_no_context_takeover else compressor
        if out.endswith(_TAIL):
            out = out[:-4]
        return out
