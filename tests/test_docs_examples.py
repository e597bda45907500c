"""The code blocks of the guide "Write your own service"
(docs/guides/write-a-service.md) run as written: each ``python`` block is
marked ``<!-- docs-example: NAME -->``, taken from the page, saved as
``app.py`` in an empty directory and run there as ``python app.py`` - a real
process, real websockets clients, real HTTP. The README's smallest service
is the guide's, character for character. The snippets of "Broadcast" run,
and "Fan-out"'s summary of the backplane's API matches the class."""

from __future__ import annotations

import asyncio
import contextlib
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
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from .conftest import ROOT, ServerProcess

GUIDE = ROOT / "docs" / "guides" / "write-a-service.md"
MARKER = re.compile(r"<!-- docs-example: ([a-z0-9-]+) -->\n```python\n(.*?)\n```", re.DOTALL)


def examples(path: Path = GUIDE) -> dict[str, str]:
    """Every marked ``python`` block of a page, by its name."""
    text = path.read_text()
    found = {name: code + "\n" for name, code in MARKER.findall(text)}
    assert len(found) == text.count("<!-- docs-example:"), "a marker with no python block after it"
    return found


def run_example(tmp_path: Path, server_process: type[ServerProcess], code: str) -> ServerProcess:
    """``code`` as ``app.py`` in an empty directory, running and ready."""
    script = tmp_path / "app.py"
    script.write_text(code)
    server = server_process(command=[sys.executable, script.name], cwd=script.parent)
    server.wait_ready()
    return server


def test_every_python_block_of_the_guide_is_run() -> None:
    """No block of the guide escapes these tests: each is marked, and each
    marker is one this module (or tests/test_authorize.py) runs."""
    blocks = re.findall(r"```python\n", GUIDE.read_text())
    assert set(examples()) == {
        "smallest",
        "callbacks",
        "token-handler",
        "topics-app",
        "own-loop",
    }
    assert len(blocks) == len(examples())


def test_the_readme_shows_the_guides_smallest_service() -> None:
    readme = (ROOT / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)\n```", readme, re.DOTALL)]
    assert block + "\n" == examples()["smallest"]


def test_the_smallest_service_runs_as_written(
    tmp_path: Path, server_process: type[ServerProcess]
) -> None:
    server = run_example(tmp_path, server_process, examples()["smallest"])

    async def scenario() -> None:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "HELLO"
            await ws.send(b"abc")
            assert await asyncio.wait_for(ws.recv(), 5) == b"ABC"

    asyncio.run(scenario())
    assert get(server.url + "/readyz")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0


def test_the_four_callbacks_run_as_written(
    tmp_path: Path, server_process: type[ServerProcess]
) -> None:
    """``MyHandler``: text comes back upper-cased, binary closes with 1003."""
    code = examples()["callbacks"] + (
        "\nfrom server.__main__ import main\n\nmain(routes=[(r'/ws', MyHandler)])\n"
    )
    server = run_example(tmp_path, server_process, code)

    async def scenario() -> None:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "HELLO"
            await ws.send(b"abc")
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1003
            assert ws.close_reason == "text only"

    asyncio.run(scenario())
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0


@pytest.fixture
def app_process(tmp_path: Path, server_process: type[ServerProcess]) -> ServerProcess:
    """The guide's topics app as ``app.py`` in an empty directory, running."""
    return run_example(tmp_path, server_process, examples()["topics-app"])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as page:
            return page.status, page.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_the_topics_app_runs_as_written(app_process: ServerProcess) -> None:
    server = app_process
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


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", (ROOT / "docs" / "guides" / page).read_text(), re.S)


def test_the_broadcast_guides_blocks_run() -> None:
    """docs/guides/broadcast.md: the room (its ``on_message`` body too, with
    no member open yet), then the line that skips members that are behind,
    run as written. A real room is tests/test_broadcast.py's."""
    room, skip_behind = _blocks("broadcast.md")
    namespace: dict[str, Any] = {}
    exec(compile(room, "docs/guides/broadcast.md", "exec"), namespace)
    assert namespace["members"] == set()
    namespace["Room"].on_message(None, "hello")  # its body: broadcast to no member yet
    namespace["message"] = "hello"
    exec(compile(skip_behind, "docs/guides/broadcast.md", "exec"), namespace)
    assert namespace["broadcast"]("hello", namespace["members"]) == 0


def test_the_fan_out_guides_summary_is_the_backplanes_api() -> None:
    """docs/guides/fan-out.md sums up ``server.backplane.Backplane`` in one
    block: each method it shows is one the class has, async where it says,
    with the same parameters."""
    import inspect

    from server import backplane

    [summary] = _blocks("fan-out.md")
    shown = re.findall(r"^    (async )?def (\w+)\(self(?:, )?([^)]*)\)", summary, re.M)
    assert len(shown) >= 8, summary
    for is_async, name, params in shown:
        method = getattr(backplane.Backplane, name)
        assert inspect.iscoroutinefunction(method) == bool(is_async), name
        names = re.findall(r"(?:^|, )(\w+):", params)
        assert names == list(inspect.signature(method).parameters)[1:], name


def test_the_own_loop_example_runs_as_written(
    tmp_path: Path, server_process: type[ServerProcess]
) -> None:
    """Its own event loop: the ticker task pushes the time to each member
    every second, the probes answer, SIGTERM drains (1001) and the script
    exits 0 with the task cancelled."""
    server = run_example(tmp_path, server_process, examples()["own-loop"])

    async def scenario() -> tuple[int | None, list[Any]]:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            ticks = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert get(server.url + "/readyz")[0] == 200
            server.signal(signal.SIGTERM)
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code, ticks

    code, ticks = asyncio.run(scenario())
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", t["time"]) for t in ticks), ticks
    assert code == 1001
    assert server.wait(timeout=15) == 0
