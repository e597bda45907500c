"""``python -m server``: read the settings, set up logging, serve."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import asyncio  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from .config import load_settings_or_exit  # noqa: E402
from .events import configure_logging  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until it is told to stop; exit with its status."""
    settings = load_settings_or_exit(argv)
    configure_logging(settings.log_level, settings.log_format)
    from .lifecycle import serve

    sys.exit(asyncio.run(serve(settings, started=_STARTED)))


if __name__ == "__main__":
    main()
