"""``python -m examples.jsonrpc``: the JSON-RPC example with the same
settings, environment, logging, signals and workers as ``python -m server``."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import asyncio  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from server.config import Settings, load_settings_or_exit  # noqa: E402
from server.events import configure_logging  # noqa: E402


def run(settings: Settings, reuse_port: bool = False) -> int:
    """One server process on the chosen event loop, until it is stopped."""
    from server.app import serve

    from .app import JsonRpcWebSocket

    main = serve(settings, started=_STARTED, reuse_port=reuse_port, handler=JsonRpcWebSocket)
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the service (or its workers) until told to stop; exit with its status."""
    settings = load_settings_or_exit(argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers == 1:
        sys.exit(run(settings))
    from server.workers import supervise

    sys.exit(supervise(settings.workers, lambda: run(settings, reuse_port=True)))


if __name__ == "__main__":
    main()
