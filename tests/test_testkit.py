"""The helpers tests/ and bench/ share (testkit/), checked where they carry
logic: the frame builder against two independent parsers (the server's wire
core and the websockets library's), the /metrics reader on a missing sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from server.wire import Close, Connection, Message, Ping, Pong
from testkit.frames import close_payload, frame, frame_head
from testkit.metrics import MissingSample, key, parse, sample
from testkit.process import ServerProcess

LIMIT = 1 << 20

payloads = st.one_of(
    st.binary(max_size=300),
    st.integers(65530, 65540).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
)
masks = st.one_of(st.none(), st.binary(min_size=4, max_size=4))


def websockets_parse(data: bytes) -> tuple[Frame, bytes]:
    """One frame read by websockets' own parser (as a server: masked), and
    the bytes it left."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
        return parsed, bytes(reader.buffer)
    raise AssertionError("websockets wanted more bytes than one frame")


@given(
    st.sampled_from([Opcode.BINARY, Opcode.PING, Opcode.PONG]),
    payloads,
    masks,
    st.booleans(),
    st.sampled_from([None, 126, 127]),
)
def test_frames_read_back_by_websockets(
    opcode: Opcode, payload: bytes, mask: bytes | None, fin: bool, length_form: int | None
) -> None:
    """Every field of a built frame is what websockets reads: opcode, FIN,
    the unmasked payload, with any length encoding, and nothing left over."""
    if opcode != Opcode.BINARY:
        payload, fin = payload[:125], True  # control frames: short and final
    if length_form is not None and len(payload) >= 1 << 16:
        length_form = 127
    data = frame(opcode, payload, fin=fin, mask=mask, length_form=length_form)
    parsed, rest = websockets_parse(data)
    assert (parsed.opcode, parsed.fin, parsed.data, rest) == (opcode, fin, payload, b"")
    if mask is not None:
        head = frame_head(opcode, len(payload), fin=fin, mask=mask, length_form=length_form)
        assert data.startswith(head)
        assert data[len(head) - 4 : len(head)] == mask


@given(st.sampled_from([0x2, 0x9, 0xA]), payloads, masks)
def test_frames_read_back_by_the_wire_core(opcode: int, payload: bytes, mask: bytes | None) -> None:
    """The server's parser sees the message, ping or pong that was built."""
    if opcode != 0x2:
        payload = payload[:125]
    connection = Connection(LIMIT, None)
    connection.receive_data(frame(opcode, payload, mask=mask) + frame(0x8, close_payload(1000)))
    events = connection.events_received()
    expected = {0x2: Message(payload), 0x9: Ping(payload), 0xA: Pong(payload)}[opcode]
    assert events[0] == expected
    assert isinstance(events[1], Close)
    assert events[1].code == 1000


def test_unmasked_frames_and_a_lying_length_are_as_asked() -> None:
    assert frame(0x1, b"hi", masked=False) == b"\x81\x02hi"
    assert frame(0x1, b"hi", masked=False, fin=False, rsv=0x40) == b"\x41\x02hi"
    assert frame(0x2, b"", masked=False, length=1 << 63) == b"\x82\x7f" + (1 << 63).to_bytes(
        8, "big"
    )
    assert frame(0x9, b"ab", mask=b"\x01\x02\x03\x04") == b"\x89\x82\x01\x02\x03\x04\x60\x60"


PAGE = """\
# HELP websocket_open_connections Open WebSocket connections.
# TYPE websocket_open_connections gauge
websocket_open_connections 0.0
# HELP websocket_errors_total Errors by kind.
# TYPE websocket_errors_total counter
websocket_errors_total{kind="protocol_error"} 3.0
websocket_errors_created{kind="protocol_error"} 1.7e9
"""


def test_a_sample_is_found_by_name_and_exact_labels() -> None:
    assert sample(PAGE, "websocket_open_connections") == 0
    assert sample(parse(PAGE), "websocket_errors_total", kind="protocol_error") == 3
    assert key("websocket_errors_created", kind="protocol_error") not in parse(PAGE, created=False)


def test_a_missing_sample_is_an_error_not_zero() -> None:
    """A typo or an unexported series must not pass an ``== 0`` check."""
    with pytest.raises(MissingSample, match="of that name"):
        sample(PAGE, "websocket_errors_total", kind="invalid_payload")
    with pytest.raises(MissingSample):
        sample(PAGE, "websocket_open_connection")
    with pytest.raises(MissingSample):  # labels must match exactly
        sample(PAGE, "websocket_errors_total")
    assert sample(PAGE, "websocket_errors_total", kind="invalid_payload", missing=0) == 0


def test_a_server_process_ignores_the_callers_ws_settings(
    server_process: type[ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``WS_*`` variable in the developer's shell does not reach the
    server (text logs here would leave every JSON event unread); ``env``
    does."""
    monkeypatch.setenv("WS_LOG_FORMAT", "text")
    server = server_process(env={"WS_MAX_CONNECTIONS": "7"})
    server.wait_ready()
    assert server.wait_event("listening")["max_connections"] == 7
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_a_server_process_can_log_to_a_file(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    server = server_process(log=tmp_path / "server.log")
    server.wait_ready()
    [listening] = server.events("listening")
    assert listening["address"] == f"127.0.0.1:{server.port}"
    assert server.lines == []
