"""Records: everything the mesh replicates, and the version vector over them.

How this works: a record is a chat message, an account, a moderation
action, a read marker, a direct message or a setting.  ``(origin, seq)``
is its id: ``origin`` is the router's node id (16 hex digits, random,
kept in the data folder) and ``seq`` counts 1, 2, 3... per origin across
every kind, never reused.  ``hlc`` is the hybrid-logical-clock timestamp
(node/clock.py); logs sort by ``Record.order_key`` = ``(hlc, origin, seq)``.

``VersionVector`` remembers which ids a node holds: per origin the highest seq
up to which it has everything (``contiguous``) plus the few seqs above it that
arrived early.  Seqs a peer answered as gone for good (a GONE range in
catch-up, node/sync.py) count as held too: ``add_range``, O(1) at the bottom,
bounded above a hole.  It is the dedup index (a record seen twice is a duplicate, which
also defeats replays) and, in beacons, what peers compare to find gaps.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

ORIGIN_HEX_LEN = 16  # 8 random bytes: collisions are negligible for any mesh
ORIGIN_RE = re.compile(r"[0-9a-f]{16}")
SEQ_RE = re.compile(r"[0-9]{1,10}")
MAX_SEQ = (1 << 32) - 1  # the wire carries seq in 32 bits


class RecordKind(IntEnum):
    MESSAGE = 1  # a chat message in a room: author, node name, wall time, text
    ACCOUNT = 2  # an account: username, password hash (register or change)
    MODERATION = 3  # an admin's action: delete a message, clear a room, (un)ban a user
    READ = 4  # how far a user has read a room: user, room, upto (an HLC); latest wins
    DIRECT = 5  # a direct message between two accounts: from, to, node, wall time, text
    SETTING = 6  # one account's setting (a block, attention, a read marker); latest wins


@dataclass(frozen=True, slots=True, eq=True)
class Record:
    origin: str
    seq: int
    hlc: int
    kind: RecordKind
    room: int  # 1..N for messages, 0 for records that belong to no room
    body: Mapping[str, Any] = field(compare=False)
    # Bytes of ``body``'s compact JSON (node/wire.py ``dump_json``) or more,
    # when known: the wire decoder sets it from the JSON it received (no
    # re-encoding is longer, node/wire.py ``_load_json``); 0: not known.
    json_size: int = field(default=0, compare=False, repr=False)

    # Records are compared, never hashed (their body is a dict); typeshed
    # wants __hash__ to be a method, hence the ignore.
    __hash__ = None  # type: ignore[assignment]

    @property
    def id(self) -> str:
        return f"{self.origin}:{self.seq}"

    @property
    def order_key(self) -> tuple[int, str, int]:
        return (self.hlc, self.origin, self.seq)


def parse_id(text: str) -> tuple[str, int] | None:
    """``"<origin>:<seq>"`` to ``(origin, seq)``; None if malformed."""
    origin, sep, seq = text.partition(":")
    # ASCII digits only, and no more than a u32 has: "²" is a digit to
    # str.isdigit() but not to int(), and int() of 5,000 digits raises.
    if not sep or not ORIGIN_RE.fullmatch(origin) or not SEQ_RE.fullmatch(seq):
        return None
    n = int(seq)
    if not 1 <= n <= MAX_SEQ:
        return None
    return origin, n


class SeqSet:
    """The seqs held from one origin: 1..contiguous, plus ``extra`` ranges
    above it (what arrived early).  Everything is O(log r) or O(r) in the
    number r of ranges, never in the number of seqs: after one lost datagram
    early in a 100,000-record catch-up, the rest is one range, not 100,000
    entries to sort on every check."""

    __slots__ = ("contiguous", "extra")

    def __init__(self) -> None:
        self.contiguous = 0
        self.extra = RangeSet()

    def __contains__(self, seq: int) -> bool:
        if seq <= self.contiguous:
            return True
        ranges = self.extra.ranges
        # Above every range (what a catch-up window brings next): no search.
        return bool(ranges) and seq <= ranges[-1][1] and seq in self.extra

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was already there."""
        ranges = self.extra.ranges
        if seq == self.contiguous + 1 and not ranges:  # the usual case
            self.contiguous = seq
            return True
        if ranges and seq == ranges[-1][1] + 1:  # a window above a hole, in order
            ranges[-1] = (ranges[-1][0], seq)
            return True
        if seq in self:
            return False
        self.extra.add(seq, seq)
        self._absorb()
        return True

    def add_range(self, first: int, last: int) -> int:
        """Add every seq in ``first..last``; returns how many were new."""
        first = max(first, self.contiguous + 1)
        if first > last:
            return 0
        new = last - first + 1 - self.extra.overlap(first, last)
        self.extra.add(first, last)
        self._absorb()
        return new

    def _absorb(self) -> None:
        ranges = self.extra.ranges
        if ranges and ranges[0][0] <= self.contiguous + 1:
            self.contiguous = max(self.contiguous, ranges[0][1])
            del ranges[0]

    def highest(self) -> int:
        ranges = self.extra.ranges
        return ranges[-1][1] if ranges else self.contiguous

    def missing(self, upto: int) -> Iterator[tuple[int, int]]:
        """Inclusive ranges of seqs in 1..upto that we lack."""
        start = self.contiguous + 1
        for first, last in self.extra.ranges:
            if first > upto:
                break
            if first > start:
                yield (start, first - 1)
            start = last + 1
        if start <= upto:
            yield (start, upto)


