"""Per-room text logs on disk, and the in-memory index over them.

How this works: the data folder holds one log per room (``room-1.log`` ...),
``accounts.log``, ``moderation.log`` and ``reads.log``, one JSON object per
line (readable with ``less``; JSON escapes every character a user can type,
so no text can forge a line).  A record is appended and flushed before anyone
is told it is stored; fsyncs are batched (``sync()``, called by the app every
``SYNC_INTERVAL``) because routers write to flash.  Lines are never edited in
place: a later rewrite (purge, compaction) goes to a temp file that is fsynced
and renamed over the log.

A crash can only tear the last line of a log.  ``load()`` cuts a torn tail off
(keeping the bytes in ``<log>.torn`` so nothing is silently lost) and skips,
counts and keeps any line it cannot parse, so every log stays readable.

In memory: the version vector (which ids we hold), an index of ids, and each
room's records twice: sorted by ``(hlc, origin, seq)`` for display and
scroll-back, and in arrival order so a reconnecting page gets exactly what
this router stored since the last record it saw.  Loading is linear in the
log's size plus one O(n log n) sort.

Read markers (READ records: how far a user has read a room) keep only the
latest per (user, room), ordered by ``(upto, hlc, origin, seq)`` so every
router picks the same one.  A marker that is superseded is buried: its seq
goes into ``dead`` like an expired message's, so catch-up answers it as gone
and it is never stored again; ``compact()`` takes its line out of the file.
Read markers expire with the retention horizon, as messages do.

A clear takes out its room's messages stamped before it, and refuses them if
they come later (``room_horizon``).  A peer's clear cuts no later than the
app's clock (``limit_clears``): a router whose clock runs far ahead cannot
make this one refuse what it stamps next.  The cut is kept in ``STATE_FILE``
so that a restart cuts at the same place.

Our own seqs are never reused, even after a power cut took the last second
of a log (fsyncs are batched): ``next_seq`` reserves them in blocks of
``SEQ_BLOCK``, written durably to ``seq.reserved`` *before* the first seq
of a block is used, so a restart allocates above every seq that may have
reached a peer.  What was reserved but is not on disk (``recovery``: used
and lost, or never used) is the mesh's to settle: node/sync.py asks the
peers for it and declares the rest gone.  One small write per block, not
per message, and one at a clean ``close()`` (every log fsynced) that hands
back the unused rest, so only a crash leaves a window.  Seqs stop at
``record.MAX_SEQ`` (the wire's 32 bits): allocating past it raises
``SeqExhausted``; a log line beyond it is skipped and counted.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from node.record import MAX_SEQ, ORIGIN_RE, RangeSet, Record, RecordKind, VersionVector

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
STATE_FILE = "state.json"  # retention and clear horizons, and low-water marks
SEQ_FILE = "seq.reserved"  # our own seqs are reserved through this one
# Seqs reserved per durable write.  A busy router makes ~100 records/s at
# most (protocol.ORIGIN_RECORDS_PER_S): a write every 10 s at that peak, a
# tenth of the logs' own fsyncs, a few a day in normal use.  After a power
# cut the unused rest of a block is declared gone: one GONE range, whatever
# its length.
SEQ_BLOCK = 1024
ACCOUNTS_LOG = "accounts.log"
MODERATION_LOG = "moderation.log"
READS_LOG = "reads.log"
TORN_SUFFIX = ".torn"
# A line longer than this is corrupt: the largest record we accept (a
# 2,000-character message of 4-byte characters, JSON-escaped) is well below.
MAX_LINE_BYTES = 64 * 1024
# Seqs one ``gone_through`` call looks at: bounds the work of one catch-up
# step; a longer run is answered in several GONE ranges.
MAX_GONE_RUN = 65_535


class SeqExhausted(RuntimeError):
    """Our origin has used every seq the wire can carry (``MAX_SEQ``)."""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
KIND_NAMES = {
    RecordKind.MESSAGE: "message",
    RecordKind.ACCOUNT: "account",
    RecordKind.MODERATION: "moderation",
    RecordKind.READ: "read",
}
MAX_HLC = (1 << 64) - 1
KINDS_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}


def room_log_name(room: int) -> str:
    return f"room-{room}.log"


def encode_line(record: Record) -> bytes:
    """One log line for a record, newline included."""
    obj = {
        "id": record.id,
        "hlc": record.hlc,
        "kind": KIND_NAMES[record.kind],
        "room": record.room,
        "body": record.body,
    }
    return (_ENCODER.encode(obj) + "\n").encode()


def decode_line(line: bytes) -> Record:
    """A log line back to a record; raises ValueError if it is not one."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    origin, _, seq = str(obj["id"]).partition(":")
    hlc, room, body = obj["hlc"], obj["room"], obj["body"]
    kind = KINDS_BY_NAME[obj["kind"]]
    if not ORIGIN_RE.fullmatch(origin) or not seq.isascii() or not seq.isdigit():
        raise ValueError("bad id")
    if not 1 <= int(seq) <= MAX_SEQ:  # nothing beyond the wire's limit is held
        raise ValueError("seq out of range")
    if not isinstance(hlc, int) or not isinstance(room, int) or not isinstance(body, dict):
        raise ValueError("bad field types")
    return Record(origin=origin, seq=int(seq), hlc=hlc, kind=kind, room=room, body=body)


