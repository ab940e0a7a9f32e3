"""What the protocol has seen: the store's vector, and what it handed the app
that the app has not settled yet.

How this works: there is one version vector, the store's (``known``): every
record stored, and every seq gone for good (expired, deleted, refused by the
app, reported gone by a peer).  The protocol reads it and never writes it.
Between the moment a record (or a GONE range) is handed to the app as an
event and the moment the app has stored or refused it, the protocol must not
take it again nor ask for it: those ids wait in ``unsettled``, a second
vector, until the app says it has settled everything it was handed
(``settled()``, called by the transport after each round of events).  The app
settles every ``RecordReceived`` (stored, or ``Store.note_refused``) and
every ``RecordsGone`` (``Store.note_gone``), so what it settled is in
``known`` by then; an id the app failed on (an exception) is simply lacking
again and comes back through catch-up.
"""

from __future__ import annotations

from node.record import VersionVector

# Ids (and GONE ranges) handed out between two settlements.  The transport
# settles after every round of at most 64 datagrams (node/transport.py
# MAX_DRAIN), each a BATCH of at most ~44 of the smallest records at the
# default MTU: under 3,000.  A driver that never settles is a bug; forgetting
# then costs only a duplicate event (the store drops it).
MAX_UNSETTLED = 8192


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges in both sorted, disjoint lists ``a`` and ``b``."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        first, last = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if first <= last:
            out.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


class Seen:
    """``known`` (read only) united with ``unsettled``: the reading side of a
    ``VersionVector``; ``add``/``add_range`` go to ``unsettled`` only."""

    def __init__(self, known: VersionVector) -> None:
        self.known = known
        self.unsettled = VersionVector()
        self.forgotten = 0  # settlements overdue: MAX_UNSETTLED reached
        self._count = 0

    def __contains__(self, rid: tuple[str, int]) -> bool:
        return rid in self.known or (self._count > 0 and rid in self.unsettled)

    def add(self, origin: str, seq: int) -> None:
        """Handed to the app as a record: seen until it settles."""
        self._make_room()
        self.unsettled.add(origin, seq)
        self._count += 1

    def add_range(self, origin: str, first: int, last: int) -> int:
        """Handed to the app as gone: seen until it settles; how many seqs
        of ``first..last`` were not seen before."""
        new = sum(b - max(a, first) + 1 for a, b in self.missing(origin, last) if b >= first)
        if new:
            self._make_room()
            self.unsettled.add_range(origin, first, last)
            self._count += 1
        return new

    def settled(self) -> None:
        """The app has settled everything handed out so far."""
        if self._count:
            self.unsettled = VersionVector()
            self._count = 0

    def missing(self, origin: str, upto: int) -> list[tuple[int, int]]:
        lacking = self.known.missing(origin, upto)
        if not self._count or not lacking:
            return lacking
        return _intersect(lacking, self.unsettled.missing(origin, upto))

    def highest(self, origin: str) -> int:
        return max(self.known.highest(origin), self.unsettled.highest(origin))

    def contiguous(self, origin: str) -> int:
        if not self._count:
            return self.known.contiguous(origin)
        top = self.highest(origin)
        lacking = self.missing(origin, top)
        return lacking[0][0] - 1 if lacking else top

    def as_dict(self) -> dict[str, int]:
        """``{origin: contiguous}``, as ``VersionVector.as_dict``."""
        if not self._count:
            return self.known.as_dict()
        origins = sorted(set(self.known.origins()) | set(self.unsettled.origins()))
        return {o: self.contiguous(o) for o in origins}

    def _make_room(self) -> None:
        if self._count >= MAX_UNSETTLED:
            self.forgotten += 1
            self.settled()
