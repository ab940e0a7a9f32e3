"""A simulated mesh of ``MeshProtocol`` nodes: topology, virtual time, bad links.

How this works: ``Mesh`` holds N nodes and who hears whom (``hears[i]`` is the
set of nodes that receive what node i multicasts), so a chain A-B-C where A and
C cannot hear each other is ``Mesh.chain(3)``.  Time is virtual: ``run_for``
steps from one due thing to the next (a delivery, or a node's ``get_timer()``),
calling ``handle_timer`` / ``receive_datagram`` with that time, collecting each
node's events and sending what it queued.  Each link can drop, duplicate and
delay (reorder) datagrams, driven by one seeded ``random.Random``: a run is
reproducible.  Nothing sleeps.

Unicast (a destination address) reaches only the node at that address among
those that hear the sender.  Each node keeps what it made and received in a
``DictSource`` (the store, for answering catch-up requests) and its version
vector, which its protocol reads as ``known``; like the app, the simulator
settles every event it drains (``settle``).  Simulated time is both the
protocol's monotonic ``now`` and each hybrid clock's wall clock.  ``partition`` and
``heal`` cut and restore links; ``restart`` brings a node back with its old
state or wiped (a new node id, nothing known); ``preload`` gives a node a
history without sending it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from node import fragment
from node.clock import HybridClock
from node.fragment import DEFAULT_MTU
from node.protocol import (
    BEACON_INTERVAL,
    DEFAULT_HOP_LIMIT,
    Event,
    MeshConfig,
    MeshProtocol,
    RecordReceived,
)
from node.record import Record, RecordKind, VersionVector
from node.sync import RecordsGone
from node.wire import BatchDatagram, BeaconDatagram, Datagram, RecordDatagram, parse

KEY = b"simulated mesh key, 32 bytes...."
PORT = 8888
START = 1_700_000_000.0  # a plausible wall clock, in seconds
LATENCY = 0.002  # one hop over Wi-Fi


@dataclass
class LinkConfig:
    drop: float = 0.0  # probability a datagram is lost
    duplicate: float = 0.0  # probability it arrives twice
    reorder: float = 0.0  # extra random delay, up to this many seconds


class DictSource:
    """A node's records by id, and what is gone here for good:
    ``sync.RecordSource``.  ``low[origin]``: a simulated retention purge (every
    seq up to it that is not held is gone); ``gone``: ids removed one by one
    (simulated moderation)."""

    MAX_RUN = 65_535  # like the store's MAX_GONE_RUN

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], Record] = {}
        self.low: dict[str, int] = {}
        self.gone: set[tuple[str, int]] = set()

    def put(self, record: Record) -> None:
        self.records[(record.origin, record.seq)] = record

    def get(self, origin: str, seq: int) -> Record | None:
        return self.records.get((origin, seq))

    def is_gone(self, origin: str, seq: int) -> bool:
        rid = (origin, seq)
        if rid in self.records:
            return False
        return rid in self.gone or seq <= self.low.get(origin, 0)

    def gone_through(self, origin: str, seq: int) -> int:
        if not self.is_gone(origin, seq):
            return 0
        last = seq
        while last < seq + self.MAX_RUN - 1 and self.is_gone(origin, last + 1):
            last += 1
        return last

    def ids(self) -> set[tuple[str, int]]:
        return set(self.records)


@dataclass
class SimNode:
    index: int
    protocol: MeshProtocol
    addr: tuple[str, int]
    source: DictSource = field(default_factory=DictSource)
    up: bool = True
    events: list[Event] = field(default_factory=list)
    sent_datagrams: list[bytes] = field(default_factory=list)
    sent_unicast: list[bytes] = field(default_factory=list)
    next_seq: int = 1
    keep_sent: bool = True  # False: count bytes only (long runs)
    sent_bytes: int = 0
    sent_log: list[tuple[float, bytes, tuple[str, int] | None]] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.protocol.node_id

    def records(self) -> list[Record]:
        return [e.record for e in self.events if isinstance(e, RecordReceived)]

    def events_of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def node_id(index: int, generation: int = 0) -> str:
    """Node ``index``'s id; a wiped restart is a new ``generation``, a new id."""
    return f"{0xA0 + index + 0x1000 * generation:016x}"


def protocol(config: dict, **collaborators) -> MeshProtocol:
    """A ``MeshProtocol`` from keyword settings: those of ``MeshConfig`` make
    the config, the rest (clock, known, rng, source, recover_own) are passed."""
    fields = set(MeshConfig.__dataclass_fields__)
    settings = {k: v for k, v in config.items() if k in fields}
    collaborators |= {k: v for k, v in config.items() if k not in fields}
    return MeshProtocol(MeshConfig(**settings), **collaborators)


def by_hand(**kwargs) -> MeshProtocol:
    """One protocol to feed datagrams by hand: node 0, the simulator's key,
    a hybrid clock whose wall clock stands at ``START``."""
    settings = dict(
        node_id=node_id(0),
        node_name="me",
        keys=[KEY],
        clock=HybridClock(wall_ms=lambda: int(START * 1000)),
        known=VersionVector(),
        rng=random.Random(1),
    )
    settings.update(kwargs)
    return protocol(settings)


