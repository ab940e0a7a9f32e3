"""Relay suppression for what floods the mesh: counter-based, as in
Meshtastic's managed flooding and MPL (RFC 7731).

How this works: a record (or a beacon that carries presence to the far end)
new to us, with hops left, is not relayed at once: ``offer`` holds it for a
random time in ``[0, RELAY_WINDOW)``.  Every copy of it heard meanwhile, the
one that brought it included, is counted (``heard``); once ``RELAY_COPIES``
copies are heard our relay is cancelled, since our neighbours have most likely
heard one of them too.  In a dense cell the first relayer's copy cancels
nearly everyone else (a few transmissions per message whatever the cell's
size); in a line each router hears one copy before its turn and relays.  What
suppression or loss leaves out is repaired by the beacons' digests (node/
trickle.py): a neighbour that lacks a record disagrees, and asks.

Bounded: at most ``MAX_PENDING_RELAYS`` held; beyond it a relay goes out at
once (never dropped: delivery matters more than air-time).  Keys are opaque
(``("r", origin, seq)`` for records).  All times are the monotonic ``now``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

# Longest random hold before relaying.  It must be long against one hop (air
# time of a ~200-byte datagram at the basic rate is ~0.3 ms, a router's queue
# and channel access a few ms) so the first relayer's copy reaches the others
# before their turn; and short against a person's patience: a 12-router line
# is 11 holds, ~0.5 s on average.
RELAY_WINDOW = 0.1
# Copies heard that cancel our relay: two (the one that brought it and one
# more).  A dense cell then sends the origin's copy and one relay, plus the
# few relayers whose hold ended before that copy reached them.  Three cost a
# cell of 16 one more transmission a message (3.2 simulated) for fewer holes
# on sparse graphs; the holes two leave are repaired within a second now
# (a new record resets Trickle, and a record a neighbour lacked floods on
# from it once caught up: node/protocol.py), so two wins: 2.6 in the cell,
# 3.5 at 10 % loss (tests/bench/bench_scale_sim.py).
RELAY_COPIES = 2
# Relays held at once: a burst of chat or catch-up of hundreds of records at
# 100 records/s per origin is 10 s of RELAY_WINDOWs; beyond it, relay at once.
MAX_PENDING_RELAYS = 1024


@dataclass(slots=True)
class _Held:
    due: float
    copies: int  # copies heard, the one that brought it included
    datagram: Any


class RelaySuppressor:
    def __init__(self, rng: random.Random, window: float = RELAY_WINDOW) -> None:
        self.rng = rng
        self.window = window
        self._held: dict[Hashable, _Held] = {}
        self._due: list[tuple[float, int, Hashable]] = []  # a heap; stale entries skipped
        self._order = 0
        self.cancelled = 0  # relays left out: enough copies were heard
        self.sent = 0

    def offer(self, key: Hashable, datagram: Any, now: float) -> list[Any]:
        """Hold ``datagram`` for a relay; what must go out at once (full)."""
        if len(self._held) >= MAX_PENDING_RELAYS:
            self.sent += 1
            return [datagram]
        held = _Held(now + self.window * self.rng.random(), 1, datagram)
        self._held[key] = held
        self._order += 1
        heapq.heappush(self._due, (held.due, self._order, key))
        return []

    def heard(self, key: Hashable) -> None:
        """Another copy of ``key`` was heard."""
        held = self._held.get(key)
        if held is None:
            return
        held.copies += 1
        if held.copies >= RELAY_COPIES:
            del self._held[key]
            self.cancelled += 1

    def get_timer(self) -> float | None:
        self._skip_stale()
        return self._due[0][0] if self._due else None

    def due(self, now: float) -> list[Any]:
        """The held relays whose time has come."""
        out = []
        while self._due and self._due[0][0] <= now:
            when, _, key = heapq.heappop(self._due)
            held = self._held.get(key)
            if held is not None and held.due == when:  # else stale: cancelled or offered again
                del self._held[key]
                out.append(held.datagram)
        self.sent += len(out)
        return out

    def pending(self) -> int:
        return len(self._held)

    def _skip_stale(self) -> None:
        while self._due:
            when, _, key = self._due[0]
            held = self._held.get(key)
            if held is not None and held.due == when:
                return
            heapq.heappop(self._due)
