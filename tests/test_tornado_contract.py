"""The contract with Tornado: what the server relies on exists, and is public.

The server uses Tornado for HTTP and the upgrade request, then takes the
socket over (server/handover.py). Every Tornado name that hand-over relies
on is listed in ``server.handover.TORNADO_NAMES``; a Tornado release that
drops one fails here, naming it, before anything subtler breaks. No module
reaches into another package's private attributes (``obj._name``), and only
server/handover.py may import a private Tornado name (import-linter checks
that too; see pyproject.toml).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import tornado

from server.handover import TORNADO_NAMES

from .rawws import frame, http_request, upgrade_request

SERVER = Path(__file__).resolve().parent.parent / "server"
#: Underscored names that are public all the same: os._exit (documented),
#: typeshed's names for zlib's stream objects (annotations only), and
#: namedtuple's documented ``_replace`` (urllib.parse.SplitResult, in
#: server/backplane.py's redact_url).
PUBLIC_ANYWAY = {"_exit", "_Compress", "_Decompress", "_replace"}


@pytest.mark.parametrize("dotted", TORNADO_NAMES)
def test_every_tornado_name_the_transport_relies_on_exists(dotted: str) -> None:
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            assert hasattr(obj, attr), (
                f"Tornado {tornado.version} has no {dotted}: server/handover.py relies on it"
            )
            obj = getattr(obj, attr)
        assert not any(p.startswith("_") for p in parts), f"{dotted} is private"
        return
    pytest.fail(f"no module of {dotted} imports")


def _own_private_names() -> set[str]:
    """Every ``_name`` the package defines itself (functions, classes,
    attributes it assigns, keyword arguments)."""
    names: set[str] = set()
    for path in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_")}


def test_no_module_reaches_into_another_packages_private_attributes() -> None:
    own = _own_private_names()
    found = []
    for path in sorted(SERVER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and node.attr not in PUBLIC_ANYWAY
            ):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tornado"):
                for alias in node.names:
                    if alias.name.startswith("_") and path.name != "handover.py":
                        found.append(f"{path.name}:{node.lineno}: import {alias.name}")
    assert not found, "private names of other packages:\n" + "\n".join(found)


async def test_frames_sent_with_the_upgrade_request_survive_the_hand_over(port: int) -> None:
    """The client's first frames may arrive in the same segment as its
    upgrade request: Tornado has then read them into its stream's buffer,
    and the hand-over must pass them on (``take_over``)."""
    request = upgrade_request()
    status, _, _, reader, writer = await http_request(
        port, request + frame(0x1, b"right behind the request") + frame(0x2, b"\x00\x01")
    )
    assert status == 101
    echoes = [await reader.readexactly(2 + len(b"right behind the request"))]
    echoes.append(await reader.readexactly(4))
    assert echoes[0][2:] == b"right behind the request"
    assert echoes[1] == b"\x82\x02\x00\x01"
    writer.close()


def test_the_request_links_the_hand_over_clears_are_the_constructor_arguments() -> None:
    """``release_request`` clears ``REQUEST_LINKS``: HTTPServerRequest keeps
    each public constructor argument of that name as an attribute."""
    import inspect

    import tornado.httputil

    from server.handover import REQUEST_LINKS

    params = inspect.signature(tornado.httputil.HTTPServerRequest).parameters
    marker = object()
    request = tornado.httputil.HTTPServerRequest(
        start_line=tornado.httputil.RequestStartLine("GET", "/ws", "HTTP/1.1"),
        headers=tornado.httputil.HTTPHeaders({"Host": "example.com"}),
        **{name: marker for name in REQUEST_LINKS},
    )
    for name in REQUEST_LINKS:
        assert name in params, f"HTTPServerRequest takes no {name!r} any more"
        assert getattr(request, name) is marker, f"request.{name} is not what was passed"
