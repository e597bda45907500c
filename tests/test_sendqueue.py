"""server.sendqueue.SendQueue, alone: frames in, writes out to a recording
sink (the class's own output interface, not a stand-in for a socket), the
backlog counted exactly, and backpressure decided.

The property: any sequence of sends, control frames, pongs, batches,
pauses and resumes keeps the data frames in order and whole, every control
frame whole and never inside a data frame, answers only the latest ping
while paused, and counts the backlog as the bytes waiting plus ENTRY_COST
per entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from server.sendqueue import ENTRY_COST, JOIN_BELOW, MERGE_SIZE, SendQueue


class RecordingSink:
    """Collects writes; ``full_after`` pauses the queue once that many
    bytes went out since the last resume (what the event loop's transport
    does by calling ``pause_writing`` from inside a write)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.queue: SendQueue | None = None
        self.full_after: int | None = None
        self._since_resume = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self._took(len(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        data = b"".join(bytes(d) for d in list_of_data)
        self.writes.append(data)
        self._took(len(data))

    def _took(self, n: int) -> None:
        self._since_resume += n
        if self.full_after is not None and self._since_resume >= self.full_after:
            assert self.queue is not None
            self.queue.pause()

    def resumed(self) -> None:
        self._since_resume = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


def make(high_water: int = 1000) -> tuple[SendQueue, RecordingSink]:
    sink = RecordingSink()
    queue = SendQueue(sink, high_water)
    sink.queue = queue
    return queue, sink


# -- unit cases ----------------------------------------------------------------


def test_unpaused_frames_go_straight_out() -> None:
    q, sink = make()
    assert q.send([b"a"]) is False
    q.send([b"h", b"payload"])
    q.send_control(b"P")
    assert sink.writes == [b"a", b"hpayload", b"P"]
    assert q.queued == 0


def test_a_batch_is_one_write_and_a_large_batch_is_not_joined() -> None:
    q, sink = make()
    q.begin_batch()
    for piece in (b"a", b"b", b"c"):
        q.send([piece])
    q.send_control(b"P")
    assert sink.writes == []
    q.end_batch()
    assert sink.writes == [b"abcP"]
    big = b"x" * JOIN_BELOW
    q.begin_batch()
    q.send([b"h", big])
    q.end_batch()
    assert sink.writes[-1] == b"h" + big


def test_paused_small_frames_share_one_entry() -> None:
    q, sink = make(high_water=10**9)
    q.pause()
    for _ in range(1000):
        q.send([b"abc"])
    assert sink.writes == []
    assert q.entries == 1
    assert q.queued == 3000 + ENTRY_COST
    q.resume()
    assert sink.output == b"abc" * 1000
    assert q.queued == 0


def test_control_frames_jump_ahead_of_waiting_data() -> None:
    q, sink = make(high_water=10**9)
    q.pause()
    q.send([b"d1"])
    q.send([b"H", b"x" * MERGE_SIZE])
    q.send_control(b"C")
    assert q.queued == 2 + (1 + MERGE_SIZE) + 1 + 3 * ENTRY_COST
    q.resume()
    assert sink.output == b"C" + b"d1" + b"H" + b"x" * MERGE_SIZE


def test_only_the_latest_ping_is_answered_while_paused() -> None:
    q, sink = make()
    q.pause()
    for n in range(100_000):
        q.send_pong(b"pong%d" % n)
    assert q.queued == 0
    assert q.pong_due == b"pong99999"
    q.resume()
    assert sink.writes == [b"pong99999"]


def test_backpressure_decisions() -> None:
    q, sink = make(high_water=100)
    assert q.send([b"x" * 500]) is False  # not paused: the sink took it
    q.pause()
    assert q.send([b"x" * 10]) is False  # 10 + 64 <= 100
    assert q.send([b"x" * 30]) is True  # merged: 40 + 64 > 100
    assert q.over_high_water()
    assert not q.below_low_water()
    sink.resumed()
    q.resume()
    assert q.below_low_water()
    sink.buffered = 60
    assert not q.below_low_water()  # the sink's buffer counts too


def test_resume_stops_when_the_sink_is_full_again() -> None:
    q, sink = make(high_water=10**9)
    q.pause()
    for n in range(3):
        q.send([b"H%d" % n, b"x" * MERGE_SIZE])
    sink.full_after = 1
    sink.resumed()
    q.resume()
    assert len(sink.writes) == 1
    assert q.paused
    assert q.entries == 2
    assert q.queued == 2 * (2 + MERGE_SIZE + ENTRY_COST)


def test_flush_all_writes_everything_and_close_discards() -> None:
    q, sink = make()
    q.pause()
    q.send([b"a"])
    q.send_pong(b"P")
    q.flush_all()
    assert sink.output == b"Pa"
    assert q.queued == 0
    q.close()
    q.send([b"gone"])
    q.send_control(b"gone")
    assert sink.output == b"Pa"
    assert q.backlog() == 0


# -- the property ----------------------------------------------------------------

DATA = re.compile(rb"D(\d{6}):x*\.")
CONTROL = re.compile(rb"C(\d{6})\.")
PONG = re.compile(rb"P(\d{6})\.")
TOKEN = re.compile(rb"D\d{6}:x*\.|C\d{6}\.|P\d{6}\.")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 3 * MERGE_SIZE)),
        st.tuples(st.just("control"), st.just(0)),
        st.tuples(st.just("pong"), st.just(0)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.integers(1, 20_000)),
        st.tuples(st.just("batch"), st.just(0)),
        st.tuples(st.just("end_batch"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_any_sequence_keeps_order_and_counts_the_backlog_exactly(
    ops: list[tuple[str, int]],
) -> None:
    q, sink = make(high_water=50_000)
    data_sent: list[int] = []
    controls_sent: list[int] = []
    pongs_sent: list[int] = []
    accepted = 0  # bytes the queue took (a pong held while paused once written)
    batching = False
    for counter, (op, arg) in enumerate(ops, 1):
        due = q.pong_due
        if op == "send":
            header = b"D%06d:" % counter
            body = b"x" * arg + b"."
            parts = [header + body] if arg < MERGE_SIZE else [header, body]
            q.send(parts)
            data_sent.append(counter)
            accepted += len(header) + len(body)
        elif op == "control":
            q.send_control(b"C%06d." % counter)
            controls_sent.append(counter)
            accepted += 8
        elif op == "pong":
            if not q.paused:
                accepted += 8
            q.send_pong(b"P%06d." % counter)
            pongs_sent.append(counter)
        elif op == "pause":
            q.pause()
        elif op == "resume":
            sink.full_after = arg
            sink.resumed()
            q.resume()
        elif op == "batch" and not batching:
            q.begin_batch()
            batching = True
        elif op == "end_batch" and batching:
            q.end_batch()
            batching = False
        if due and not q.pong_due and op != "pong":
            accepted += len(due)  # the held pong went out
        # The backlog, exactly: what the queue took and has not written,
        # plus ENTRY_COST per entry (the held pong and the batch not counted).
        waiting = accepted - len(sink.output) - _batched(q)
        assert q.queued == waiting + ENTRY_COST * q.entries
    q.flush_all()
    out = sink.output
    # Every byte belongs to a whole frame; no frame is cut or interleaved.
    assert b"".join(TOKEN.findall(out)) == out
    assert [int(n) for n in DATA.findall(out)] == data_sent
    assert sorted(int(n) for n in CONTROL.findall(out)) == controls_sent
    pongs = [int(n) for n in PONG.findall(out)]
    assert len(set(pongs)) == len(pongs)
    assert set(pongs) <= set(pongs_sent)
    if pongs_sent:
        assert pongs_sent[-1] in pongs  # the latest ping is always answered
    assert q.queued == 0


def _batched(q: SendQueue) -> int:
    batch = q._batch  # the frames gathered for one write, not yet written
    return sum(map(len, batch)) if batch else 0
