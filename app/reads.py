"""Read markers and unread counts.

How this works: a READ record says how far a user has read a room: its body
is ``{"user", "room", "upto"}``, ``upto`` an HLC.  The store keeps only the
latest per (user's name key, room) (``marker_key``), ordered by ``(upto,
hlc, origin, seq)`` (``marker_rank``) so every router keeps the same one;
the others are gone, superseded (node/store.py, through app/moderation.py
``ChatPolicy``).  Names compare without case (app/accounts.py ``name_key``).

``unread`` counts the messages of a room after the marker that the user did
not write, from the store's sorted messages.

A page moves a marker often (every message it shows); ``Throttle`` writes
a marker's record at most every interval per key, holding the latest in
between: a room's READ records and a conversation's SETTING records alike.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import gevent

from app.accounts import name_key
from node.record import Record
from node.store import Store, parse_hlc

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Throttle(Generic[K, V]):
    """Markers written at most every ``interval`` seconds per key.

    ``mark(key, value)`` holds the latest value of a key; it is written at
    once (``write(key, value)``) if the key's last write is ``interval``
    ago, else when that much has passed, in a greenlet started then.
    ``write`` says whether it wrote (it may find the marker moved further
    by another router's meanwhile).  ``flush`` writes every held value (at
    shutdown)."""

    def __init__(
        self,
        write: Callable[[K, V], Record | None],
        interval: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._write = write
        self._interval = interval
        self._monotonic = monotonic
        self.pending: dict[K, V] = {}
        self._written: dict[K, float] = {}

    def mark(self, key: K, value: V) -> None:
        waiting = key in self.pending
        self.pending[key] = value
        since = self._monotonic() - self._written.get(key, float("-inf"))
        if since >= self._interval:
            self.write(key)
        elif not waiting:
            gevent.spawn_later(self._interval - since, self.write, key)

    def write(self, key: K) -> Record | None:
        """Write the value held for ``key``, if any; the record written."""
        if key not in self.pending:
            return None
        value = self.pending.pop(key)
        record = self._write(key, value)
        if record is not None:
            self._written[key] = self._monotonic()
        return record

    def flush(self) -> None:
        for key in list(self.pending):
            self.write(key)


def read_upto(record: Record) -> int | None:
    """A READ record's ``upto``; None if malformed."""
    return parse_hlc(record.body.get("upto"))


def marker_key(record: Record) -> tuple[str, int] | None:
    """(user's name key, room) of a READ record; None if malformed."""
    user = record.body.get("user")
    if not isinstance(user, str) or read_upto(record) is None:
        return None
    return name_key(user), record.room


def marker_rank(record: Record) -> tuple[int, int, str, int]:
    return (read_upto(record) or 0, *record.order_key)


def read_marker(store: Store, user: str, room: int) -> int:
    """The HLC up to which ``user`` has read ``room`` (0: never)."""
    record = store.latest_of((name_key(user), room))
    return (read_upto(record) or 0) if record is not None else 0


def unread(store: Store, room: int, user: str, since: int = 0, limit: int = 1000) -> int:
    """Messages in ``room`` after ``user``'s read marker (and after
    ``since``), not written by ``user``; counting stops at ``limit``."""
    key, n = name_key(user), 0
    for record in store.newest_first(room, max(since, read_marker(store, user, room))):
        author = record.body.get("author")
        if not (isinstance(author, str) and name_key(author) == key):
            n += 1
            if n >= limit:
                break
    return n
