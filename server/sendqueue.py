"""One connection's outgoing frames, as a pure class: frames in, merged
writes out to a sink, the backlog counted, and the decisions that
backpressure needs. No socket, no event loop, no clock: the transport
(:mod:`server.transport`) tells it when the event loop's buffer is full
(:meth:`SendQueue.pause`) and has room again (:meth:`SendQueue.resume`),
and starts or ends backpressure on its answers.

- While writing is not paused, a frame goes straight to the sink, or, while
  the events of one read are handled (:meth:`~SendQueue.begin_batch`), into
  a batch that goes out as one write (joined when small).
- While writing is paused, frames wait here: small ones (under
  ``MERGE_SIZE``) merged into one bytearray up to ``MERGE_LIMIT``, a large
  one kept as its parts; control frames jump ahead of the data frames that
  wait (never into one); and only the latest ping is answered (RFC 6455
  5.5.3), so a ping flood holds one pong.
- The backlog is the sink's buffer plus what waits here, each entry counted
  at ``ENTRY_COST`` bytes beyond its bytes (what a deque slot and an
  object cost): it bounds memory, not just payload.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "BATCH_ENTRIES",
    "ENTRY_COST",
    "JOIN_BELOW",
    "MERGE_LIMIT",
    "MERGE_SIZE",
    "SendQueue",
    "Sink",
]

#: Queued frames smaller than this share one bytearray, up to MERGE_LIMIT
#: bytes: a million 3-byte echoes are 3 MB, not a million objects.
MERGE_SIZE = 4096
MERGE_LIMIT = 64 * 1024
#: What one queue entry costs beyond its bytes, counted against the backlog.
ENTRY_COST = 64
#: Batches smaller than this are joined into one buffer before writing.
JOIN_BELOW = 64 * 1024
#: A batch is written out early (and the backlog checked) once it holds this
#: many entries, or large frames' payloads past ``high_water``: an app that
#: writes a lot inside one ``on_message`` meets backpressure and the
#: transport's cap, instead of gathering it all unseen until the read ends.
BATCH_ENTRIES = 256


class Sink(Protocol):
    """Where writes go: the event loop's transport (``asyncio.Transport``)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class _Discard:
    """The sink of a connection that is gone: writes vanish."""

    __slots__ = ()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


DISCARD: Sink = _Discard()


def _entry_size(entry: bytearray | list[bytes]) -> int:
    if isinstance(entry, bytearray):
        return len(entry) + ENTRY_COST
    return sum(map(len, entry)) + ENTRY_COST


