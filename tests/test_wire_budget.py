"""The wire core's per-call budget and its memory per fragment (issue 19,
points 1, 3 and 4): what one ``receive_data`` call may parse and inflate,
and what a fragmented message holds."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from server.wire import Connection, Deflate, Message, Ping
from tests.test_wire import BINARY, CONT, PING, TEXT, ClientDeflater, client_frame
from tests.test_wire_properties import PROFILE, client_stream, deflate_config, split_at

LIMIT = 1 << 20


def drain(conn: Connection, data: bytes) -> tuple[list, int]:
    """Feed ``data``, then go on while the budget stops parsing: (events, calls)."""
    conn.receive_data(data)
    events = list(conn.events_received())  # (the core's own list when empty)
    calls = 1
    while conn.budget_spent:
        conn.receive_data(b"")
        events += conn.events_received()
        calls += 1
    return events, calls


@PROFILE
@given(st.data())
def test_a_budget_changes_when_events_come_never_which(data: st.DataObject) -> None:
    """Any valid session, cut anywhere, with any budget: going on while the
    budget is spent gives exactly the events of an unbudgeted parse."""
    deflate = data.draw(deflate_config(), label="deflate")
    stream, expected = data.draw(client_stream(deflate), label="stream")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    conn = Connection(LIMIT, deflate)
    conn.max_frames_per_call = data.draw(st.integers(0, 4), label="frames")
    conn.max_bytes_per_call = data.draw(st.sampled_from([0, 1, 7, 100, 5000]), label="bytes")
    events = []
    for chunk in split_at(stream, cuts):
        got, _ = drain(conn, chunk)
        events += got
    assert events == expected
    assert conn.failure is None


def test_a_frame_budget_splits_a_burst_of_pings_into_calls() -> None:
    conn = Connection(LIMIT)
    conn.max_frames_per_call = 64
    events, calls = drain(conn, client_frame(PING) * 1000)
    assert events == [Ping(b"")] * 1000
    assert calls == 16  # 1000 / 64, rounded up


def test_a_byte_budget_splits_big_reads() -> None:
    conn = Connection(LIMIT)
    conn.max_bytes_per_call = 64 * 1024
    one = client_frame(BINARY, b"x" * 1000)
    events, calls = drain(conn, one * 256)
    assert events == [Message(b"x" * 1000)] * 256
    assert 4 <= calls <= 5


def test_inflation_per_call_stops_after_about_one_message_limit() -> None:
    """240 compressed messages of 1 MiB of zeros (about 1 KB each) in one
    read: each call inflates about one message limit, not all of them."""
    conn = Connection(LIMIT, Deflate())
    conn.max_frames_per_call = 10_000  # a budget, but not the one that stops it
    deflater = ClientDeflater()
    bomb = [deflater.compress(bytes(LIMIT)) for _ in range(240)]
    assert max(map(len, bomb)) < 2000
    conn.receive_data(b"".join(client_frame(BINARY, m, rsv=0x40) for m in bomb))
    first = conn.events_received()
    assert conn.budget_spent
    assert 1 <= len(first) <= 2, len(first)  # was all 240: 240 MiB at once
    events, _ = drain(conn, b"")
    assert len(first) + len(events) == 240
    assert all(e == Message(bytes(LIMIT)) for e in first + events)


def test_a_million_one_byte_fragments_hold_about_a_megabyte() -> None:
    """A binary and a text message of 50,000 one-byte continuation frames, never
    finished: the connection holds about a byte a fragment (each fragment
    was an object of ~55 bytes)."""
    for opcode, byte in ((BINARY, b"b"), (TEXT, b"t")):
        conn = Connection(2 * LIMIT)
        stream = (
            client_frame(opcode, byte, fin=False) + client_frame(CONT, byte, fin=False) * 50_000
        )
        tracemalloc.start()
        try:
            conn.receive_data(stream)
            del stream
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert conn.failure is None
        assert held < 50_000 * 3, held  # was ~11 MB (55 bytes a fragment)
        conn.receive_data(client_frame(CONT, byte))
        assert conn.events_received() == [
            Message((byte * 50_002).decode() if opcode == TEXT else byte * 50_002)
        ]


def test_fragmented_text_is_still_checked_as_it_arrives() -> None:
    conn = Connection(LIMIT)
    conn.receive_data(client_frame(TEXT, "é".encode()[:1], fin=False))
    assert conn.events_received() == []
    conn.receive_data(client_frame(CONT, b"\xff", fin=False))
    (failed,) = conn.events_received()
    assert failed.code == 1007
