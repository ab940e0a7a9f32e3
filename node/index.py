"""The records held in memory, and the queries over them.

How this works: ``records`` maps every held id to its record; each room's
messages are kept twice (``RoomLog``): sorted by ``(hlc, origin, seq)`` for
display and scroll-back, and in arrival order so a reconnecting page gets
exactly what this router stored since the last record it saw.  Accounts and
moderation records are lists in arrival order; READ and SETTING records
are kept only the latest per key (``latest_by_key``, the store says which).
DIRECT records are kept per conversation (``conversations``, keyed by what
the store's policy says, never an int) in a ``RoomLog`` each, so every
query over a room (``latest``, ``since``, ``before``, ``after``...) takes a
conversation's key as well.  Loading is
linear in the logs' size plus one O(n log n) sort per room.

The index holds; it does not decide.  What is gone (expired, removed,
superseded) is node/horizons.py's, and node/store.py takes records out of
the index through ``remove``, ``expire`` and ``drop``.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field

from node.record import Record, RecordKind

MAX_HLC = (1 << 64) - 1


def parse_hlc(value: object) -> int | None:
    """An HLC given as an int or its decimal string (as pages send it); None
    for anything else, never an exception."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_HLC:
        return value
    return None


def _order_key(record: Record) -> tuple[int, str, int]:
    return record.order_key


def _hlc(record: Record) -> int:
    return record.hlc


@dataclass
class RoomLog:
    """One room: its records in arrival order, and sorted for display.

    Records arriving in order (the usual case) are appended; one arriving out
    of order marks the sorted list dirty, and the next read sorts it once.
    Timsort merges the already-sorted run with the newcomers, so merging a
    catch-up batch of k records into n costs O(n + k log k), never k inserts
    of O(n) each.
    """

    arrivals: list[Record] = field(default_factory=list)
    _sorted: list[Record] = field(default_factory=list)
    _dirty: bool = False

    def expire(self, horizon: int) -> list[Record]:
        """Drop the records stamped before ``horizon``; returns them."""
        records = self.sorted
        cut = bisect.bisect_left(records, horizon, key=_hlc)
        if cut == 0:
            return []
        gone, self._sorted = records[:cut], records[cut:]
        self.arrivals = [r for r in self.arrivals if r.hlc >= horizon]
        return gone

    def remove(self, rids: set[tuple[str, int]]) -> None:
        """Take records out (removed); O(n), and rare: the index calls it
        only for a log that holds one of them."""
        self.arrivals = [r for r in self.arrivals if (r.origin, r.seq) not in rids]
        self._sorted = [r for r in self._sorted if (r.origin, r.seq) not in rids]

    def add(self, record: Record) -> None:
        """Hold a record."""
        self.arrivals.append(record)
        if self._sorted and not self._dirty:
            last = self._sorted[-1]
            # hlc first: order_key makes two tuples, and hlcs seldom tie
            if last.hlc > record.hlc or (
                last.hlc == record.hlc and last.order_key > record.order_key
            ):
                self._dirty = True
        self._sorted.append(record)

    def before(self, hlc: int) -> list[Record]:
        """The records stamped before ``hlc``, sorted."""
        records = self.sorted
        return records[: bisect.bisect_left(records, hlc, key=_hlc)]

    @property
    def sorted(self) -> list[Record]:
        if self._dirty:
            self._sorted.sort(key=_order_key)
            self._dirty = False
        return self._sorted