class SendQueue:
    """Frames on their way to a :class:`Sink`, with backpressure decisions
    against ``high_water`` bytes of backlog."""

    __slots__ = (
        "_batch",
        "_batch_large",
        "_pong_due",
        "_queue",
        "high_water",
        "paused",
        "queued",
        "sink",
    )

    def __init__(self, sink: Sink, high_water: int) -> None:
        self.sink = sink
        self.high_water = high_water
        #: The sink's buffer is full: frames wait here.
        self.paused = False
        #: Bytes waiting here, each entry counted ENTRY_COST beyond its bytes.
        self.queued = 0
        # Made when first needed: an idle connection holds none.
        self._queue: collections.deque[bytearray | list[bytes]] | None = None
        # The pong for the latest ping, while paused.
        self._pong_due = b""
        # While the events of one read are handled, their frames gather here.
        self._batch: list[bytes] | None = None
        # Payload bytes of the batch's large (two-part) frames.
        self._batch_large = 0

    # -- frames in ------------------------------------------------------------

    def send(self, parts: list[bytes]) -> bool:
        """One data frame (its parts as the wire core built them). True when
        it leaves the backlog past ``high_water``: time for backpressure."""
        if self.paused:
            self._enqueue(parts)
        elif self._batch is not None:
            batch = self._batch
            batch.extend(parts)
            if len(parts) > 1:
                self._batch_large += len(parts[1])
                if self._batch_large > self.high_water:
                    return self.flush_batch()
            elif len(batch) >= BATCH_ENTRIES:
                return self.flush_batch()
            return False
        elif len(parts) == 1:
            self.sink.write(parts[0])
        else:
            self.sink.writelines(parts)
        return self.paused and self.backlog() > self.high_water

    def send_control(self, frame: bytes) -> None:
        """A control frame, ahead of the data frames still waiting."""
        if self.paused:
            queue = self._queue
            if queue is None:
                queue = self._queue = collections.deque()
            queue.appendleft([frame])
            self.queued += len(frame) + ENTRY_COST
        elif self._batch is not None:
            self._batch.append(frame)
        else:
            self.sink.write(frame)

    def send_pong(self, frame: bytes) -> None:
        """A pong; while paused, only the latest is kept, and sent first on
        :meth:`resume`."""
        if self.paused:
            self._pong_due = frame
        else:
            self.send_control(frame)

    def _enqueue(self, parts: list[bytes]) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        if len(parts) == 1 and len(parts[0]) < MERGE_SIZE:
            last = queue[-1] if queue else None
            if isinstance(last, bytearray) and len(last) < MERGE_LIMIT:
                last += parts[0]
                self.queued += len(parts[0])
                return
            queue.append(bytearray(parts[0]))
        else:
            queue.append(parts)
        self.queued += _entry_size(queue[-1])

    # -- batches --------------------------------------------------------------

    def begin_batch(self) -> None:
        """Gather the frames that follow (until :meth:`end_batch`) into one
        write (written early past ``BATCH_ENTRIES`` entries or ``high_water``
        bytes of large frames)."""
        self._batch = []
        self._batch_large = 0

    def flush_batch(self) -> bool:
        """Write what was gathered so far, in order, as one write, and go on
        gathering. True when the backlog is then past ``high_water``."""
        batch = self._batch
        self._batch_large = 0
        if not batch:
            return False
        self._batch = []
        self._write_batch(batch)
        return self.paused and self.backlog() > self.high_water

    def end_batch(self) -> bool:
        """Write the batch and stop gathering; as :meth:`flush_batch`."""
        batch, self._batch = self._batch, None
        self._batch_large = 0
        if not batch:
            return False
        if len(batch) == 1:  # the common case (one echo per read), inline
            self.sink.write(batch[0])
        else:
            self._write_batch(batch)
        return self.paused and self.backlog() > self.high_water

    def _write_batch(self, batch: list[bytes]) -> None:
        # Detached first: the sink may call pause() from inside the write.
        if len(batch) == 1:
            self.sink.write(batch[0])
        elif sum(map(len, batch)) < JOIN_BELOW:
            self.sink.write(b"".join(batch))  # one buffer, not many objects
        else:
            self.sink.writelines(batch)

    # -- the sink's buffer ----------------------------------------------------

    def pause(self) -> None:
        """The sink's buffer is full: keep frames here (a batch gathered so
        far waits first, as one entry, so nothing overtakes it)."""
        self.paused = True
        batch = self._batch
        if batch:
            queue = self._queue
            if queue is None:
                queue = self._queue = collections.deque()
            queue.append(list(batch))
            self.queued += _entry_size(queue[-1])
            batch.clear()
            self._batch_large = 0

    def resume(self) -> None:
        """The sink takes writes again: the due pong first, then the waiting
        frames, until it is full again (the sink may call :meth:`pause`
        from inside a write)."""
        self.paused = False
        sink = self.sink
        if self._pong_due:
            pong, self._pong_due = self._pong_due, b""
            sink.write(pong)
        queue = self._queue
        while queue and not self.paused:
            entry = queue.popleft()
            self.queued -= _entry_size(entry)
            if isinstance(entry, bytearray):
                sink.write(entry)
            else:
                sink.writelines(entry)

    def flush_all(self) -> None:
        """Hand everything gathered and waiting to the sink, paused or not
        (before a close frame: the event loop writes it all before closing)."""
        self.flush_batch()
        sink = self.sink
        if self._pong_due:
            pong, self._pong_due = self._pong_due, b""
            sink.write(pong)
        queue = self._queue
        while queue:
            entry = queue.popleft()
            if isinstance(entry, bytearray):
                sink.write(entry)
            else:
                sink.writelines(entry)
        self.queued = 0

    def clear(self) -> None:
        """Drop the frames that wait (a failed connection sends only its close frame)."""
        self._queue = None
        self.queued = 0

    def close(self) -> None:
        """The connection is gone: drop everything; later writes vanish."""
        self.clear()
        self._pong_due = b""
        self._batch = None
        self.paused = False
        self.sink = DISCARD

    # -- accounting and decisions ---------------------------------------------

    @property
    def entries(self) -> int:
        """How many entries wait (each costs ENTRY_COST in :attr:`queued`)."""
        return len(self._queue) if self._queue else 0

    @property
    def pong_due(self) -> bytes:
        """The pong held for the latest ping while paused (b"" if none)."""
        return self._pong_due

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel: the sink's buffer
        and what waits here."""
        return self.sink.get_write_buffer_size() + self.queued

    def over_high_water(self) -> bool:
        """Paused with the backlog past ``high_water``: start backpressure."""
        return self.paused and self.backlog() > self.high_water

    def below_low_water(self) -> bool:
        """The backlog is down to half of ``high_water``: end backpressure."""
        return self.backlog() <= self.high_water // 2
