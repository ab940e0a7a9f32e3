"""What a record does to other records: the app's to say, the store's to keep.

How this works: node/ holds records without knowing what their bodies mean.
Two kinds act on others, and the store asks a ``RecordPolicy`` (passed in
when the store is made, so loading already knows) what they do:

- a MODERATION record may *remove* records by id (``removes``) or *cut* its
  room: every message stamped before an HLC (``cuts``).  The store makes
  those messages gone, in any arrival order and at load;
- READ and SETTING records are kept only the latest per key
  (``supersedes_key``, ordered by ``rank``); every other one is gone,
  superseded;
- a DIRECT record belongs to one conversation (``conversation``): the
  store keeps each conversation's records as it keeps a room's.

app/moderation.py ``ChatPolicy`` is the chat's policy.  ``INERT`` (the
default) says no record acts on another and no READ record has a key (so
none is held) and no DIRECT record has a conversation: enough for tools
and benchmarks that hold messages.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Protocol

from node.record import Record


class RecordPolicy(Protocol):
    def removes(self, record: Record) -> Iterable[tuple[str, int]]:
        """Ids a MODERATION record removes (none: an empty iterable)."""
        ...

    def cuts(self, record: Record) -> int | None:
        """The HLC before which a MODERATION record removes its room's
        messages (it cuts the room), or None."""
        ...

    def supersedes_key(self, record: Record) -> Hashable | None:
        """The key a READ or SETTING record is the latest of; None if it is
        malformed.  Keys of the two kinds never compare equal."""
        ...

    def rank(self, record: Record) -> Any:
        """Orders the records of one key: the highest is kept (the same
        on every router, so ties must be broken by the record's id)."""
        ...

    def conversation(self, record: Record) -> Hashable | None:
        """The conversation a DIRECT record belongs to (None: malformed,
        not held).  Never an int: ints name rooms."""
        ...


class InertPolicy:
    """No record acts on another."""

    def removes(self, record: Record) -> Iterable[tuple[str, int]]:
        return ()

    def cuts(self, record: Record) -> int | None:
        return None

    def supersedes_key(self, record: Record) -> Hashable | None:
        return None

    def rank(self, record: Record) -> Any:
        return record.order_key

    def conversation(self, record: Record) -> Hashable | None:
        return None


INERT = InertPolicy()
