"""The line between an app and the base: the handler's public names are
Tornado's plus the few the base documents, the base's own state sits behind
one private name that a subclass cannot redefine, and the codes an app
names come from a public module."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import pytest
import tornado.websocket
from websockets.asyncio.client import connect

import server.codes
import server.kinds
import server.wire
from server.base import OVERRIDABLE, KnativeWebSocketHandler
from server.echo import EchoWebSocket

from .conftest import until, upgrade_burst

#: What the base adds to Tornado's public API (docs/guides/write-a-service.md;
#: ``backplane``: docs/guides/fan-out.md; ``backlog`` and ``send_timeout``:
#: docs/guides/broadcast.md).
DOCUMENTED = {
    "authorize",
    "backlog",
    "backplane",
    "connections",
    "on_error",
    "peer",
    "send_timeout",
    "write_message_threadsafe",
}


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_the_handlers_public_names_are_tornados_and_the_documented_ones() -> None:
    added = _public(KnativeWebSocketHandler) - _public(tornado.websocket.WebSocketHandler)
    assert added == DOCUMENTED


class _Peek(EchoWebSocket):
    """Records the names on a live, open handler."""

    names: ClassVar[set[str]] = set()

    def open(self, *args: str, **kwargs: str) -> None:
        _Peek.names = set(vars(self))


@pytest.mark.handler.with_args(_Peek)
async def test_an_open_handler_has_one_private_name_for_the_base(ws_url: str) -> None:
    """The instance's names: Tornado's, and ``_kws`` for the base's state."""
    async with connect(ws_url) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
    tornado_names = {
        "application", "request", "ui", "path_args", "path_kwargs", "ws_connection",
        "close_code", "close_reason", "open_args", "open_kwargs",
    }  # fmt: skip
    assert {n for n in _Peek.names if not n.startswith("_")} <= tornado_names
    bare = tornado.websocket.WebSocketHandler(_App(), _request())  # type: ignore[arg-type]
    tornado_private = {*vars(bare), "_transforms"}  # _transforms: set by _execute
    base_private = {n for n in _Peek.names if n.startswith("_")} - tornado_private
    assert base_private == {"_kws"}


class _App:
    ui_methods: ClassVar[dict[str, Any]] = {}
    ui_modules: ClassVar[dict[str, Any]] = {}
    settings: ClassVar[dict[str, Any]] = {}


def _request() -> Any:
    import tornado.httputil

    class _Conn:
        context = None

        def set_close_callback(self, cb: Any) -> None:
            pass

    return tornado.httputil.HTTPServerRequest(
        connection=_Conn(),  # type: ignore[arg-type]
        headers=tornado.httputil.HTTPHeaders({"Host": "localhost"}),
        start_line=tornado.httputil.RequestStartLine("GET", "/ws", "HTTP/1.1"),
    )


@pytest.mark.parametrize("name", ["_kws", "get", "peer", "_upgrade", "write_message_threadsafe"])
def test_a_subclass_that_redefines_a_base_name_is_refused(name: str) -> None:
    with pytest.raises(TypeError, match=f"redefines {name} of KnativeWebSocketHandler"):
        type("Clash", (EchoWebSocket,), {name: None})


def test_a_subclass_may_override_the_documented_hooks() -> None:
    cls = type("Hooks", (EchoWebSocket,), dict.fromkeys(OVERRIDABLE))
    assert cls.__name__ == "Hooks"
    # and attributes the base does not own, such as the ones it used to keep
    # on the handler (an app's own "metrics" broke the base)
    type("Own", (EchoWebSocket,), {"metrics": 1, "messages_in": 2, "service": 3, "ws": 4})


def test_close_codes_and_error_kinds_come_from_the_public_module() -> None:
    assert server.codes.CloseCode is server.wire.CloseCode
    assert server.codes.ErrorKind is server.kinds.ErrorKind
    assert server.codes.CloseCause is server.kinds.CloseCause


class _AppState(EchoWebSocket):
    """An app's own per-connection attributes, first set in open()."""

    def open(self, *args: str, **kwargs: str) -> None:
        self.metrics = 0  # the name of what was the base's, once
        self.messages_in = 0
        self.room = "lobby"
        self.user = None
        self.joined = 0.0
        self.seen = 0

    def on_message(self, message: str | bytes) -> None:
        self.seen += 1
        self.messages_in += 1
        super().on_message(message)


@pytest.mark.handler.with_args(_AppState)
async def test_an_apps_own_attributes_keep_the_shared_key_dict_and_do_not_break_the_base(
    port: int,
) -> None:
    """Six attributes of the app's, set after a burst of upgrades made the
    handlers: each handler still has a shared-key dict (a few hundred bytes,
    not 1.5 KiB), as the base keeps its own state out of the handler's dict.
    (tests/test_idle_memory.py does the same for the echo.)"""
    async with upgrade_burst(port, _AppState) as handlers:
        assert len(handlers) == 60
        await until(lambda: all(h.seen == 1 for h in handlers))
        sizes = sorted(sys.getsizeof(vars(h)) for h in handlers)
        assert sizes[-1] < 1000, sizes
