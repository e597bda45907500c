"""Unit tests of the sans-I/O core (:mod:`server.wire`): bytes in, events out.

No sockets: each test builds the bytes a client would send (masked frames,
compressed with zlib as RFC 7692 says), feeds them to a
:class:`wire.Connection` and checks the events, or builds what the server
sends and parses it back, with our own small parser and with websockets'
client-side parser (a real, independent implementation).

The helpers at the top (``client_frame``, ``ClientDeflater``,
``parse_server_frames``) are shared with the property, differential and
negotiation tests.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

from server import wire
from server.kinds import ErrorKind
from server.mask import apply_mask
from server.wire import (
    Close,
    CloseCode,
    Connection,
    Deflate,
    Failed,
    FailureKind,
    Message,
    Ping,
    Pong,
    State,
)
from testkit import frames
from testkit.frames import close_payload

LIMIT = 1 << 20
MASK = b"\x37\xfa\x21\x3d"
TAIL = b"\x00\x00\xff\xff"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


# -- helpers -----------------------------------------------------------------


def frame_head(opcode: int, size: int, **kw: Any) -> bytes:
    """:func:`testkit.frames.frame_head`, masked with :data:`MASK` unless told."""
    kw.setdefault("mask", MASK)
    return frames.frame_head(opcode, size, **kw)


def client_frame(opcode: int, payload: bytes = b"", **kw: Any) -> bytes:
    """:func:`testkit.frames.frame` (one whole client frame), masked with
    :data:`MASK` unless told."""
    kw.setdefault("mask", MASK)
    return frames.frame(opcode, payload, **kw)


class ClientDeflater:
    """A client's side of permessage-deflate (RFC 7692 7.2.1): compress each
    message, drop the 4-byte tail; a fresh compressor per message when
    ``no_context_takeover``."""

    def __init__(self, no_context_takeover: bool = False, window_bits: int = 15) -> None:
        self.no_context_takeover = no_context_takeover
        self.window_bits = window_bits
        self._compressor = self._new()

    def _new(self) -> zlib._Compress:
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.window_bits)

    def compress(self, data: bytes) -> bytes:
        if self.no_context_takeover:
            self._compressor = self._new()
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]


def parse_server_frames(data: bytes) -> list[tuple[bool, int, int, bytes]]:
    """Our own parser of what the server sends: (fin, rsv bits, opcode,
    payload) for each frame. Server frames must not be masked (RFC 6455
    5.1); every byte must belong to a whole frame."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert not second & 0x80, "a server frame must not be masked"
        size = second & 0x7F
        pos += 2
        if size == 126:
            (size,) = struct.unpack("!H", data[pos : pos + 2])
            assert size >= 126, "16-bit length used for a size that fits 7 bits"
            pos += 2
        elif size == 127:
            (size,) = struct.unpack("!Q", data[pos : pos + 8])
            assert 65536 <= size < 1 << 63, "64-bit length misused"
            pos += 8
        payload = data[pos : pos + size]
        assert len(payload) == size, "truncated frame"
        pos += size
        frames.append((bool(first & 0x80), first & 0x70, first & 0x0F, payload))
    return frames


def websockets_handshake(extensions: list | None, max_size: int | None = None) -> tuple:
    """A websockets ``ClientProtocol`` (sans I/O) that offered ``extensions``
    and read our 101 answer: (client, the Deflate we agreed to, or None).
    The client's own checks of our response run; a rejection fails here."""
    from websockets.client import ClientProtocol
    from websockets.datastructures import Headers
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    client = ClientProtocol(
        parse_uri("ws://127.0.0.1/ws"), extensions=extensions, max_size=max_size
    )
    request = client.connect()
    client.send_request(request)
    deflate = wire.negotiate_deflate(request.headers.get_all("Sec-WebSocket-Extensions"))
    headers = Headers()
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    headers["Sec-WebSocket-Accept"] = wire.accept_key(request.headers["Sec-WebSocket-Key"])
    if deflate is not None:
        headers["Sec-WebSocket-Extensions"] = deflate.response()
    client.receive_data(Response(101, "Switching Protocols", headers).serialize())
    [response] = client.events_received()
    assert client.handshake_exc is None, (deflate, client.handshake_exc)
    assert response.status_code == 101
    client.data_to_send()  # the request's bytes: not needed
    return client, deflate


