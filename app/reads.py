"""Read markers and unread counts.

How this works: a READ record says how far a user has read a room: its body
is ``{"user", "room", "upto"}``, ``upto`` an HLC.  The store keeps only the
latest per (user's name key, room) (``marker_key``), ordered by ``(upto,
hlc, origin, seq)`` (``marker_rank``) so every router keeps the same one;
the others are gone, superseded (node/store.py, through app/moderation.py
``ChatPolicy``).  Names compare without case (app/accounts.py ``name_key``).

``unread`` counts the messages of a room after the marker that the user did
not write, from the store's sorted messages.
"""

from __future__ import annotations

from app.accounts import name_key
from node.record import Record
from node.store import Store, parse_hlc


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