class Index:
    """Every record held, by id, by room, by kind."""

    def __init__(self, rooms: int) -> None:
        self.records: dict[tuple[str, int], Record] = {}
        self.room_logs = {n: RoomLog() for n in range(1, rooms + 1)}
        self.accounts: list[Record] = []
        self.moderation: list[Record] = []
        self.latest_by_key: dict[Hashable, Record] = {}  # READ, SETTING: key -> latest
        self.conversations: dict[Hashable, RoomLog] = {}  # DIRECT records by conversation
        self.direct_at: dict[tuple[str, int], Hashable] = {}  # DIRECT id -> conversation
        self.max_hlc = 0

    # -- holding -------------------------------------------------------------

    def add(self, record: Record, conversation: Hashable | None = None) -> bool:
        """Hold a record where its kind belongs (a READ or SETTING record:
        the caller has made it the latest of its key; a DIRECT record: in
        ``conversation``); False if it belongs nowhere."""
        kind = record.kind
        rid = (record.origin, record.seq)
        if kind == RecordKind.DIRECT:
            if conversation is None or isinstance(conversation, int):
                return False
            log = self.conversations.get(conversation)
            if log is None:
                log = self.conversations[conversation] = RoomLog()
            log.add(record)
            self.direct_at[rid] = conversation
        elif kind == RecordKind.MESSAGE:
            room_log = self.room_logs.get(record.room)
            if room_log is None:
                return False
            room_log.add(record)
        elif kind == RecordKind.ACCOUNT:
            self.accounts.append(record)
        elif kind == RecordKind.MODERATION:
            self.moderation.append(record)
        elif kind not in (RecordKind.READ, RecordKind.SETTING):
            return False
        self.records[rid] = record
        self.max_hlc = max(self.max_hlc, record.hlc)
        return True

    def remove(self, rids: set[tuple[str, int]]) -> None:
        """Take messages out of the index and their rooms."""
        held = {rid for rid in rids if rid in self.records}
        if not held:
            return
        rooms = set()
        for rid in held:
            record = self.records.pop(rid)
            if record.kind == RecordKind.MESSAGE:
                rooms.add(record.room)
        for n in rooms:
            self.room_logs[n].remove(held)
        for key in {self.direct_at.pop(rid) for rid in held if rid in self.direct_at}:
            self.conversations[key].remove(held)

    def expire(self, horizon: int, rooms: Iterable[int] | None = None) -> list[Record]:
        """Drop the messages stamped before ``horizon`` (in ``rooms``,
        default all): they are expired; returns them."""
        gone: list[Record] = []
        for n in self.room_logs if rooms is None else rooms:
            gone += self.room_logs[n].expire(horizon)
        if rooms is None:  # retention: direct messages too
            for key, log in list(self.conversations.items()):
                gone += log.expire(horizon)
                if not log.arrivals:
                    del self.conversations[key]
        for record in gone:
            rid = (record.origin, record.seq)
            del self.records[rid]
            self.direct_at.pop(rid, None)
        return gone

    def drop(self, record: Record) -> None:
        """Take a READ or SETTING record out (superseded or expired)."""
        del self.records[(record.origin, record.seq)]

    # -- queries -------------------------------------------------------------
    # ``room``: a room's number, or a conversation's key (an unknown
    # conversation is an empty one).

    def log_of(self, room: Hashable) -> RoomLog:
        if isinstance(room, int):
            return self.room_logs[room]
        return self.conversations.get(room) or RoomLog()

    def get(self, origin: str, seq: int) -> Record | None:
        return self.records.get((origin, seq))

    def latest(self, room: Hashable, limit: int) -> list[Record]:
        records = self.log_of(room).sorted
        return records[-limit:] if limit > 0 else []

    def since(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Records stored in ``room`` after ``rid`` arrived, sorted.

        None if ``rid`` is not in this room (unknown or gone) or more than
        ``limit`` records came since: the caller then starts afresh with the
        latest history.
        """
        arrivals = self.log_of(room).arrivals
        origin, seq = rid
        # Only the last ``limit + 1`` arrivals can be ``rid``: no index of
        # positions (it took 80 bytes a record) for a search this short.
        for pos in range(len(arrivals) - 1, max(-1, len(arrivals) - limit - 2), -1):
            record = arrivals[pos]
            if record.seq == seq and record.origin == origin:
                return sorted(arrivals[pos + 1 :], key=_order_key)
        return None

    def last_arrival(self, room: Hashable) -> str | None:
        """Id of the record this room received last (for ``?after=``)."""
        arrivals = self.log_of(room).arrivals
        return arrivals[-1].id if arrivals else None

    def before(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Up to ``limit`` records sorted just before ``rid`` (scroll-back)."""
        record = self.records.get(rid)
        if record is None or not self._holds(room, record):
            return None
        records = self.log_of(room).sorted
        end = bisect.bisect_left(records, record.order_key, key=_order_key)
        return records[max(0, end - limit) : end]

    def _holds(self, room: Hashable, record: Record) -> bool:
        """Is held ``record`` one of ``room``'s (a room, or a conversation)?"""
        if isinstance(room, int):
            return record.kind == RecordKind.MESSAGE and record.room == room
        return self.direct_at.get((record.origin, record.seq)) == room

    def after(self, room: Hashable, hlc: int) -> list[Record]:
        """The messages of ``room`` stamped after ``hlc``, sorted."""
        records = self.log_of(room).sorted
        return records[bisect.bisect_right(records, hlc, key=_hlc) :]

    def count(self, room: Hashable) -> int:
        return len(self.log_of(room).sorted)

    def last_message(self, room: Hashable) -> Record | None:
        records = self.log_of(room).sorted
        return records[-1] if records else None

    def messages(self, room: Hashable) -> Iterator[Record]:
        return iter(self.log_of(room).sorted)
