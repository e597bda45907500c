"""The README's app example ("Routes, shared objects and the connection
view") runs as written: its code block is taken from README.md, saved as
``app.py`` in an empty directory and run there as ``python app.py`` - a
real process, real websockets clients, real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from .conftest import ROOT, ServerProcess

MARKER = "<!-- readme-app: tests/test_readme_app.py runs the next block -->"


def readme_app() -> str:
    """The first ``python`` block after the marker in README.md."""
    text = (ROOT / "README.md").read_text()
    assert text.count(MARKER) == 1, "the README's app example lost its marker"
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
    assert match, "no python block right after the marker"
    return match.group(1) + "\n"


@pytest.fixture
def app_process(tmp_path: Path, server_process: type[ServerProcess]) -> ServerProcess:
    """The README's block as ``app.py`` in an empty directory, running."""
    script = tmp_path / "app.py"
    script.write_text(readme_app())
    return server_process(command=[sys.executable, script.name], cwd=script.parent)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as page:
            return page.status, page.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_the_readme_app_runs_as_written(app_process: ServerProcess) -> None:
    server = app_process
    server.wait_ready()
    topics = f"ws://127.0.0.1:{server.port}/ws/topics"

    async def recv_json(ws: Any) -> Any:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))

    async def scenario() -> dict[str, Any]:
        async with connect(f"{topics}/news") as a:
            assert await recv_json(a) == {"hello": "hi", "topic": "news", "here": 1}
            async with connect(f"{topics}/news") as b, connect(f"{topics}/art") as c:
                assert await recv_json(b) == {"hello": "hi", "topic": "news", "here": 2}
                assert await recv_json(c) == {"hello": "hi", "topic": "art", "here": 1}
                await b.send("breaking")
                assert await asyncio.wait_for(a.recv(), 5) == "breaking"
                assert await asyncio.wait_for(b.recv(), 5) == "breaking"
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(c.recv(), 0.3)
                status, body = get(server.url + "/stats")
                assert status == 200
                stats: dict[str, Any] = json.loads(body)
                return stats

    assert asyncio.run(scenario()) == {"open": 3, "topics": ["art", "news"]}
    status, body = get(server.url + "/ws/topics/news")  # a plain GET
    assert status == 400
    assert b"WebSocket endpoint" in body
    assert get(server.url + "/")[0] == 404  # routes given: no echo console
    assert get(server.url + "/metrics")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0
