"""The data folder: records on disk and in memory, and what is gone.

How this works: ``Store`` composes four parts and keeps them consistent:

- node/logs.py: the log files (one JSON record per line, appended and
  flushed, fsynced in batches, rewritten only atomically, torn tails cut);
- node/index.py: the records held in memory and the queries over them;
- node/horizons.py: what is gone for good here, and why (expired, removed,
  superseded, reported), with the horizons and cuts kept in ``state.json``;
- node/seqs.py: our own seqs, reserved durably before use.

A record is checked, then held (``_accept``), then written: what cannot be
written is not held, and nobody is told of a record before it is flushed.
What a record does to others is the app's to say (node/policy.py, passed in
when the store is made): the store applies it the same in any arrival order
and at load, where moderation.log is read first so a removed message is
never even loaded.  DIRECT records (direct.log) are held per conversation,
the key the policy gives, and expire with the messages; SETTING records
(settings.log) are the latest per key, as READ records, but never expire.
``compact()`` takes the lines of gone records out of the files; until then
a restart finds them gone again from ``state.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path

from node.cold import Row
from node.horizons import MAX_GONE_RUN, REFUSED, STATE_FILE, Gone
from node.index import ARRIVALS_KEPT, MAX_HLC, Index, RoomLog, parse_hlc
from node.logs import (
    ACCOUNTS_LOG,
    DIRECT_LOG,
    KIND_NAMES,
    MAX_LINE_BYTES,
    MODERATION_LOG,
    NODE_ID_FILE,
    READS_LOG,
    SETTINGS_LOG,
    TORN_SUFFIX,
    Logs,
    decode_line,
    decode_or_none,
    encode_line,
    has_body,
    load_or_make_node_id,
    log_name,
    room_log_name,
    write_atomically,
)
from node.policy import INERT, RecordPolicy
from node.record import Record, RecordKind, VersionVector
from node.seqs import SEQ_BLOCK, SEQ_FILE, SeqExhausted, SeqReservation

log = logging.getLogger(__name__)

__all__ = [
    "ACCOUNTS_LOG",
    "DIRECT_LOG",
    "MAX_GONE_RUN",
    "MAX_HLC",
    "MAX_LINE_BYTES",
    "MODERATION_LOG",
    "NODE_ID_FILE",
    "READS_LOG",
    "SEQ_BLOCK",
    "SEQ_FILE",
    "SETTINGS_LOG",
    "STATE_FILE",
    "TORN_SUFFIX",
    "RoomLog",
    "SeqExhausted",
    "Store",
    "decode_line",
    "encode_line",
    "parse_hlc",
    "room_log_name",
    "write_atomically",
]


# Messages a room holds as records (node/cold.py says why): the newest
# ``HOT`` to twice that; the older ones are columns and their log lines.
# A page's history (100) and a scroll-back or two stay in memory.
HOT = 1000
SETTLE_EVERY = 4096  # lines read at load between moving older messages to columns


class Held(Mapping[tuple[str, int], Record]):
    """The records held, by id, as a read-only mapping: those held as
    objects and those of the rooms' columns (read back when asked for)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def __getitem__(self, rid: tuple[str, int]) -> Record:
        record = self._index.get(*rid)
        if record is None:
            raise KeyError(rid)
        return record

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, tuple) and len(rid) == 2 and self._index.holds(*rid)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return self._index.ids()

    def __len__(self) -> int:
        return len(self._index)


class _RoomHolds:
    """``in``: is this id one of the room's held messages?  (compact())"""

    def __init__(
        self, records: dict[tuple[str, int], Record], room_log: RoomLog, room: int
    ) -> None:
        self.records, self.room_log, self.room = records, room_log, room

    def __contains__(self, rid: object) -> bool:
        if not isinstance(rid, tuple):
            return False
        record = self.records.get(rid)
        if record is not None:
            return record.kind == RecordKind.MESSAGE and record.room == self.room
        return self.room_log.in_cold(*rid)