def settle(p: MeshProtocol, store: DictSource | None = None) -> list[Event]:
    """Drain ``p``'s events and settle them as the app does (app/meshlink.py):
    every record received is stored, every GONE range noted, in ``p.known``
    (the store's vector); then tell ``p``.  The events, in order."""
    out = []
    for _ in range(1_000_000):
        event = p.next_event()
        if event is None:
            break
        out.append(event)
        if isinstance(event, RecordReceived):
            p.known.add(event.record.origin, event.record.seq)
            if store is not None:
                store.put(event.record)
        elif isinstance(event, RecordsGone):
            p.known.add_range(event.origin, event.first, event.last)
    p.records_settled()
    return out


def encode(datagram: Datagram, key: bytes, *, transfer_id: int, mtu: int = DEFAULT_MTU):
    """``datagram`` serialized whole if it fits ``mtu``, else as fragments."""
    whole = datagram.serialize(key)
    if len(whole) <= mtu:
        return [whole]
    assert isinstance(datagram, (RecordDatagram, BeaconDatagram, BatchDatagram))
    pieces = fragment.split(datagram, mtu=mtu, transfer_id=transfer_id)
    return [piece.serialize(key) for piece in pieces]


class Mesh:
    def __init__(
        self,
        n: int,
        links: Iterable[tuple[int, int]],
        *,
        seed: int = 0,
        link: LinkConfig | None = None,
        keys: dict[int, bytes] | None = None,
        loopback: bool = False,
        same_host: bool = False,
        hop_limit: int = DEFAULT_HOP_LIMIT,
        mtu: int = DEFAULT_MTU,
        beacon_interval: float = BEACON_INTERVAL,
        start: float = START,
        **protocol_settings,
    ) -> None:
        self.now = start
        self.seed = seed
        self.rng = random.Random(seed)
        self.default_link = link or LinkConfig()
        self.links: dict[tuple[int, int], LinkConfig] = {}
        self.hears: dict[int, set[int]] = {i: set() for i in range(n)}
        self.loopback = loopback
        self.keys = keys or {}
        self.settings = dict(
            beacon_interval=beacon_interval, hop_limit=hop_limit, mtu=mtu, **protocol_settings
        )
        self.generations = [0] * n
        self.boots = [0] * n  # restarts keeping the node id: each a new boot id, as for real
        self.nodes: list[SimNode] = []
        for i in range(n):
            source = DictSource()
            protocol = self._protocol(i, node_id(i), VersionVector(), source, HybridClock())
            addr = ("127.0.0.1", PORT) if same_host else (f"198.18.0.{i + 1}", PORT)
            self.nodes.append(SimNode(i, protocol, addr, source))
        for a, b in links:
            self.link(a, b)
        self._cut: set[tuple[int, int]] = set()
        # Set to a function (src, dst, data) -> True to lose that one datagram.
        self.drop_filter: Callable[[int, int, bytes], bool] | None = None
        self._queue: list[tuple[float, int, int, bytes, tuple[str, int]]] = []
        self._order = 0  # tie-breaker: equal times run in scheduling order

    def _protocol(
        self, i: int, nid: str, known: VersionVector, source: DictSource, clock: HybridClock
    ) -> MeshProtocol:
        clock.wall_ms = lambda: int(self.now * 1000)  # simulated time is the wall clock too
        config = dict(node_id=nid, node_name=f"node{i}", keys=[self.keys.get(i, KEY)])
        return protocol(
            config | self.settings,
            clock=clock,
            known=known,
            rng=random.Random(
                self.seed * 1000 + i + 100 * self.generations[i] + 10_000 * self.boots[i]
            ),
            source=source,
        )

    @classmethod
    def full(cls, n: int, **kwargs) -> Mesh:
        return cls(n, [(a, b) for a in range(n) for b in range(a + 1, n)], **kwargs)

    @classmethod
    def chain(cls, n: int, **kwargs) -> Mesh:
        return cls(n, [(i, i + 1) for i in range(n - 1)], **kwargs)

    # -- topology ------------------------------------------------------------------------

    def link(self, a: int, b: int, config: LinkConfig | None = None) -> None:
        """Let a and b hear each other (with ``config``'s loss, both ways)."""
        self.hears[a].add(b)
        self.hears[b].add(a)
        if config is not None:
            self.links[(a, b)] = self.links[(b, a)] = config

    def unlink(self, a: int, b: int) -> None:
        self.hears[a].discard(b)
        self.hears[b].discard(a)

    def partition(self, side: Iterable[int]) -> None:
        """Cut every link between ``side`` and the other nodes."""
        side = set(side)
        for a in side:
            for b in sorted(self.hears[a] - side):
                self.unlink(a, b)
                self._cut.add((a, b))

    def heal(self) -> None:
        """Restore every link ``partition`` cut."""
        for a, b in self._cut:
            self.hears[a].add(b)
            self.hears[b].add(a)
        self._cut.clear()

    # -- nodes ---------------------------------------------------------------------------

    def restart(self, i: int, *, wipe: bool = False) -> SimNode:
        """Node i boots again: with its stored records (``known`` rebuilt from
        them, clock kept), or wiped: a new node id and nothing at all."""
        old = self.nodes[i]
        if wipe:
            self.generations[i] += 1
            source, known, clock = DictSource(), VersionVector(), HybridClock()
        else:
            self.boots[i] += 1
            source, known, clock = old.source, VersionVector(), old.protocol.clock
            for origin, seq in source.records:
                known.add(origin, seq)
        nid = node_id(i, self.generations[i])
        protocol = self._protocol(i, nid, known, source, HybridClock(clock.last))
        node = SimNode(i, protocol, old.addr, source, keep_sent=old.keep_sent)
        node.next_seq = 1 if wipe else old.next_seq
        self.nodes[i] = node
        return node

    def store(self, i: int, record: Record) -> None:
        """Node i's app stores ``record`` (made there) before sending it."""
        self.nodes[i].source.put(record)
        self.nodes[i].protocol.known.add(record.origin, record.seq)

    def preload(self, i: int, records: Iterable[Record]) -> None:
        """Node i holds ``records`` already (as if stored before start-up)."""
        node = self.nodes[i]
        for record in records:
            node.source.put(record)
            node.protocol.known.add(record.origin, record.seq)

    # -- driving -------------------------------------------------------------------------

    def make_record(self, i: int, text: str, room: int = 1) -> Record:
        node = self.nodes[i]
        seq, node.next_seq = node.next_seq, node.next_seq + 1
        hlc = node.protocol.clock.tick(int(self.now * 1000))
        body = {"author": f"user{i}", "node": f"node{i}", "time": self.now, "text": text}
        return Record(node.node_id, seq, hlc, RecordKind.MESSAGE, room, body)

    def send(self, i: int, text: str, room: int = 1) -> Record:
        """Node i's user posts ``text``: make the record and send it now."""
        record = self.make_record(i, text, room)
        self.store(i, record)
        self.nodes[i].protocol.send_record(record, self.now)
        self._flush(self.nodes[i])
        return record

    def run_until_quiet(self, limit: float, check=None) -> float:
        """Run in steps of a second until ``check()`` holds (or ``limit``
        seconds passed); the simulated seconds it took."""
        start = self.now
        while self.now - start < limit:
            if check is not None and check():
                break
            self.run_for(1.0)
        return self.now - start

    def set_presence(self, i: int, presence: dict[int, list[str]]) -> None:
        self.nodes[i].protocol.set_presence(presence, self.now)
        self._flush(self.nodes[i])

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, end: float) -> None:
        for _ in range(1_000_000):  # a protocol that never settles fails, not hangs
            when, action = self._next_action()
            if action is None or when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            action()
        raise AssertionError("the mesh did not settle")

    def _next_action(self):
        best: tuple[float, object] = (float("inf"), None)
        if self._queue:
            best = (self._queue[0][0], self._deliver_next)
        for node in self.nodes:
            timer = node.protocol.get_timer() if node.up else None
            if timer is not None and max(timer, self.now) < best[0]:
                best = (max(timer, self.now), lambda node=node: self._fire(node))
        return best

    def _fire(self, node: SimNode) -> None:
        node.protocol.handle_timer(self.now)
        self._flush(node)

    def _deliver_next(self) -> None:
        _, _, dst, data, src_addr = heapq.heappop(self._queue)
        node = self.nodes[dst]
        if node.up:
            node.protocol.receive_datagram(data, src_addr, self.now, iface="sim0")
            self._flush(node)

    def _flush(self, node: SimNode) -> None:
        for data, dest in node.protocol.datagrams_to_send(self.now):
            node.sent_bytes += len(data)
            if node.keep_sent:
                node.sent_datagrams.append(data)
                node.sent_log.append((self.now, data, dest))
                if dest is not None:
                    node.sent_unicast.append(data)
            for dst in self._receivers(node.index, dest):
                self._transmit(node.index, dst, data)
        node.events += settle(node.protocol, node.source)

    def _receivers(self, src: int, dest: tuple[str, int] | None) -> list[int]:
        heard = sorted(self.hears[src] | ({src} if self.loopback else set()))
        if dest is None:
            return heard
        return [i for i in heard if self.nodes[i].addr == dest]

    def _transmit(self, src: int, dst: int, data: bytes) -> None:
        config = self.links.get((src, dst), self.default_link)
        if self.rng.random() < config.drop:
            return
        if self.drop_filter is not None and self.drop_filter(src, dst, data):
            return
        copies = 2 if self.rng.random() < config.duplicate else 1
        for _ in range(copies):
            delay = LATENCY + self.rng.uniform(0, config.reorder)
            self._order += 1
            item = (self.now + delay, self._order, dst, data, self.nodes[src].addr)
            heapq.heappush(self._queue, item)


def kinds(datagrams: Iterable[bytes]) -> list[str]:
    """The kind of each datagram, by name, for assertions."""
    return [type(parse(d, [KEY])).__name__.removesuffix("Datagram") for d in datagrams]