def parse_hlc(value: object) -> int | None:
    """An HLC given as an int or its decimal string (as pages send it); None
    for anything else, never an exception."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_HLC:
        return value
    return None


def read_upto(record: Record) -> int | None:
    """A READ record's ``upto``; None if malformed."""
    return parse_hlc(record.body.get("upto"))


def read_key(record: Record) -> tuple[str, int] | None:
    """(user's name key, room) of a READ record; None if malformed.  Names
    compare without case (``str.casefold``, as app.accounts.name_key)."""
    user = record.body.get("user")
    if not isinstance(user, str) or read_upto(record) is None:
        return None
    return user.casefold(), record.room


def _read_rank(record: Record) -> tuple[int, int, str, int]:
    return (read_upto(record) or 0, *record.order_key)


def _line_id(line: bytes) -> tuple[str, int] | None:
    try:
        record = decode_line(line)
    except (ValueError, KeyError, TypeError):
        return None
    return (record.origin, record.seq)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_make_node_id(data_dir: Path) -> str:
    """This router's node id: random on first start, then kept."""
    path = data_dir / NODE_ID_FILE
    try:
        node_id = path.read_text().strip()
    except FileNotFoundError:
        node_id = ""
    if ORIGIN_RE.fullmatch(node_id):
        return node_id
    if node_id:
        raise ValueError(f"{path} does not hold a node id (16 hex digits): {node_id!r}")
    node_id = secrets.token_hex(8)
    write_atomically(path, (node_id + "\n").encode())
    return node_id


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
    position: dict[tuple[str, int], int] = field(default_factory=dict)  # arrival index
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
        self.position = {(r.origin, r.seq): i for i, r in enumerate(self.arrivals)}
        return gone

    def remove(self, rids: set[tuple[str, int]]) -> None:
        """Take records out (moderation); O(n), and rare."""
        if not any(rid in self.position for rid in rids):
            return
        self.arrivals = [r for r in self.arrivals if (r.origin, r.seq) not in rids]
        self._sorted = [r for r in self._sorted if (r.origin, r.seq) not in rids]
        self.position = {(r.origin, r.seq): i for i, r in enumerate(self.arrivals)}

    def add(self, record: Record) -> None:
        self.position[(record.origin, record.seq)] = len(self.arrivals)
        self.arrivals.append(record)
        if self._sorted and self._sorted[-1].order_key > record.order_key:
            self._dirty = True
        self._sorted.append(record)

    @property
    def sorted(self) -> list[Record]:
        if self._dirty:
            self._sorted.sort(key=_order_key)
            self._dirty = False
        return self._sorted


@dataclass
class LogFile:
    path: Path
    handle: BinaryIO
    dirty: bool = False


