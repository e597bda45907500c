"""Review of issue 18's console page: its backoff must grow while every
connection fails right after it opens. A service whose ``open()`` raises
(or a proxy that cuts each upgraded connection at once) accepts the upgrade
and closes with 1011 a moment later: when the page reset its backoff on
every open, it reconnected about twice a second forever, each retry
"attempt 1" - a thousand open tabs, two thousand upgrades a second against
a service that is already failing. Real headless Chromium, the in-process
server.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from server.echo import EchoWebSocket

from .conftest import events
from .test_clients import _console


class FailsOnOpen(EchoWebSocket):
    """A service with a bug in ``open()``: every connection gets 1011."""

    def open(self, *args: str, **kwargs: str) -> None:
        raise RuntimeError("a bug in open()")


@pytest.mark.timeout(90)
@pytest.mark.handler.with_args(FailsOnOpen)
async def test_console_backs_off_when_every_connection_fails_right_after_it_opens(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with _console(port) as page:
        await page.click("#connect")
        await expect(page.locator("#log .info", has_text="closed: code 1011").first).to_be_visible()
        # Backoff: 0-1 s, then 0-2 s, then 0-4 s: the third retry comes
        # within 3 s of the first close, each with a growing attempt number.
        await expect(page.locator("#log .retry").nth(2)).to_have_text(
            re.compile(r"^reconnecting in \d+\.\d s \(attempt 3\)$"), timeout=10000
        )
        retries = await page.locator("#log .retry").all_text_contents()
        attempts = [m.group(1) for r in retries[:3] if (m := re.search(r"attempt (\d+)", r))]
        assert attempts == ["1", "2", "3"]
        await page.click("#disconnect")
    assert all(c["code"] == 1011 for c in events(caplog, "close"))
