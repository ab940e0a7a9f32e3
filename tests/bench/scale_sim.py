"""A simulator of the mesh at neighbourhood scale: N sans-I/O ``MeshProtocol``
objects on a simulated clock, no sockets, no sleeping.

How this works:

- A ``Topology`` says who hears whom: ``neighbours[i]`` is the set of routers
  in radio range of router i (both ways).  ``unit_disk`` scatters routers on a
  square whose size grows with N, so the mean degree stays ``MEAN_DEGREE``
  (a neighbourhood grows by area, not by density), and resamples (seeded)
  until the graph is connected; ``line`` and ``cell`` (all hear all) are the
  two extremes, and ``grid`` the namespace lab's sparse one (no triangles).
- ``ScaleSim`` drives one protocol per router from a single event queue of
  deliveries and timers, in time order (equal times in the order they were
  queued).  After any call into a router it sends what the router queued,
  hands out its events and re-reads ``get_timer()`` (a timer entry that is no
  longer the router's current one is skipped when it comes up).
- A multicast datagram is one transmission heard by every neighbour; a
  unicast one only by the neighbour at that address.  Each copy is lost with
  probability ``loss``, independently per receiver (Wi-Fi multicast has no
  acknowledgement), from one seeded ``random.Random``: a run is reproducible.
  Unicast is lost at the same rate (the namespace lab does the same), though
  real Wi-Fi retries unicast.  A router sends one datagram at a time: each
  takes its air-time (``AIRTIME_BITS_PER_S``) after the previous one, and
  arrives ``HOP_DELAY`` after it went out.  Collisions and carrier sense are
  not modelled: the simulator counts transmissions, it does not model a
  channel's capacity.
- Every datagram is counted by its kind (the header's kind byte, the inner
  kind for a fragment), per router: ``sent`` and ``sent_kinds``.
- ``post`` makes a record at a router as its user would; the simulator
  tracks when each router first holds each record (``held_at``), and how many
  (router, record) pairs are still missing (``missing``) for "all routers
  hold everything".
- ``cut(side)`` removes every link between ``side`` and the rest; ``heal()``
  restores them.

Time: the simulation runs from 0 in seconds; ``protocol_now`` is the one
place that turns it into the ``now`` the protocol takes (monotonic seconds),
``wall_ms`` the wall clock its hybrid clock reads, and
``ScaleSim._new_protocol`` the one place that builds a ``MeshProtocol``.
The simulator stands in for the app too: a record a router receives is
stored (``Source``, ``known``) and settled at once (``records_settled``).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.clock import HybridClock
from node.config import MeshConfig
from node.protocol import MeshProtocol, RecordReceived
from node.record import Record, RecordKind, VersionVector
from node.wire import FRAGMENT_HEAD, HEADER, DatagramKind

KEY = b"scale simulator mesh key, 32 B.."
PORT = 8888
# The simulation starts at 0; the protocol's monotonic clock at this (a machine
# up for a while: no timer arithmetic near zero), the wall clock at a plausible
# date (seconds since 1970) for the hybrid clock's stamps.
MONOTONIC_START = 1_000.0
SIM_EPOCH = 1_700_000_000.0
# Per hop, besides air-time: a router's queueing and processing, and the
# radio's channel access (DIFS and back-off are ~0.1-1 ms; a busy router more).
HOP_DELAY = 0.002
# Wi-Fi sends multicast at a basic rate: 6 Mbit/s is 802.11g/n's lowest OFDM
# rate (802.11b's 1 Mbit/s is slower still); IP, UDP and MAC headers included.
AIRTIME_BITS_PER_S = 6_000_000
FRAME_OVERHEAD_BYTES = 20 + 8 + 36  # IPv4 + UDP + 802.11 MAC header and FCS
# Routers in range of each other, on average: a neighbourhood mesh where each
# router hears a handful of others, dense enough to be connected.
MEAN_DEGREE = 8
# Unit-disk graphs drawn until one is connected: at MEAN_DEGREE 8 most of the
# draws for 25..200 routers are; this many failures means the settings are wrong.
MAX_TOPOLOGY_DRAWS = 1_000
# Bounds on one ``run_until``: a protocol that never settles (a timer due again
# and again at the same instant) fails the bench instead of hanging it.
MAX_EVENTS_PER_RUN = 50_000_000
MAX_WALL_SECONDS_PER_RUN = 600.0

BEACON_KINDS = frozenset({DatagramKind.BEACON})  # background traffic, excluded per message
KIND_BYTE = 1  # offset of the kind in the header (node/wire.py HEADER)


def protocol_now(t: float) -> float:
    """The ``now`` the protocol is given at simulated time ``t``."""
    return MONOTONIC_START + t


def sim_time(protocol_time: float) -> float:
    """The simulated time of a protocol's timer (the inverse of ``protocol_now``)."""
    return protocol_time - MONOTONIC_START


