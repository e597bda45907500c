"""Real third-party clients: ``wscat`` from npm, and the echo console page at
``/`` in a real headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

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
