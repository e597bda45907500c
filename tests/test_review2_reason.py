"""Review 2: the reason phrase of an app's refusal (``HTTPError(403,
reason=...)`` in ``authorize()``) goes into the status line. Tornado's
``set_status`` replaces a phrase that is not RFC 9112's ``reason-phrase``
(or has a ``<``) with "Unknown"; the base wrote it raw, so a phrase built
from a path argument could split the response (CR LF), and one with a
character outside Latin-1 left the client with no answer at all."""

from __future__ import annotations

import asyncio

import pytest
import tornado.web

from server.echo import EchoWebSocket

from .rawws import upgrade_request

REASONS = {
    "crlf": "no user\r\nSet-Cookie: session=forged",
    "euro": "no user \u20ac",
    "markup": "<b>no user</b>",
    "good": "No Such User",
}


class ReasonRefuses(EchoWebSocket):
    def authorize(self) -> None:
        raise tornado.web.HTTPError(403, reason=REASONS[self.request.headers["X-Case"]])


@pytest.mark.handler.with_args(ReasonRefuses)
@pytest.mark.parametrize(
    ("case", "phrase"),
    [("crlf", "Unknown"), ("euro", "Unknown"), ("markup", "Unknown"), ("good", "No Such User")],
)
async def test_an_invalid_reason_phrase_is_replaced_as_tornado_does(
    port: int, case: str, phrase: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(X_Case=case))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == f"HTTP/1.1 403 {phrase}"
    assert not [line for line in lines if line.lower().startswith("set-cookie")]
    assert "Connection: close" in lines
