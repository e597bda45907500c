"""Refusal before the upgrade: ``authorize()`` (and ``prepare()``) refuse
with their status before any 101, as one ``error`` event and one count
under a bounded ``reason``, like the base's own refusals. The token comes
as browsers can send one: in ``Sec-WebSocket-Protocol`` or a cookie."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import tornado.web
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server import exposition
from server.echo import EchoWebSocket
from server.metrics import Metrics

from .conftest import events
from .rawws import http_request, upgrade_request
from .test_docs_examples import examples


def _guide_example() -> type:
    """The ``TokenHandler`` of docs/guides/write-a-service.md, run as
    written (its code block, marked ``docs-example: token-handler``)."""
    block = examples()["token-handler"]
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/guides/write-a-service.md", "exec"), namespace)
    return namespace["TokenHandler"]  # type: ignore[no-any-return]


#: The guide's example with the echo's on_message (the example has none).
TokenEcho = type("TokenEcho", (_guide_example(), EchoWebSocket), {})


class PrepareRefuses(EchoWebSocket):
    async def prepare(self) -> None:
        await asyncio.sleep(0)
        raise tornado.web.HTTPError(429, "over the quota")


def _rejected(metrics: Metrics, reason: str) -> float:
    value = exposition.registry(metrics).get_sample_value(
        "websocket_handshakes_rejected_total", {"reason": reason}
    )
    return float(value or 0)


@pytest.mark.handler.with_args(TokenEcho)
@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({}, 401, "unauthorized"),
        ({"subprotocols": ["bearer", "wrong"]}, 403, "forbidden"),
        ({"additional_headers": {"Cookie": "token=wrong"}}, 403, "forbidden"),
    ],
    ids=["no-token", "bad-subprotocol-token", "bad-cookie"],
)
async def test_a_refusal_in_authorize_is_answered_before_the_101_logged_and_counted(
    ws_url: str,
    caplog: pytest.LogCaptureFixture,
    metrics: Metrics,
    kwargs: dict[str, object],
    status: int,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(InvalidStatus) as caught:
        await connect(ws_url, **kwargs)  # type: ignore[arg-type]
    response = caught.value.response
    assert response.status_code == status
    assert response.headers["Connection"] == "close"
    assert response.body is not None
    assert b"token" not in response.body  # the log_message is for the log only
    errors = events(caplog, "error")
    assert [(e["kind"], e["status"]) for e in errors] == [(reason, status)]
    assert "token" in errors[0]["detail"]
    assert not events(caplog, "open")
    assert _rejected(metrics, reason) == 1


@pytest.mark.handler.with_args(TokenEcho)
@pytest.mark.parametrize(
    "kwargs",
    [{"subprotocols": ["bearer", "s3cret"]}, {"additional_headers": {"Cookie": "token=s3cret"}}],
    ids=["subprotocol", "cookie"],
)
async def test_a_good_token_opens(ws_url: str, kwargs: dict[str, object]) -> None:
    async with connect(ws_url, **kwargs) as ws:  # type: ignore[arg-type]
        if "subprotocols" in kwargs:
            assert ws.subprotocol == "bearer"
        await ws.send("hi")
        assert await ws.recv() == "hi"


@pytest.mark.handler.with_args(PrepareRefuses)
async def test_a_refusal_in_prepare_is_one_too(
    port: int, caplog: pytest.LogCaptureFixture, metrics: Metrics
) -> None:
    caplog.set_level(logging.INFO)
    status, headers, body, _, writer = await http_request(port, upgrade_request())
    writer.close()
    assert (status, body) == (429, b"429 Too Many Requests\n")
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert [e["kind"] for e in events(caplog, "error")] == ["rate_limited"]
    assert not [r for r in caplog.records if r.name.startswith("tornado")]  # one line, ours
    assert _rejected(metrics, "rate_limited") == 1
