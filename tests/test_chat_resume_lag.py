"""The chat's resume when the subscription lags the history read.

With Redis, a process's reader brings a channel's entries by XREAD in its
own time: entries published after a resuming member subscribed can be in
its replay (the XRANGE) and still reach the subscription after the replay
is done. They must not reach the member twice (a rehearsal saw a
resumed listener get five messages again, under load).

The backplane here is the real in-process one with only its timing
arranged: every delivery to a subscriber comes 50 ms late, as a reader
behind the stream would bring it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from server.backplane import Entry, LocalBackplane, parse_id

from .test_backplane import doc, until_type

LAG = 0.05


class _LaggingBackplane(LocalBackplane):
    """Deliveries come LAG late; two messages are published while a
    replay is read (so they are in it, and reach the subscription after)."""

    def _deliver(self, channel: str, entry: Entry) -> None:
        asyncio.get_running_loop().call_later(LAG, super()._deliver, channel, entry)

    async def history(self, channel: str, after: str, limit: int | None = None) -> Any:
        for n in (1, 2):
            text = f"during {n}"
            self.publish(channel, json.dumps({"type": "message", "name": "x", "text": text}))
        return await super().history(channel, after, limit)


@pytest.fixture
def app(service: Any) -> Any:
    from examples.chat.app import Rooms, routes
    from server.app import make_app

    lagging = dataclasses.replace(service, backplane=_LaggingBackplane())
    return make_app(lagging, routes=routes(Rooms()))


async def test_a_resumed_member_gets_the_replayed_messages_once(port: int) -> None:
    lobby = f"ws://127.0.0.1:{port}/ws/rooms/lobby"
    async with connect(lobby + "?name=ada") as ada:
        joined = await doc(ada)
        await ada.send("before")
        await until_type(ada, "message")
        async with connect(f"{lobby}?last_id={joined['id']}&name=bob") as back:
            got = [await doc(back) for _ in range(4)]
            assert [d.get("text", d["type"]) for d in got] == [
                "before",
                "during 1",
                "during 2",
                "join",
            ]
            ids = [parse_id(d["id"]) for d in got]
            assert ids == sorted(ids)
            await ada.send("after")
            assert (await until_type(back, "message"))["text"] == "after"
            with pytest.raises(TimeoutError):
                await doc(back, 0.3)
