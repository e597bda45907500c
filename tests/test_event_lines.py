"""The event lines a real ``python -m server`` process writes to stdout.

In the server process, events go straight to stdout without a LogRecord
(``server.events.emit``'s direct path); these tests read those lines.
"""

from __future__ import annotations

import asyncio
import re

from websockets.asyncio.client import connect

from .conftest import ServerProcess


def test_message_events_on_stdout_match_the_logging_records(
    server_process: type[ServerProcess],
) -> None:
    """A server process writes message events straight to stdout (no
    LogRecord); the lines carry what the records in the tests above carry,
    as valid JSON, with quotes and non-ASCII intact."""
    server = server_process(env={"WS_LOG_PREVIEW_BYTES": "8"})
    server.wait_ready()
    text = 'h\u00e9 "q"\n'

    async def scenario() -> int:
        async with connect(server.ws_url) as ws:
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(b"\x00\xff" * 8)
            await ws.recv()
            return int(ws.local_address[1])

    local_port = asyncio.run(scenario())
    server.wait_event("close")
    first, second = [d for d in server.log if d.get("event") == "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert first == {
        "level": "info",
        "event": "message",
        "peer": f"127.0.0.1:{local_port}",
        "type": "text",
        "size": len(text.encode()),
        "content": text,
    }
    assert second["type"] == "binary"
    assert second["size"] == 16
    assert second["content"] == "00ff" * 4
    assert second["truncated"] is True


def test_text_log_format_on_stdout(server_process: type[ServerProcess]) -> None:
    server = server_process(env={"WS_LOG_FORMAT": "text"})
    server.wait_ready()

    async def scenario() -> None:
        async with connect(server.ws_url) as ws:
            await ws.send("two words")
            await ws.recv()

    asyncio.run(scenario())
    server.signal()
    server.wait()
    [line] = [d["line"] for d in server.log if " message " in d.get("line", "")]
    assert re.search(r"INFO +message peer=127\.0\.0\.1:\d+ type=text size=9 ", line)
    assert line.endswith('content="two words"')
