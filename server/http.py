"""The plain HTTP endpoints: ``/healthz``, ``/readyz``, ``/metrics`` and ``/``."""

from __future__ import annotations

import json
import pkgutil
import threading
from typing import TYPE_CHECKING, Any

import tornado.web

from .connections import Registry
from .metrics import Metrics

if TYPE_CHECKING:  # imported with workers only (server.workers): one server skips mmap
    from .podstate import Worker

__all__ = [
    "ConsoleHandler",
    "HealthHandler",
    "MetricsHandler",
    "ReadyHandler",
    "warm_up_metrics",
]


class _JsonHandler(tornado.web.RequestHandler):
    def write_json(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc) + "\n")


class HealthHandler(_JsonHandler):
    """Liveness: the event loop answers."""

    def get(self) -> None:
        self.write_json(200, {"status": "ok"})

    head = get


class ReadyHandler(_JsonHandler):
    """Readiness: 503 from the moment a drain starts, so no new traffic comes.

    With workers (``worker`` given), for the whole pod: 503 ``draining``
    while any worker drains or has exited, 503 ``starting`` while any is
    starting (or being started again), else 200; ``connections`` is the
    pod's open connections, ``workers`` each worker's state."""

    def initialize(self, registry: Registry, worker: Worker | None = None) -> None:
        self.registry = registry
        self.worker = worker

    def get(self) -> None:
        if self.worker is not None:
            self._pod(self.worker)
            return
        open_now = len(self.registry)
        if self.registry.draining:
            self.write_json(503, {"status": "draining", "connections": open_now})
        else:
            self.write_json(200, {"status": "ready", "connections": open_now})

    def _pod(self, worker: Worker) -> None:
        from .podstate import WorkerState

        states = worker.states()
        open_now = round(worker.totals().open_connections.value)
        if self.registry.draining or any(
            s in (WorkerState.DRAINING, WorkerState.EXITED) for s in states
        ):
            status = "draining"
        elif all(s is WorkerState.READY for s in states):
            status = "ready"
        else:
            status = "starting"
        doc = {
            "status": status,
            "connections": open_now,
            "workers": [s.name.lower() for s in states],
        }
        self.write_json(200 if status == "ready" else 503, doc)

    head = get


class MetricsHandler(tornado.web.RequestHandler):
    """Prometheus text exposition."""

    def initialize(self, metrics: Metrics, worker: Worker | None = None) -> None:
        self.metrics = metrics
        self.worker = worker

    def get(self) -> None:
        # Here, not at the top: see server.exposition (and warm_up_metrics).
        from . import exposition

        self.set_header("Content-Type", exposition.CONTENT_TYPE_LATEST)
        worker = self.worker  # with workers: the pod's totals, whichever answers
        self.finish(exposition.render(self.metrics if worker is None else worker.totals()))


def _import_exposition() -> None:
    from . import exposition

    del exposition


def warm_up_metrics(delay: float) -> threading.Timer:
    """Import what ``/metrics`` needs on a daemon thread, ``delay`` seconds
    from now: after the start that Knative waits on, and before a first
    scrape would have to import it on the event loop."""
    timer = threading.Timer(delay, _import_exposition)
    timer.daemon = True
    timer.start()
    return timer


def _package_data(name: str) -> bytes:
    # pkgutil, not importlib.resources: the same package data, without the
    # ~7 ms that importlib.resources' imports add to every start.
    data = pkgutil.get_data("server", name)
    if data is None:
        raise RuntimeError(f"server/{name} cannot be read from this package's loader")
    return data


CONSOLE_HTML = _package_data("static/console.html")


class ConsoleHandler(tornado.web.RequestHandler):
    """The echo console: one self-contained page, no external assets."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        # What a security scanner expects on an HTML page.
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.finish(CONSOLE_HTML)
