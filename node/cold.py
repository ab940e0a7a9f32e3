"""A room's older messages held as columns, their text left in the log.

How this works: a record held as a Python object costs about 600 bytes
(docs/ROUTER-BUDGET.md "What a held record costs"); an older router has
under 300 a record for 100,000.  So a room holds its newest messages as
records (node/index.py ``RoomLog``) and the older ones here: four arrays
sorted as the room is (hlc, origin, seq), with where each line starts in
the room's log, and per origin its seqs sorted (with their hlcs) to find a
record by id.  36 bytes a record.  A record is read back from its log line
when it is asked for (scroll-back, a peer's catch-up, a moderation record
naming it); a read that does not give back the record expected (the file
changed under us) answers None and is counted.

Changes are rare and made whole: records come in sorted batches (the oldest
of a room's records held as objects, ``RoomLog.settle``), appended when they
sort after every one here (the usual case), merged by slices otherwise;
expiry cuts a prefix; removal rebuilds the columns; compaction, which moves
every line, sets each record's new offset (``RoomLog.moved``).  Origins
are numbered by an ``Origins`` table shared by the rooms of an index.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable

# (hlc, origin, seq, offset): a record as the columns hold it.
Row = tuple[int, str, int, int]


class Origins:
    """Origins by number and numbers by origin (never forgets: a mesh has
    a few hundred routers at most)."""

    __slots__ = ("names", "numbers")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.numbers: dict[str, int] = {}

    def number(self, origin: str) -> int:
        n = self.numbers.get(origin)
        if n is None:
            n = self.numbers[origin] = len(self.names)
            self.names.append(origin)
        return n


class Cold:
    """One room's older messages: columns sorted by ``(hlc, origin, seq)``."""

    __slots__ = ("_by_origin", "hlcs", "offsets", "origins", "seqs", "table")

    def __init__(self, table: Origins) -> None:
        self.table = table
        self.hlcs = array("Q")
        self.origins = array("I")
        self.seqs = array("I")
        self.offsets = array("Q")
        # origin number -> (its seqs sorted, their hlcs): find a record by id
        self._by_origin: dict[int, tuple[array[int], array[int]]] = {}

    def __len__(self) -> int:
        return len(self.hlcs)

    # -- reading -----------------------------------------------------------------

    def key(self, pos: int) -> tuple[int, str, int]:
        return (self.hlcs[pos], self.table.names[self.origins[pos]], self.seqs[pos])

    def rid(self, pos: int) -> tuple[str, int]:
        return (self.table.names[self.origins[pos]], self.seqs[pos])

    def hlc_of(self, origin: str, seq: int) -> int | None:
        """The hlc of ``(origin, seq)`` if it is here."""
        n = self.table.numbers.get(origin)
        columns = self._by_origin.get(n) if n is not None else None
        if columns is None:
            return None
        seqs, hlcs = columns
        i = bisect.bisect_left(seqs, seq)
        return hlcs[i] if i < len(seqs) and seqs[i] == seq else None

    def find(self, origin: str, seq: int) -> int | None:
        """The position of ``(origin, seq)``, None if it is not here."""
        hlc = self.hlc_of(origin, seq)
        if hlc is None:
            return None
        pos = self.position((hlc, origin, seq))
        return pos if pos < len(self.hlcs) and self.seqs[pos] == seq else None

    def position(self, key: tuple[int, str, int]) -> int:
        """Where ``key`` is or would go (bisect left)."""
        hlcs = self.hlcs
        hlc = key[0]
        pos = bisect.bisect_left(hlcs, hlc)
        end = len(hlcs)
        while pos < end and hlcs[pos] == hlc and self.key(pos) < key:
            pos += 1  # hlcs seldom tie
        return pos

    def after(self, hlc: int) -> int:
        """The position of the first record stamped after ``hlc``."""
        return bisect.bisect_right(self.hlcs, hlc)

    def last_key(self) -> tuple[int, str, int] | None:
        return self.key(len(self.hlcs) - 1) if self.hlcs else None

    def max_hlc_of(self, origin: str) -> int:
        n = self.table.numbers.get(origin)
        columns = self._by_origin.get(n) if n is not None else None
        return max(columns[1]) if columns else 0

    # -- changing ------------------------------------------------------------------

    def add(self, rows: list[Row]) -> None:
        """Hold ``rows`` (sorted, none here already)."""
        if not rows:
            return
        last = self.last_key()
        if last is None or rows[0][:3] > last:
            self._extend(rows)
        else:
            self._merge(rows)
        number = self.table.number
        for hlc, origin, seq, _ in rows:
            n = number(origin)
            columns = self._by_origin.get(n)
            if columns is None:
                columns = self._by_origin[n] = (array("I"), array("Q"))
            seqs, hlcs = columns
            if not seqs or seqs[-1] < seq:
                seqs.append(seq)
                hlcs.append(hlc)
            else:
                i = bisect.bisect_left(seqs, seq)
                seqs.insert(i, seq)
                hlcs.insert(i, hlc)

    def _extend(self, rows: list[Row]) -> None:
        number = self.table.number
        self.hlcs.extend(r[0] for r in rows)
        self.origins.extend(number(r[1]) for r in rows)
        self.seqs.extend(r[2] for r in rows)
        self.offsets.extend(r[3] for r in rows)

    def _merge(self, rows: list[Row]) -> None:
        """Rows among those here: slices of the old columns between them."""
        old = (self.hlcs, self.origins, self.seqs, self.offsets)
        new = tuple(array(column.typecode) for column in old)
        number = self.table.number
        start = 0
        for hlc, origin, seq, offset in rows:
            pos = self.position((hlc, origin, seq))
            for fresh, column in zip(new, old, strict=True):
                fresh.extend(column[start:pos])
            new[0].append(hlc)
            new[1].append(number(origin))
            new[2].append(seq)
            new[3].append(offset)
            start = pos
        for fresh, column in zip(new, old, strict=True):
            fresh.extend(column[start:])
        self.hlcs, self.origins, self.seqs, self.offsets = new

    def cut(self, end: int) -> list[tuple[str, int]]:
        """Take the first ``end`` records out (expired); their ids."""
        if end <= 0:
            return []
        gone = [self.rid(pos) for pos in range(end)]
        cut: dict[int, list[int]] = {}
        for n, seq in zip(self.origins[:end], self.seqs[:end], strict=True):
            cut.setdefault(n, []).append(seq)
        for column in (self.hlcs, self.origins, self.seqs, self.offsets):
            del column[:end]
        # An origin stamps its records in seq order, so what expires of it is
        # the start of its seqs; a peer that did otherwise costs a rebuild.
        for n, seqs in cut.items():
            held, hlcs = self._by_origin[n]
            seqs.sort()
            if held[: len(seqs)].tolist() != seqs:
                self._index()
                break
            del held[: len(seqs)]
            del hlcs[: len(seqs)]
            if not held:
                del self._by_origin[n]
        return gone

    def remove(self, rids: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Take these records out, those that are here; their ids."""
        drop = {pos for rid in rids if (pos := self.find(*rid)) is not None}
        if not drop:
            return []
        gone = [self.rid(pos) for pos in sorted(drop)]
        keep = [pos for pos in range(len(self.hlcs)) if pos not in drop]
        for name in ("hlcs", "origins", "seqs", "offsets"):
            column = getattr(self, name)
            setattr(self, name, array(column.typecode, (column[pos] for pos in keep)))
        self._index()
        return gone

    def _index(self) -> None:
        """Rebuild the per-origin seqs from the columns."""
        by_origin: dict[int, tuple[array[int], array[int]]] = {}
        pairs: dict[int, list[tuple[int, int]]] = {}
        for n, seq, hlc in zip(self.origins, self.seqs, self.hlcs, strict=True):
            pairs.setdefault(n, []).append((seq, hlc))
        for n, found in pairs.items():
            found.sort()
            by_origin[n] = (array("I", (p[0] for p in found)), array("Q", (p[1] for p in found)))
        self._by_origin = by_origin
