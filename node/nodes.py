"""The node table: who is out there, from their beacons.

How this works: ``NodeTable.receive_beacon`` takes a beacon (after admission,
node/admission.py) into ``nodes`` if it is its origin's newest, and says so:
only the newest may be relayed, so each beacon crosses each node at most once.
Since wire version 2 a beacon goes to the neighbours only (node/trickle.py
paces them), but for the few that carry users online to the far end
(node/protocol.py); so ``peers`` are the routers in range, and the other
``nodes`` are far routers whose users are online (soft state: gone
``peer_timeout`` after their last such beacon).  A node's ``vector`` is the
newest whole vector it sent (``BeaconDatagram.has_vector``), or ours when its
digest says it equals ours; ``digest`` is its newest digest.

- Same boot id: newer iff its ``seq`` is higher; an equal or lower one is a
  relayed copy or late: "duplicate_beacon".
- Another boot id: the origin restarted (boot ids are random), taken only once
  the current boot has been silent ``beacon_interval`` (it beacons at least
  that often), else "stale_beacon".  A late or replayed copy of an earlier
  boot cannot displace a live one; a wrong pick heals when the other is silent.
- A boot the replay guard remembers, at a seq no newer than the one taken from
  it, is refused even after the node has gone: a recording revives nothing.
- Our own beacons relayed back: "duplicate_beacon".

``peers`` are the nodes we hear directly (a beacon whose sender is its origin;
``PeerJoined``): ``addr`` is where that node's own datagrams come from.  A
node without a beacon for ``peer_timeout``, or a peer not heard directly for
that long, is gone (``PeerLost``); a node that goes takes its peer with it.
At most ``MAX_NODES`` nodes ("nodes_full").  All times are the monotonic
``now`` the caller passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from node.admission import ReplayGuard
from node.reasons import Drop
from node.wire import BeaconDatagram

# Trickle's longest interval (node/trickle.py), and so the longest a live
# router stays silent: an idle router sends one ~70-byte beacon per interval
# whatever the number of routers in range (16 in a cell: ~1 datagram/s on the
# cell; one router: 4 a minute), and a router that died is noticed within
# PEER_TIMEOUT (45 s).  Disagreement shortens it to TRICKLE_IMIN at once.
BEACON_INTERVAL = 15.0
# A presence change sends a beacon early, but no more often than this, so users
# hopping between rooms cannot turn beacons into a flood.
MIN_BEACON_GAP = 1.0
# A peer missing this many beacons in a row is lost: at 10% loss three losses in
# a row happen once in a thousand intervals.
PEER_TIMEOUT_INTERVALS = 3
PEER_TIMEOUT = PEER_TIMEOUT_INTERVALS * BEACON_INTERVAL
# Nodes known from beacons at once: a neighbourhood has tens of routers; a key
# holder inventing origins gets no further ("nodes_full").
MAX_NODES = 256

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PeerJoined:
    node_id: str
    name: str
    addr: Addr


@dataclass(frozen=True, slots=True)
class PeerLost:
    node_id: str
    name: str


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Some node's users online changed: call ``presence()`` again."""


@dataclass(slots=True)
class Node:
    """A node known from its newest beacon, heard directly or relayed."""

    name: str
    boot_id: int
    seq: int  # of the newest beacon accepted
    last_heard: float  # when that beacon came (monotonic seconds)
    hops: int  # links away: 1 is a peer; fewest over the copies of the newest beacon
    via: str  # the neighbour that copy came from (the node itself when hops is 1)
    vector: dict[str, int] = field(default_factory=dict)
    presence: dict[int, tuple[str, ...]] = field(default_factory=dict)
    digest: bytes = b""


@dataclass(slots=True)
class Peer:
    """A node we hear directly; what its beacons say is in ``node``."""

    addr: Addr  # where its own datagrams come from
    last_heard: float  # its last datagram to us (monotonic seconds)
    node: Node  # the same object as ``NodeTable.nodes[node_id]``
    iface: str | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def boot_id(self) -> int:
        return self.node.boot_id

    @property
    def vector(self) -> dict[str, int]:
        return self.node.vector

    @property
    def presence(self) -> dict[int, tuple[str, ...]]:
        return self.node.presence


