"""``python -m server``: read the settings, set up logging, serve."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import asyncio  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from .config import Settings, load_settings_or_exit  # noqa: E402
from .events import configure_logging  # noqa: E402

if TYPE_CHECKING:
    from .base import KnativeWebSocketHandler
    from .podstate import Worker


def run(
    settings: Settings,
    reuse_port: bool = False,
    handler: type[KnativeWebSocketHandler] | None = None,
    worker: Worker | None = None,
) -> int:
    """One server process on the chosen event loop, until it is stopped."""
    from .app import serve
    from .echo import EchoWebSocket

    main = serve(
        settings,
        started=_STARTED,
        reuse_port=reuse_port,
        handler=handler or EchoWebSocket,
        worker=worker,
    )
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(
    argv: Sequence[str] | None = None, handler: type[KnativeWebSocketHandler] | None = None
) -> None:
    """Run the server (or its workers) until told to stop; exit with its
    status. ``handler`` serves /ws (the echo by default): a service on the
    base calls this from its own ``__main__`` to get the same settings,
    logging, signals and workers."""
    settings = load_settings_or_exit(argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers == 1:
        sys.exit(run(settings, handler=handler))
    from .workers import supervise

    sys.exit(supervise(settings.workers, lambda worker: run(settings, True, handler, worker)))


if __name__ == "__main__":
    main()
