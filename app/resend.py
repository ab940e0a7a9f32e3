"""Resends: a page's ``client_id`` remembered with the message it stored.

How this works: a page gives each message it sends its own ``client_id``
and waits for the ack that carries the stored id.  When the socket drops
between the store and the ack, the page cannot tell whether the router kept
the message, and sends it again with the same ``client_id`` on a new socket.
``SentIds`` remembers, per user (by name key, so every socket and router
page of that person counts), and room (a page is in one room; a client id
another page used in another room is that page's), the last ``PER_USER``
client ids with the id of the message each stored, for ``WINDOW`` seconds on the monotonic clock; a
send whose client id is remembered is answered with the first ack and not
stored again.  Memory is bounded in three ways: ids per user and room,
users and rooms (``USERS_MAX``, the least recently active forgotten first)
and time.  It is
kept in memory only: a router that restarted between the send and the
resend stores the resend (the page's retry comes within seconds, a restart
takes longer than that).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

# The page resends what it had in flight: at most the rate limit's burst
# (app/chat.py RATE_BURST, 10) per page; 16 covers that with room for a
# second tab of the same person.
PER_USER = 16
# The page retries when its socket is back (its back-off tops out at 15 s)
# or when the person presses Retry, perhaps after putting the phone away
# for a while: ten minutes covers both, and a message typed again after
# that is meant as a new one.
WINDOW = 600.0
# People who posted in the last WINDOW on one router: the router serves at
# most 1,000 connections (app/server.py MAX_CONNECTIONS); 512 remembered
# posters of 16 ids each is at most 8,192 small entries (about 1 MB).
USERS_MAX = 512


class SentIds:
    """client id -> stored message id, per user, bounded (see above)."""

    def __init__(self) -> None:
        # (user key, room) -> client id -> (message id, monotonic time stored)
        self._users: OrderedDict[Hashable, OrderedDict[str, tuple[str, float]]] = OrderedDict()

    def first(self, user_key: Hashable, client_id: str, now: float) -> str | None:
        """The id stored for ``client_id`` by this user, if remembered."""
        sent = self._users.get(user_key)
        entry = sent.get(client_id) if sent is not None else None
        if entry is None or now - entry[1] > WINDOW:
            return None
        return entry[0]

    def remember(self, user_key: Hashable, client_id: str, message_id: str, now: float) -> None:
        sent = self._users.pop(user_key, None)
        if sent is None:
            sent = OrderedDict()
        self._users[user_key] = sent  # the most recently active user goes last
        sent[client_id] = (message_id, now)
        sent.move_to_end(client_id)
        while len(sent) > PER_USER or (sent and now - next(iter(sent.values()))[1] > WINDOW):
            sent.popitem(last=False)
        while len(self._users) > USERS_MAX:
            self._users.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(sent) for sent in self._users.values())
