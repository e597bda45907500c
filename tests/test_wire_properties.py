"""Property-based tests of the sans-I/O core (:mod:`server.wire`), with Hypothesis.

1. Any sequence of messages (text and binary, empty to 70 KB, compressed or
   not, with and without context takeover on either side), encoded as masked
   client frames, cut into arbitrary fragments with pings and pongs between
   the fragments, and fed as a byte stream cut at arbitrary boundaries, comes
   back as exactly those messages, pings and pongs, in order.
2. What the server sends parses and inflates back to what it was asked to send.
3. Arbitrary bytes, and arbitrary frames with random header bits, never
   raise: the connection yields events, and at most one ``Failed`` (last,
   with 1002, 1007 or 1009); nothing follows a ``Failed`` or a ``Close``.

The profile keeps the file well under a minute: 200 examples a property,
no deadline (a 70 KB message is slow to generate on a busy machine), and no
example database written into the checkout.
"""

from __future__ import annotations

import itertools
import random
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.mask import apply_mask
from server.wire import Close, CloseCode, Connection, Deflate, Failed, Message, Ping, Pong
from tests.test_wire import (
    BINARY,
    CONT,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TAIL,
    TEXT,
    ClientDeflater,
    client_frame,
    frame_head,
    parse_server_frames,
)

PROFILE = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 1 << 20


# -- strategies --------------------------------------------------------------


@st.composite
def payload_bytes(draw: st.DrawFn) -> bytes:
    """Mostly small, sometimes empty, now and then up to 70 KB (random or
    repetitive, so compression both shrinks and grows)."""
    kind = draw(st.sampled_from(["small", "small", "small", "empty", "large"]))
    if kind == "empty":
        return b""
    if kind == "small":
        return draw(st.binary(max_size=300))
    size = draw(st.integers(126, 70_000))
    seed = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        return random.Random(seed).randbytes(size)
    unit = random.Random(seed).randbytes(draw(st.integers(1, 64)))
    return (unit * (size // len(unit) + 1))[:size]


@st.composite
def text_payload(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        size = draw(st.integers(126, 20_000))
        alphabet = draw(st.text(min_size=1, max_size=8))
        return (alphabet * (size // len(alphabet) + 1))[:size]
    return draw(st.text(max_size=200))


control_frame = st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=125))
masks = st.binary(min_size=4, max_size=4)


@st.composite
def deflate_config(draw: st.DrawFn) -> Deflate | None:
    if not draw(st.booleans()):
        return None
    return Deflate(
        server_no_context_takeover=draw(st.booleans()),
        client_no_context_takeover=draw(st.booleans()),
        server_max_window_bits=draw(st.sampled_from([9, 10, 12, 15])),
    )


@st.composite
def client_stream(
    draw: st.DrawFn, deflate: Deflate | None, window_bits: int | None = None
) -> tuple[bytes, list]:
    """(the bytes a client sends, the events they must give), for a
    session of messages with control frames between fragments; a
    compressing client uses ``window_bits`` (drawn when None)."""
    deflater = None
    if deflate is not None:
        # A client that may reset its context although not asked to (that is
        # always allowed); one asked to must (RFC 7692 7.1.1.2).
        reset = deflate.client_no_context_takeover or draw(st.booleans())
        if window_bits is None:
            window_bits = draw(st.integers(9, 15))
        deflater = ClientDeflater(no_context_takeover=reset, window_bits=window_bits)
    data = []
    expected: list = []
    for _ in range(draw(st.integers(0, 6))):
        for opcode, payload in draw(st.lists(control_frame, max_size=2)):
            data.append(client_frame(opcode, payload, mask=draw(masks)))
            expected.append(Ping(payload) if opcode == PING else Pong(payload))
        if draw(st.booleans()):
            text = draw(text_payload())
            opcode, raw, message = TEXT, text.encode("utf-8"), text
        else:
            raw = draw(payload_bytes())
            opcode, message = BINARY, raw
        compressed = deflater is not None and draw(st.booleans())
        if compressed:
            raw = deflater.compress(raw)
        # Cut the payload into fragments (empty ones allowed), anywhere:
        # inside UTF-8 characters and inside the compressed stream.
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=5)))
        bounds = [0, *cuts, len(raw)]
        pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
        for i, piece in enumerate(pieces):
            first, last = i == 0, i == len(pieces) - 1
            data.append(
                client_frame(
                    opcode if first else CONT,
                    piece,
                    fin=last,
                    rsv=RSV1 if compressed and first else 0,
                    mask=draw(masks),
                )
            )
            if not last:
                for ctl_opcode, ctl_payload in draw(st.lists(control_frame, max_size=2)):
                    data.append(client_frame(ctl_opcode, ctl_payload, mask=draw(masks)))
                    expected.append(Ping(ctl_payload) if ctl_opcode == PING else Pong(ctl_payload))
        expected.append(Message(message))
    return b"".join(data), expected


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(conn: Connection, chunks: list[bytes]) -> list:
    events = []
    for chunk in chunks:
        conn.receive_data(chunk)  # must never raise
        events += conn.events_received()
    return events


# -- 1. valid streams come back exactly ---------------------------------------------


