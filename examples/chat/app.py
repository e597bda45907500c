"""Chat rooms on the base handler, across processes and pods through the
backplane (:mod:`server.backplane`: Redis with ``WS_BACKPLANE_URL``, else
in-process).

A client joins room ``lobby`` by connecting to ``/ws/rooms/lobby`` (room
names: 1 to 64 of ``a-z``, ``0-9`` and ``-``; anything else is 404), with
an optional ``?name=`` (1 to 32 of ``A-Za-z0-9_-``; else ``guest-N``) and
an optional ``?last_id=`` (the ``id`` of the last message it got, to get
what it missed; not an id - ``<ms>-<seq>`` - is 400). Every member of the
room, in every process, then gets, as JSON text:

- ``{"type": "join", "name": "ada", "members": 2, "id": "..."}`` when
  someone joins (the newcomer included: it learns its name and the room's
  size);
- ``{"type": "message", "name": "ada", "text": "hi", "id": "..."}`` for
  each text message a member sends (the sender included);
- ``{"type": "leave", "name": "ada", "members": 1, "id": "..."}`` when
  someone leaves.

``id`` is the message's id in the room's stream (``"<ms>-<seq>"``,
increasing). A client that reconnects with ``?last_id=`` first gets the
messages after that id it missed, then its own ``join`` and the live ones,
none twice and in order; if some of them are gone (older than
``WS_BACKPLANE_RETENTION`` messages, or Redis unreachable), first
``{"type": "gap", "last_id": "<its last_id>", "first_id": "<the oldest id
it is sent, or null>"}``. ``members`` counts the room's members in every
process (a Redis sorted set per room, refreshed every 10 s: the members of
a pod that died drop out within 30 s).

A binary message closes the sender with 1003, a text over
``Rooms.max_text`` characters with 1009, and a join past
``Rooms.max_members`` members in this process gets 1013 (try again later).
``Rooms``, shared by every connection of the process through
``initialize()``, holds the limits, the guest counter and the process's
members by room: a room's first member subscribes the process to the room's
channel, its last unsubscribes. A member that stops reading is the base's:
past ``WS_MAX_BACKLOG`` bytes of unread messages (4 MiB) it is closed at
once with 1008 ``slow_consumer`` and its queue dropped - the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import re
from typing import Any

import tornado.web
from tornado.websocket import WebSocketClosedError

from server.app import WebSocketRoute
from server.backplane import Backplane, BackplaneUnavailable, Entry, parse_id
from server.base import KnativeWebSocketHandler, broadcast
from server.wire import CloseCode

__all__ = ["ROOM_ROUTE", "ChatWebSocket", "Room", "Rooms", "routes"]

#: The route: the room's name is ``open()``'s argument.
ROOM_ROUTE = r"/ws/rooms/([a-z0-9-]{1,64})"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: Live messages a member holds while it is sent what it missed; past it, 1013.
MAX_HELD = 10_000
#: Messages of the history read at once for a resuming member: what its
#: replay holds in memory (at most ~0.5 MiB of ``max_text`` emoji).
REPLAY_PAGE = 32
#: Bytes of its replay a member may leave unread before the next is sent.
REPLAY_WINDOW = 256 * 1024


def _encode(doc: dict[str, Any]) -> str:
    """A message as JSON text, non-ASCII as UTF-8 (not ``\\uXXXX``: that
    triples an emoji's bytes, to every member and in the history)."""
    return json.dumps(doc, ensure_ascii=False)


def channel(room: str) -> str:
    """The backplane channel of a room."""
    return f"chat:{room}"


class Room:
    """This process's members of one room, and its subscription."""

    def __init__(self) -> None:
        self.members: dict[ChatWebSocket, None] = {}  # in order of joining
        #: Done once the process is subscribed to the room's channel.
        self.subscribed: asyncio.Future[None] | None = None

    def deliver(self, entry: Entry) -> None:
        """An entry of the room's channel: to every member of this process."""
        doc = json.loads(entry.data)
        doc["id"] = entry.id
        key: tuple[int, int] | None = None
        live: list[ChatWebSocket] = []
        for member in self.members:
            if member.held is not None:
                member.hold(entry, doc)
            elif member.floor is not None:
                # A member that resumed: the reader may still bring entries
                # its replay sent (the subscription's reads lag the history
                # read); the first one past the replay ends the check.
                key = parse_id(entry.id) if key is None else key
                if key > member.floor:
                    member.floor = None
                    live.append(member)
            else:
                live.append(member)
        if live:
            broadcast(_encode(doc), live)


@dataclasses.dataclass
class Rooms:
    """What every chat connection of a process shares: the limits, the
    guest numbers and the rooms' members here."""

    #: Members a room takes at once in one process; one more gets 1013.
    max_members: int = 1000
    #: The longest text message, in characters; a longer one gets 1009.
    max_text: int = 4096
    _guests: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))
    rooms: dict[str, Room] = dataclasses.field(default_factory=dict)
    #: Leaves being published (kept referenced until done).
    tasks: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    def guest_name(self) -> str:
        return f"guest-{next(self._guests)}"

    async def enter(self, name: str, member: ChatWebSocket, backplane: Backplane) -> Room:
        """Add ``member`` to room ``name``, subscribing its first member's
        process to the channel; returns once the subscription is there."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room()
        room.members[member] = None
        if room.subscribed is None:
            room.subscribed = asyncio.get_running_loop().create_future()
            try:
                await backplane.subscribe(channel(name), room.deliver)
            finally:
                room.subscribed.set_result(None)
        await room.subscribed
        return room

    def leave(self, name: str, member: ChatWebSocket, backplane: Backplane) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        room.members.pop(member, None)
        if not room.members:
            del self.rooms[name]
            backplane.unsubscribe(channel(name))


class ChatWebSocket(KnativeWebSocketHandler):
    """One member of one room."""

    def initialize(self, room_registry: Rooms) -> None:
        self.rooms = room_registry
        self.room = ""
        self.name = ""
        self.last_id = ""
        #: While it is sent what it missed: the live messages meanwhile.
        self.held: list[tuple[Entry, dict[str, Any]]] | None = None
        #: After that: the last id it was sent, until a live one passes it.
        self.floor: tuple[int, int] | None = None
        #: Counted in the room's presence (its join published).
        self.joined = False

    def members(self) -> list[ChatWebSocket]:
        """The room's members in this process that get live messages."""
        room = self.rooms.rooms.get(self.room)
        return [m for m in room.members if m.held is None] if room else []

    def publish(self, doc: dict[str, Any]) -> None:
        """``doc`` to the room in every process (its ``id`` added there)."""
        self.backplane.publish(channel(self.room), _encode(doc))

    def hold(self, entry: Entry, doc: dict[str, Any]) -> None:
        assert self.held is not None
        if len(self.held) >= MAX_HELD:
            self.close(CloseCode.TRY_AGAIN_LATER, "too many messages while catching up")
            return
        self.held.append((entry, doc))

    def send_doc(self, doc: dict[str, Any]) -> None:
        with contextlib.suppress(WebSocketClosedError):
            self.write_message(_encode(doc))

    def authorize(self) -> None:
        # The raw value: Tornado's get_query_argument strips spaces and
        # control characters, which would turn a bad id into no id.
        values = self.request.query_arguments.get("last_id", [])
        if not values or values == [b""]:
            return
        try:
            if len(values) > 1:
                raise ValueError("one last_id at most")
            last_id = values[0].decode("ascii")
            parse_id(last_id)
        except ValueError as exc:  # UnicodeDecodeError included
            raise tornado.web.HTTPError(400, f"bad last_id: {exc}") from None
        self.last_id = last_id

    async def open(self, room: str) -> None:
        wanted = self.get_query_argument("name", "")
        name = wanted if _NAME.fullmatch(wanted) else self.rooms.guest_name()
        here = self.rooms.rooms.get(room)
        if here is not None and len(here.members) >= self.rooms.max_members:
            self.close(CloseCode.TRY_AGAIN_LATER, "the room is full")
            return
        self.room, self.name = room, name
        self.held = []  # live messages wait while the missed ones are sent
        await self.rooms.enter(room, self, self.backplane)
        if self.last_id:
            await self._catch_up()
        held, self.held = self.held, None
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # closed while catching up: never counted, no join
        for _, doc in held:
            self.send_doc(doc)
        self.joined = True
        members = await self.backplane.presence_add(channel(room), self._key())
        self.publish({"type": "join", "name": name, "members": members})

    async def _catch_up(self) -> None:
        """Send what came after ``last_id``, a page at a time and as fast as
        the client reads (a gap notice first where some is gone), then drop
        the held live messages it covered."""
        after = self.last_id
        last = parse_id(after)
        sent: tuple[int, int] | None = None
        while True:
            try:
                page = await self.backplane.history(channel(self.room), after, REPLAY_PAGE)
            except BackplaneUnavailable:
                self.send_doc({"type": "gap", "last_id": after, "first_id": None})
                break
            if page.gap:
                first = page.entries[0].id if page.entries else None
                self.send_doc({"type": "gap", "last_id": after, "first_id": first})
            for entry in page.entries:
                doc = json.loads(entry.data)
                doc["id"] = entry.id
                if not await self._send_paced(doc):
                    return  # closed: on_close has it
                last = sent = parse_id(entry.id)
                after = entry.id
            assert self.held is not None
            if len(page.entries) < REPLAY_PAGE or (
                self.held and last >= parse_id(self.held[0][0].id)
            ):
                break  # the rest, if any, is held
        assert self.held is not None
        self.held = [(e, d) for e, d in self.held if parse_id(e.id) > last]
        # The newest id it is sent (not its last_id, which may lie ahead of
        # every id: it would then never get a live message).
        self.floor = max([parse_id(e.id) for e, _ in self.held], default=sent)

    async def _send_paced(self, doc: dict[str, Any]) -> bool:
        """Send ``doc``; past ``REPLAY_WINDOW`` bytes unread, wait for the
        client to read (``send_timeout`` at most, then 1008). False once
        the connection is closing."""
        try:
            written = self.write_message(_encode(doc))
            if self.backlog > REPLAY_WINDOW:
                timeout = self.send_timeout or None
                await asyncio.wait_for(asyncio.shield(written), timeout)
        except WebSocketClosedError:
            return False
        except TimeoutError:
            self.close(CloseCode.POLICY_VIOLATION, "slow_consumer: the replay was left unread")
            return False
        return True

    def _key(self) -> str:
        return f"{self.name}:{id(self):x}"

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
            return
        if len(message) > self.rooms.max_text:
            self.close(CloseCode.MESSAGE_TOO_BIG, f"at most {self.rooms.max_text} characters")
            return
        self.publish({"type": "message", "name": self.name, "text": message})

    def on_close(self) -> None:
        if not self.room:  # it had not joined
            return
        self.rooms.leave(self.room, self, self.backplane)
        if not self.joined:  # closed while catching up: no join to undo
            return
        task = asyncio.get_running_loop().create_task(self._left())
        self.rooms.tasks.add(task)
        task.add_done_callback(self.rooms.tasks.discard)

    async def _left(self) -> None:
        members = await self.backplane.presence_remove(channel(self.room), self._key())
        self.publish({"type": "leave", "name": self.name, "members": members})


def routes(rooms: Rooms) -> list[WebSocketRoute]:
    """The chat's WebSocket route, its handlers sharing ``rooms``."""
    return [(ROOM_ROUTE, ChatWebSocket, {"room_registry": rooms})]