def feed(conn: Connection, *chunks: bytes) -> list[wire.Event]:
    for chunk in chunks:
        conn.receive_data(chunk)
    return conn.events_received()


def failed_code(events: list[wire.Event]) -> CloseCode | None:
    """The code of the single Failed event, which must be the last one."""
    failures = [e for e in events if isinstance(e, Failed)]
    assert len(failures) <= 1, events
    if not failures:
        return None
    assert events[-1] is failures[0], events
    return failures[0].code


def conn(limit: int = LIMIT, deflate: Deflate | None = None) -> Connection:
    return Connection(limit, deflate)


# -- the happy path --------------------------------------------------------------


def test_text_binary_ping_pong_in_one_read() -> None:
    data = (
        client_frame(TEXT, "héllo".encode())
        + client_frame(BINARY, b"\x00\xff")
        + client_frame(PING, b"p")
        + client_frame(PONG, b"q")
        + client_frame(TEXT)
    )
    assert feed(conn(), data) == [
        Message("héllo"),
        Message(b"\x00\xff"),
        Ping(b"p"),
        Pong(b"q"),
        Message(""),
    ]


def test_frames_byte_by_byte_and_all_length_forms() -> None:
    payloads = [b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    data = b"".join(client_frame(BINARY, p) for p in payloads)
    c = conn()
    events = []
    for i in range(len(data)):
        c.receive_data(data[i : i + 1])
        events += c.events_received()
    assert events == [Message(p) for p in payloads]


def test_fragmented_message_with_control_frames_between_fragments() -> None:
    text = "κόσμε".encode()
    # Cut inside a two-byte character: the fragments are not UTF-8 alone.
    data = (
        client_frame(TEXT, text[:3], fin=False)
        + client_frame(PING, b"1")
        + client_frame(CONT, text[3:7], fin=False)
        + client_frame(PONG, b"2")
        + client_frame(CONT, b"", fin=False)
        + client_frame(CONT, text[7:])
    )
    assert feed(conn(), data) == [Ping(b"1"), Pong(b"2"), Message("κόσμε")]


def test_message_exactly_at_the_limit_is_accepted() -> None:
    c = conn(limit=100)
    data = client_frame(BINARY, b"x" * 60, fin=False) + client_frame(CONT, b"y" * 40)
    assert feed(c, data) == [Message(b"x" * 60 + b"y" * 40)]
    assert feed(c, client_frame(TEXT, b"z" * 100)) == [Message("z" * 100)]


def test_empty_control_and_data_frames() -> None:
    data = client_frame(PING) + client_frame(BINARY) + client_frame(PONG)
    assert feed(conn(), data) == [Ping(b""), Message(b""), Pong(b"")]


# -- masking, reserved bits, opcodes -------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CLOSE])
def test_unmasked_client_frame_fails_1002(opcode: int) -> None:
    events = feed(conn(), client_frame(opcode, b"hi", masked=False))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR
    assert events[-1].kind == FailureKind.PROTOCOL_ERROR


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2, RSV2 | RSV3])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_reserved_bits_without_deflate_fail_1002(rsv: int, opcode: int) -> None:
    events = feed(conn(), client_frame(opcode, b"", rsv=rsv))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("rsv", [RSV2, RSV3, RSV1 | RSV2, RSV1 | RSV3])
def test_rsv2_rsv3_fail_even_with_deflate(rsv: int) -> None:
    payload = ClientDeflater().compress(b"hello")
    events = feed(conn(deflate=Deflate()), client_frame(TEXT, payload, rsv=rsv))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