@PROFILE
@given(st.data())
def test_any_message_sequence_cut_anywhere_comes_back_in_order(data: st.DataObject) -> None:
    deflate = data.draw(deflate_config(), label="deflate")
    stream, expected = data.draw(client_stream(deflate), label="stream")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    if data.draw(st.integers(0, 19)) == 0 and len(stream) < 3000:
        cuts = list(range(len(stream)))  # now and then: byte by byte
    conn = Connection(LIMIT, deflate)
    events = feed_all(conn, split_at(stream, cuts))
    assert events == expected
    assert conn.failure is None


# -- 2. what the server sends comes back --------------------------------------------


@PROFILE
@given(
    deflate=deflate_config(),
    messages=st.lists(st.one_of(payload_bytes(), text_payload()), max_size=5),
)
def test_sent_messages_parse_and_inflate_back(deflate: Deflate | None, messages: list) -> None:
    conn = Connection(LIMIT, deflate)
    out = b""
    for message in messages:
        buffers = conn.send_text(message) if isinstance(message, str) else conn.send_binary(message)
        out += b"".join(buffers)
    frames = parse_server_frames(out)
    assert len(frames) == len(messages)
    inflater = None
    for (fin, rsv, opcode, payload), message in zip(frames, messages, strict=True):
        assert fin
        assert opcode == (TEXT if isinstance(message, str) else BINARY)
        if deflate is None:
            assert rsv == 0
        else:
            assert rsv == RSV1
            if inflater is None or deflate.server_no_context_takeover:
                # A client that trusts server_no_context_takeover starts afresh.
                inflater = zlib.decompressobj(-deflate.server_max_window_bits)
            payload = inflater.decompress(payload + TAIL)
        expect = message.encode("utf-8") if isinstance(message, str) else message
        assert payload == expect


# -- 3. arbitrary input never raises ------------------------------------------------


def check_failure_shape(conn: Connection, events: list) -> None:
    """At most one Failed, with a code the parser may use; nothing after a
    Failed or a Close; the connection's state agrees."""
    for i, event in enumerate(events):
        assert isinstance(event, Message | Ping | Pong | Close | Failed), event
        if isinstance(event, Failed | Close):
            assert i == len(events) - 1, f"events after {event}: {events[i + 1 :]}"
        if isinstance(event, Failed):
            assert event.code in {
                CloseCode.PROTOCOL_ERROR,
                CloseCode.INVALID_PAYLOAD,
                CloseCode.MESSAGE_TOO_BIG,
            }
            assert conn.failure == event
        if isinstance(event, Message) and conn.max_message_size is not None:
            size = len(event.data.encode() if isinstance(event.data, str) else event.data)
            assert size <= conn.max_message_size


@PROFILE
@given(
    deflate=deflate_config(),
    limit=st.sampled_from([0, 16, 200, LIMIT]),
    chunks=st.lists(st.binary(max_size=300), max_size=8),
)
def test_arbitrary_bytes_never_raise(deflate: Deflate | None, limit: int, chunks: list) -> None:
    conn = Connection(limit, deflate)
    events = feed_all(conn, chunks)
    conn.receive_eof()
    events += conn.events_received()
    check_failure_shape(conn, events)


@st.composite
def random_frame(draw: st.DrawFn) -> bytes:
    """A frame with random FIN, RSV bits, opcode, mask bit and length form;
    its payload is random, or compressed data, or text, and it is whole or
    (at the end of a stream) cut short."""
    opcode = draw(st.integers(0, 15))
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, RSV1, RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3]))
    kind = draw(st.sampled_from(["binary", "text", "compressed", "close"]))
    if kind == "binary":
        payload = draw(st.binary(max_size=200))
    elif kind == "text":
        payload = draw(st.text(max_size=60)).encode("utf-8")
        if draw(st.booleans()):  # break it somewhere
            at = draw(st.integers(0, len(payload)))
            payload = (
                payload[:at] + draw(st.sampled_from([b"\xff", b"\xc0", b"\xed\xa0"])) + payload[at:]
            )
    elif kind == "compressed":
        payload = ClientDeflater().compress(draw(payload_bytes()))
    else:
        payload = draw(st.integers(0, 5000)).to_bytes(2, "big") + draw(st.binary(max_size=8))
    masked = draw(st.integers(0, 9)) > 0
    mask = draw(masks)
    form = draw(st.sampled_from([None, None, None, 126, 127]))
    if form == 126 and len(payload) >= 65536:
        form = None
    head = frame_head(
        opcode, len(payload), fin=fin, rsv=rsv, masked=masked, mask=mask, length_form=form
    )
    if masked:
        payload = apply_mask(mask, payload)
    return head + payload


@PROFILE
@given(
    deflate=deflate_config(),
    limit=st.sampled_from([50, 5000, LIMIT]),
    frames=st.lists(random_frame(), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 100_000), max_size=6),
    truncate=st.integers(0, 40),
)
def test_arbitrary_frames_never_raise(
    deflate: Deflate | None, limit: int, frames: list, cuts: list, truncate: int
) -> None:
    stream = b"".join(frames)
    stream = stream[: max(0, len(stream) - truncate)]
    conn = Connection(limit, deflate)
    events = feed_all(conn, split_at(stream, [c % (len(stream) + 1) for c in cuts]))
    check_failure_shape(conn, events)
    # Whatever happened, the same bytes in one piece give the same events.
    again = Connection(limit, deflate)
    assert feed_all(again, [stream]) == events
