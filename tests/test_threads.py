"""Sending from another thread: write_message() and friends refuse off the
event loop's thread with an error that names the fix, and
write_message_threadsafe() hops to the loop. Real threads, real sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, ClassVar

import pytest
import tornado.websocket
from websockets.asyncio.client import connect

from server.echo import EchoWebSocket


class _FromAThread(EchoWebSocket):
    """On "go", a thread tries each unsafe call, then sends 50 messages
    with write_message_threadsafe and reports what it saw."""

    errors: ClassVar[list[str]] = []
    results: ClassVar[list[Any]] = []

    def on_message(self, message: str | bytes) -> None:
        if message != "go":
            super().on_message(message)
            return

        def work() -> None:
            for call in (
                lambda: self.write_message("unsafe"),
                lambda: self.ping(b""),
                lambda: self.close(1000),
            ):
                try:
                    call()
                except RuntimeError as exc:
                    _FromAThread.errors.append(str(exc))
            futures = [self.write_message_threadsafe(f"t{i}") for i in range(50)]
            _FromAThread.results = [f.result(5) for f in futures]
            self.write_message_threadsafe("done")

        threading.Thread(target=work).start()


@pytest.mark.handler.with_args(_FromAThread)
async def test_off_the_loop_calls_fail_clearly_and_the_threadsafe_one_sends_in_order(
    ws_url: str,
) -> None:
    async with connect(ws_url) as ws:
        await ws.send("go")
        received = [await ws.recv() for _ in range(51)]
        await ws.send("still open")
        assert await ws.recv() == "still open"
    assert received == [f"t{i}" for i in range(50)] + ["done"]
    assert _FromAThread.results == [None] * 50
    assert len(_FromAThread.errors) == 3
    for error, name in zip(_FromAThread.errors, ("write_message", "ping", "close"), strict=True):
        assert error.startswith(f"{name}() called off the event loop's thread")
        assert "write_message_threadsafe" in error


class _AfterClose(EchoWebSocket):
    outcome: ClassVar[concurrent.futures.Future[Any]] = concurrent.futures.Future()

    def on_close(self) -> None:
        def work() -> None:
            future = self.write_message_threadsafe("too late")
            try:
                future.result(5)
            except BaseException as exc:
                _AfterClose.outcome.set_result(type(exc))
            else:
                _AfterClose.outcome.set_result(None)

        threading.Thread(target=work).start()


@pytest.mark.handler.with_args(_AfterClose)
async def test_a_threadsafe_write_after_close_fails_with_websocket_closed_error(
    ws_url: str,
) -> None:
    async with connect(ws_url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"

    result = await asyncio.wrap_future(_AfterClose.outcome)
    assert result is tornado.websocket.WebSocketClosedError