class Store:
    """The data folder: node id, logs, the records held and those gone."""

    def __init__(
        self,
        data_dir: Path | str,
        rooms: int,
        *,
        policy: RecordPolicy = INERT,
        hot: int = HOT,
    ) -> None:
        if rooms < 1:
            raise ValueError("a router serves at least one room")
        if hot < 1:
            raise ValueError("a room holds at least one message as a record")
        self.data_dir = Path(data_dir)
        self.rooms = rooms
        self.policy = policy
        self.vector = VersionVector()  # held, and gone (which counts as held)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = load_or_make_node_id(self.data_dir)
        self.logs = Logs(self.data_dir)
        self.held = Index(rooms, read=self._read_cold, hot=hot)
        self._rooms_by_log = {room_log_name(n): n for n in range(1, rooms + 1)}
        self.cold_misses = 0  # records of the columns whose line did not give them back
        self.gone = Gone(self.data_dir, self.vector, self.node_id)
        self.seqs = SeqReservation(self.data_dir, self.node_id, self.vector)
        self.skipped_lines = 0  # lines that are not valid records, kept in place
        self.gone_lines = 0  # READ lines gone since the last compact(), still in reads.log
        # While loading: the seqs held, per origin, for the vector at the end
        # (``VersionVector.add_many``): a room's log holds an origin's seqs
        # with gaps (its other rooms'), and adding them one by one cost a
        # search each.  None once loaded.
        self._loaded_seqs: dict[str, list[int]] | None = {}
        self.gone.load()
        self._load()
        self.seqs.load()

    # -- what others read ------------------------------------------------------

    @property
    def index(self) -> Mapping[tuple[str, int], Record]:
        """Every record held, by id (those of the columns read back)."""
        return Held(self.held)

    @property
    def accounts(self) -> list[Record]:
        return self.held.accounts

    @property
    def moderation(self) -> list[Record]:
        return self.held.moderation

    @property
    def latest_by_key(self) -> dict[Hashable, Record]:
        return self.held.latest_by_key

    @property
    def max_hlc(self) -> int:
        return self.held.max_hlc

    @property
    def torn_bytes(self) -> int:
        return self.logs.torn_bytes

    @property
    def recovery(self) -> list[tuple[int, int]]:
        return self.seqs.recovery

    @property
    def horizon(self) -> int:
        return self.gone.horizon

    @property
    def size_horizon(self) -> dict[int, int]:
        return self.gone.size_horizon

    @property
    def room_horizon(self) -> dict[int, int]:
        return self.gone.room_horizon

    # -- loading -------------------------------------------------------------

    def _load(self) -> None:
        names = [MODERATION_LOG]  # first: a removed message must not even be loaded
        names += [room_log_name(room) for room in range(1, self.rooms + 1)]
        for name in [*names, ACCOUNTS_LOG, READS_LOG, DIRECT_LOG, SETTINGS_LOG]:
            self._load_log(name)
        self.held.settle()
        loaded, self._loaded_seqs = self._loaded_seqs or {}, None
        for origin, seqs in loaded.items():
            self.vector.add_many(origin, seqs)
        self.gone.loaded()

    def _load_log(self, name: str) -> None:
        gone = self.gone
        room = self._rooms_by_log.get(name)
        columns = room is not None and self.held.room_logs[room].cold is not None
        # A room's older lines are held as columns: read without their bodies
        # (checked all the same), all but those that may end up records.
        bodies_last = max(2 * self.held.hot, 2 * ARRIVALS_KEPT) if columns else None
        older: list[Row] = []  # such lines, not yet in the columns
        older_ids: set[tuple[str, int]] = set()
        for number, offset, record in self.logs.records(name, bodies_last):
            if number % SETTLE_EVERY == 0:
                self._hold_older(room, older, older_ids)
                self.held.settle()  # the older messages to columns as the log is read
            if record is not None and not has_body(record):
                if not self._load_older(name, record, offset, older, older_ids):
                    self.skipped_lines += 1
                    log.warning("%s:%d: skipped a line that is not a valid record", name, number)
                continue
            if older:  # a line read whole: the older ones go first (order of arrival)
                self._hold_older(room, older, older_ids)
            if record is not None and gone.is_expired(record):
                gone.expired(record.origin, record.seq)  # still in the file until compact()
                if record.kind in (RecordKind.READ, RecordKind.DIRECT):
                    self.gone_lines += 1
            elif record is not None and gone.is_removed(record):
                gone.remove({(record.origin, record.seq)})
            elif (
                record is None
                # a message is read back from its own room's log: one in
                # another log (put there by hand) is not held
                or (record.kind == RecordKind.MESSAGE and name != room_log_name(record.room))
                or self.held.holds_record(record)
                or not (self._hold(record, offset) or self._superseded(record))
            ):
                self.skipped_lines += 1
                log.warning("%s:%d: skipped a line that is not a valid record", name, number)

        self._hold_older(room, older, older_ids)
        if columns and room is not None:
            self.held.settle()
            self.held.room_logs[room].fill_arrivals()

    def _load_older(
        self,
        name: str,
        record: Record,
        offset: int,
        older: list[Row],
        older_ids: set[tuple[str, int]],
    ) -> bool:
        """A message read without its body (``_load_log``): noted as gone,
        or to be held in the columns; False if it is no valid record here."""
        rid = (record.origin, record.seq)
        if self.gone.is_expired(record):
            self.gone.expired(*rid)
        elif self.gone.is_removed(record):
            self.gone.remove({rid})
        elif (
            name != room_log_name(record.room) or rid in older_ids or self.held.holds_record(record)
        ):
            return False
        else:
            older.append((record.hlc, record.origin, record.seq, offset))
            older_ids.add(rid)
            assert self._loaded_seqs is not None
            self._loaded_seqs.setdefault(record.origin, []).append(record.seq)
        return True

    def _hold_older(
        self, room: int | None, older: list[Row], older_ids: set[tuple[str, int]]
    ) -> None:
        if older and room is not None:
            self.held.hold_cold(room, older)
        older.clear()
        older_ids.clear()

    # -- writing -------------------------------------------------------------

    def append(self, record: Record) -> bool:
        """Store a record: appended and flushed.  False if already held or gone.

        Raises ValueError for a record that belongs nowhere (our own misuse;
        the mesh validates what it receives before it gets here).
        """
        self._check(record)
        line = encode_line(record)  # before _accept: what cannot be written is not held
        lf = self.logs.open(log_name(record))  # nor what has no open log (OSError: EMFILE)
        if not self._accept(record, self.logs.end(lf)):
            return False
        self.logs.write(lf, line)
        if record.kind == RecordKind.MESSAGE:
            self.held.settle((record.room,))
        return True

    def append_many(self, records: list[Record]) -> list[Record]:
        """Store a batch (a catch-up burst): one write and flush per log.

        Returns the records that were new, in the order given.
        """
        encoded = []
        for record in records:  # before anything is held or written: all or nothing
            self._check(record)
            encoded.append(encode_line(record))
        # Every log the batch may write is opened before anything is held: an
        # OSError (EMFILE) leaves the store as it was, and the peer resends.
        files = {name: self.logs.open(name) for name in {log_name(r) for r in records}}
        new: list[Record] = []
        lines: dict[str, list[bytes]] = {}
        ends = {name: self.logs.end(lf) for name, lf in files.items()}
        for record, line in zip(records, encoded, strict=True):
            name = log_name(record)
            if self._accept(record, ends[name]):
                new.append(record)
                lines.setdefault(name, []).append(line)
                ends[name] += len(line)
        for name, chunk in lines.items():
            self.logs.write(files[name], b"".join(chunk))
        self.held.settle({r.room for r in new if r.kind == RecordKind.MESSAGE})
        return new

    def _check(self, record: Record) -> None:
        if (
            record.kind in (RecordKind.MESSAGE, RecordKind.MODERATION, RecordKind.READ)
            and record.room
            and record.room not in self.held.room_logs
        ):
            raise ValueError(f"no room {record.room} on this router")
        if record.kind not in KIND_NAMES:
            raise ValueError(f"unknown record kind {record.kind!r}")

    def _accept(self, record: Record, offset: int) -> bool:
        """Hold a record (its line to be written at ``offset``); False if it
        is held already, gone, or belongs nowhere."""
        if self.held.holds_record(record) or self.gone.is_expired(record):
            return False
        if self.gone.is_removed(record):
            self.gone.arrived_removed(record)
            return False
        return self._hold(record, offset)

    def _hold(self, record: Record, offset: int | None = None) -> bool:
        """Hold a record that is neither held nor gone (its line at
        ``offset``); False if it belongs nowhere or is superseded on arrival."""
        conversation = None
        if record.kind in (RecordKind.READ, RecordKind.SETTING):
            if not self._take_latest(record):
                return False
        elif record.kind == RecordKind.MODERATION:
            self._act(record)
        elif record.kind == RecordKind.DIRECT:
            conversation = self.policy.conversation(record)
        if not self.held.add(record, conversation, offset):
            return False
        if self._loaded_seqs is None:
            self.vector.add(record.origin, record.seq)
        else:  # loading: the vector is made at the end (``_load``)
            self._loaded_seqs.setdefault(record.origin, []).append(record.seq)
        return True

    # -- what records do to others (node/policy.py) ------------------------------

    def _take_latest(self, record: Record) -> bool:
        """Make a READ or SETTING record the latest of its key if it is; the
        other of the two is gone, superseded.  False if ``record`` is not held."""
        key = self.policy.supersedes_key(record)
        if key is None or (
            record.kind == RecordKind.READ and record.room not in self.held.room_logs
        ):
            return False
        latest = self.held.latest_by_key
        current = latest.get(key)
        if current is not None and self.policy.rank(current) >= self.policy.rank(record):
            self._supersede(record)
            return False
        if current is not None:
            self.held.drop(current)
            self._supersede(current)
        latest[key] = record
        return True

    def _supersede(self, record: Record) -> None:
        self.gone.superseded(record)
        self.gone_lines += 1

    def _superseded(self, record: Record) -> bool:
        """A READ or SETTING record that is gone, superseded: its line still
        in the file."""
        rid = (record.origin, record.seq)
        kinds = (RecordKind.READ, RecordKind.SETTING)
        return record.kind in kinds and rid not in self.index and rid in self.vector

    def _act(self, record: Record) -> None:
        """Remove what a MODERATION record removes; cut its room if it cuts."""
        rids = set(self.policy.removes(record))
        if rids:
            self._remove(rids)
        hlc = self.policy.cuts(record)
        if hlc is not None and record.room in self.held.room_logs:
            cut = self.gone.cut(record, hlc)
            if cut is not None:
                self._remove(self.held.room_logs[record.room].ids_before(cut))

    def _remove(self, rids: set[tuple[str, int]]) -> None:
        self.gone.remove(rids)
        self.held.remove(rids)

    def limit_clears(self, hlc: int) -> None:
        """A peer's cut (a clear, in the app's words) stored from now on
        removes nothing stamped after ``hlc``.  The app passes its clock's
        latest timestamp: a clear from a router whose clock runs far ahead
        removes what is here, not every message this router stamps until
        its own clock gets there."""
        self.gone.limit_cuts(hlc)

    # -- gone ------------------------------------------------------------------

    def is_gone(self, origin: str, seq: int) -> bool:
        """True if ``(origin, seq)`` existed and is gone for good here:
        expired, removed, superseded, reported gone by a peer, or refused."""
        return not self.held.holds(origin, seq) and self.gone.holds(origin, seq)

    def gone_through(self, origin: str, seq: int) -> int:
        """``sync.RecordSource.gone_through``: if ``(origin, seq)`` is gone
        here, the last seq of the run of gone seqs it starts (at most
        ``MAX_GONE_RUN`` long); else 0."""
        return self.gone.through(origin, seq, Held(self.held))

    def note_gone(self, origin: str, first: int, last: int) -> None:
        """A peer says these seqs are gone for good: answer the same."""
        self.gone.reported(origin, first, last)

    def save_state_if_changed(self) -> None:
        self.gone.save_if_changed()

    # -- retention -------------------------------------------------------------

    def expire(self, horizon: int) -> int:
        """Messages, DIRECT and READ records stamped before ``horizon`` (an
        HLC) are gone; returns how many messages (direct ones included).
        Memory only: ``compact()`` takes them out of the files."""
        if not self.gone.move_horizon(horizon):
            return 0
        expired = self.held.expire(horizon)
        for origin, seq, kind in expired:
            self.gone.expired(origin, seq)
            if kind == RecordKind.DIRECT:
                self.gone_lines += 1  # still in direct.log until compact()
        latest = self.held.latest_by_key
        for key, record in list(latest.items()):
            if record.hlc < horizon and record.kind == RecordKind.READ:  # settings stay
                del latest[key]
                self.held.drop(record)
                self.gone.expired(record.origin, record.seq)
                self.gone.dirty = True  # saved below, though no message went
                self.gone_lines += 1
        if expired or self.gone.dirty:  # the horizon alone moves every check: no flash write
            self.gone.save()
        return len(expired)

    def trim(self, room: int, keep: int) -> int:
        """The size guard: keep the ``keep`` newest messages of a room; the
        older ones are gone, expired (and stay gone: a per-room horizon)."""
        room_log = self.held.room_logs[room]
        if len(room_log) <= keep:
            return 0
        if not self.gone.move_size_horizon(room, room_log.hlc_at(len(room_log) - keep)):
            return 0
        expired = self.held.expire(self.gone.size_horizon[room], [room])
        for origin, seq, _ in expired:
            self.gone.expired(origin, seq)
        self.gone.save()
        return len(expired)

    def compact(self) -> int:
        """Rewrite every room log, reads.log, direct.log and settings.log
        with only the records still held (temp file, fsync, rename: a crash
        at any point leaves the old or the new log, both valid).  Rare on purpose: routers write to
        flash.  Returns the number of logs rewritten."""
        self.gone.save_if_changed()  # what leaves the files stays gone
        rewritten = 0
        for n, room_log in self.held.room_logs.items():
            keep = _RoomHolds(self.held.records, room_log, n)
            rewritten += self.logs.rewrite_without(room_log_name(n), keep, room_log.moved)
        latest = self.held.latest_by_key.values()
        held: dict[str, set[tuple[str, int]]] = {
            READS_LOG: {(r.origin, r.seq) for r in latest if r.kind == RecordKind.READ},
            SETTINGS_LOG: {(r.origin, r.seq) for r in latest if r.kind == RecordKind.SETTING},
            DIRECT_LOG: set(self.held.direct_at),
        }
        rewritten += sum(self.logs.rewrite_without(name, keep) for name, keep in held.items())
        self.gone_lines = 0
        return rewritten

    def sync(self) -> int:
        """fsync every log written since the last sync; returns how many."""
        return self.logs.sync()

    def close(self) -> None:
        self.logs.sync()
        self.gone.save_if_changed()
        self.seqs.release()
        self.logs.close()

    # -- reading -------------------------------------------------------------

    def next_seq(self) -> int:
        """The seq for the next record this router makes, reserved durably
        (node/seqs.py).  Raises ``SeqExhausted`` past ``MAX_SEQ``."""
        return self.seqs.next()

    def get(self, origin: str, seq: int) -> Record | None:
        return self.held.get(origin, seq)

    def holds(self, origin: str, seq: int) -> bool:
        """Is ``(origin, seq)`` held?  (``get`` without reading a line.)"""
        return self.held.holds(origin, seq)

    def max_hlc_of(self, origin: str) -> int:
        """The latest hlc of the records held from ``origin`` (0: none)."""
        return self.held.max_hlc_of(origin)

    def _read_cold(self, room: int, offset: int, origin: str, seq: int) -> Record | None:
        """A message of the columns, read back from its room's log."""
        record = self.logs.read_record(room_log_name(room), offset)
        if (
            record is None
            or record.seq != seq
            or record.origin != origin
            or record.kind != RecordKind.MESSAGE
            or record.room != room
        ):
            self.cold_misses += 1
            log.warning("room %d: the line at %d no longer holds %s:%d", room, offset, origin, seq)
            return None
        return record

    def latest(self, room: Hashable, limit: int) -> list[Record]:
        return self.held.latest(room, limit)

    def recent(self, room: Hashable) -> list[Record]:
        """The messages of ``room`` held as records, sorted: the newest
        (all of a conversation's).  ``scan`` gives the others."""
        return list(self.held.log_of(room).sorted)

    def scan(
        self, room: Hashable, contains: str | None = None, *, folded: bool = True
    ) -> Iterator[Record]:
        """The messages of ``room`` held as columns (not ``recent``), in the
        log's order, read in one pass over the log: with ``contains``, only
        those whose line, casefolded, holds it (``folded=False``: the line
        as it is, found by a search over the file's bytes, no line taken
        apart but those that hold it)."""
        room_log = self.held.log_of(room)
        cold = room_log.cold
        if cold is None or not len(cold) or not isinstance(room, int):
            return
        name = room_log_name(room)
        if contains is not None and not folded:
            lines = self.logs.lines_holding(name, contains.encode())
        else:
            lines = self.logs.lines(name)
        for offset, line in lines:
            if (
                folded
                and contains is not None
                and isinstance(line, str)
                and contains not in line.casefold()
            ):
                continue
            record = decode_or_none(line)
            pos = cold.find(record.origin, record.seq) if record is not None else None
            if record is not None and pos is not None and cold.offsets[pos] == offset:
                yield record

    def since(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        return self.held.since(room, rid, limit)

    def last_arrival(self, room: Hashable) -> str | None:
        return self.held.last_arrival(room)

    def before(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        return self.held.before(room, rid, limit)

    def after(self, room: Hashable, hlc: int) -> Iterator[Record]:
        """The messages of ``room`` stamped after ``hlc``, sorted, read as
        they are taken (take what you need: older ones are read from disk)."""
        return self.held.after(room, hlc)

    def newest_first(self, room: Hashable, hlc: int) -> Iterator[Record]:
        """``after`` from the newest back: for a count that may stop early."""
        return self.held.log_of(room).newest_first(hlc)

    def latest_of(self, key: Hashable) -> Record | None:
        """The READ record kept for ``key`` (node/policy.py), if any."""
        return self.held.latest_by_key.get(key)

    def count(self, room: Hashable) -> int:
        return self.held.count(room)

    def last_message(self, room: Hashable) -> Record | None:
        return self.held.last_message(room)

    def messages(self, room: Hashable) -> Iterator[Record]:
        return self.held.messages(room)

    def conversations(self) -> list[Hashable]:
        """The keys of the conversations held (DIRECT records)."""
        return list(self.held.conversations)

    def conversation_of(self, origin: str, seq: int) -> Hashable | None:
        """The conversation a held DIRECT record belongs to, if it is one."""
        return self.held.direct_at.get((origin, seq))

    def gone_counts(self) -> dict[str, int]:
        """How many records went since start, by reason (node/horizons.py)."""
        return dict(self.gone.count)

    def note_refused(self, origin: str, seq: int) -> None:
        """The app refused a record a peer sent: gone for good here, answered
        as gone and never asked for again (node/seen.py)."""
        self.gone.reported(origin, seq, seq, REFUSED)
