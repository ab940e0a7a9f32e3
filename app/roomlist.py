"""The live room list: unread counts, previews, names and who is online,
and one's direct conversations (unread counts and previews),
pushed to the rooms page over its own WebSocket (``/ws/rooms``).

How this works: the chat calls ``changed()`` whenever something the list
shows may have moved (a message stored or taken out, a read marker, a room
named, presence).  Changes are coalesced: the first one starts a timer of
``COALESCE_SECONDS``; when it fires, the list is computed once per person
watching (unread counts are per person) and sent to each of their sockets,
unless it is the very frame that socket got last.  A busy mesh therefore
costs at most one computation per watcher per ``COALESCE_SECONDS``, however
many messages arrive.  Watchers are bounded (``WATCHERS_MAX``); one over
the bound is closed with 1013 ("try again later") and its page keeps the
list it loaded.  Sockets are the hub's ``Client`` (app/hub.py): their own
outbox, dropped when they cannot keep up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent

from app.hub import Client, encode_frame

log = logging.getLogger(__name__)

# A busy room takes a few messages a second; people read a list at most
# that often.  One second keeps the list live to the eye and its cost to
# one computation per watcher per second at most.
COALESCE_SECONDS = 1.0
# The rooms page is a page people glance at between rooms: a quarter of the
# router's connections (app/server.py MAX_CONNECTIONS, 1,000) is plenty, and
# bounds the work of one update (tests/bench: room_list takes well under a
# millisecond per person on 5,000 messages a room).
WATCHERS_MAX = 250
CLOSE_TRY_LATER = 1013  # RFC 6455 section 7.4.1: the server is overloaded


class RoomListFeed:
    """The sockets watching the room list, and the coalesced updates."""

    def __init__(
        self,
        rooms_for: Callable[[str], list[dict[str, Any]]],
        direct_for: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``rooms_for(user)``: the list one person sees (``Chat.room_list``);
        ``direct_for(user)``: their direct conversations (``Chat.conversations``)."""
        self.rooms_for = rooms_for
        self.direct_for = direct_for
        self.watchers: dict[Client, bytes] = {}  # socket -> the frame it got last
        self._timer: gevent.Greenlet | None = None
        self.updates = 0  # lists computed and sent, since start (for /status)

    def frame(self, user: str) -> bytes:
        frame: dict[str, Any] = {"type": "rooms", "rooms": self.rooms_for(user)}
        if self.direct_for is not None:
            frame["direct"] = self.direct_for(user)
        return encode_frame(frame)

    def join(self, client: Client) -> bool:
        """Start sending ``client`` the list; False (and closed) if full."""
        if len(self.watchers) >= WATCHERS_MAX:
            log.info("room list: %d watchers; closing %s's", WATCHERS_MAX, client.user)
            client.close(CLOSE_TRY_LATER)
            return False
        data = self.frame(client.user)
        self.watchers[client] = data
        client.send_raw(data)
        return True

    def leave(self, client: Client) -> None:
        self.watchers.pop(client, None)

    def changed(self) -> None:
        """Something on the list may have moved: update within the interval."""
        if self.watchers and self._timer is None:
            self._timer = gevent.spawn_later(COALESCE_SECONDS, self.send_updates)

    def send_updates(self) -> None:
        self._timer = None
        frames: dict[str, bytes] = {}
        for client in list(self.watchers):
            if client.closed:
                self.watchers.pop(client, None)
                continue
            data = frames.get(client.user)
            if data is None:
                data = frames[client.user] = self.frame(client.user)
                self.updates += 1
            if data != self.watchers.get(client):
                self.watchers[client] = data
                client.send_raw(data)
