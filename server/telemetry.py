"""Telemetry: the one way an error is recorded, counted and logged.

Event lines are written by :mod:`server.events`, metrics kept by
:mod:`server.metrics`; :func:`record_error` does both for every error path
(handshake refusals, the 431 answer, failed and dropped connections,
workers), so no error is logged without being counted or the reverse.
"""

from __future__ import annotations

import logging
from typing import Any

from .events import emit
from .kinds import ErrorKind
from .metrics import Metrics

__all__ = ["record_error"]


def record_error(
    metrics: Metrics | None,
    kind: ErrorKind,
    detail: str,
    *,
    level: int = logging.WARNING,
    exc_info: Any = None,
    refused: bool = False,
    log: bool = True,
    **fields: Any,
) -> None:
    """Count an error of ``kind`` (and a refused handshake, with ``refused``)
    and log it as one ``error`` event with ``fields`` (unless ``log`` is
    false: a caller that logs a repeated error once per interval)."""
    if metrics is not None:
        metrics.errors.labels(kind.value).inc()
        if refused:
            metrics.handshakes_rejected.labels(kind.value).inc()
    if not log:
        return
    emit("error", level, exc_info=exc_info, kind=kind.value, detail=detail, **fields)
