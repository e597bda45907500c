"""Review 2 (a first-time service author's findings): a mixin cannot
shadow the base's names, and a bug in ``authorize()`` (or ``prepare()``)
is a refusal like the others: answered with ``Connection: close``, one
``error`` event (``handler_exception``, with its traceback) and a count."""

from __future__ import annotations

import logging

import pytest

from server import exposition
from server.base import KnativeWebSocketHandler
from server.echo import EchoWebSocket
from server.metrics import Metrics

from .conftest import events
from .rawws import http_request, upgrade_request


class _MixinWithGet:
    """A mixin an app might share with its plain HTTP handlers."""

    def get(self) -> None:
        pass


class _MixinWithPeer:
    peer = "not the base's"


@pytest.mark.parametrize("mixin", [_MixinWithGet, _MixinWithPeer], ids=["get", "peer"])
def test_a_mixin_that_redefines_a_base_name_is_refused(mixin: type) -> None:
    with pytest.raises(TypeError, match="redefines"):
        type("Shadowed", (mixin, KnativeWebSocketHandler), {})


def test_a_mixin_with_overridable_names_is_fine() -> None:
    class Hooks:
        def on_message(self, message: str | bytes) -> None:
            pass

    type("Fine", (Hooks, KnativeWebSocketHandler), {})


class BuggyAuthorize(EchoWebSocket):
    def authorize(self) -> None:
        raise KeyError("a bug in the app's authorize")


class BuggyPrepare(EchoWebSocket):
    def prepare(self) -> None:
        raise KeyError("a bug in the app's prepare")


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return float(exposition.registry(metrics).get_sample_value(name, labels) or 0)


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("authorize", marks=pytest.mark.handler.with_args(BuggyAuthorize)),
        pytest.param("prepare", marks=pytest.mark.handler.with_args(BuggyPrepare)),
    ],
)
async def test_a_bug_before_the_upgrade_is_a_logged_counted_refusal(
    where: str, port: int, caplog: pytest.LogCaptureFixture, metrics: Metrics
) -> None:
    caplog.set_level(logging.INFO)
    status, headers, body, _, writer = await http_request(port, upgrade_request())
    writer.close()
    assert status == 500
    assert headers["connection"] == "close"
    assert b"KeyError" not in body  # the traceback is for the log only
    errors = events(caplog, "error")
    assert [e["kind"] for e in errors] == ["handler_exception"]
    assert not [r for r in caplog.records if r.name.startswith("tornado.application")]
    assert _sample(metrics, "websocket_errors_total", {"kind": "handler_exception"}) == 1
    assert _sample(metrics, "websocket_handshakes_rejected_total", {"reason": "other"}) == 1
