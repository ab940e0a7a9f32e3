"""What is gone for good here, and why: horizons, cuts and gone seqs.

How this works: a record is *gone* here when this router will never hold
it again: it is refused if it arrives, and catch-up answers it as gone (a
GONE range, node/sync.py), so it never comes back from a router that was
off.  Gone seqs count as held in the version vector.  The reasons:

- *expired*: a message stamped before the retention horizon (``horizon``,
  an HLC) or before its room's size horizon (``size_horizon``, the size
  guard); a READ or DIRECT record stamped before the retention horizon;
- *removed*: a message a MODERATION record removes (node/policy.py), by
  id (``removed``) or because it is stamped before its room's cut
  (``room_horizon``), in any arrival order;
- *superseded*: a READ or SETTING record that is not the latest of its key;
- *reported*: a peer answered the seqs as gone;
- *refused*: the app would not store a record a peer sent (node/seen.py):
  never asked for again.

Expired, superseded, reported and refused seqs are kept exactly, per origin
(``seqs``): exact ranges, not a low-water mark, because one seq space holds
messages (which expire) and accounts (which do not), and a seq we never
received is not gone.  Removed ids are rebuilt at load from moderation.log,
which is loaded first.  ``count`` says how many went, by reason.

The horizons, the cuts and the seqs are kept in ``STATE_FILE`` (the seqs
under the key ``"dead"``, the name data folders in the field have), written
atomically when they change.  A peer's cut is limited to ``cut_limit``
(``limit_cuts``: the app passes its clock's latest timestamp), so a router
whose clock runs far ahead cannot make this one refuse what it stamps next;
while loading, a peer's cut is limited by the cut kept in ``STATE_FILE``,
so a restart cuts at the same place.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Container
from pathlib import Path

from node.logs import write_atomically
from node.record import MAX_SEQ, ORIGIN_RE, RangeSet, Record, RecordKind, VersionVector

log = logging.getLogger(__name__)

STATE_FILE = "state.json"  # retention horizons, room cuts and gone seqs
# Seqs one ``through`` call looks at: bounds the work of one catch-up step;
# a longer run is answered in several GONE ranges.
MAX_GONE_RUN = 65_535
# Why a record is gone (``Gone.count``).
EXPIRED, REMOVED, SUPERSEDED = "expired", "removed", "superseded"
REPORTED, REFUSED = "reported", "refused"


class Gone:
    """The horizons and the gone seqs of one data folder."""

    def __init__(self, data_dir: Path, vector: VersionVector, node_id: str) -> None:
        self.path = data_dir / STATE_FILE
        self.vector = vector
        self.node_id = node_id
        self.horizon = 0  # retention: messages and READ records stamped before are expired
        self.size_horizon: dict[int, int] = {}  # room -> the size guard's horizon
        self.room_horizon: dict[int, int] = {}  # room -> HLC of its latest cut
        self.cut_limit: int | None = None  # a peer's cut goes no later (``limit_cuts``)
        self._kept_room_horizon: dict[int, int] | None = {}  # from STATE_FILE; None once loaded
        self.seqs: dict[str, RangeSet] = {}  # expired, superseded, reported, refused
        self.removed: set[tuple[str, int]] = set()
        self.count: Counter[str] = Counter()  # since start, by reason
        self.dirty = False  # seqs changed since the last save

    # -- STATE_FILE ------------------------------------------------------------

    def load(self) -> None:
        try:
            state = json.loads(self.path.read_text())
            horizon = int(state["horizon"])
            size_horizon = {int(room): int(h) for room, h in state.get("size_horizon", {}).items()}
            room_horizon = {int(room): int(h) for room, h in state.get("room_horizon", {}).items()}
            seqs = {
                o: RangeSet(
                    [
                        (int(f), int(last))
                        for f, last in ranges
                        if 1 <= int(f) <= int(last) <= MAX_SEQ  # the wire's limit
                    ]
                )
                for o, ranges in state["dead"].items()
                if ORIGIN_RE.fullmatch(o)
            }
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): retention starts afresh", self.path, e)
            return
        self.horizon, self.seqs, self.size_horizon = horizon, seqs, size_horizon
        self._kept_room_horizon = room_horizon
        for origin, ranges in seqs.items():
            for first, last in ranges.ranges:
                self.vector.add_range(origin, first, last)

    def loaded(self) -> None:
        """The logs are loaded: peers' cuts meet ``cut_limit`` from now on."""
        self._kept_room_horizon = None

    def save(self) -> None:
        seqs = {o: r.ranges for o, r in sorted(self.seqs.items()) if r.ranges}
        state = {
            "horizon": self.horizon,
            "size_horizon": self.size_horizon,
            "room_horizon": self.room_horizon,
            "dead": seqs,
        }
        write_atomically(self.path, json.dumps(state, indent=1).encode())
        self.dirty = False

    def save_if_changed(self) -> None:
        if self.dirty:
            self.save()

    # -- asking ------------------------------------------------------------------

    def is_expired(self, record: Record) -> bool:
        if record.kind in (RecordKind.READ, RecordKind.DIRECT):
            return record.hlc < self.horizon
        return record.kind == RecordKind.MESSAGE and (
            record.hlc < self.horizon or record.hlc < self.size_horizon.get(record.room, 0)
        )

    def is_removed(self, record: Record) -> bool:
        """A message a MODERATION record removes, whatever the arrival order."""
        return record.kind == RecordKind.MESSAGE and (
            (record.origin, record.seq) in self.removed
            or record.hlc < self.room_horizon.get(record.room, 0)
        )

    def holds(self, origin: str, seq: int) -> bool:
        """True if ``(origin, seq)`` is gone, if it is not held."""
        seqs = self.seqs.get(origin)
        return (origin, seq) in self.removed or (seqs is not None and seq in seqs)

    def through(self, origin: str, seq: int, held: Container[tuple[str, int]]) -> int:
        """If ``(origin, seq)`` is gone (and not in ``held``), the last seq of
        the run of gone seqs it starts (at most ``MAX_GONE_RUN`` long); else 0."""
        if (origin, seq) in held or not self.holds(origin, seq):
            return 0
        limit, last = seq + MAX_GONE_RUN - 1, seq
        seqs = self.seqs.get(origin)
        while last < limit:
            end = seqs.run_end(last + 1) if seqs is not None else 0
            if end:  # a whole range at once
                last = min(end, limit)
            elif (origin, last + 1) not in held and self.holds(origin, last + 1):
                last += 1
            else:
                break
        return last

    # -- going -------------------------------------------------------------------

    def expired(self, origin: str, seq: int) -> None:
        """``(origin, seq)`` went past a horizon (the caller saves the state)."""
        self.count[EXPIRED] += 1
        self.seqs.setdefault(origin, RangeSet()).add(seq, seq)
        self.vector.add(origin, seq)

    def superseded(self, record: Record) -> None:
        self.count[SUPERSEDED] += 1
        self.seqs.setdefault(record.origin, RangeSet()).add(record.seq, record.seq)
        self.vector.add(record.origin, record.seq)
        self.dirty = True

    def reported(self, origin: str, first: int, last: int, reason: str = REPORTED) -> None:
        """A peer says these seqs are gone for good (or the app refused
        them): we answer the same."""
        self.count[reason] += last - first + 1
        self.seqs.setdefault(origin, RangeSet()).add(first, last)
        self.vector.add_range(origin, first, last)
        self.dirty = True

    def remove(self, rids: set[tuple[str, int]]) -> None:
        """These ids are removed: held or not, they never are again."""
        self.count[REMOVED] += len(rids - self.removed)
        self.removed |= rids

    def arrived_removed(self, record: Record) -> None:
        """A removed message arrived (or was loaded): held, as gone."""
        self.remove({(record.origin, record.seq)})
        self.vector.add(record.origin, record.seq)

    # -- horizons ------------------------------------------------------------------

    def move_horizon(self, horizon: int) -> bool:
        """Retention: move the horizon on; False if it would not move."""
        if horizon <= self.horizon:
            return False
        self.horizon = horizon
        return True

    def move_size_horizon(self, room: int, horizon: int) -> bool:
        if horizon <= self.size_horizon.get(room, 0):
            return False
        self.size_horizon[room] = horizon
        return True

    def cut(self, record: Record, hlc: int) -> int | None:
        """``record`` cuts its room at ``hlc``, limited for a peer's; the new
        cut if it moves, else None.  One that moves is saved before the
        record's line is written, so a restart cuts at the same place."""
        if record.origin != self.node_id:
            kept = self._kept_room_horizon  # None once loaded
            cap = self.cut_limit if kept is None else kept.get(record.room)
            hlc = hlc if cap is None else min(hlc, cap)
        if hlc <= self.room_horizon.get(record.room, 0):
            return None
        self.room_horizon[record.room] = hlc
        if self._kept_room_horizon is None:
            self.save()
        return hlc

    def limit_cuts(self, hlc: int) -> None:
        """A peer's cut from now on goes no later than ``hlc``; a cut already
        past it (a log from before cuts were limited) is brought back."""
        self.cut_limit = hlc
        over = [room for room, horizon in self.room_horizon.items() if horizon > hlc]
        if over:
            self.room_horizon.update(dict.fromkeys(over, hlc))
            self.save()