def test_rsv1_on_first_frame_with_deflate_is_a_compressed_message() -> None:
    payload = ClientDeflater().compress(b"hello hello hello")
    events = feed(conn(deflate=Deflate()), client_frame(TEXT, payload, rsv=RSV1))
    assert events == [Message("hello hello hello")]


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_rsv1_on_a_control_frame_with_deflate_fails_1002(opcode: int) -> None:
    """RFC 7692 6: RSV1 means "compressed" on the first frame of a data
    message only; on a control frame it is an undefined reserved bit."""
    payload = close_payload(1000) if opcode == CLOSE else b"x"
    events = feed(conn(deflate=Deflate()), client_frame(opcode, payload, rsv=RSV1))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("first_compressed", [True, False])
def test_rsv1_on_a_continuation_frame_with_deflate_fails_1002(first_compressed: bool) -> None:
    deflater = ClientDeflater()
    whole = deflater.compress(b"hello world") if first_compressed else b"hello world"
    first = client_frame(TEXT, whole[:4], fin=False, rsv=RSV1 if first_compressed else 0)
    c = conn(deflate=Deflate())
    assert feed(c, first) == []
    events = feed(c, client_frame(CONT, whole[4:], rsv=RSV1))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_fail_1002(opcode: int) -> None:
    events = feed(conn(), client_frame(opcode, b"abc"))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


# -- control frames ------------------------------------------------------------


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame_fails_1002(opcode: int) -> None:
    events = feed(conn(), client_frame(opcode, b"", fin=False))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_over_125_bytes_fails_1002_at_its_header(opcode: int) -> None:
    # Only the header: the failure must not wait for 126 bytes of payload.
    events = feed(conn(), frame_head(opcode, 126))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


def test_control_frame_of_125_bytes_is_fine() -> None:
    assert feed(conn(), client_frame(PING, b"p" * 125)) == [Ping(b"p" * 125)]


def test_control_frame_with_long_length_form_but_small_size_fails_1002() -> None:
    """RFC 6455 5.5: control frames have a payload length of 125 or less,
    so the 16-bit form (126) never belongs on one."""
    events = feed(conn(), frame_head(PING, 5, length_form=126) + apply_mask(MASK, b"hello"))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


# -- fragmentation ---------------------------------------------------------------


def test_continuation_without_a_start_fails_1002() -> None:
    events = feed(conn(), client_frame(CONT, b"orphan"))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


def test_continuation_after_a_finished_message_fails_1002() -> None:
    events = feed(conn(), client_frame(TEXT, b"done") + client_frame(CONT, b"more"))
    assert events[0] == Message("done")
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("second", [TEXT, BINARY])
def test_new_message_inside_a_fragmented_one_fails_1002(second: int) -> None:
    data = client_frame(TEXT, b"part", fin=False) + client_frame(second, b"new")
    events = feed(conn(), data)
    assert events == [events[-1]]
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


# -- sizes -----------------------------------------------------------------------


def test_64_bit_length_with_top_bit_set_fails_1002_not_1009() -> None:
    """RFC 6455 5.2: "the most significant bit MUST be 0"; a length that
    breaks the framing is a protocol error, whatever the size limit."""
    head = frame_head(BINARY, 1 << 63)
    events = feed(conn(), head)
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR
    head = frame_head(BINARY, (1 << 64) - 1)
    assert failed_code(feed(conn(), head)) == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("size", [101, 126, 70_000, 1 << 40])
def test_too_big_by_declared_length_fails_1009_from_the_header_alone(size: int) -> None:
    c = conn(limit=100)
    events = feed(c, frame_head(BINARY, size))
    assert failed_code(events) == CloseCode.MESSAGE_TOO_BIG
    assert events[-1].kind == FailureKind.MESSAGE_TOO_BIG