class NodeTable:
    """Every node known from beacons (``nodes``) and the peers among them."""

    def __init__(
        self,
        node_id: str,
        *,
        beacon_interval: float,
        hop_limit: int,
        replays: ReplayGuard,
        dropped: Counter[Drop],
        emit: Callable[[PeerJoined | PeerLost | PresenceChanged], None],
    ) -> None:
        self.node_id = node_id
        self.beacon_interval = beacon_interval
        self.peer_timeout = PEER_TIMEOUT_INTERVALS * beacon_interval
        self.hop_limit = hop_limit
        self.replays = replays
        self.dropped = dropped
        self.emit = emit
        self.nodes: dict[str, Node] = {}  # every live node but us, direct or relayed
        self.peers: dict[str, Peer] = {}  # the nodes among them we hear directly

    def heard(self, sender: str, addr: Addr, now: float, iface: str | None) -> None:
        """A datagram that brought something new from ``sender``."""
        peer = self.peers.get(sender)
        if peer is not None:  # only what is new moves a peer: a replay never does
            peer.last_heard, peer.addr, peer.iface = now, addr, iface

    def receive_beacon(
        self, beacon: BeaconDatagram, addr: Addr, now: float, iface: str | None
    ) -> bool:
        """Take ``beacon`` if it is its origin's newest; True if so."""
        if beacon.origin == self.node_id:  # ours, relayed back
            self.dropped[Drop.DUPLICATE_BEACON] += 1
            return False
        newest, presence_changed = self._update_node(beacon, now)
        if not newest and beacon.origin not in self.nodes:
            return False  # refused before it made a node: nodes full, or a recording
        direct = beacon.origin == beacon.sender
        if newest and direct:  # a boot just taken has a window now: mark this beacon
            self.replays.fresh(beacon.sender, beacon.counter, beacon.boot_id)
        if direct and beacon.sender not in self.peers:
            peer = Peer(addr, now, self.nodes[beacon.sender], iface)
            self.peers[beacon.sender] = peer
            self.emit(PeerJoined(beacon.sender, peer.name, addr))
        if presence_changed:
            self.emit(PresenceChanged())
        return newest

    def get_timer(self) -> float | None:
        heard = [p.last_heard for p in self.peers.values()]
        heard += [n.last_heard for n in self.nodes.values()]
        return min(heard) + self.peer_timeout if heard else None

    def expire(self, now: float) -> None:
        """Forget nodes without a beacon, and peers not heard directly, for
        ``peer_timeout``; a node that goes takes its peer with it.  Judged by
        the same sum ``get_timer`` returns (``now - last_heard`` can round
        below the timeout at that very instant), so a timer that comes due
        always expires something."""
        gone = {nid for nid, n in self.nodes.items() if self._due(n.last_heard, now)}
        for node_id, peer in list(self.peers.items()):
            if node_id in gone or self._due(peer.last_heard, now):
                del self.peers[node_id]
                self.emit(PeerLost(node_id, peer.name))
        had_presence = False
        for node_id in gone:
            had_presence = bool(self.nodes.pop(node_id).presence) or had_presence
        if had_presence:
            self.emit(PresenceChanged())

    def _due(self, last_heard: float, now: float) -> bool:
        return now >= last_heard + self.peer_timeout

    def presence(self) -> dict[int, list[tuple[str, str]]]:
        """Room -> sorted ``(username, node name)`` over live nodes (not us)."""
        rooms: dict[int, list[tuple[str, str]]] = {}
        for node in self.nodes.values():
            for room, users in node.presence.items():
                rooms.setdefault(room, []).extend((user, node.name) for user in users)
        return {room: sorted(users) for room, users in sorted(rooms.items())}

    def _update_node(self, beacon: BeaconDatagram, now: float) -> tuple[bool, bool]:
        """Take the beacon into ``nodes`` if it is the origin's newest:
        ``(newest, presence changed)``; see the opening comment."""
        node = self.nodes.get(beacon.origin)
        replay = self.replays.seen(beacon.origin, beacon.boot_id, beacon.seq)
        if node is None and (replay or len(self.nodes) >= MAX_NODES):
            self.dropped[replay or Drop.NODES_FULL] += 1  # a node gone quiet stays gone
            return False, False
        if node is None:
            self.replays.accepted(beacon.origin, beacon.boot_id, beacon.seq)
            self.nodes[beacon.origin] = Node(beacon.name, beacon.boot_id, beacon.seq, now, 0, "")
            self._take(self.nodes[beacon.origin], beacon, now)
            return True, bool(beacon.presence)
        hops = self._hops(beacon)
        if beacon.boot_id == node.boot_id and beacon.seq <= node.seq:
            if beacon.seq == node.seq and hops < node.hops:  # a shorter way to it
                node.hops, node.via = hops, beacon.sender
            self.dropped[Drop.DUPLICATE_BEACON] += 1
            return False, False
        if beacon.boot_id != node.boot_id and (
            replay or now - node.last_heard < self.beacon_interval
        ):
            self.dropped[Drop.STALE_BEACON] += 1  # a boot seen before, or the current one lives
            return False, False
        self.replays.accepted(beacon.origin, beacon.boot_id, beacon.seq)
        changed = node.presence != beacon.presence or (
            bool(node.presence) and node.name != beacon.name
        )
        self._take(node, beacon, now)
        return True, changed

    def _hops(self, beacon: BeaconDatagram) -> int:
        """Links away, assuming one hop limit across the mesh (the beacon
        carries hops left, not hops taken)."""
        if beacon.origin == beacon.sender:
            return 1
        return max(2, self.hop_limit - beacon.hops + 1)

    def _take(self, node: Node, beacon: BeaconDatagram, now: float) -> None:
        node.name, node.boot_id, node.seq = beacon.name, beacon.boot_id, beacon.seq
        node.last_heard, node.hops, node.via = now, self._hops(beacon), beacon.sender
        if beacon.has_vector:
            node.vector = dict(beacon.vector)
        node.digest = beacon.digest
        node.presence = {room: tuple(users) for room, users in beacon.presence.items()}
