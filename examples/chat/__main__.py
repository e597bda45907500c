"""``python -m examples.chat``: the chat example with the same settings,
environment, logging, signals and workers as ``python -m server`` (with
``WS_WORKERS`` over 1, each worker is its own set of rooms: one process per
room set is this example's scope)."""

from __future__ import annotations

from server.__main__ import main

from .app import Rooms, routes

if __name__ == "__main__":
    main(routes=routes(Rooms()), console=False)
