"""One pod's numbers and readiness across ``WS_WORKERS`` processes.

With several workers the kernel picks which one answers a scrape or a
probe, so each must answer for the pod. Before it forks, the supervisor
maps one anonymous shared memory region (``mmap(-1, MAP_SHARED)``: no file,
nothing to clean up, gone with the last process) of float64 numbers:

- a header: when the pod's numbers started (the ``_created`` series),
  whether the supervisor is stopping the pod, and each worker's
  :class:`WorkerState`;
- one part per worker: its :class:`~server.metrics.Metrics`, built over
  those slots (:class:`~server.metrics.Slots`) in the same order in every
  process.

A worker writes only its own part, with plain stores on its event loop: no
lock, no system call, no file per process. ``/metrics`` in any worker adds
up every part, slot by slot. When a worker dies, the supervisor keeps its
part (the counters and histograms go on from there in the worker started
in its place: nothing vanishes or goes backwards), sets its gauge (open
connections) to 0 as its connections are gone, counts the restart and the
``worker_exited`` error in it. The size is fixed: N parts of
:func:`~server.metrics.slot_count` slots, and no series is added at run
time.

An aligned 8-byte store is atomic on the CPUs we run on (x86-64, arm64),
so a reader never sees half a number; a scrape that races with a
connection's close may see its counters one step apart, as with any
single-process scrape.
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import time
from array import array

from .metrics import Gauge, Metrics, Slots, slot_count

__all__ = ["PodState", "Worker", "WorkerState"]


class WorkerState(enum.IntEnum):
    """What a worker is doing, as the header keeps it."""

    STARTING = 0
    READY = 1
    DRAINING = 2
    EXITED = 3


class PodState:
    """The shared region, made by the supervisor before it forks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.slots = slot_count()
        self._header = 2 + workers  # created, stopping, the states
        size = 8 * (self._header + workers * self.slots)
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self._view = memoryview(self._map).cast("d")
        self._view[0] = time.time()

    @property
    def created(self) -> float:
        return float(self._view[0])

    def part(self, index: int) -> memoryview[float]:
        """Worker ``index``'s slots."""
        at = self._header + index * self.slots
        return self._view[at : at + self.slots]

    def metrics(self, index: int) -> Metrics:
        """Worker ``index``'s metrics (as they stand: nothing is reset)."""
        return Metrics(Slots(self.part(index), self.created))

    def state(self, index: int) -> WorkerState:
        return WorkerState(int(self._view[2 + index]))

    def set_state(self, index: int, state: WorkerState) -> None:
        self._view[2 + index] = float(state)

    def states(self) -> list[WorkerState]:
        return [WorkerState(int(v)) for v in self._view[2 : self._header].tolist()]

    @property
    def stopping(self) -> bool:
        """The supervisor got SIGTERM or SIGINT (set before it passes them on)."""
        return bool(self._view[1])

    def stop(self) -> None:
        self._view[1] = 1.0

    def restarted(self, index: int) -> Metrics:
        """Before worker ``index`` starts again: its gauges to 0, one restart
        counted; returns its metrics (for the supervisor's error count)."""
        metrics = self.metrics(index)
        for series in metrics.series:
            if isinstance(series, Gauge):
                series.value = 0.0
        assert metrics.worker_restarts is not None
        metrics.worker_restarts.inc()
        self.set_state(index, WorkerState.STARTING)
        return metrics

    def close(self) -> None:
        """Unmap the region, unless views of it are still alive (then it
        goes with them, or with the process: there is no file to remove)."""
        with contextlib.suppress(BufferError):
            self._view.release()
            self._map.close()


class Worker:
    """One worker's view of the pod: its own metrics, and the pod's totals."""

    def __init__(self, pod: PodState, index: int) -> None:
        self.pod = pod
        self.index = index
        #: This worker's numbers, bumped by its handlers.
        self.metrics = pod.metrics(index)
        self._sums: memoryview[float] = memoryview(bytearray(8 * pod.slots)).cast("d")
        #: The pod's totals, refreshed by :meth:`totals`.
        self._totals = Metrics(Slots(self._sums, pod.created))
        #: Every worker's numbers, read where a sum is wrong.
        self._each = [pod.metrics(i) for i in range(pod.workers)]

    def totals(self) -> Metrics:
        """Every worker's numbers added up, slot by slot, now."""
        pod = self.pod
        parts = [pod.part(i).tolist() for i in range(pod.workers)]
        self._sums[:] = array("d", [sum(column) for column in zip(*parts, strict=True)])
        # A timestamp is not a count: the pod's drain started when its first
        # worker's did (the workers drain together; a sum would be twice it).
        started = [metrics.drain_started.value for metrics in self._each]
        self._totals.drain_started.value = min((t for t in started if t), default=0.0)
        return self._totals

    def ready(self) -> None:
        """This worker listens and serves."""
        self.pod.set_state(self.index, WorkerState.READY)

    def draining(self) -> None:
        """This worker's drain has started."""
        self.pod.set_state(self.index, WorkerState.DRAINING)

    def stopping(self) -> bool:
        """The pod is being stopped: a worker that starts then drains at
        once, even if the supervisor's signal missed it (it came while the
        worker was being forked, before the supervisor knew its pid)."""
        return self.pod.stopping

    def states(self) -> list[WorkerState]:
        return self.pod.states()
