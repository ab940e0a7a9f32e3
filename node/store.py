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
from collections.abc import Hashable, Iterator
from pathlib import Path

from node.horizons import MAX_GONE_RUN, REFUSED, STATE_FILE, Gone
from node.index import MAX_HLC, Index, RoomLog, parse_hlc
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
    encode_line,
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


class Store:
    """The data folder: node id, logs, the records held and those gone."""

    def __init__(self, data_dir: Path | str, rooms: int, *, policy: RecordPolicy = INERT) -> None:
        if rooms < 1:
            raise ValueError("a router serves at least one room")
        self.data_dir = Path(data_dir)
        self.rooms = rooms
        self.policy = policy
        self.vector = VersionVector()  # held, and gone (which counts as held)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = load_or_make_node_id(self.data_dir)
        self.logs = Logs(self.data_dir)
        self.held = Index(rooms)
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
    def index(self) -> dict[tuple[str, int], Record]:
        return self.held.records

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
        loaded, self._loaded_seqs = self._loaded_seqs or {}, None
        for origin, seqs in loaded.items():
            self.vector.add_many(origin, seqs)
        self.gone.loaded()

    def _load_log(self, name: str) -> None:
        gone = self.gone
        for number, record in self.logs.records(name):
            if record is not None and gone.is_expired(record):
                gone.expired(record)  # still in the file until compact()
                if record.kind in (RecordKind.READ, RecordKind.DIRECT):
                    self.gone_lines += 1
            elif record is not None and gone.is_removed(record):
                gone.remove({(record.origin, record.seq)})
            elif (
                record is None
                or (record.origin, record.seq) in self.held.records
                or not (self._hold(record) or self._superseded(record))
            ):
                self.skipped_lines += 1
                log.warning("%s:%d: skipped a line that is not a valid record", name, number)

    # -- writing -------------------------------------------------------------

    def append(self, record: Record) -> bool:
        """Store a record: appended and flushed.  False if already held or gone.

        Raises ValueError for a record that belongs nowhere (our own misuse;
        the mesh validates what it receives before it gets here).
        """
        self._check(record)
        line = encode_line(record)  # before _accept: what cannot be written is not held
        lf = self.logs.open(log_name(record))  # nor what has no open log (OSError: EMFILE)
        if not self._accept(record):
            return False
        self.logs.write(lf, line)
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
        for record, line in zip(records, encoded, strict=True):
            if self._accept(record):
                new.append(record)
                lines.setdefault(log_name(record), []).append(line)
        for name, chunk in lines.items():
            self.logs.write(files[name], b"".join(chunk))
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

    def _accept(self, record: Record) -> bool:
        """Hold a record; False if it is held already, gone, or belongs nowhere."""
        rid = (record.origin, record.seq)
        if rid in self.held.records or self.gone.is_expired(record):
            return False
        if self.gone.is_removed(record):
            self.gone.arrived_removed(record)
            return False
        return self._hold(record)

    def _hold(self, record: Record) -> bool:
        """Hold a record that is neither held nor gone; False if it belongs
        nowhere or is superseded on arrival."""
        conversation = None
        if record.kind in (RecordKind.READ, RecordKind.SETTING):
            if not self._take_latest(record):
                return False
        elif record.kind == RecordKind.MODERATION:
            self._act(record)
        elif record.kind == RecordKind.DIRECT:
            conversation = self.policy.conversation(record)
        if not self.held.add(record, conversation):
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
                older = self.held.room_logs[record.room].before(cut)
                self._remove({(r.origin, r.seq) for r in older})

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
        return (origin, seq) not in self.held.records and self.gone.holds(origin, seq)

    def gone_through(self, origin: str, seq: int) -> int:
        """``sync.RecordSource.gone_through``: if ``(origin, seq)`` is gone
        here, the last seq of the run of gone seqs it starts (at most
        ``MAX_GONE_RUN`` long); else 0."""
        return self.gone.through(origin, seq, self.held.records)

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
        for record in expired:
            self.gone.expired(record)
            if record.kind == RecordKind.DIRECT:
                self.gone_lines += 1  # still in direct.log until compact()
        latest = self.held.latest_by_key
        for key, record in list(latest.items()):
            if record.hlc < horizon and record.kind == RecordKind.READ:  # settings stay
                del latest[key]
                self.held.drop(record)
                self.gone.expired(record)
                self.gone.dirty = True  # saved below, though no message went
                self.gone_lines += 1
        if expired or self.gone.dirty:  # the horizon alone moves every check: no flash write
            self.gone.save()
        return len(expired)

    def trim(self, room: int, keep: int) -> int:
        """The size guard: keep the ``keep`` newest messages of a room; the
        older ones are gone, expired (and stay gone: a per-room horizon)."""
        records = self.held.room_logs[room].sorted
        if len(records) <= keep:
            return 0
        if not self.gone.move_size_horizon(room, records[len(records) - keep].hlc):
            return 0
        expired = self.held.expire(self.gone.size_horizon[room], [room])
        for record in expired:
            self.gone.expired(record)
        self.gone.save()
        return len(expired)

    def compact(self) -> int:
        """Rewrite every room log, reads.log, direct.log and settings.log
        with only the records still held (temp file, fsync, rename: a crash
        at any point leaves the old or the new log, both valid).  Rare on purpose: routers write to
        flash.  Returns the number of logs rewritten."""
        self.gone.save_if_changed()  # what leaves the files stays gone
        held = {
            room_log_name(n): {(r.origin, r.seq) for r in room_log.arrivals}
            for n, room_log in self.held.room_logs.items()
        }
        latest = self.held.latest_by_key.values()
        held[READS_LOG] = {(r.origin, r.seq) for r in latest if r.kind == RecordKind.READ}
        held[SETTINGS_LOG] = {(r.origin, r.seq) for r in latest if r.kind == RecordKind.SETTING}
        held[DIRECT_LOG] = set(self.held.direct_at)
        rewritten = sum(self.logs.rewrite_without(name, keep) for name, keep in held.items())
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

    def latest(self, room: Hashable, limit: int) -> list[Record]:
        return self.held.latest(room, limit)

    def since(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        return self.held.since(room, rid, limit)

    def last_arrival(self, room: Hashable) -> str | None:
        return self.held.last_arrival(room)

    def before(self, room: Hashable, rid: tuple[str, int], limit: int) -> list[Record] | None:
        return self.held.before(room, rid, limit)

    def after(self, room: Hashable, hlc: int) -> list[Record]:
        return self.held.after(room, hlc)

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