def test_too_big_over_fragments_fails_1009_at_the_fragment_header() -> None:
    c = conn(limit=100)
    assert feed(c, client_frame(TEXT, b"a" * 60, fin=False)) == []
    events = feed(c, frame_head(CONT, 41))
    assert failed_code(events) == CloseCode.MESSAGE_TOO_BIG


def test_too_big_after_inflation_fails_1009() -> None:
    bomb = ClientDeflater().compress(b"\x00" * 1_000_000)
    assert len(bomb) < 2000
    events = feed(conn(limit=10_000, deflate=Deflate()), client_frame(BINARY, bomb, rsv=RSV1))
    assert failed_code(events) == CloseCode.MESSAGE_TOO_BIG


def test_too_big_after_inflation_over_fragments_fails_1009() -> None:
    bomb = ClientDeflater().compress(b"A" * 50_000)
    c = conn(limit=20_000, deflate=Deflate())
    pieces = [bomb[i : i + 10] for i in range(0, len(bomb), 10)]
    data = client_frame(TEXT, pieces[0], fin=False, rsv=RSV1) + b"".join(
        client_frame(CONT, p, fin=i == len(pieces) - 1) for i, p in enumerate(pieces[1:], 1)
    )
    events = feed(c, data)
    assert failed_code(events) == CloseCode.MESSAGE_TOO_BIG


def test_compressed_message_inflating_to_exactly_the_limit_is_accepted() -> None:
    data = b"B" * 20_000
    payload = ClientDeflater().compress(data)
    events = feed(conn(limit=20_000, deflate=Deflate()), client_frame(BINARY, payload, rsv=RSV1))
    assert events == [Message(data)]
    payload = ClientDeflater().compress(data + b"B")
    events = feed(conn(limit=20_000, deflate=Deflate()), client_frame(BINARY, payload, rsv=RSV1))
    assert failed_code(events) == CloseCode.MESSAGE_TOO_BIG


def test_invalid_compressed_data_fails_1002() -> None:
    events = feed(conn(deflate=Deflate()), client_frame(BINARY, b"\xff\xff\xff\xff", rsv=RSV1))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR


# -- UTF-8 -----------------------------------------------------------------------

# Autobahn 6.4.x's text: "κόσμε", then U+110000's would-be encoding (f4 90
# 80 80: invalid at its second byte), then "edited".
KOSME = "κόσμε".encode()
BAD_AT_90 = KOSME + b"\xf4\x90\x80\x80" + b"edited"


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82", BAD_AT_90],
    ids=["ff", "overlong", "surrogate", "above-10ffff", "truncated", "autobahn-6.4"],
)
def test_invalid_utf8_text_in_one_frame_fails_1007(payload: bytes) -> None:
    events = feed(conn(), client_frame(TEXT, payload))
    assert failed_code(events) == CloseCode.INVALID_PAYLOAD
    assert events[-1].kind == FailureKind.INVALID_PAYLOAD


def test_invalid_utf8_binary_is_fine() -> None:
    assert feed(conn(), client_frame(BINARY, b"\xff\xfe")) == [Message(b"\xff\xfe")]


def test_invalid_utf8_fails_at_its_fragment_before_the_message_ends() -> None:
    c = conn()
    assert feed(c, client_frame(TEXT, KOSME, fin=False)) == []
    # The bad fragment is not the last: the failure must not wait for FIN.
    events = feed(c, client_frame(CONT, b"\xf4\x90", fin=False))
    assert failed_code(events) == CloseCode.INVALID_PAYLOAD
    assert feed(c, client_frame(PING, b"after") + client_frame(CONT, b"\x80\x80")) == []


def test_message_ending_inside_a_character_fails_1007() -> None:
    c = conn()
    data = client_frame(TEXT, KOSME[:3], fin=False) + client_frame(CONT, b"", fin=True)
    assert failed_code(feed(c, data)) == CloseCode.INVALID_PAYLOAD


