"""A JSON-RPC 2.0-like request/reply service on the base handler.

Each text message is one request, ``{"id": 1, "method": "add", "params":
[1, 2]}``, and gets exactly one reply: ``{"jsonrpc": "2.0", "id": 1,
"result": 3}``, or ``{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601,
"message": "..."}}`` with JSON-RPC 2.0's error codes (no notifications, no
batches). A binary message closes the connection with 1003 (unsupported
data). The handshake policy, limits, event logs, metrics, keepalive and
drain are the base's, as for the echo.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from server.app import WebSocketRoute
from server.base import KnativeWebSocketHandler
from server.codes import CloseCode, ErrorKind

__all__ = ["METHODS", "ROUTES", "JsonRpcWebSocket"]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class RpcError(Exception):
    """A request that gets an error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and Infinity


def _add(params: Any) -> int | float:
    def number(x: Any) -> bool:
        return type(x) is int or (type(x) is float and math.isfinite(x))

    if not isinstance(params, list) or not all(number(x) for x in params):
        raise RpcError(INVALID_PARAMS, "add takes a list of numbers")
    return sum(params)


#: The methods: each takes the request's ``params`` and returns the result.
METHODS: dict[str, Callable[[Any], Any]] = {
    "echo": lambda params: params,
    "add": _add,
    "time": lambda params: time.time(),
}


def answer(message: str) -> str:
    """The reply to one request, as JSON text."""
    id_: Any = None
    try:
        try:
            request = json.loads(message, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise RpcError(PARSE_ERROR, f"parse error: {exc}") from None
        if not isinstance(request, dict):
            raise RpcError(INVALID_REQUEST, "a request is a JSON object")
        if type(request.get("id")) not in (str, int, type(None)):
            raise RpcError(INVALID_REQUEST, "id must be a string, an integer or null")
        id_ = request.get("id")
        method = request.get("method")
        if not isinstance(method, str) or method not in METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"no method {str(method)[:64]!r}")
        result = METHODS[method](request.get("params"))
        try:
            return json.dumps({"jsonrpc": "2.0", "id": id_, "result": result}, allow_nan=False)
        except (ValueError, RecursionError) as exc:  # e.g. a sum past the largest float
            raise RpcError(INVALID_PARAMS, f"the result is not JSON: {exc}") from None
    except RpcError as exc:
        error = {"code": exc.code, "message": str(exc)[:200]}
        return json.dumps({"jsonrpc": "2.0", "id": id_, "error": error})


class JsonRpcWebSocket(KnativeWebSocketHandler):
    """Answers each JSON request with one JSON reply."""

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported; send JSON")
            return
        self.write_message(answer(message))

    def on_error(self, kind: ErrorKind, detail: str) -> None:
        """The connection failed (the base logs and counts the ``error`` event)."""


#: What ``python -m examples.jsonrpc`` serves: requests at ``/ws`` (and the
#: probes and ``/metrics``, as every app on the base; no echo console).
ROUTES: list[WebSocketRoute] = [(r"/ws", JsonRpcWebSocket)]
