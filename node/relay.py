"""Relay suppression for what floods the mesh: counter-based, as in
Meshtastic's managed flooding and MPL (RFC 7731).

How this works: a record (or a beacon that carries presence to the far end)
new to us, with hops left, is not relayed at once: ``offer`` holds it for a
random time in ``[0, RELAY_WINDOW)``.  Every copy of it heard meanwhile, the
one that brought it included, is counted (``heard``); once ``RELAY_COPIES``
copies are heard our relay is cancelled, since our neighbours have most likely
heard one of them too.  In a dense cell the first relayer's copy cancels
nearly everyone else (a few transmissions per message whatever the cell's
size).  A router with at most one neighbour besides the sender and the origin
(a line, a bridge) has nobody to leave its relay to: it relays at once
(``RELAY_AT_ONCE_NEIGHBOURS``), so a line of 12 is crossed in ~25 ms, not 11
random holds.  What suppression or loss leaves out is repaired by the beacons'
digests (node/trickle.py): a neighbour that lacks a record disagrees, and
asks; on a line, sooner, by ``EchoWatch`` below: the sender listens for its
one neighbour passing the record on, and sends it again if it does not.
Two copies heard say nothing of a neighbour that hears neither sender (a
leaf behind a triangle, the way out of a clique): a relay cancelled there
strands it until beacons repair.  We remember the relays we cancelled
(``left_out``); a neighbour that then asks us for one of them depends on us,
and our later relays are offered with ``keep``: copies heard do not cancel
them (node/protocol.py ``DEPENDANT_HOLD``).

Bounded: at most ``MAX_PENDING_RELAYS`` held; beyond it a relay goes out at
once (never dropped: delivery matters more than air-time).  Keys are opaque
(``("r", origin, seq)`` for records).  All times are the monotonic ``now``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

# Longest random hold before relaying.  It must be long against one hop (air
# time of a ~200-byte datagram at the basic rate is ~0.3 ms, a router's queue
# and channel access a few ms) so the first relayer's copy reaches the others
# before their turn; and short against a person's patience: a 12-router line
# is 11 holds, ~0.5 s on average.
RELAY_WINDOW = 0.1
# A router with at most this many neighbours besides the one it heard the
# record from (and the record's origin, which holds it) relays at once: in a
# line, or on a bridge between two parts of a mesh, nobody else can relay in
# its stead, so holding only adds latency (11 holds on a line of 12: ~0.55 s
# on average, p99 0.68 s), and the two-hop latency carried the hold too.
# Suppression needs a choice of relayers; beyond one, the whole window.
RELAY_AT_ONCE_NEIGHBOURS = 1
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
# Relays we cancelled, remembered this long (and at most this many) so that a
# neighbour asking us for one of them shows it was left out: the two copies
# we heard did not reach it (node/protocol.py ``_note_left_out``).
LEFT_OUT_MEMORY = 30.0
MAX_LEFT_OUT = 256


@dataclass(slots=True)
class _Held:
    due: float
    copies: int  # copies heard, the one that brought it included
    datagram: Any
    keep: bool  # a neighbour depends on us: copies heard do not cancel it


class RelaySuppressor:
    def __init__(self, rng: random.Random, window: float = RELAY_WINDOW) -> None:
        self.rng = rng
        self.window = window
        self._held: dict[Hashable, _Held] = {}
        self._due: list[tuple[float, int, Hashable]] = []  # a heap; stale entries skipped
        self._order = 0
        self.cancelled = 0  # relays left out: enough copies were heard
        self.sent = 0
        self.at_once = 0  # relays sent without a hold (few neighbours, or full)
        self.kept = 0  # relays sent though enough copies were heard (``keep``)
        self._left_out: dict[Hashable, float] = {}  # cancelled key -> when, oldest first

    def offer(
        self, key: Hashable, datagram: Any, now: float, others: int, keep: bool = False
    ) -> list[Any]:
        """Hold ``datagram`` for a relay; what must go out at once (full, or
        ``others``, the neighbours that might relay it instead of us, is at
        most ``RELAY_AT_ONCE_NEIGHBOURS``).  ``keep``: a neighbour was left
        out before when we cancelled, so copies heard do not cancel this one."""
        if len(self._held) >= MAX_PENDING_RELAYS or others <= RELAY_AT_ONCE_NEIGHBOURS:
            self.sent += 1
            self.at_once += 1
            return [datagram]
        held = _Held(now + self.window * self.rng.random(), 1, datagram, keep)
        self._held[key] = held
        self._order += 1
        heapq.heappush(self._due, (held.due, self._order, key))
        return []

    def heard(self, key: Hashable, now: float) -> bool:
        """Another copy of ``key`` was heard; True if that cancelled our relay."""
        held = self._held.get(key)
        if held is None:
            return False
        held.copies += 1
        if held.copies >= RELAY_COPIES:
            if held.keep:
                self.kept += held.copies == RELAY_COPIES
                return False
            del self._held[key]
            self.cancelled += 1
            self._left_out.pop(key, None)
            self._left_out[key] = now
            while len(self._left_out) > MAX_LEFT_OUT:
                del self._left_out[next(iter(self._left_out))]
            return True
        return False

    def left_out_keys(self) -> list[tuple[str, str, int]]:
        """The records (``("r", origin, seq)``) whose relay we cancelled lately."""
        return [k for k in self._left_out if isinstance(k, tuple) and len(k) == 3 and k[0] == "r"]

    def left_out(self, key: Hashable, now: float) -> bool:
        """Did we cancel our relay of ``key`` within ``LEFT_OUT_MEMORY``?"""
        when = self._left_out.get(key)
        return when is not None and now - when <= LEFT_OUT_MEMORY

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


# -- the echo: an implicit acknowledgement on a line -------------------------------------

# How long we wait to hear the one neighbour beyond us pass on a record we sent
# it: it relays at once (it has at most one neighbour besides us, or holds at
# most RELAY_WINDOW), a hop is a few ms, a busy router tens.  Then we send the
# record again, as often as ECHO_TRIES, ECHO_WAIT apart: a miss is a loss, not
# a congested channel (a copy at the basic rate is ~0.3 ms of air), and the
# per-peer budget below bounds what a silent peer costs.
ECHO_WAIT = RELAY_WINDOW + 0.05
ECHO_TRIES = 3
# Repeats to a peer not heard from since: a neighbour that went off (it stays
# a peer for PEER_TIMEOUT) costs at most this many datagrams, not three per
# record sent its way; anything heard from it allows repeats again.
ECHO_PEER_BUDGET = 8
MAX_ECHO_WATCHES = 1024
# Watched only by a router with at most this many peers in all (a line's: the
# one it heard the record from, the one beyond), and only the one beyond.  A
# record too big for one datagram is not watched: fragments have their own
# repair (node/sync.py FragmentRepair).
ECHO_MAX_PEERS = 2
# A router cannot tell a line from a triangle: there its neighbour, hearing two
# copies, keeps quiet, holds the record, and no echo comes (repeats were ~2.5
# datagrams a message on a random graph of 25 routers).  A peer whose watches
# ended without an echo this many times in a row (found holding the record, or
# out of tries) is not watched for the next ECHO_QUIET_SKIP records, then tried
# again (on a line, two echoes lost in a row, 1 % at 10 % loss, cost the
# next few records their quick repair; the beacons still repair them).
ECHO_QUIET_LIMIT = 2
ECHO_QUIET_SKIP = 8


@dataclass(slots=True)
class _Watch:
    peer: str
    due: float
    tries: int
    datagram: Any


class EchoWatch:
    """Passive acknowledgement (as packet radio and RPL's MPL use it): when we
    send a record to the single neighbour that can carry it further (a line,
    a bridge), hearing that neighbour pass it on (its copy, or its beacon
    saying it holds it) is its acknowledgement; not hearing it within
    ``ECHO_WAIT`` means our copy (or its copy) was lost, and we send ours
    again.  Without it a lost hop waits for Trickle beacons, which are lost
    too at 10 % loss: a line of 12 had p99 1.4 s that way.  A spurious repeat
    (its copy to us was lost) costs one datagram, at the loss rate.

    Bounded (``MAX_ECHO_WATCHES``; beyond, nothing is watched: the beacons
    still repair), and at most ``ECHO_PEER_BUDGET`` repeats to a peer that
    is silent meanwhile.  Keys as ``RelaySuppressor``'s.  ``now``: monotonic."""

    def __init__(self) -> None:
        self._watched: dict[Hashable, _Watch] = {}
        self._due: list[tuple[float, int, Hashable]] = []  # a heap; stale entries skipped
        self._order = 0
        self._unanswered: dict[str, int] = {}  # peer -> repeats since it was last heard
        self._quiet: dict[str, int] = {}  # peer -> watches it held without an echo, in a row
        self.repeats = 0  # records sent again for want of an echo

    def watch(self, key: Hashable, datagram: Any, peer: str, now: float) -> None:
        quiet = self._quiet.get(peer, 0)
        if quiet >= ECHO_QUIET_LIMIT:  # it holds without passing on: it hears our sender too
            skipped = quiet - ECHO_QUIET_LIMIT + 1
            self._quiet[peer] = 0 if skipped >= ECHO_QUIET_SKIP else quiet + 1
            return
        if len(self._watched) < MAX_ECHO_WATCHES and key not in self._watched:
            self._watched[key] = watch = _Watch(peer, now + ECHO_WAIT, 0, datagram)
            self._push(key, watch)

    def heard(self, key: Hashable, sender: str) -> None:
        """A copy of ``key`` from ``sender``: the echo, if it is the peer."""
        watch = self._watched.get(key)
        if watch is not None and watch.peer == sender:
            del self._watched[key]
            self._quiet.pop(sender, None)

    def peer_heard(self, peer: str) -> None:
        """Anything from ``peer``: it is alive, repeats to it may go again."""
        if self._unanswered:
            self._unanswered.pop(peer, None)

    def get_timer(self) -> float | None:
        while self._due:
            when, _, key = self._due[0]
            watch = self._watched.get(key)
            if watch is not None and watch.due == when:
                return when
            heapq.heappop(self._due)
        return None

    def due(self, now: float, holds: Callable[[str, Hashable], bool | None]) -> list[Any]:
        """What to send again now.  ``holds(peer, key)``: True if the peer is
        known to hold it, None if the peer is gone; either ends the watch."""
        out = []
        while self._due and self._due[0][0] <= now:
            when, _, key = heapq.heappop(self._due)
            watch = self._watched.get(key)
            if watch is None or watch.due != when:
                continue  # stale: echoed
            held = holds(watch.peer, key)
            unanswered = self._unanswered.get(watch.peer, 0)
            if held is None or held or watch.tries >= ECHO_TRIES or unanswered >= ECHO_PEER_BUDGET:
                del self._watched[key]
                if held is not None:  # no echo: it holds it, or it is silent
                    if len(self._quiet) >= MAX_ECHO_WATCHES:
                        self._quiet.clear()
                    quiet = self._quiet.get(watch.peer, 0)
                    self._quiet[watch.peer] = min(quiet + 1, ECHO_QUIET_LIMIT)
                continue
            if len(self._unanswered) >= MAX_ECHO_WATCHES:
                self._unanswered.clear()  # peers made up by a key holder: start afresh
            self._unanswered[watch.peer] = unanswered + 1
            watch.tries += 1
            watch.due = now + ECHO_WAIT
            self._push(key, watch)
            out.append(watch.datagram)
        self.repeats += len(out)
        return out

    def pending(self) -> int:
        return len(self._watched)

    def _push(self, key: Hashable, watch: _Watch) -> None:
        self._order += 1
        heapq.heappush(self._due, (watch.due, self._order, key))