def _fails_at(payload: bytes, bad_index: int) -> None:
    """Feed one unfragmented text frame byte by byte: the Failed event must
    come with the byte at ``bad_index`` of the payload, not before, not later."""
    data = client_frame(TEXT, payload)
    head = len(data) - len(payload)
    c = conn()
    for i in range(len(data)):
        c.receive_data(data[i : i + 1])
        events = c.events_received()
        if i < head + bad_index:
            assert events == [], f"failed early, at byte {i - head} of the payload"
        else:
            assert failed_code(events) == CloseCode.INVALID_PAYLOAD, (
                f"byte {i - head} of the payload ({payload[i - head : i - head + 1]!r}) "
                f"is invalid UTF-8, yet no failure: {events}"
            )
            return
    raise AssertionError("unreachable")


def test_invalid_utf8_within_one_frame_fed_byte_by_byte_fails_at_the_first_bad_byte() -> None:
    """Autobahn 6.4.3/6.4.4: one frame arriving in pieces fails at the
    first invalid byte (the 0x90 after 0xf4), before the frame ends."""
    _fails_at(BAD_AT_90, len(KOSME) + 1)


@pytest.mark.parametrize(
    ("payload", "bad_index"),
    [
        (b"ab\xff" + b"z" * 10, 2),  # never valid
        (b"ab\xc0\xaf" + b"z" * 10, 2),  # C0/C1 start only overlong forms
        (b"ab\xe0\x80\x80" + b"z" * 10, 3),  # overlong 3-byte form
        (b"ab\xf0\x80\x80\x80" + b"z" * 10, 3),  # overlong 4-byte form
        (b"ab\xe2\x82z" + b"z" * 10, 4),  # a sequence cut short
    ],
)
def test_more_invalid_utf8_fed_byte_by_byte_fails_at_the_first_bad_byte(
    payload: bytes, bad_index: int
) -> None:
    _fails_at(payload, bad_index)


def test_utf16_surrogate_fed_byte_by_byte_fails_at_the_first_bad_byte() -> None:
    """ED A0..BF can start no valid UTF-8 sequence (Unicode 15 table 3-7:
    after ED comes 80..9F; ED A0 80 would be the surrogate U+D800), so the
    A0 is the first invalid byte, and the failure belongs there."""
    _fails_at(b"ab\xed\xa0\x80" + b"z" * 10, 3)


def test_compressed_invalid_utf8_fails_1007() -> None:
    payload = ClientDeflater().compress(b"abc\xff")
    events = feed(conn(deflate=Deflate()), client_frame(TEXT, payload, rsv=RSV1))
    assert failed_code(events) == CloseCode.INVALID_PAYLOAD


# -- close frames -------------------------------------------------------------


def test_close_without_payload_is_1005() -> None:
    c = conn()
    assert feed(c, client_frame(CLOSE)) == [Close(CloseCode.NO_STATUS_RCVD, "")]
    assert c.close_received == Close(1005, "")
    assert c.state is State.CLOSING


