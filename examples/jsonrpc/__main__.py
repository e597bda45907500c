"""``python -m examples.jsonrpc``: the JSON-RPC example with the same
settings, environment, logging, signals and workers as ``python -m server``."""

from __future__ import annotations

from server.__main__ import main

from .app import ROUTES

if __name__ == "__main__":
    main(routes=ROUTES, console=False)