def wall_ms(t: float) -> int:
    """The wall clock, in milliseconds, at simulated time ``t``."""
    return int((SIM_EPOCH + t) * 1000)


def datagram_kind(data: bytes) -> DatagramKind:
    """The kind of a datagram we sent (the inner kind for a fragment)."""
    kind = DatagramKind(data[KIND_BYTE])
    if kind is DatagramKind.FRAGMENT:
        return DatagramKind(data[HEADER.size])  # FRAGMENT_HEAD starts with the inner kind
    return kind


assert FRAGMENT_HEAD.format.startswith("!B")  # the inner kind is the body's first byte


def airtime(size: int) -> float:
    return (size + FRAME_OVERHEAD_BYTES) * 8 / AIRTIME_BITS_PER_S


# -- topologies --------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    name: str
    neighbours: tuple[frozenset[int], ...]
    positions: tuple[tuple[float, float], ...]  # for splitting in two halves

    @property
    def n(self) -> int:
        return len(self.neighbours)

    def hops_from(self, src: int) -> list[int]:
        """Links from ``src`` to every router (breadth first); -1: unreachable."""
        hops = [-1] * self.n
        hops[src] = 0
        queue = deque([src])
        while queue:
            a = queue.popleft()
            for b in self.neighbours[a]:
                if hops[b] < 0:
                    hops[b] = hops[a] + 1
                    queue.append(b)
        return hops

    def connected(self) -> bool:
        return min(self.hops_from(0)) >= 0

    def diameter(self) -> int:
        return max(max(self.hops_from(i)) for i in range(self.n))

    def halves(self) -> tuple[set[int], set[int]]:
        """Two sides split at the median x: the far ends cannot hear each other."""
        order = sorted(range(self.n), key=lambda i: (self.positions[i], i))
        left = set(order[: self.n // 2])
        return left, set(range(self.n)) - left

    def edges(self) -> int:
        return sum(len(s) for s in self.neighbours) // 2


def _from_links(name: str, n: int, links, positions) -> Topology:
    sets: list[set[int]] = [set() for _ in range(n)]
    for a, b in links:
        sets[a].add(b)
        sets[b].add(a)
    return Topology(name, tuple(frozenset(s) for s in sets), tuple(positions))


def unit_disk(n: int, seed: int, mean_degree: float = MEAN_DEGREE) -> Topology:
    """N routers uniformly on a square, radio range 1, connected (resampled)."""
    rng = random.Random(f"udg-{n}-{seed}")
    side = math.sqrt(math.pi * n / mean_degree)  # n * pi * 1^2 / side^2 = mean degree
    for _ in range(MAX_TOPOLOGY_DRAWS):
        points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(n)]
        links = [
            (a, b)
            for a in range(n)
            for b in range(a + 1, n)
            if math.dist(points[a], points[b]) <= 1.0
        ]
        topology = _from_links(f"udg{n}", n, links, points)
        if topology.connected():
            return topology
    raise RuntimeError(f"no connected unit-disk graph of {n} in {MAX_TOPOLOGY_DRAWS} draws")


def line(n: int) -> Topology:
    return _from_links(
        f"line{n}", n, [(i, i + 1) for i in range(n - 1)], [(i, 0) for i in range(n)]
    )


def grid(side: int) -> Topology:
    """``side`` x ``side`` routers, each hearing the ones left, right, above
    and below (the namespace lab's grid25: tests/bench/bench_scale_netns.py)."""
    links = []
    for i in range(side * side):
        row, col = divmod(i, side)
        if col < side - 1:
            links.append((i, i + 1))
        if row < side - 1:
            links.append((i, i + side))
    positions = [(i % side, i // side) for i in range(side * side)]
    return _from_links(f"grid{side * side}", side * side, links, positions)


def cell(n: int) -> Topology:
    """All hear all: one radio cell."""
    links = [(a, b) for a in range(n) for b in range(a + 1, n)]
    return _from_links(f"cell{n}", n, links, [(i, 0) for i in range(n)])


# -- routers -----------------------------------------------------------------------------


class Source:
    """A router's records (``sync.RecordSource``): the store, in memory; nothing is purged."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], Record] = {}

    def get(self, origin: str, seq: int) -> Record | None:
        return self.records.get((origin, seq))

    def gone_through(self, origin: str, seq: int) -> int:
        return 0


@dataclass
class SimRouter:
    index: int
    protocol: MeshProtocol
    addr: tuple[str, int]
    known: VersionVector  # the store's version vector: written here, read by the protocol
    source: Source
    sent: int = 0
    sent_kinds: Counter[DatagramKind] = field(default_factory=Counter)
    timer_at: float | None = None  # the timer entry queued for it (simulated time)
    fired_at: float | None = None  # when its timer last ran
    radio_free_at: float = 0.0  # when its last queued datagram is off the air
    next_seq: int = 1


class SimulationStuck(RuntimeError):
    """A run went past its bound in events or wall time."""


_DELIVER, _TIMER = 0, 1


class ScaleSim:
    def __init__(self, topology: Topology, *, loss: float = 0.0, seed: int = 0) -> None:
        self.topology = topology
        self.loss = loss
        self.seed = seed
        self.rng = random.Random(f"links-{seed}")
        self.now = 0.0
        self.hears: list[set[int]] = [set(s) for s in topology.neighbours]
        self._cut: set[tuple[int, int]] = set()
        self._queue: list[tuple[float, int, int, int, bytes | None, tuple[str, int] | None]] = []
        self._order = 0
        self.routers = [self._new_router(i) for i in range(topology.n)]
        self.by_addr = {r.addr: r.index for r in self.routers}
        self.held_at: dict[tuple[str, int], dict[int, float]] = {}  # record -> router -> when
        self.missing = 0  # (router, record) pairs not held yet
        for r in self.routers:
            self._schedule_timer(r)

    # -- construction: the one place that builds a protocol ------------------------------

    def _new_protocol(self, i: int, known: VersionVector, source: Source) -> MeshProtocol:
        config = MeshConfig(node_id=f"{0x5C000000 + i:016x}", node_name=f"r{i}", keys=(KEY,))
        return MeshProtocol(
            config,
            clock=HybridClock(wall_ms=lambda: wall_ms(self.now)),
            known=known,
            rng=random.Random(f"router-{self.seed}-{i}"),
            source=source,
        )

    def _new_router(self, i: int) -> SimRouter:
        source, known = Source(), VersionVector()
        addr = (f"198.18.{i // 250}.{i % 250 + 1}", PORT)
        return SimRouter(i, self._new_protocol(i, known, source), addr, known, source)

    # -- what people do ------------------------------------------------------------------

    def post(self, i: int, text: str, room: int = 1) -> tuple[str, int]:
        """Router i's user posts ``text``: the record goes out now; its id."""
        router = self.routers[i]
        seq, router.next_seq = router.next_seq, router.next_seq + 1
        hlc = router.protocol.clock.tick()
        body = {"author": f"user{i}", "node": f"r{i}", "time": wall_ms(self.now), "text": text}
        record = Record(router.protocol.node_id, seq, hlc, RecordKind.MESSAGE, room, body)
        rid = (record.origin, record.seq)
        router.source.records[rid] = record
        router.known.add(*rid)
        self.held_at[rid] = {i: self.now}
        self.missing += len(self.routers) - 1
        router.protocol.send_record(record, protocol_now(self.now))
        self._after(router)
        return rid

    def reboot(self, i: int) -> None:
        """Router i starts afresh: a new protocol, nothing held (a new router)."""
        old = self.routers[i]
        self.routers[i] = self._new_router(i)
        self.routers[i].radio_free_at = old.radio_free_at
        self.missing += sum(1 for holders in self.held_at.values() if holders.pop(i, None))
        self._schedule_timer(self.routers[i])

    def holders(self, rid: tuple[str, int]) -> int:
        return len(self.held_at[rid])

    # -- topology changes ----------------------------------------------------------------

    def cut(self, side: set[int]) -> None:
        """Remove every link between ``side`` and the other routers."""
        for a in side:
            for b in self.hears[a] - side:
                self._cut.add((min(a, b), max(a, b)))
        for a, b in self._cut:
            self.hears[a].discard(b)
            self.hears[b].discard(a)

    def heal(self) -> None:
        for a, b in self._cut:
            self.hears[a].add(b)
            self.hears[b].add(a)
        self._cut.clear()

    # -- counting ------------------------------------------------------------------------

    def sent_total(self, *, beacons: bool = True) -> int:
        total = sum(r.sent for r in self.routers)
        if not beacons:
            total -= sum(r.sent_kinds[k] for r in self.routers for k in BEACON_KINDS)
        return total

    def sent_each(self) -> list[int]:
        return [r.sent for r in self.routers]

    # -- running -------------------------------------------------------------------------

    def run_for(self, seconds: float, until: Callable[[], bool] | None = None) -> float:
        return self.run_until(self.now + seconds, until)

    def run_until(self, end: float, until: Callable[[], bool] | None = None) -> float:
        """Process everything due up to ``end``; stop early once ``until()``
        holds (checked after every event).  The simulated time it stopped at."""
        if until is not None and until():
            return self.now
        deadline = time.monotonic() + MAX_WALL_SECONDS_PER_RUN
        for count in range(MAX_EVENTS_PER_RUN):
            if not self._queue or self._queue[0][0] > end:
                self.now = end
                return end
            when, _, what, i, data, src = heapq.heappop(self._queue)
            self.now = when
            router = self.routers[i]
            if what == _TIMER:
                if router.timer_at != when:
                    continue  # superseded by a later get_timer()
                router.timer_at, router.fired_at = None, when
                router.protocol.handle_timer(protocol_now(when))
            else:
                assert data is not None and src is not None
                router.protocol.receive_datagram(data, src, protocol_now(when), "sim0")
            self._after(router, what == _TIMER)
            if until is not None and until():
                return self.now
            if count % 10_000 == 0 and time.monotonic() > deadline:
                break
        raise SimulationStuck(f"no end by t={end:.1f} s (stopped at t={self.now:.3f} s)")

    def _after(self, router: SimRouter, fired: bool = False) -> None:
        """Send what ``router`` queued, take its events, re-arm its timer
        (``fired``: its timer just ran)."""
        now = protocol_now(self.now)
        for data, dest in router.protocol.datagrams_to_send(now):
            self._transmit(router, data, dest)
        settle = False
        while (event := router.protocol.next_event()) is not None:
            if isinstance(event, RecordReceived):
                self._held(router, event.record)
                settle = True
        if settle:
            router.protocol.records_settled()
        self._schedule_timer(router, fired)

    def _held(self, router: SimRouter, record: Record) -> None:
        rid = (record.origin, record.seq)
        router.source.records[rid] = record
        router.known.add(*rid)
        holders = self.held_at.setdefault(rid, {})
        if router.index not in holders:
            holders[router.index] = self.now
            self.missing -= 1

    def _schedule_timer(self, router: SimRouter, fired: bool = False) -> None:
        timer = router.protocol.get_timer()
        at = None if timer is None else max(self.now, sim_time(timer))
        if at is not None and at == router.fired_at == self.now and fired:
            # Everything due at an instant is handled at it: a timer due again
            # at once would spin a real transport (a bug in the protocol).
            raise SimulationStuck(f"router {router.index}: timer due again at t={at:.6f} s")
        if at != router.timer_at:
            router.timer_at = at
            if at is not None:
                self._push(at, _TIMER, router.index, None, None)

    def _transmit(self, router: SimRouter, data: bytes, dest: tuple[str, int] | None) -> None:
        router.sent += 1
        router.sent_kinds[datagram_kind(data)] += 1
        start = max(self.now, router.radio_free_at)
        router.radio_free_at = start + airtime(len(data))
        arrival = router.radio_free_at + HOP_DELAY
        if dest is None:
            receivers = sorted(self.hears[router.index])
        else:
            target = self.by_addr.get(dest)
            receivers = [target] if target in self.hears[router.index] else []
        for dst in receivers:
            if self.loss and self.rng.random() < self.loss:
                continue
            self._push(arrival, _DELIVER, dst, data, router.addr)

    def _push(self, when: float, what: int, i: int, data, src) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when, self._order, what, i, data, src))