def test_close_with_a_1_byte_payload_fails_1002() -> None:
    assert failed_code(feed(conn(), client_frame(CLOSE, b"\x03"))) == CloseCode.PROTOCOL_ERROR


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
VALID_CODES += [3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_with_a_valid_code_and_reason(code: int) -> None:
    c = conn()
    events = feed(c, client_frame(CLOSE, close_payload(code, "bye ✓".encode())))
    assert events == [Close(code, "bye ✓")]
    assert wire.is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_with_an_invalid_code_fails_1002(code: int) -> None:
    events = feed(conn(), client_frame(CLOSE, close_payload(code)))
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR
    assert not wire.is_valid_close_code(code)


def test_close_with_an_invalid_utf8_reason_fails_1007() -> None:
    events = feed(conn(), client_frame(CLOSE, close_payload(1000, b"\xce")))
    assert failed_code(events) == CloseCode.INVALID_PAYLOAD


def test_close_between_fragments_of_a_message_is_taken() -> None:
    """RFC 6455 5.4: control frames may come between fragments; the close
    ends the connection and the unfinished message is dropped."""
    data = client_frame(TEXT, b"half", fin=False) + client_frame(CLOSE, close_payload(1001))
    assert feed(conn(), data) == [Close(1001, "")]


# -- discarding ------------------------------------------------------------------


def test_input_after_a_failure_is_discarded() -> None:
    c = conn()
    events = feed(c, client_frame(TEXT, b"ok") + client_frame(7) + client_frame(TEXT, b"lost"))
    assert events[0] == Message("ok")
    assert failed_code(events) == CloseCode.PROTOCOL_ERROR
    assert c.failure == events[-1]
    # Everything later, valid or not, is discarded: no second Failed either.
    for data in (client_frame(TEXT, b"x"), client_frame(CLOSE), b"\x00\x00garbage", b"\xff" * 9):
        assert feed(c, data) == []
    c.receive_eof()
    assert c.events_received() == []


def test_input_after_the_close_frame_is_discarded() -> None:
    c = conn()
    data = client_frame(CLOSE, close_payload(1000)) + client_frame(TEXT, b"late")
    assert feed(c, data) == [Close(1000, "")]
    assert feed(c, client_frame(PING, b"x") + b"\xff\xff\xff") == []
    assert c.failure is None


def test_receive_eof_mid_frame_raises_nothing() -> None:
    c = conn()
    c.receive_data(client_frame(TEXT, b"hello")[:5])
    c.receive_eof()
    assert c.eof_received
    assert c.events_received() == []


# -- the closing handshake (send_close) --------------------------------------------


def test_send_close_first_then_the_clients_close() -> None:
    c = conn()
    frame = c.send_close(CloseCode.GOING_AWAY, "bye")
    assert parse_server_frames(frame) == [(True, 0, CLOSE, close_payload(1001, b"bye"))]
    assert c.state is State.CLOSING
    assert c.close_sent == 1001
    # Data may still arrive until the client's close frame (RFC 6455 1.4).
    assert feed(c, client_frame(TEXT, b"still")) == [Message("still")]
    assert feed(c, client_frame(CLOSE, close_payload(1001))) == [Close(1001, "")]
    assert c.state is State.CLOSED


def test_clients_close_first_then_send_close() -> None:
    c = conn()
    feed(c, client_frame(CLOSE, close_payload(1000, b"done")))
    assert c.state is State.CLOSING
    frame = c.send_close(1000)
    assert parse_server_frames(frame) == [(True, 0, CLOSE, close_payload(1000))]
    assert c.state is State.CLOSED


def test_send_close_after_a_failure_closes() -> None:
    c = conn()
    events = feed(c, client_frame(TEXT, b"\xff"))
    code = failed_code(events)
    assert c.state is State.OPEN  # failed, but our close frame is not built yet
    frame = c.send_close(code, events[-1].reason)
    [(fin, rsv, opcode, payload)] = parse_server_frames(frame)
    assert (fin, rsv, opcode, payload[:2]) == (True, 0, CLOSE, b"\x03\xef")
    assert c.state is State.CLOSED


def test_fail_from_outside_then_send_close() -> None:
    c = conn()
    c.fail(ErrorKind.PING_TIMEOUT, CloseCode.INTERNAL_ERROR, "no pong")
    assert feed(c, client_frame(TEXT, b"ignored")) == []
    c.send_close(CloseCode.INTERNAL_ERROR)
    assert c.state is State.CLOSED
    assert c.failure == Failed(ErrorKind.PING_TIMEOUT, CloseCode.INTERNAL_ERROR, "no pong")


@pytest.mark.parametrize("code", [None, CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE])
def test_send_close_without_a_status(code: int | None) -> None:
    c = conn()
    assert c.send_close(code) == b"\x88\x00"
    assert c.close_sent == CloseCode.NO_STATUS_RCVD
    assert c.state is State.CLOSING


def test_send_close_cuts_a_long_reason_at_a_character_boundary() -> None:
    c = conn()
    [(_, _, _, payload)] = parse_server_frames(c.send_close(1000, "é" * 100))
    assert len(payload) <= 125
    reason = payload[2:].decode("utf-8")  # still valid UTF-8
    assert reason == "é" * 61


# -- permessage-deflate: receiving ---------------------------------------------


def _compressed_fragments(deflater: ClientDeflater, data: bytes, opcode: int, cuts: int) -> list:
    payload = deflater.compress(data)
    step = max(1, len(payload) // cuts)
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(
            client_frame(
                opcode if i == 0 else CONT,
                piece,
                fin=i == len(pieces) - 1,
                rsv=RSV1 if i == 0 else 0,
            )
        )
    return frames


def test_compressed_message_with_a_ping_between_its_fragments() -> None:
    """The defect of issue 10: a control frame between the fragments of a
    compressed message must not reset its "compressed" state."""
    text = "compressible " * 50 + "κόσμε"
    deflater = ClientDeflater()
    frames = _compressed_fragments(deflater, text.encode(), TEXT, cuts=4)
    assert len(frames) >= 3
    data = (
        frames[0]
        + client_frame(PING, b"mid")
        + frames[1]
        + client_frame(PONG)
        + b"".join(frames[2:])
    )
    c = conn(deflate=Deflate())
    assert feed(c, data) == [Ping(b"mid"), Pong(b""), Message(text)]
    # The next message, sharing the client's context, still inflates.
    frames = _compressed_fragments(deflater, text.encode(), TEXT, cuts=2)
    data = frames[0] + client_frame(PING, b"again") + b"".join(frames[1:])
    assert feed(c, data) == [Ping(b"again"), Message(text)]


def test_client_context_takeover_and_plain_messages_mixed() -> None:
    deflater = ClientDeflater()
    c = conn(deflate=Deflate())
    for i in range(5):
        data = f"message {i} " * 20
        frame = client_frame(TEXT, deflater.compress(data.encode()), rsv=RSV1)
        assert feed(c, frame) == [Message(data)]
        # An uncompressed message between compressed ones (RFC 7692 6: RSV1 clear).
        assert feed(c, client_frame(BINARY, b"plain")) == [Message(b"plain")]


def test_client_no_context_takeover_each_message_alone() -> None:
    c = conn(deflate=Deflate(client_no_context_takeover=True))
    deflater = ClientDeflater(no_context_takeover=True)
    for _ in range(3):
        frame = client_frame(BINARY, deflater.compress(b"same bytes " * 30), rsv=RSV1)
        assert feed(c, frame) == [Message(b"same bytes " * 30)]


def test_empty_compressed_message() -> None:
    c = conn(deflate=Deflate())
    deflater = ClientDeflater()
    frames = [
        client_frame(TEXT, deflater.compress(b""), rsv=RSV1),
        client_frame(TEXT, b"", rsv=RSV1),
    ]
    assert feed(c, *frames) == [Message(""), Message("")]


def test_messages_flushed_with_bfinal_blocks_all_inflate() -> None:
    """RFC 7692 7.2.3.3 lets a sender end each message with a DEFLATE block
    with BFINAL set instead of an empty stored block; each such message is a
    whole DEFLATE stream, and every one of them must inflate, not just the first."""
    c = conn(deflate=Deflate(client_no_context_takeover=False))
    for word in (b"hello", b"world", b"again"):
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        payload = compressor.compress(word) + compressor.flush(zlib.Z_FINISH)
        assert feed(c, client_frame(BINARY, payload, rsv=RSV1)) == [Message(word)]


# -- sending -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4095, 4096, 65535, 65536, 70_000])
def test_sent_messages_parse_back(size: int) -> None:
    c = conn()
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    buffers = c.send_binary(data)
    assert parse_server_frames(b"".join(buffers)) == [(True, 0, BINARY, data)]
    text = ("é" * size)[: size // 2]
    assert parse_server_frames(b"".join(c.send_text(text))) == [
        (True, 0, TEXT, text.encode("utf-8"))
    ]


def test_sent_control_frames_parse_back() -> None:
    c = conn()
    assert parse_server_frames(c.send_ping(b"p" * 125)) == [(True, 0, PING, b"p" * 125)]
    assert parse_server_frames(c.send_pong(b"q")) == [(True, 0, PONG, b"q")]
    with pytest.raises(ValueError, match="125"):
        c.send_ping(b"p" * 126)


@pytest.mark.parametrize("size", [126, 130, 200, 300])
def test_send_pong_with_a_long_payload_builds_a_valid_frame(size: int) -> None:
    """send_pong keeps at most 125 bytes (a control frame's limit); the
    header's length must say what the frame really holds."""
    frame = conn().send_pong(b"q" * size)
    [(fin, rsv, opcode, payload)] = parse_server_frames(frame)
    assert (fin, rsv, opcode) == (True, 0, PONG)
    assert payload == b"q" * 125


@pytest.mark.parametrize("server_nct", [True, False])
def test_server_no_context_takeover_is_honoured_by_the_sender(server_nct: bool) -> None:
    c = conn(deflate=Deflate(server_no_context_takeover=server_nct))
    message = b"a fairly repetitive message, a fairly repetitive message " * 4
    payloads = []
    for _ in range(3):
        [(fin, rsv, opcode, payload)] = parse_server_frames(b"".join(c.send_binary(message)))
        assert (fin, rsv, opcode) == (True, RSV1, BINARY)
        payloads.append(payload)
    alone = []
    for payload in payloads:
        fresh = zlib.decompressobj(-15)
        try:
            alone.append(fresh.decompress(payload + TAIL))
        except zlib.error:
            alone.append(None)
    if server_nct:
        # Each message inflates with a fresh decompressor, as the client will.
        assert alone == [message] * 3
    else:
        # With context takeover the later messages refer back to the first:
        # which shows this test can tell the two apart.
        assert alone[0] == message
        assert alone[1] != message
        shared = zlib.decompressobj(-15)
        assert [shared.decompress(p + TAIL) for p in payloads] == [message] * 3


@pytest.mark.parametrize("bits", [9, 10, 12, 15])
def test_server_max_window_bits_is_honoured_by_the_sender(bits: int) -> None:
    c = conn(deflate=Deflate(server_max_window_bits=bits))
    inflater = zlib.decompressobj(-bits)
    for i in range(3):
        message = bytes(range(256)) * 40 + str(i).encode()
        [(_, rsv, _, payload)] = parse_server_frames(b"".join(c.send_binary(message)))
        assert rsv == RSV1
        assert inflater.decompress(payload + TAIL) == message


def test_sent_frames_parse_back_through_websockets_client() -> None:
    """The same bytes through websockets' client (an independent
    implementation of RFC 6455 and RFC 7692), after a real handshake."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.frames import Opcode

    offers = [None, ClientPerMessageDeflateFactory()]
    offers.append(ClientPerMessageDeflateFactory(server_no_context_takeover=True))
    for offer in offers:
        client, deflate = websockets_handshake([offer] if offer else None)
        assert (deflate is None) == (offer is None)
        c = conn(deflate=deflate)
        sent = [b"", b"x", "ü".encode() * 3000, bytes(70_000), b"x"]
        data = b"".join(b"".join(c.send_binary(m)) for m in sent)
        client.receive_data(data + c.send_ping(b"hi") + c.send_close(1000, "bye"))
        frames = client.events_received()
        assert client.parser_exc is None
        assert [f.opcode for f in frames] == [Opcode.BINARY] * 5 + [Opcode.PING, Opcode.CLOSE]
        assert [bytes(f.data) for f in frames[:5]] == sent
        assert frames[5].data == b"hi"
        assert frames[6].data == close_payload(1000, b"bye")


def test_accept_key_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert wire.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
