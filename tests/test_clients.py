"""Real third-party clients: ``wscat`` from npm, and the echo console page at
``/`` in a real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from server.connections import Registry

from .conftest import ROOT, events, until

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _wscat() -> str:
    for candidate in (ROOT / "tools/node_modules/.bin/wscat", shutil.which("wscat")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("wscat is not installed: run scripts/setup-tools.sh (npm ci --prefix tools)")


async def test_wscat_round_trip(ws_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # stdin stays open: wscat -x exits without connecting when stdin is at EOF.
    proc = await asyncio.create_subprocess_exec(
        _wscat(),
        "--no-color",
        "-c",
        ws_url,
        "-x",
        "hello from wscat",
        "-w",
        "1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await _run(proc)
    assert proc.returncode == 0, err
    assert out.strip() == "hello from wscat"
    await until(lambda: bool(events(caplog, "close")))
    [message] = events(caplog, "message")
    assert message["content"] == "hello from wscat"


async def _run(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = await asyncio.wait_for(
        asyncio.gather(proc.stdout.read(), proc.stderr.read()), timeout=30
    )
    await proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()
    return out.decode(), err.decode()


@pytest.mark.timeout(90)
async def test_console_page_round_trip_in_chromium(
    port: int, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/setup-tools.sh")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = await browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("pageerror", lambda e: failed.append(str(e)))
            await page.goto(f"http://127.0.0.1:{port}/")
            await expect(page.locator("#url")).to_have_text(f"ws://127.0.0.1:{port}/ws")
            await page.click("#connect")
            await expect(page.locator("#status")).to_have_text("open")

            await page.fill("#message", "hello from chromium ✓")
            await page.click("#send")
            await expect(page.locator("#log .echo").last).to_have_text(
                "< text: hello from chromium ✓"
            )
            await page.check("#binary")
            await page.fill("#message", "bytes")
            await page.press("#message", "Enter")
            await expect(page.locator("#log .echo").last).to_have_text("< binary: bytes (5 bytes)")
            await page.screenshot(path=str(tmp_path / "console.png"))
            await page.click("#disconnect")
            await expect(page.locator("#log .info").last).to_have_text("closed: code 1000")
            await expect(page.locator("#status")).to_have_text("closed")
            assert failed == []
        finally:
            await browser.close()

    await until(lambda: bool(events(caplog, "close")))
    [opened] = events(caplog, "open")
    assert opened["peer"].startswith("127.0.0.1:")
    assert [m["type"] for m in events(caplog, "message")] == ["text", "binary"]
    [closed] = events(caplog, "close")
    assert closed["code"] == 1000
    assert events(caplog, "error") == []


@contextlib.asynccontextmanager
async def _console(port: int) -> AsyncIterator[Page]:
    """The console page at ``/`` in headless Chromium; fails the test on a
    page error."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/setup-tools.sh")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"http://127.0.0.1:{port}/")
            yield page
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.timeout(90)
@pytest.mark.settings(max_connection_age=1.5)
async def test_console_reconnects_after_1001_and_not_after_the_users_close(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's maximum age closes the page's connection with 1001: the
    page shows the code and reason and the retry it schedules, and is open
    again on its own. A close of the user's own is not retried."""
    async with _console(port) as page:
        await page.click("#connect")
        await expect(page.locator("#status")).to_have_text("open")
        closed = page.locator("#log .info", has_text="closed: code 1001 (max connection age)")
        await expect(closed).to_have_count(1, timeout=5000)
        await expect(page.locator("#log .retry").first).to_have_text(
            re.compile(r"^reconnecting in 0\.[0-5] s \(attempt 1\)$")
        )
        await until(lambda: len(events(caplog, "open")) == 2)
        await expect(page.locator("#status")).to_have_text("open")
        await expect(page.locator("#retry")).to_have_text("")
        await page.click("#disconnect")
        await expect(page.locator("#retry")).to_have_text(
            "not reconnecting: you closed the connection"
        )
        await asyncio.sleep(1.0)
        await expect(page.locator("#status")).to_have_text("closed")
    assert len(events(caplog, "open")) == 2
    assert [c["cause"] for c in events(caplog, "close")] == ["max_age", "client"]


@pytest.mark.timeout(90)
async def test_console_backs_off_while_the_server_drains_then_reconnects(
    port: int, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A drain closes the page with 1001 "server shutting down"; its
    reconnects are refused (503, which a page sees as 1006 before open), so
    it backs off, attempt after attempt, until the server takes upgrades
    again (as a new pod would)."""
    async with _console(port) as page:
        await page.click("#connect")
        await expect(page.locator("#status")).to_have_text("open")
        drain = asyncio.ensure_future(registry.drain(5.0))
        await expect(
            page.locator("#log .info", has_text="closed: code 1001 (server shutting down)")
        ).to_have_count(1)
        await expect(page.locator("#log .retry").nth(1)).to_have_text(
            re.compile(r"^reconnecting in \d+\.\d s \(attempt 2\) - the connection did not open$"),
            timeout=5000,
        )
        assert await drain == 0
        registry.draining = False
        await expect(page.locator("#status")).to_have_text("open", timeout=15000)
    assert len(events(caplog, "open")) == 2
    assert [e["kind"] for e in events(caplog, "error")][:1] == ["draining"]


@pytest.mark.timeout(90)
@pytest.mark.settings(max_message_bytes=100)
async def test_console_does_not_reconnect_after_1009(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with _console(port) as page:
        await page.click("#connect")
        await expect(page.locator("#status")).to_have_text("open")
        await page.fill("#message", "x" * 200)
        await page.click("#send")
        await expect(page.locator("#retry")).to_have_text(
            "not reconnecting after code 1009: press Connect to try again"
        )
        await expect(page.locator("#log .info").last).to_have_text(
            re.compile(r"^closed: code 1009")
        )
        await asyncio.sleep(1.5)
        await expect(page.locator("#status")).to_have_text("closed")
    assert len(events(caplog, "open")) == 1
