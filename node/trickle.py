"""When our beacons go: the Trickle algorithm (RFC 6206), with a floor.

How this works: time is cut in intervals of length ``I``, from ``imin``
doubling up to ``imax``.  In each interval one instant ``t`` is drawn in
``[I/2, I)``; every beacon heard that agrees with us (same vector digest)
counts ``c``.  At ``t`` we beacon if ``c < k``: a neighbourhood that agrees
hears about ``k`` beacons per interval whatever its size.  When the interval
ends it doubles (up to ``imax``).  An inconsistency (a neighbour's digest
differs, a record a neighbour lacks or we lack, a new router) drops ``I`` to
``imin`` at once, so neighbours that disagree talk within ``imin`` and repair
hop by hop; when they agree again they fall quiet by themselves.

A neighbour that disagrees: while the newest beacon of some neighbour differs
from our vector, ``c`` does not keep us quiet (``handle_timer(now,
disagreeing=True)``).  RFC 6206 counts only the transmissions a node hears;
a leaf whose one neighbour is ours hears nothing but us, and our other
neighbours, agreeing among themselves, kept our beacons suppressed interval
after interval while the leaf, having beaconed its old vector, lacked a
record (it then learnt of it at its own next beacon, seconds later).
Neighbours that agree cost nothing more.

The floor: at ``imax`` we beacon every interval whatever ``c`` is.  A beacon is
also how a neighbour knows we are alive (node/nodes.py ``peer_timeout`` is a
few ``imax``), so suppression never silences a live router for longer than
``imax``: an idle router sends one beacon per ``imax``, which does not grow
with the number of routers in range.  The first beacon is due at once (start-up
tells the neighbours about us).  All times are the monotonic ``now`` the caller
passes; ``rng`` draws ``t``.
"""

from __future__ import annotations

import random

# The shortest interval: neighbours that disagree exchange beacons within
# 125-250 ms, a few Wi-Fi round trips, so a record that stopped at a hop limit
# or was lost crosses a hop in a quarter second.  Below this a burst of resets
# (a router joining) would cost more than it saves.
TRICKLE_IMIN = 0.25
# Beacons heard that agree with us, per interval, before we keep quiet: two,
# so one lost beacon does not leave a disagreement unnoticed.
TRICKLE_K = 2


class Trickle:
    """RFC 6206 section 4.2, with the floor described above."""

    def __init__(self, imin: float, imax: float, k: int, rng: random.Random) -> None:
        if not 0 < imin <= imax or k < 1:
            raise ValueError(f"Trickle needs 0 < imin <= imax and k >= 1: {imin} {imax} {k}")
        self.imin, self.imax, self.k, self.rng = imin, imax, k, rng
        self.interval = imin
        self.start: float | None = None  # None: the start-up beacon is due at once
        self.t = 0.0  # when to transmit in this interval
        self.fired = False  # t has passed in this interval
        self.c = 0  # consistent beacons heard in this interval
        self.resets = 0  # inconsistencies that shortened the interval (for /status)
        self.suppressed = 0  # transmissions left out because c >= k
        self.last_sent: float | None = None

    def get_timer(self) -> float:
        if self.start is None:
            return 0.0
        return self.start + self.interval if self.fired else self.t

    def handle_timer(self, now: float, disagreeing: bool = False) -> bool:
        """Move on to ``now``; True if a beacon is due.  ``disagreeing``: a
        neighbour's newest beacon differs from our vector (or the caller
        knows a neighbour may lack a record), so ``c`` does not suppress
        (see the opening)."""
        if self.start is None:
            self._begin(now)
            return True
        due = False
        if not self.fired and now >= self.t:
            self.fired = True
            due = self.c < self.k or self.interval >= self.imax or disagreeing
            self.suppressed += not due
        if self.fired and now >= self.start + self.interval:
            self.interval = min(2 * self.interval, self.imax)
            self._begin(now)
        return due

    def heard_consistent(self) -> None:
        self.c += 1

    def inconsistent(self, now: float) -> None:
        """Something disagrees: back to ``imin`` (no-op if already there)."""
        if self.start is None or self.interval <= self.imin:
            return
        self.resets += 1
        self.interval = self.imin
        self._begin(now)

    def sent(self, now: float) -> None:
        self.last_sent = now

    def status(self) -> dict[str, float | int]:
        return {"interval_s": self.interval, "resets": self.resets, "suppressed": self.suppressed}

    def _begin(self, now: float) -> None:
        self.start, self.c, self.fired = now, 0, False
        self.t = now + self.interval * (0.5 + 0.5 * self.rng.random())
