"""Several server processes on one port, for pods with more than one CPU.

A Tornado process uses one core. With ``WS_WORKERS=N`` the process started
by the container becomes a small supervisor: it forks N workers, each a
whole server (its own event loop, connections, ``/readyz`` and ``/metrics``)
with its own listening socket bound with ``SO_REUSEPORT``, so the kernel
spreads new connections across them. The supervisor only passes signals on
and waits:

- SIGTERM/SIGINT go to every worker, and each drains as a single server does
  (readiness 503, 1001 to its clients, exit); a second signal makes them
  exit at once. The supervisor exits with the worst status of its workers.
- A worker that dies on its own is started again, unless it died within
  its first second (a bad port, say): then the others are stopped and the
  supervisor exits with that worker's status, rather than looping.

Every worker answers ``/metrics`` and ``/readyz`` for the whole pod, from
a shared memory region the supervisor maps before it forks
(:mod:`server.podstate`); a worker started again takes the part of the one
it replaces, so the pod's counters never go backwards, and the restart is
counted (``websocket_worker_restarts_total``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from .connections import STOP_SIGNALS
from .events import emit
from .kinds import ErrorKind
from .podstate import PodState, Worker, WorkerState
from .telemetry import record_error

__all__ = ["supervise"]

#: A worker that exits sooner than this after it was started is not restarted.
_MIN_UPTIME = 1.0
_PR_SET_PDEATHSIG = 1
#: Seconds between two looks for a worker that exited.
_REAP_INTERVAL = 0.1


def _status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code  # killed by signal n: 128 + n


def _drain_when_orphaned() -> None:
    """Ask Linux to send this worker SIGTERM if the supervisor dies (killed
    with SIGKILL, say), so a worker never outlives it unnoticed."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(count: int, run_worker: Callable[[Worker], int]) -> int:
    """Fork ``count`` workers that each call ``run_worker(worker)`` (its part
    of the pod's shared state) and exit with what it returns; supervise them
    until all have exited; return the status."""
    pod = PodState(count)
    try:
        return _supervise(pod, run_worker)
    finally:
        pod.close()


def _supervise(pod: PodState, run_worker: Callable[[Worker], int]) -> int:
    count = pod.workers
    workers: dict[int, tuple[float, int]] = {}  # pid -> (when it was started, index)
    stopping = False

    def start(index: int) -> None:
        # SIGTERM and SIGINT are blocked across the fork: the worker keeps
        # them blocked until its event loop handles them (server.app.serve
        # unblocks them), so one sent while it starts waits for its drain
        # instead of killing it, or running the supervisor's handler in it.
        # The supervisor takes them again once it knows the worker's pid.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        if stopping:  # a signal came since the caller looked: start no more
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid == 0:  # the worker
            status = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _drain_when_orphaned()
                status = run_worker(Worker(pod, index))
            except BaseException as exc:
                record_error(
                    None,
                    ErrorKind.WORKER_FAILED,
                    f"{type(exc).__name__}: {exc}",
                    level=logging.ERROR,
                    exc_info=sys.exc_info(),
                )
            finally:
                logging.shutdown()
                os._exit(status)
        workers[pid] = (time.monotonic(), index)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop_all(signum: int) -> None:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signum)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # First in shared memory: a worker forked just now, whose pid the
        # loop below has not recorded yet, reads it when it starts.
        pod.stop()
        emit("signal", signal=signal.Signals(signum).name, action="pass to workers")
        stop_all(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emit("workers", count=count, pid=os.getpid())
    for index in range(count):
        if stopping:  # a signal came while the first ones started
            pod.set_state(index, WorkerState.EXITED)
            continue
        start(index)

    status = 0
    failed: int | None = None  # a worker's status when one failed at start-up
    while workers:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            # Not a blocking os.wait(): a signal that lands just before the
            # call would run its handler only once a worker exits - never,
            # if the workers wait for that very signal. A sleep is cut short
            # by a signal (its handler runs at once), or ends soon anyway.
            time.sleep(_REAP_INTERVAL)
            continue
        found = workers.pop(pid, None)
        if found is None:
            continue
        started, index = found
        pod.set_state(index, WorkerState.EXITED)
        code = _status(wait_status)
        if stopping:
            status = max(status, code)
            continue
        uptime = time.monotonic() - started
        restart = uptime >= _MIN_UPTIME
        record_error(
            # its part of the pod's numbers: zeroed gauges, one restart more
            pod.restarted(index) if restart else None,
            ErrorKind.WORKER_EXITED,
            f"worker {pid} exited with status {code} after {uptime:.1f} s",
            level=logging.ERROR,
            pid=pid,
            code=code,
        )
        if restart:
            start(index)
        else:
            stopping = True
            failed = code or 1
            stop_all(signal.SIGTERM)
    if failed is not None:
        status = failed
    emit("exit", status=status)
    return status
