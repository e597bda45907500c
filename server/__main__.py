"""``python -m server``: read the settings, set up logging, serve."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import asyncio  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from .config import Settings, load_settings_or_exit  # noqa: E402
from .events import configure_logging  # noqa: E402

if TYPE_CHECKING:
    from .app import WebSocketRoute
    from .base import KnativeWebSocketHandler
    from .podstate import Worker


def run(
    settings: Settings,
    reuse_port: bool = False,
    handler: type[KnativeWebSocketHandler] | None = None,
    worker: Worker | None = None,
    *,
    routes: Sequence[WebSocketRoute] | None = None,
    http_routes: Sequence[Any] = (),
    console: bool | None = None,
) -> int:
    """One server process on the chosen event loop, until it is stopped."""
    from .app import serve

    main = serve(
        settings,
        started=_STARTED,
        reuse_port=reuse_port,
        handler=handler,
        worker=worker,
        routes=routes,
        http_routes=http_routes,
        console=console,
    )
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(
    argv: Sequence[str] | None = None,
    handler: type[KnativeWebSocketHandler] | None = None,
    *,
    routes: Sequence[WebSocketRoute] | None = None,
    http_routes: Sequence[Any] = (),
    console: bool | None = None,
) -> None:
    """Run the server (or its workers) until told to stop; exit with its
    status. A service on the base calls this from its own ``__main__`` to
    get the same settings, logging, signals and workers: with ``handler``,
    that class serves ``/ws`` (the echo by default); with ``routes``, its
    WebSocket routes - ``(pattern, handler class[, initialize kwargs])``,
    path groups as ``open()``'s arguments - plus ``http_routes`` (Tornado
    rules) and the echo console at ``/`` if ``console`` (by default only
    for the echo's ``/ws``). See :func:`server.app.make_app`."""
    settings = load_settings_or_exit(argv)
    configure_logging(settings.log_level, settings.log_format)
    app: dict[str, Any] = {"routes": routes, "http_routes": http_routes, "console": console}
    if routes is not None:
        from .app import websocket_rules

        websocket_rules(routes)  # a bad route fails here, before any worker starts
    if settings.workers == 1:
        sys.exit(run(settings, handler=handler, **app))
    from .workers import supervise

    sys.exit(
        supervise(settings.workers, lambda worker: run(settings, True, handler, worker, **app))
    )


if __name__ == "__main__":
    main()
