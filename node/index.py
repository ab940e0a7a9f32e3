"""The records held in memory, and the queries over them.

How this works: ``records`` maps the held records' ids to them; each room's
messages are kept sorted by ``(hlc, origin, seq)`` for display and
scroll-back (``RoomLog``), with its last arrivals so a reconnecting page gets
exactly what this router stored since the last record it saw.  A room holds
its newest messages (``hot``, 1,000 to 2,000) as records; the older ones are
columns (node/cold.py: 36 bytes a message instead of about 600), read back
from the room's log by offset when a query reaches them.  Accounts and
moderation records are lists in arrival order; READ and SETTING records
are kept only the latest per key (``latest_by_key``, the store says which).
DIRECT records are kept per conversation (``conversations``, keyed by what
the store's policy says, never an int) in a ``RoomLog`` each, all as
records, so every query over a room (``latest``, ``since``, ``before``,
``after``...) takes a conversation's key as well.  Loading is linear in the
logs' size plus one O(n log n) sort per room.

The index holds; it does not decide.  What is gone (expired, removed,
superseded) is node/horizons.py's, and node/store.py takes records out of
the index through ``remove``, ``expire`` and ``drop``, and moves a room's
older messages to its columns once their lines are written (``settle``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator

from node.cold import Cold, Origins, Row
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


# A room remembers its last arrivals for ``since`` (a reconnecting page asks
# for at most ``HISTORY_LIMIT``, 100): the last this many held.
ARRIVALS_KEPT = 256

# Read a held record back from its log line: (offset, origin, seq) -> the
# record, or None when the line no longer holds it.
Reader = Callable[[int, str, int], "Record | None"]
# The same for the index: (room, offset, origin, seq) -> the record or None.
ColdReader = Callable[[int, int, str, int], "Record | None"]


class RoomLog:
    """One room: its records sorted for display, and its last arrivals.

    Records arriving in order (the usual case) are appended; one arriving out
    of order marks the sorted list dirty, and the next read sorts it once.
    Timsort merges the already-sorted run with the newcomers, so merging a
    catch-up batch of k records into n costs O(n + k log k), never k inserts
    of O(n) each.

    With ``cold`` (a room's log, not a conversation): the records past the
    newest ``hot`` are held as columns (node/cold.py) and read back from the
    log by offset when asked for.  ``settle`` moves them there; once settled,
    every cold record sorts before every record held as an object, so a
    query reads the columns' end and the objects as one sorted sequence.
    """

    __slots__ = ("_dirty", "_sorted", "arrivals", "cold", "offsets", "read")

    def __init__(self, cold: Cold | None = None, read: Reader | None = None) -> None:
        self.arrivals: deque[Record] = deque(maxlen=ARRIVALS_KEPT)  # the last arrivals held
        self._sorted: list[Record] = []  # held as objects, sorted once read
        self._dirty = False
        self.cold = cold
        self.read = read
        # Where the lines of the records held as objects start in the log
        # (only with ``cold``: a record moves there with its offset).
        self.offsets: dict[tuple[str, int], int] = {}

    # -- changing ----------------------------------------------------------------

    def add(self, record: Record, offset: int | None = None) -> None:
        """Hold a record (its line at ``offset`` in the log, if known)."""
        self.arrivals.append(record)
        if self._sorted and not self._dirty:
            last = self._sorted[-1]
            # hlc first: order_key makes two tuples, and hlcs seldom tie
            if last.hlc > record.hlc or (
                last.hlc == record.hlc and last.order_key > record.order_key
            ):
                self._dirty = True
        self._sorted.append(record)
        if self.cold is not None and offset is not None:
            self.offsets[(record.origin, record.seq)] = offset

    def settle(self, hot: int) -> list[Record]:
        """Move to the columns every record that sorts before their last and,
        past twice ``hot``, the oldest down to ``hot``; returns those moved."""
        cold = self.cold
        if cold is None:
            return []
        records = self.sorted
        if not records or (
            len(records) <= 2 * hot and (not cold.hlcs or records[0].hlc > cold.hlcs[-1])
        ):
            return []  # the usual case, at once: nothing sorts before the columns' last
        last = cold.last_key()
        move = bisect.bisect_left(records, last, key=_order_key) if last is not None else 0
        if len(records) > 2 * hot:
            move = max(move, len(records) - hot)
        offsets = self.offsets
        rows = []
        for record in records[:move]:
            offset = offsets.pop((record.origin, record.seq), None)
            if offset is None:  # not written yet: stays an object, and so do those after it
                break
            rows.append((record.hlc, record.origin, record.seq, offset))
        if not rows:
            return []
        cold.add(rows)
        moved, self._sorted = records[: len(rows)], records[len(rows) :]
        return moved

    def expire(self, horizon: int) -> list[tuple[str, int, RecordKind]]:
        """Drop the records stamped before ``horizon``; returns their ids."""
        gone: list[tuple[str, int, RecordKind]] = []
        if self.cold is not None:
            cut = self.cold.cut(self.cold.after(horizon - 1))
            gone += [(origin, seq, RecordKind.MESSAGE) for origin, seq in cut]
        records = self.sorted
        cut_at = bisect.bisect_left(records, horizon, key=_hlc)
        expired, self._sorted = records[:cut_at], records[cut_at:]
        for record in expired:
            self.offsets.pop((record.origin, record.seq), None)
        if gone or expired:
            self._keep_arrivals(lambda r: r.hlc >= horizon)
        return gone + [(r.origin, r.seq, r.kind) for r in expired]

    def remove(self, rids: set[tuple[str, int]]) -> list[tuple[str, int]]:
        """Take records out (removed): those held as objects the caller
        knows; returns those of the columns.  O(n), and rare."""
        self._keep_arrivals(lambda r: (r.origin, r.seq) not in rids)
        self._sorted = [r for r in self._sorted if (r.origin, r.seq) not in rids]
        for rid in rids:
            self.offsets.pop(rid, None)
        return self.cold.remove(rids) if self.cold is not None else []

    def fill_arrivals(self) -> None:
        """After a load: when the lines read whole left fewer than
        ``ARRIVALS_KEPT`` arrivals (those lines were gone: a clear, say),
        the columns' lines read last go before them."""
        cold = self.cold
        missing = (self.arrivals.maxlen or 0) - len(self.arrivals)
        if cold is None or missing <= 0 or not len(cold):
            return
        offset_at = cold.offsets.__getitem__
        # The arrivals held may be in the columns too (settled): the lines
        # read last are theirs, so look at that many more.
        have = {(r.origin, r.seq) for r in self.arrivals}
        last = heapq.nlargest(missing + len(have), range(len(cold)), key=offset_at)
        earlier = sorted((pos for pos in last if cold.rid(pos) not in have), key=offset_at)
        found = (self.cold_record(pos) for pos in earlier[-missing:])
        self.arrivals.extendleft(reversed([record for record in found if record is not None]))

    def _keep_arrivals(self, keep: Callable[[Record], bool]) -> None:
        self.arrivals = deque(filter(keep, self.arrivals), maxlen=self.arrivals.maxlen)

    def moved(self, rid: tuple[str, int], offset: int) -> None:
        """The log was rewritten: ``rid``'s line now starts at ``offset``."""
        if rid in self.offsets:
            self.offsets[rid] = offset
        elif self.cold is not None and (pos := self.cold.find(*rid)) is not None:
            self.cold.offsets[pos] = offset

    # -- reading -----------------------------------------------------------------

    @property
    def sorted(self) -> list[Record]:
        """The records held as objects, sorted."""
        if self._dirty:
            self._sorted.sort(key=_order_key)
            self._dirty = False
        return self._sorted

    def __len__(self) -> int:
        return len(self._sorted) + (len(self.cold) if self.cold is not None else 0)

    def in_cold(self, origin: str, seq: int) -> bool:
        return self.cold is not None and self.cold.find(origin, seq) is not None

    def cold_record(self, pos: int) -> Record | None:
        cold = self.cold
        assert cold is not None and self.read is not None
        origin, seq = cold.rid(pos)
        return self.read(cold.offsets[pos], origin, seq)

    def cold_records(self, start: int, end: int) -> list[Record]:
        """The columns' records from ``start`` to ``end``, read back (a line
        that no longer gives its record back is left out)."""
        found = (self.cold_record(pos) for pos in range(max(0, start), end))
        return [record for record in found if record is not None]

    def get_cold(self, origin: str, seq: int) -> Record | None:
        pos = self.cold.find(origin, seq) if self.cold is not None else None
        return self.cold_record(pos) if pos is not None else None

    def key_of(self, origin: str, seq: int) -> tuple[int, str, int] | None:
        hlc = self.cold.hlc_of(origin, seq) if self.cold is not None else None
        return (hlc, origin, seq) if hlc is not None else None

    def latest(self, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        records = self.sorted
        if limit <= len(records) or self.cold is None:
            return records[-limit:]
        n = len(self.cold)
        return self.cold_records(n - (limit - len(records)), n) + records

    def before(self, key: tuple[int, str, int], limit: int) -> list[Record]:
        """Up to ``limit`` records sorted just before ``key``."""
        records = self.sorted
        end = bisect.bisect_left(records, key, key=_order_key)
        if end >= limit or self.cold is None:
            return records[max(0, end - limit) : end]
        cold_end = self.cold.position(key) if end == 0 else len(self.cold)
        return self.cold_records(cold_end - (limit - end), cold_end) + records[:end]

    def after(self, hlc: int) -> Iterator[Record]:
        """The records stamped after ``hlc``, sorted, read as they are taken."""
        if self.cold is not None:
            for pos in range(self.cold.after(hlc), len(self.cold)):
                record = self.cold_record(pos)
                if record is not None:
                    yield record
        records = self.sorted
        yield from records[bisect.bisect_right(records, hlc, key=_hlc) :]

    def newest_first(self, hlc: int) -> Iterator[Record]:
        """``after(hlc)`` backwards: the newest first, so a count that stops
        early reads the columns only when the records held run out."""
        records = self.sorted
        yield from reversed(records[bisect.bisect_right(records, hlc, key=_hlc) :])
        if self.cold is not None:
            for pos in range(len(self.cold) - 1, self.cold.after(hlc) - 1, -1):
                record = self.cold_record(pos)
                if record is not None:
                    yield record

    def ids_before(self, hlc: int) -> set[tuple[str, int]]:
        """The ids of the records stamped before ``hlc``."""
        records = self.sorted
        ids = {(r.origin, r.seq) for r in records[: bisect.bisect_left(records, hlc, key=_hlc)]}
        if self.cold is not None:
            ids.update(self.cold.rid(pos) for pos in range(bisect.bisect_left(self.cold.hlcs, hlc)))
        return ids

    def hlc_at(self, pos: int) -> int:
        """The hlc of the ``pos``-th record in sorted order."""
        n = len(self.cold) if self.cold is not None else 0
        if pos < n:
            assert self.cold is not None
            return self.cold.hlcs[pos]
        return self.sorted[pos - n].hlc

    def last(self) -> Record | None:
        records = self.sorted
        if records:
            return records[-1]
        n = len(self.cold) if self.cold is not None else 0
        return self.cold_record(n - 1) if n else None

    def __iter__(self) -> Iterator[Record]:
        return self.after(-1)


class Index:
    """Every record held, by id, by room, by kind.

    ``records`` holds the records held as objects; with a ``read``er, each
    room's older messages are held as columns instead (``RoomLog``), found
    by ``holds`` and ``get`` and counted by ``len``.
    """

    def __init__(self, rooms: int, read: ColdReader | None = None, hot: int = 0) -> None:
        self.records: dict[tuple[str, int], Record] = {}
        self.hot = hot
        self.origins = Origins()
        self.room_logs = {
            n: RoomLog(Cold(self.origins), _reader(read, n))
            if read is not None and hot > 0
            else RoomLog()
            for n in range(1, rooms + 1)
        }
        self.accounts: list[Record] = []
        self.moderation: list[Record] = []
        self.latest_by_key: dict[Hashable, Record] = {}  # READ, SETTING: key -> latest
        self.conversations: dict[Hashable, RoomLog] = {}  # DIRECT records by conversation
        self.direct_at: dict[tuple[str, int], Hashable] = {}  # DIRECT id -> conversation
        self.max_hlc = 0

    # -- holding -------------------------------------------------------------

    def add(
        self, record: Record, conversation: Hashable | None = None, offset: int | None = None
    ) -> bool:
        """Hold a record where its kind belongs (a READ or SETTING record:
        the caller has made it the latest of its key; a DIRECT record: in
        ``conversation``; a message: its line at ``offset`` in its room's
        log, if known); False if it belongs nowhere."""
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
            room_log.add(record, offset)
        elif kind == RecordKind.ACCOUNT:
            self.accounts.append(record)
        elif kind == RecordKind.MODERATION:
            self.moderation.append(record)
        elif kind not in (RecordKind.READ, RecordKind.SETTING):
            return False
        self.records[rid] = record
        self.max_hlc = max(self.max_hlc, record.hlc)
        return True

    def hold_cold(self, room: int, rows: list[Row]) -> None:
        """Hold messages of ``room`` in its columns at once (a load's older
        lines, none held yet): ``(hlc, origin, seq, offset)`` each."""
        cold = self.room_logs[room].cold
        assert cold is not None
        rows.sort(key=lambda row: row[:3])
        cold.add(rows)
        self.max_hlc = max(self.max_hlc, rows[-1][0])

    def settle(self, rooms: Iterable[int] | None = None) -> None:
        """Each room's (of ``rooms``, default all) older messages to its
        columns (``RoomLog.settle``): called once what was added is written."""
        if self.hot:
            records = self.records
            for n in self.room_logs if rooms is None else rooms:
                for record in self.room_logs[n].settle(self.hot):
                    del records[(record.origin, record.seq)]

    def remove(self, rids: set[tuple[str, int]]) -> None:
        """Take messages out of the index and their rooms."""
        held = {rid for rid in rids if rid in self.records}
        rooms = set()
        for rid in held:
            record = self.records.pop(rid)
            if record.kind == RecordKind.MESSAGE:
                rooms.add(record.room)
        for n, room_log in self.room_logs.items():
            if n in rooms or (room_log.cold is not None and len(room_log.cold)):
                room_log.remove(rids)
        for key in {self.direct_at.pop(rid) for rid in held if rid in self.direct_at}:
            self.conversations[key].remove(held)

    def expire(
        self, horizon: int, rooms: Iterable[int] | None = None
    ) -> list[tuple[str, int, RecordKind]]:
        """Drop the messages stamped before ``horizon`` (in ``rooms``,
        default all): they are expired; returns their ids and kinds."""
        gone: list[tuple[str, int, RecordKind]] = []
        for n in self.room_logs if rooms is None else rooms:
            gone += self.room_logs[n].expire(horizon)
        if rooms is None:  # retention: direct messages too
            for key, log in list(self.conversations.items()):
                gone += log.expire(horizon)
                if not len(log):
                    del self.conversations[key]
        for origin, seq, _ in gone:
            rid = (origin, seq)
            self.records.pop(rid, None)
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

    def holds(self, origin: str, seq: int) -> bool:
        """Is ``(origin, seq)`` held (as an object or in a room's columns)?"""
        return (origin, seq) in self.records or any(
            room_log.in_cold(origin, seq) for room_log in self.room_logs.values()
        )

    def holds_record(self, record: Record) -> bool:
        """``holds`` for a record at hand: only its own room's columns."""
        rid = (record.origin, record.seq)
        if rid in self.records:
            return True
        room_log = self.room_logs.get(record.room) if record.kind == RecordKind.MESSAGE else None
        cold = room_log.cold if room_log is not None else None
        # newer than every record of the columns: not among them (no search)
        if cold is None or not cold.hlcs or record.hlc > cold.hlcs[-1]:
            return False
        return cold.find(*rid) is not None

    def get(self, origin: str, seq: int) -> Record | None:
        record = self.records.get((origin, seq))
        if record is not None or not self.hot:
            return record
        for room_log in self.room_logs.values():
            record = room_log.get_cold(origin, seq)
            if record is not None:
                return record
        return None

    def __len__(self) -> int:
        return len(self.records) + self.in_columns()

    def in_columns(self) -> int:
        """How many messages the rooms hold as columns."""
        return sum(len(log.cold) for log in self.room_logs.values() if log.cold is not None)

    def ids(self) -> Iterator[tuple[str, int]]:
        """Every id held."""
        yield from self.records
        for room_log in self.room_logs.values():
            if room_log.cold is not None:
                yield from (room_log.cold.rid(pos) for pos in range(len(room_log.cold)))

    def max_hlc_of(self, origin: str) -> int:
        """The latest hlc of the records held from ``origin``."""
        held = (r.hlc for r in self.records.values() if r.origin == origin)
        cold = (
            log.cold.max_hlc_of(origin) for log in self.room_logs.values() if log.cold is not None
        )
        return max(max(held, default=0), max(cold, default=0))

    def latest(self, room: Hashable, limit: int) -> list[Record]:
        return self.log_of(room).latest(limit)

    def since(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Records stored in ``room`` after ``rid`` arrived, sorted.

        None if ``rid`` is not in this room (unknown or gone) or more than
        ``limit`` records came since (``limit`` below ``ARRIVALS_KEPT``):
        the caller then starts afresh with the latest history.
        """
        arrivals = self.log_of(room).arrivals
        origin, seq = rid
        # Only the last ``limit + 1`` arrivals can be ``rid``: no index of
        # positions (it took 80 bytes a record) for a search this short.
        for pos in range(len(arrivals) - 1, max(-1, len(arrivals) - limit - 2), -1):
            record = arrivals[pos]
            if record.seq == seq and record.origin == origin:
                return sorted(itertools.islice(arrivals, pos + 1, None), key=_order_key)
        return None

    def last_arrival(self, room: Hashable) -> str | None:
        """Id of the record this room received last (for ``?after=``)."""
        arrivals = self.log_of(room).arrivals
        return arrivals[-1].id if arrivals else None

    def before(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Up to ``limit`` records sorted just before ``rid`` (scroll-back)."""
        log = self.log_of(room)
        record = self.records.get(rid)
        if record is not None:
            if not self._holds(room, record):
                return None
            key = record.order_key
        else:
            found = log.key_of(*rid)
            if found is None:
                return None
            key = found
        return log.before(key, limit)

    def _holds(self, room: Hashable, record: Record) -> bool:
        """Is held ``record`` one of ``room``'s (a room, or a conversation)?"""
        if isinstance(room, int):
            return record.kind == RecordKind.MESSAGE and record.room == room
        return self.direct_at.get((record.origin, record.seq)) == room

    def after(self, room: Hashable, hlc: int) -> Iterator[Record]:
        """The messages of ``room`` stamped after ``hlc``, sorted (those of
        the columns read as they are taken)."""
        return self.log_of(room).after(hlc)

    def count(self, room: Hashable) -> int:
        return len(self.log_of(room))

    def last_message(self, room: Hashable) -> Record | None:
        return self.log_of(room).last()

    def messages(self, room: Hashable) -> Iterator[Record]:
        return iter(self.log_of(room))


def _reader(read: ColdReader | None, room: int) -> Reader | None:
    if read is None:
        return None
    return lambda offset, origin, seq: read(room, offset, origin, seq)
