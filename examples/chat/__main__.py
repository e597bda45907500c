"""``python -m examples.chat``: the chat example with the same settings,
environment, logging, signals and workers as ``python -m server``. With
``WS_BACKPLANE_URL`` (Redis) every process and pod on the same Redis shares
the rooms; without, each process (each of ``WS_WORKERS``) has its own."""

from __future__ import annotations

from server.__main__ import main

from .app import Rooms, routes

if __name__ == "__main__":
    main(routes=routes(Rooms()), console=False)