class VersionVector:
    """Which record ids a node holds, per origin."""

    def __init__(self) -> None:
        self._origins: dict[str, SeqSet] = {}

    def __contains__(self, rid: tuple[str, int]) -> bool:
        seqs = self._origins.get(rid[0])
        return seqs is not None and rid[1] in seqs

    def add(self, origin: str, seq: int) -> bool:
        """Record that we hold ``(origin, seq)``; False if we already did."""
        seqs = self._origins.get(origin)
        if seqs is None:
            seqs = self._origins[origin] = SeqSet()
        return seqs.add(seq)

    def contiguous(self, origin: str) -> int:
        seqs = self._origins.get(origin)
        return seqs.contiguous if seqs else 0

    def highest(self, origin: str) -> int:
        seqs = self._origins.get(origin)
        return seqs.highest() if seqs else 0

    def missing(self, origin: str, upto: int) -> list[tuple[int, int]]:
        seqs = self._origins.get(origin)
        if seqs is None:
            return [(1, upto)] if upto >= 1 else []
        return list(seqs.missing(upto))

    def add_many(self, origin: str, seqs: list[int]) -> None:
        """Record that we hold all of ``seqs`` (a log's load): sorted once and
        added a run of consecutive seqs at a time, not a seq at a time."""
        seqs.sort()
        first = prev = seqs[0] if seqs else 0
        for seq in seqs[1:]:
            if seq > prev + 1:
                self.add_range(origin, first, prev)
                first = seq
            prev = seq
        if seqs:
            self.add_range(origin, first, prev)

    def add_range(self, origin: str, first: int, last: int) -> int | None:
        """Record that we hold (or need never ask for) ``first..last`` of
        ``origin``: ``SeqSet.add_range``."""
        seqs = self._origins.get(origin)
        if seqs is None:
            seqs = self._origins[origin] = SeqSet()
        return seqs.add_range(first, last)

    def origins(self) -> list[str]:
        return sorted(self._origins)

    def as_dict(self) -> dict[str, int]:
        """``{origin: contiguous}``: what beacons carry and /status shows."""
        return {o: s.contiguous for o, s in sorted(self._origins.items())}


class RangeSet:
    """Disjoint inclusive ranges of seqs, kept sorted and merged."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self.ranges: list[tuple[int, int]] = []
        for first, last in ranges or ():
            self.add(first, last)

    def add(self, first: int, last: int) -> None:
        if first > last:
            raise ValueError(f"empty range {first}..{last}")
        i = bisect.bisect_left(self.ranges, (first, first))
        if i and self.ranges[i - 1][1] >= first - 1:  # touches the one before
            i -= 1
            first = self.ranges[i][0]
        j = i
        while j < len(self.ranges) and self.ranges[j][0] <= last + 1:
            last = max(last, self.ranges[j][1])
            j += 1
        self.ranges[i:j] = [(first, last)]

    def overlap(self, first: int, last: int) -> int:
        """How many seqs of ``first..last`` are in the set."""
        total = 0
        i = max(0, bisect.bisect_right(self.ranges, (first, MAX_SEQ + 1)) - 1)
        for lo, hi in self.ranges[i:]:
            if lo > last:
                break
            total += max(0, min(hi, last) - max(lo, first) + 1)
        return total

    def run_end(self, seq: int) -> int:
        """The last seq of the range holding ``seq``; 0 if none does."""
        i = bisect.bisect_right(self.ranges, (seq, MAX_SEQ + 1))
        if i and self.ranges[i - 1][0] <= seq <= self.ranges[i - 1][1]:
            return self.ranges[i - 1][1]
        return 0

    def __contains__(self, seq: int) -> bool:
        return self.run_end(seq) != 0

    def __len__(self) -> int:
        return len(self.ranges)
