"""Chat rooms in one process, on the base handler.

A client joins room ``lobby`` by connecting to ``/ws/rooms/lobby`` (room
names: 1 to 64 of ``a-z``, ``0-9`` and ``-``; anything else is 404), with
an optional ``?name=`` (1 to 32 of ``A-Za-z0-9_-``; else ``guest-N``).
Every member of the room then gets, as JSON text:

- ``{"type": "join", "name": "ada", "members": 2}`` when someone joins
  (the newcomer included: it learns its name and the room's size);
- ``{"type": "message", "name": "ada", "text": "hi"}`` for each text
  message a member sends (the sender included);
- ``{"type": "leave", "name": "ada", "members": 1}`` when someone leaves.

A binary message closes the sender with 1003, a text over
``Rooms.max_text`` characters with 1009, and a join past
``Rooms.max_members`` gets 1013 (try again later). The room's members are
found with the base's connection view (``self.connections``); the
``Rooms`` object, shared by every connection through ``initialize()``,
holds the limits and the guest counter. A member that stops reading is the
base's: past ``WS_MAX_BACKLOG`` bytes of unread messages (4 MiB) it is
closed at once with 1008 ``slow_consumer`` and its queue dropped - the
others go on.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any

from server.app import WebSocketRoute
from server.base import KnativeWebSocketHandler, broadcast
from server.wire import CloseCode

__all__ = ["ROOM_ROUTE", "ChatWebSocket", "Rooms", "routes"]

#: The route: the room's name is ``open()``'s argument.
ROOM_ROUTE = r"/ws/rooms/([a-z0-9-]{1,64})"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclasses.dataclass
class Rooms:
    """What every chat connection shares: the limits and the guest numbers."""

    #: Members a room takes at once; one more gets 1013.
    max_members: int = 1000
    #: The longest text message, in characters; a longer one gets 1009.
    max_text: int = 4096
    _guests: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def guest_name(self) -> str:
        return f"guest-{next(self._guests)}"


class ChatWebSocket(KnativeWebSocketHandler):
    """One member of one room."""

    def initialize(self, room_registry: Rooms) -> None:
        self.rooms = room_registry
        self.room = ""
        self.name = ""

    def members(self) -> list[ChatWebSocket]:
        """The room's open connections, this one included while open."""
        return self.connections.select(ChatWebSocket, path=self.request.path)

    def broadcast(self, doc: dict[str, Any]) -> None:
        """Send ``doc`` to every member, encoded and framed once (the base's
        :func:`~server.base.broadcast`). Fire and forget: a member past
        ``WS_MAX_BACKLOG`` unread is closed by the base (1008), and skipped."""
        broadcast(json.dumps(doc), self.members())

    def open(self, room: str) -> None:
        wanted = self.get_query_argument("name", "")
        name = wanted if _NAME.fullmatch(wanted) else self.rooms.guest_name()
        members = self.members()
        if len(members) > self.rooms.max_members:
            self.close(CloseCode.TRY_AGAIN_LATER, "the room is full")
            return
        self.room, self.name = room, name
        self.broadcast({"type": "join", "name": name, "members": len(members)})

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
            return
        if len(message) > self.rooms.max_text:
            self.close(CloseCode.MESSAGE_TOO_BIG, f"at most {self.rooms.max_text} characters")
            return
        self.broadcast({"type": "message", "name": self.name, "text": message})

    def on_close(self) -> None:
        if self.room:  # it had joined
            self.broadcast({"type": "leave", "name": self.name, "members": len(self.members())})


def routes(rooms: Rooms) -> list[WebSocketRoute]:
    """The chat's WebSocket route, its handlers sharing ``rooms``."""
    return [(ROOM_ROUTE, ChatWebSocket, {"room_registry": rooms})]