class Store:
    """The data folder: node id, room logs, accounts log."""

    def __init__(
        self,
        data_dir: Path | str,
        rooms: int,
        *,
        authorized: Callable[[Record], bool] = lambda record: True,
    ) -> None:
        if rooms < 1:
            raise ValueError("a router serves at least one room")
        self.data_dir = Path(data_dir)
        self.rooms = rooms
        # Which MODERATION records take messages out: who may act is the
        # app's to say (app/moderation.py); one it refuses is held, inert.
        self.authorized = authorized
        self.vector = VersionVector()
        self.index: dict[tuple[str, int], Record] = {}
        self.room_logs = {n: RoomLog() for n in range(1, rooms + 1)}
        self.accounts: list[Record] = []
        self.moderation: list[Record] = []
        self.reads: dict[tuple[str, int], Record] = {}  # (name key, room) -> latest
        self.stale_read_lines = 0  # superseded or expired markers still in reads.log
        # Messages taken out by moderation (a delete, a room cleared): never
        # stored again, and answered as gone in catch-up.
        self.gone: set[tuple[str, int]] = set()
        self.room_horizon: dict[int, int] = {}  # room -> HLC of its latest clear
        # A peer's clear cuts no later than ``clear_limit`` (``limit_clears``).
        # The horizons are kept in STATE_FILE; while loading, a peer's clear
        # in the log cuts no later than the kept horizon (None once loaded).
        self.clear_limit: int | None = None
        self._kept_room_horizon: dict[int, int] | None = {}
        self.max_hlc = 0
        self.skipped_lines = 0  # unparseable lines kept in place
        self.torn_bytes = 0  # bytes of torn tails moved aside
        # Retention: messages stamped before ``horizon`` (an HLC) are gone.
        # ``dead[origin]`` holds the exact seqs known to be gone for good:
        # expired here, or reported gone by a peer.  Exact ranges, not a
        # low-water mark: one seq space holds messages (which expire) and
        # accounts (which do not), and a seq we never received is not gone.
        self.horizon = 0
        # The size guard (``trim``): per room, messages stamped before this
        # are gone too, with the same consistency rules as retention.
        self.size_horizon: dict[int, int] = {}
        self.dead: dict[str, RangeSet] = {}
        self.expired = 0  # messages dropped by retention since start
        # Our own seqs reserved through this one (``SEQ_FILE``); allocation
        # never goes below ``_seq_floor``, the reservation found at start.
        self._reserved = self._seq_floor = 0
        # Our own seqs reserved before the last stop that are not on disk:
        # ranges for the mesh to recover or declare gone (node/sync.py).
        self.recovery: list[tuple[int, int]] = []
        self._state_dirty = False
        self._files: dict[str, LogFile] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.node_id = load_or_make_node_id(self.data_dir)
        self._load_state()
        self._load()
        self._load_reservation()

    # -- loading -------------------------------------------------------------

    def _load_state(self) -> None:
        path = self.data_dir / STATE_FILE
        try:
            state = json.loads(path.read_text())
            horizon = int(state["horizon"])
            size_horizon = {int(room): int(h) for room, h in state.get("size_horizon", {}).items()}
            room_horizon = {int(room): int(h) for room, h in state.get("room_horizon", {}).items()}
            dead = {
                o: RangeSet(
                    [
                        (int(f), int(last))
                        for f, last in ranges
                        if 1 <= int(f) <= int(last) <= MAX_SEQ
                    ]
                )  # the wire's limit
                for o, ranges in state["dead"].items()
                if ORIGIN_RE.fullmatch(o)
            }
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): retention starts afresh", path, e)
            return
        self.horizon, self.dead, self.size_horizon = horizon, dead, size_horizon
        self._kept_room_horizon = room_horizon
        for origin, ranges in dead.items():
            for first, last in ranges.ranges:
                self.vector.add_range(origin, first, last)

    def _save_state(self) -> None:
        dead = {o: r.ranges for o, r in sorted(self.dead.items()) if r.ranges}
        write_atomically(
            self.data_dir / STATE_FILE,
            json.dumps(
                {
                    "horizon": self.horizon,
                    "size_horizon": self.size_horizon,
                    "room_horizon": self.room_horizon,
                    "dead": dead,
                },
                indent=1,
            ).encode(),
        )

    def _load_reservation(self) -> None:
        """Allocation starts above the last reservation; what it held that
        is not on disk is ``recovery``.  A data folder from before
        reservations has none: we go on from the highest seq held."""
        path = self.data_dir / SEQ_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return
        if not (
            text.isascii()
            and text.isdigit()
            and len(text) <= len(str(MAX_SEQ))
            and int(text) <= MAX_SEQ
        ):
            raise ValueError(f"{path} does not hold a seq (0..{MAX_SEQ}): {text!r}")
        self._reserved = self._seq_floor = int(text)
        self.recovery = self.vector.missing(self.node_id, self._reserved)

    def _reserve(self, seq: int) -> None:
        """Make ``seq`` ours for good before it is used: one durable write
        per ``SEQ_BLOCK`` seqs."""
        if seq <= self._reserved:
            return
        through = min(seq + SEQ_BLOCK - 1, MAX_SEQ)
        write_atomically(self.data_dir / SEQ_FILE, f"{through}\n".encode())
        self._reserved = through

    def _release_unused(self) -> None:
        """A clean stop, every log fsynced: hand back the unused rest of
        the block, so the next start has no lost window to settle."""
        used = max(self.vector.highest(self.node_id), self._seq_floor)
        if used < self._reserved:
            write_atomically(self.data_dir / SEQ_FILE, f"{used}\n".encode())
            self._reserved = used

    def _load(self) -> None:
        # Moderation first: a deleted message must not even be loaded.
        self._load_file(self.data_dir / MODERATION_LOG)
        for room in self.room_logs:
            self._load_file(self.data_dir / room_log_name(room))
        self._load_file(self.data_dir / ACCOUNTS_LOG)
        self._load_file(self.data_dir / READS_LOG)
        self._kept_room_horizon = None  # loaded: peers' clears meet clear_limit now

    def _load_file(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self._move_torn_tail(path, data[end:], end)
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = decode_line(line) if len(line) <= MAX_LINE_BYTES else None
            except (ValueError, KeyError, TypeError):
                record = None
            if record is not None and self.is_expired(record):
                self._note_expired(record)  # still in the file until compact()
            elif record is not None and self._is_taken_out(record):
                self.gone.add((record.origin, record.seq))
            elif record is None or not (self._accept(record) or self._is_buried(record)):
                self.skipped_lines += 1
                log.warning("%s:%d: skipped a line that is not a valid record", path, number)

    def _move_torn_tail(self, path: Path, tail: bytes, keep: int) -> None:
        """Cut an unterminated last line (a crash mid-write) off the log."""
        log.warning(
            "%s: moved a torn last line (%d bytes) to %s%s", path, len(tail), path.name, TORN_SUFFIX
        )
        with open(path.with_name(path.name + TORN_SUFFIX), "ab") as f:
            f.write(tail + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
        self.torn_bytes += len(tail)

    # -- writing -------------------------------------------------------------

    def append(self, record: Record) -> bool:
        """Store a record: appended and flushed.  False if already held.

        Raises ValueError for a record that belongs nowhere (our own misuse;
        the mesh validates what it receives before it gets here).
        """
        self._check(record)
        line = encode_line(record)  # before _accept: what cannot be written is not held
        lf = self._file(self._log_name(record))  # nor what has no open log (OSError: EMFILE)
        if not self._accept(record):  # held already, or expired
            return False
        lf.handle.write(line)
        lf.handle.flush()
        lf.dirty = True
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
        files = {name: self._file(name) for name in {self._log_name(r) for r in records}}
        new: list[Record] = []
        lines: dict[str, list[bytes]] = {}
        for record, line in zip(records, encoded, strict=True):
            if not self._accept(record):
                continue
            new.append(record)
            lines.setdefault(self._log_name(record), []).append(line)
        for name, chunk in lines.items():
            lf = files[name]
            lf.handle.write(b"".join(chunk))
            lf.handle.flush()
            lf.dirty = True
        return new

    def is_expired(self, record: Record) -> bool:
        if record.kind == RecordKind.READ:
            return record.hlc < self.horizon
        return record.kind == RecordKind.MESSAGE and (
            record.hlc < self.horizon or record.hlc < self.size_horizon.get(record.room, 0)
        )

    def _is_taken_out(self, record: Record) -> bool:
        """A message a moderation record removed, whatever the arrival order."""
        return record.kind == RecordKind.MESSAGE and (
            (record.origin, record.seq) in self.gone
            or record.hlc < self.room_horizon.get(record.room, 0)
        )

    def is_gone(self, origin: str, seq: int) -> bool:
        """True if ``(origin, seq)`` existed and is gone for good here:
        removed by moderation, expired, or reported gone by a peer."""
        rid = (origin, seq)
        if rid in self.index:
            return False
        dead = self.dead.get(origin)
        return rid in self.gone or (dead is not None and seq in dead)

    def gone_through(self, origin: str, seq: int) -> int:
        """``sync.RecordSource.gone_through``: if ``(origin, seq)`` is gone
        here, the last seq of the run of gone seqs it starts (at most
        ``MAX_GONE_RUN`` long); else 0."""
        if not self.is_gone(origin, seq):
            return 0
        limit, last = seq + MAX_GONE_RUN - 1, seq
        dead = self.dead.get(origin)
        while last < limit:
            end = dead.run_end(last + 1) if dead is not None else 0
            if end:  # a whole dead range at once
                last = min(end, limit)
            elif self.is_gone(origin, last + 1):
                last += 1
            else:
                break
        return last

    def note_gone(self, origin: str, first: int, last: int) -> None:
        """A peer says these seqs are gone for good: answer the same."""
        self.dead.setdefault(origin, RangeSet()).add(first, last)
        self.vector.add_range(origin, first, last)
        self._state_dirty = True

    def save_state_if_changed(self) -> None:
        if self._state_dirty:
            self._save_state()
            self._state_dirty = False

    def _check(self, record: Record) -> None:
        if (
            record.kind in (RecordKind.MESSAGE, RecordKind.MODERATION, RecordKind.READ)
            and record.room
            and record.room not in self.room_logs
        ):
            raise ValueError(f"no room {record.room} on this router")
        if record.kind not in KIND_NAMES:
            raise ValueError(f"unknown record kind {record.kind!r}")

    def _accept(self, record: Record) -> bool:
        """Index a record; False if it is a duplicate or belongs nowhere."""
        rid = (record.origin, record.seq)
        if rid in self.index or self.is_expired(record):
            return False
        if self._is_taken_out(record):
            self.gone.add(rid)
            self.vector.add(record.origin, record.seq)  # held, as gone
            return False
        if record.kind == RecordKind.MESSAGE:
            room_log = self.room_logs.get(record.room)
            if room_log is None:
                return False
            room_log.add(record)
        elif record.kind == RecordKind.ACCOUNT:
            self.accounts.append(record)
        elif record.kind == RecordKind.MODERATION:
            self.moderation.append(record)
            if self.authorized(record):
                self._apply_moderation(record)
        elif record.kind == RecordKind.READ:
            if not self._take_read(record):
                return False
        else:
            return False
        self.index[rid] = record
        self.vector.add(record.origin, record.seq)
        self.max_hlc = max(self.max_hlc, record.hlc)
        return True

    def _take_read(self, record: Record) -> bool:
        """Make a READ record its (user, room)'s marker if it is the latest;
        bury whichever of the two is not.  False if ``record`` is not kept."""
        key = read_key(record)
        if key is None or record.room not in self.room_logs:
            return False
        current = self.reads.get(key)
        if current is not None and _read_rank(current) >= _read_rank(record):
            self._bury(record)
            self.stale_read_lines += 1
            return False
        if current is not None:
            del self.index[(current.origin, current.seq)]
            self._bury(current)
            self.stale_read_lines += 1
        self.reads[key] = record
        return True

    def _is_buried(self, record: Record) -> bool:
        """A superseded read marker: gone here, its line still in the file."""
        rid = (record.origin, record.seq)
        return record.kind == RecordKind.READ and rid not in self.index and rid in self.vector

    def _bury(self, record: Record) -> None:
        """``record`` is gone for good here: answered as gone, never stored again."""
        self.dead.setdefault(record.origin, RangeSet()).add(record.seq, record.seq)
        self.vector.add(record.origin, record.seq)
        self._state_dirty = True

    def _apply_moderation(self, record: Record) -> None:
        """Take out what a delete or a clear names (bans are the app's)."""
        action, body = record.body.get("action"), record.body
        if action == "delete" and isinstance(body.get("target"), str):
            origin, _, seq = body["target"].partition(":")
            if seq.isdigit():
                self._take_out({(origin, int(seq))})
        elif action == "clear" and record.room in self.room_logs:
            self._clear(record)

    def limit_clears(self, hlc: int) -> None:
        """A peer's clear stored from now on takes out nothing stamped after
        ``hlc``.  The app passes its clock's latest timestamp: a clear from
        a router whose clock runs far ahead takes out what is here, not
        every message this router stamps until its own clock gets there.
        A horizon already past ``hlc`` (a log from before clears were
        limited) is brought back to it."""
        self.clear_limit = hlc
        over = [room for room, horizon in self.room_horizon.items() if horizon > hlc]
        if over:
            self.room_horizon.update(dict.fromkeys(over, hlc))
            self._save_state()

    def _clear(self, record: Record) -> None:
        """Move a room's horizon to a clear's (limited) HLC; take out what
        is older.  A peer's clear that moves it is kept in STATE_FILE before
        its line is written, so a restart cuts at the same place."""
        horizon = record.hlc
        if record.origin != self.node_id:
            kept = self._kept_room_horizon  # None once loaded
            cap = self.clear_limit if kept is None else kept.get(record.room)
            horizon = horizon if cap is None else min(horizon, cap)
        if horizon <= self.room_horizon.get(record.room, 0):
            return
        self.room_horizon[record.room] = horizon
        older = self.room_logs[record.room].sorted
        cut = bisect.bisect_left(older, horizon, key=_hlc)
        self._take_out({(r.origin, r.seq) for r in older[:cut]})
        if self._kept_room_horizon is None:
            self._save_state()

    def _take_out(self, rids: set[tuple[str, int]]) -> None:
        self.gone |= rids
        held = {rid for rid in rids if rid in self.index}
        if not held:
            return
        for rid in held:
            del self.index[rid]
        for room_log in self.room_logs.values():
            room_log.remove(held)

    @staticmethod
    def _log_name(record: Record) -> str:
        if record.kind == RecordKind.MESSAGE:
            return room_log_name(record.room)
        if record.kind == RecordKind.READ:
            return READS_LOG
        return MODERATION_LOG if record.kind == RecordKind.MODERATION else ACCOUNTS_LOG

    def _file(self, name: str) -> LogFile:
        lf = self._files.get(name)
        if lf is None:
            path = self.data_dir / name
            lf = self._files[name] = LogFile(path, open(path, "ab"))
        return lf

    # -- retention -------------------------------------------------------------

    def expire(self, horizon: int) -> int:
        """Forget messages stamped before ``horizon`` (an HLC); returns how
        many.  Memory only: ``compact()`` takes them out of the files."""
        if horizon <= self.horizon:
            return 0
        self.horizon = horizon
        gone = 0
        for room_log in self.room_logs.values():
            for record in room_log.expire(horizon):
                del self.index[(record.origin, record.seq)]
                self._note_expired(record)
                gone += 1
        for key, record in list(self.reads.items()):
            if record.hlc < horizon:  # read markers expire too; _bury marks the state dirty
                del self.reads[key], self.index[(record.origin, record.seq)]
                self._bury(record)
                self.stale_read_lines += 1
        if gone or self._state_dirty:  # the horizon alone moves every check: no flash write
            self._save_state()
            self._state_dirty = False
        return gone

    def trim(self, room: int, keep: int) -> int:
        """The size guard: keep the ``keep`` newest messages of a room; the
        older ones go as if expired (and stay gone: a per-room horizon)."""
        room_log = self.room_logs[room]
        records = room_log.sorted
        if len(records) <= keep:
            return 0
        horizon = records[len(records) - keep].hlc
        if horizon <= self.size_horizon.get(room, 0):
            return 0
        self.size_horizon[room] = horizon
        gone = room_log.expire(horizon)
        for record in gone:
            del self.index[(record.origin, record.seq)]
            self._note_expired(record)
        self._save_state()
        self._state_dirty = False
        return len(gone)

    def _note_expired(self, record: Record) -> None:
        self.expired += 1
        self.dead.setdefault(record.origin, RangeSet()).add(record.seq, record.seq)
        self.vector.add(record.origin, record.seq)
        if record.kind == RecordKind.READ:
            self.stale_read_lines += 1

    def compact(self) -> int:
        """Rewrite every room log with only the records still held (temp file,
        fsync, rename: a crash at any point leaves the old or the new log,
        both valid).  Rare on purpose: routers write to flash.  Returns the
        number of logs rewritten."""
        self.save_state_if_changed()  # what leaves the files stays gone
        held = {
            room_log_name(n): {(r.origin, r.seq) for r in room_log.arrivals}
            for n, room_log in self.room_logs.items()
        }
        held[READS_LOG] = {(r.origin, r.seq) for r in self.reads.values()}
        rewritten = sum(self._rewrite_without(name, keep) for name, keep in held.items())
        self.stale_read_lines = 0
        return rewritten

    def _rewrite_without(self, name: str, keep: set[tuple[str, int]]) -> bool:
        """Rewrite one log with only the lines of ``keep``; True if it changed."""
        path = self.data_dir / name
        if not path.exists():
            return False
        lines = path.read_bytes().splitlines(keepends=True)
        # Lines that are not records stay for a person to look at.
        kept = [ln for ln in lines if (rid := _line_id(ln)) is None or rid in keep]
        if len(kept) == len(lines):
            return False
        lf = self._files.pop(name, None)
        if lf is not None:
            lf.handle.close()
        write_atomically(path, b"".join(kept))
        return True

    def sync(self) -> int:
        """fsync every log written since the last sync; returns how many."""
        synced = 0
        for lf in self._files.values():
            if lf.dirty:
                os.fsync(lf.handle.fileno())
                lf.dirty = False
                synced += 1
        return synced

    def close(self) -> None:
        self.sync()
        self.save_state_if_changed()
        self._release_unused()
        for lf in self._files.values():
            lf.handle.close()
        self._files.clear()

    # -- reading -------------------------------------------------------------

    def next_seq(self) -> int:
        """The seq for the next record this router makes, reserved durably
        (``SEQ_BLOCK``).  Raises ``SeqExhausted`` past ``MAX_SEQ``."""
        seq = max(self.vector.highest(self.node_id), self._seq_floor) + 1
        if seq > MAX_SEQ:
            raise SeqExhausted(f"origin {self.node_id} has used every seq up to {MAX_SEQ}")
        self._reserve(seq)
        return seq

    def get(self, origin: str, seq: int) -> Record | None:
        return self.index.get((origin, seq))

    def latest(self, room: int, limit: int) -> list[Record]:
        records = self.room_logs[room].sorted
        return records[-limit:] if limit > 0 else []

    def since(self, room: int, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Records stored in ``room`` after ``rid`` arrived, sorted.

        None if ``rid`` is not in this room (unknown or purged) or more than
        ``limit`` records came since: the caller then starts afresh with the
        latest history.
        """
        room_log = self.room_logs[room]
        pos = room_log.position.get(rid)
        if pos is None or len(room_log.arrivals) - pos - 1 > limit:
            return None
        return sorted(room_log.arrivals[pos + 1 :], key=_order_key)

    def last_arrival(self, room: int) -> str | None:
        """Id of the record this room received last (for ``?after=``)."""
        arrivals = self.room_logs[room].arrivals
        return arrivals[-1].id if arrivals else None

    def before(self, room: int, rid: tuple[str, int], limit: int) -> list[Record] | None:
        """Up to ``limit`` records sorted just before ``rid`` (scroll-back)."""
        record = self.index.get(rid)
        if record is None or record.kind != RecordKind.MESSAGE or record.room != room:
            return None
        records = self.room_logs[room].sorted
        end = bisect.bisect_left(records, record.order_key, key=_order_key)
        return records[max(0, end - limit) : end]

    def count(self, room: int) -> int:
        return len(self.room_logs[room].sorted)

    def read_marker(self, user: str, room: int) -> int:
        """The HLC up to which ``user`` has read ``room`` (0: never)."""
        record = self.reads.get((user.casefold(), room))
        return (read_upto(record) or 0) if record is not None else 0

    def unread(self, room: int, user: str, since: int = 0, limit: int = 1000) -> int:
        """Messages in ``room`` after ``user``'s read marker (and after
        ``since``), not written by ``user``; counting stops at ``limit``."""
        records = self.room_logs[room].sorted
        start = bisect.bisect_right(records, max(since, self.read_marker(user, room)), key=_hlc)
        key, n = user.casefold(), 0
        for record in records[start:]:
            author = record.body.get("author")
            if not (isinstance(author, str) and author.casefold() == key):
                n += 1
                if n >= limit:
                    break
        return n

    def last_message(self, room: int) -> Record | None:
        records = self.room_logs[room].sorted
        return records[-1] if records else None

    def messages(self, room: int) -> Iterator[Record]:
        return iter(self.room_logs[room].sorted)
