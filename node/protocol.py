"""The mesh protocol: a sans-I/O state machine, one per node.

How this works: the transport feeds what arrives to ``receive_datagram`` and
sends whatever ``datagrams_to_send`` returns (destination None: multicast to
the group on every mesh interface); it sleeps until ``get_timer()`` and then
calls ``handle_timer``; the app drains ``next_event()`` and then calls
``records_settled()``.  Every call takes ``now``, monotonic seconds (the wall
clock only feeds the hybrid clock, ``clock.wall_ms``); nothing here reads a
clock, sleeps or opens a socket.  Each datagram goes through, in order:

1. ``wire.parse`` (size, version, MAC, fields); our own datagrams heard back
   are recognised by sender id, never by address, and counted in ``looped``;
2. admission (node/admission.py): nothing new, or beyond the sender's
   allowance, is dropped before any work;
3. by kind: a RECORD not seen is emitted as ``RecordReceived``, folded into
   the hybrid clock and, with hops-left > 1, offered for relay with our id as
   sender (node/relay.py: held a random moment, cancelled when enough copies
   are heard; at once when no other neighbour could relay it, and then sent
   again if that one neighbour is not heard passing it on: ``EchoWatch``);
   a beacon goes to the node table (node/nodes.py); catch-up and
   repair kinds go to node/sync.py; fragments are reassembled first
   (node/fragment.py).

Beacons (wire version 2) are paced by Trickle (node/trickle.py) and go to the
neighbours only: they carry the digest of our vector, and the whole vector
for ``FULL_VECTOR_HOLD`` after a disagreement.  A neighbour's beacon whose
digest equals ours counts as consistent; one that differs, a new neighbour,
or any record new to us (live or by catch-up: a neighbour may lack it, MPL's
rule) is an inconsistency: Trickle drops to its shortest interval and our
next beacons carry the whole vector, so the neighbour behind asks at once
(node/sync.py); while a neighbour's newest beacon differs from our vector,
agreeing beacons from the others do not keep ours back (node/trickle.py).
A neighbour that asks us for a record whose relay we cancelled depends on
us: our relays are kept for it (``DEPENDANT_HOLD``, node/relay.py); a
router with few neighbours that cancelled beacons at its next Trickle
instant (``SPEAK_UP_PEERS``).  A live record (``LIVE_RELAY_AGE_MS``) taken
by catch-up that another neighbour lacks floods on from here with a fresh hop limit:
that is how a record reaches past the hop limit, or past a lost relay,
within a repair round trip rather than a beacon interval per hop.  Only a beacon that carries our
users online (or that they just left) floods, with suppression, so the far
end sees who is online: presence is soft state, refreshed while someone is
online and gone ``peer_timeout`` after the last refresh; a quiet mesh sends
none.  A datagram of the old wire version is dropped and its sender named
in ``old_version`` (at most ``MAX_OLD_VERSION_ROUTERS``).

Seen means: in the store's version vector (``known``, never written here), or
handed to the app and not yet settled (node/seen.py).  A record of our own
origin from anyone is dropped ("own_origin") but for the window a crash lost
(``recover_own``, node/sync.py ``OwnRecovery``).  Everything dropped is
counted in ``dropped`` (node/reasons.py); nothing raises out of
``receive_datagram``.  Our own misuse raises ``ValueError``.  Our header
counter is never reused within a boot: near ``COUNTER_ROLLOVER`` we take a
new boot id.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from node import fragment
from node.admission import ORIGIN_RECORDS_PER_S, Admission
from node.clock import HybridClock, physical_ms
from node.config import DEFAULT_HOP_LIMIT, MeshConfig
from node.fragment import Reassembler
from node.nodes import (
    BEACON_INTERVAL,
    MIN_BEACON_GAP,
    PEER_TIMEOUT,
    NodeTable,
    PeerJoined,
    PeerLost,
    PresenceChanged,
)
from node.reasons import Drop
from node.record import Record, VersionVector
from node.relay import ECHO_MAX_PEERS, EchoWatch, RelaySuppressor
from node.seen import Seen
from node.sync import CatchUpFinished, Host, NoRecords, RecordsGone, RecordSource, Sync
from node.trickle import TRICKLE_IMIN, TRICKLE_K, Trickle
from node.wire import (
    HEADER,
    MAC_LEN,
    MAX_VECTOR_ENTRIES,
    U32_MAX,
    BatchDatagram,
    BeaconDatagram,
    Datagram,
    FragmentDatagram,
    InnerDatagram,
    RecordDatagram,
    RequestDatagram,
    WireError,
    parse,
    vector_digest,
)

# The protocol's public face: its events, and the settings tests and the app name.
__all__ = [
    "BEACON_INTERVAL",
    "DEFAULT_HOP_LIMIT",
    "ORIGIN_RECORDS_PER_S",
    "PEER_TIMEOUT",
    "Event",
    "MeshConfig",
    "MeshProtocol",
    "PeerJoined",
    "PeerLost",
    "PresenceChanged",
    "RecordReceived",
]

# Our own header counter is a u32: well before it would wrap (2^24 datagrams,
# hours at the catch-up rate, ahead; checked at every beacon) we start a new
# boot id, as RFC 4303 starts a new SA, so no counter is used twice in a boot.
COUNTER_ROLLOVER = U32_MAX - (1 << 24)
# After an inconsistency our beacons carry the whole vector this long: a few
# TRICKLE_IMIN intervals, so each side sees the other's vector even if a beacon
# is lost, then digests only again.
FULL_VECTOR_HOLD = 2.0
# A record taken by catch-up floods on if it is at most this much older than
# the newest stamp we know (hybrid clock): one a lost relay or the hop limit
# left to repair comes within a second or two; a few seconds more for stamps
# of routers whose clocks differ.  Older history (a router joining, a long
# partition) stays between the two routers, as catch-up always did.
LIVE_RELAY_AGE_MS = 10_000
# Routers of the old wire version named in /status: a neighbourhood has tens;
# the least recently heard is forgotten beyond this.
MAX_OLD_VERSION_ROUTERS = 64
# A neighbour that asked us for a record whose relay we had cancelled (two
# copies heard, none of them reached it: it hears only us of those routers, a
# leaf behind us, or the far side of a triangle) depends on us: for this long
# our relays of records are not cancelled by copies heard while it is among
# the neighbours beyond the sender (node/relay.py ``keep``).  Without it such
# a neighbour waited for beacons on every record (up to seconds: its only
# neighbour's beacons were suppressed by the others'); a neighbour marked by a
# loss rather than by the topology costs one relay a record until it expires.
DEPENDANT_HOLD = 300.0
# A router with at most this many neighbours that cancelled a relay beacons at
# its next Trickle instant even if agreeing beacons were heard: it may be the
# only way to one of them (a corner of a grid, the way out of a clique), and
# its beacon (~70 bytes, less than the relay) tells that one within Trickle's
# shortest interval that there is a record to fetch, rather than at its own
# next beacon, up to BEACON_INTERVAL later (grid of 25: p99 1.77 -> 0.53 s;
# unit-disk 25: 1.52 -> 0.63 s).  In a denser neighbourhood the two copies
# heard reached the others, and every canceller beaconing would cost about a
# beacon per router per message.  Two beacons, so that one lost at 10 % loss
# does not leave the neighbour to its own (unit-disk 25 at 10 % loss, 60
# messages on 4 graphs: p99 1.9 -> 1.3 s for one more beacon a message).
SPEAK_UP_PEERS = 4
SPEAK_UP_BEACONS = 2
# Only a REQUEST range this short shows a neighbour left out (see above).
LEFT_OUT_SPAN = 64

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RecordReceived:
    """A record new to us: the app stores it or refuses it, then settles."""

    record: Record
    sender: str  # the node we got it from: the origin, or a relayer
    addr: Addr


Event = RecordReceived | PeerJoined | PeerLost | PresenceChanged | CatchUpFinished | RecordsGone


class MeshProtocol:
    def __init__(
        self,
        config: MeshConfig,
        *,
        clock: HybridClock,
        known: VersionVector,
        rng: random.Random,
        source: RecordSource | None = None,
        recover_own: Sequence[tuple[int, int]] = (),
    ) -> None:
        """``known``: the store's version vector, read here, never written;
        ``source``: where catch-up answers come from (the store; by default
        nothing); ``recover_own``: our seqs a crash may have lost."""
        self.config = config
        self.node_id = config.node_id
        self.keys = list(config.keys)
        self.clock = clock
        self.known = known
        self.seen = Seen(known)
        self.rng = rng
        self.boot_id = rng.getrandbits(64)  # tells peers we restarted
        self.beacon_seq = 0  # of our last beacon
        self.sent = 0  # datagrams handed out by datagrams_to_send
        self.received = 0  # datagrams handed to receive_datagram, good or bad
        self.relayed = 0  # records we offered to pass on (live, with hops left)
        self.record_relays_sent = 0  # of those, and of records caught up, sent
        self.relayed_beacons = 0  # other nodes' (presence) beacons we passed on
        self.relays_kept_for: Counter[str] = Counter()  # neighbours found left out, for tests
        self.looped = 0  # our own datagrams heard back (multicast loopback)
        self.dropped: Counter[Drop] = Counter()
        self._presence: dict[int, tuple[str, ...]] = {}
        self._counter = 0
        self._transfer_id = rng.getrandbits(32)
        interval = config.beacon_interval
        self._trickle = Trickle(min(TRICKLE_IMIN, interval), interval, TRICKLE_K, rng)
        self._relays = RelaySuppressor(rng)
        self._echoes = EchoWatch()
        self._full_until: float | None = None  # None: until the start-up beacon
        self._last_beacon: float | None = None
        self._presence_due: float | None = None  # a change waiting for MIN_BEACON_GAP
        self._flood_next = False  # the next beacon carries a presence change far
        self._last_flood: float | None = None
        self.old_version: dict[str, dict[str, Any]] = {}  # addr -> who, how often
        self._dependants: dict[str, float] = {}  # peer -> until when our relays are kept
        self._disagreeing: set[str] = set()  # peers whose newest beacon's digest is not ours
        self._speak_up = 0  # a relay cancelled with few peers: see SPEAK_UP_PEERS
        self._beacon()  # checks node_name now rather than at the first timer
        self._outbox: list[tuple[bytes, Addr | None]] = []
        self._events: deque[Event] = deque()
        self._reassembler = Reassembler(dropped=self.dropped)
        self.admission = Admission(
            holds=self.seen.__contains__,
            reassembler=self._reassembler,
            dropped=self.dropped,
            catchup_rate=config.catchup_rate,
            mtu=config.mtu,
        )
        self.table = NodeTable(
            self.node_id,
            beacon_interval=config.beacon_interval,
            hop_limit=config.hop_limit,
            replays=self.admission.replays,
            dropped=self.dropped,
            emit=self._events.append,
        )
        self.nodes = self.table.nodes  # every live node but us, direct or relayed
        self.peers = self.table.peers  # the nodes among them we hear directly
        self.sync_stats: Counter[str] = Counter()  # catch-up and repair, for /status
        self.sync = self._make_sync(source or NoRecords(), recover_own)

    def _make_sync(self, source: RecordSource, recover_own: Sequence[tuple[int, int]]) -> Sync:
        host = Host(
            self.node_id,
            self.seen,
            self.peers,
            self.config.mtu,
            self.rng,
            self.dropped,
            self.sync_stats,
            send=self._queue,
            encode=self._encode,
            send_raw=self._queue_raw,
            accept=self._accept_caught_up,
            emit=self._events.append,
        )
        # Every live neighbour beacons within an interval: after the first is
        # heard, a peer timeout lets each be asked, twice-lost beacons and all.
        return Sync(
            host,
            source=source,
            rate=self.config.catchup_rate,
            reassembler=self._reassembler,
            recover_own=recover_own,
            recovery_time=self.config.peer_timeout,
        )

    # -- the caller's side ---------------------------------------------------------------

    def send_record(self, record: Record, now: float) -> None:
        """Queue a record made and stored here for the group."""
        if record.origin != self.node_id:
            raise ValueError(f"not our record: origin {record.origin}")
        datagram = RecordDatagram(self.node_id, record, hops=self.config.hop_limit)
        datagram.body()  # ValueError if not JSON or larger than wire.MAX_RECORD_JSON
        if (record.origin, record.seq) not in self.known:
            raise ValueError(f"store record {record.id} before sending it")
        self._queue(datagram)
        self._watch_echo(("r", record.origin, record.seq), datagram, None, now)

    def set_presence(self, presence: Mapping[int, Sequence[str]], now: float) -> None:
        """Local users online per room; a change is beaconed early."""
        normalized = self._beacon(now, presence).presence  # validates: ValueError
        if normalized == self._presence:
            return
        self._presence = {room: tuple(users) for room, users in normalized.items()}
        self._flood_next = True
        self._beacon_soon(now)

    def _beacon_soon(self, now: float) -> None:
        """A beacon now, or at ``MIN_BEACON_GAP`` after the last (Trickle as it is)."""
        if self._last_beacon is None:
            return  # the start-up beacon, still due, carries it
        earliest = self._last_beacon + MIN_BEACON_GAP
        if now >= earliest:
            self._send_beacon(now)
        elif self._presence_due is None or earliest < self._presence_due:
            self._presence_due = earliest

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, iface: str | None = None
    ) -> None:
        self.received += 1
        try:
            datagram = parse(data, self.keys)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            if exc.reason is Drop.OLD_VERSION:
                self._note_old_version(data, addr, now)
            return
        if datagram.sender == self.node_id:
            self.looped += 1
            return
        if isinstance(datagram, RecordDatagram):  # a copy counts even if we hold it
            key = ("r", datagram.record.origin, datagram.record.seq)
            if self._relays.heard(key, now) and len(self.peers) <= SPEAK_UP_PEERS:
                self._speak_up = SPEAK_UP_BEACONS  # agreeing beacons heard or not
            self._echoes.heard(key, datagram.sender)
        if not self.admission.admit(datagram, len(data), now):
            return
        self.table.heard(datagram.sender, addr, now, iface)
        self._echoes.peer_heard(datagram.sender)
        if isinstance(datagram, RequestDatagram) and datagram.target == self.node_id:
            self._note_left_out(datagram, now)
        if isinstance(datagram, FragmentDatagram):
            self._receive_fragment(datagram, addr, now, iface)
        elif isinstance(datagram, (RecordDatagram, BeaconDatagram, BatchDatagram)):
            self._receive_inner(datagram, addr, now, iface)
        else:
            self.sync.receive(datagram, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr | None]]:
        out, self._outbox = self._outbox, []
        out += self.sync.datagrams_to_send(now)
        self.sent += len(out)
        return out

    def get_timer(self) -> float | None:
        timers = [
            self._trickle.get_timer(),
            self._presence_due,
            self._relays.get_timer(),
            self._echoes.get_timer(),
            self.table.get_timer(),
            self._reassembler.get_timer(),
            self.sync.get_timer(),
        ]
        return min(t for t in timers if t is not None)

    def handle_timer(self, now: float) -> None:
        beacon = self._trickle.handle_timer(now, self._a_peer_disagrees() or self._speak_up > 0)
        if beacon or (self._presence_due is not None and now >= self._presence_due):
            self._send_beacon(now)
        for datagram in self._relays.due(now):
            self._queue_relay(datagram)
        for datagram in self._echoes.due(now, self._peer_holds):
            self._queue_relay(datagram)
        self.table.expire(now)
        self.sync.handle_timer(now)
        self._reassembler.handle_timer(now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def records_settled(self) -> None:
        """The app has settled every event drained so far: each record it
        was handed is in ``known`` now (stored, or refused and noted gone),
        and so is each ``RecordsGone`` range."""
        self.seen.settled()

    def presence(self) -> dict[int, list[tuple[str, str]]]:
        """Room -> sorted ``(username, node name)`` over live nodes (not us)."""
        return self.table.presence()

    def sync_status(self) -> dict[str, Any]:
        """Catch-up and repair progress: counters, outstanding ranges, queues."""
        return self.sync.status()

    def beacon_status(self) -> dict[str, Any]:
        """Trickle's state and the relays held or left out, for /status."""
        return {
            **self._trickle.status(),
            "relays_pending": self._relays.pending(),
            "relays_suppressed": self._relays.cancelled,
            "record_relays_sent": self.record_relays_sent,
            "relays_at_once": self._relays.at_once,
            "relays_kept": self._relays.kept,
            "dependants": len(self._dependants),
            "echo_repeats": self._echoes.repeats,
        }

    def limits_status(self) -> dict[str, int]:
        """How full the bounded tables are, and the per-sender allowance."""
        partial = self._reassembler.senders()
        return {
            "nodes": len(self.nodes),
            **self.admission.status(),
            "partial_transfers": sum(n for n, _ in partial.values()),
            "partial_bytes": sum(b for _, b in partial.values()),
            "unsettled_forgotten": self.seen.forgotten,
        }

    # -- receiving -----------------------------------------------------------------------

    def _receive_fragment(
        self, piece: FragmentDatagram, addr: Addr, now: float, iface: str | None
    ) -> None:
        try:
            inner = self._reassembler.receive(piece, now)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            return
        if isinstance(inner, BeaconDatagram) and not self.admission.fresh_control(inner):
            self.dropped[Drop.REPLAYED] += 1  # its pieces replayed after we forgot the transfer
            return
        if inner is not None:
            self._receive_inner(inner, addr, now, iface)

    def _receive_inner(
        self, datagram: InnerDatagram, addr: Addr, now: float, iface: str | None
    ) -> None:
        if isinstance(datagram, RecordDatagram):
            self._receive_record(datagram, addr, now)
        elif isinstance(datagram, BatchDatagram):
            self.sync.receive(datagram, addr, now)
        else:
            self._receive_beacon(datagram, addr, now, iface)

    def _receive_record(self, datagram: RecordDatagram, addr: Addr, now: float) -> None:
        record = datagram.record
        if not self._accept_record(record, datagram.sender, addr, now):
            return
        if datagram.hops > 1:
            self.relayed += 1
            relay = RecordDatagram(self.node_id, record, hops=datagram.hops - 1)
            key = ("r", record.origin, record.seq)
            others = self._other_peers(datagram.sender, record.origin)
            keep = self._depended_on(datagram.sender, record.origin, now)
            for now_out in self._relays.offer(key, relay, now, others, keep):
                self._queue_relay(now_out)
            self._watch_echo(key, relay, datagram.sender, now)
        self._inconsistent(now)  # a new record: neighbours may lack it (MPL)
        self.sync.live_record(record, datagram.sender, now)

    def _accept_caught_up(self, record: Record, sender: str, addr: Addr, now: float) -> bool:
        """A record from a BATCH: our neighbours may lack it too.  A live one
        that another neighbour lacks (a relay was lost, or the hop limit
        stopped its flood) floods on from here; history stays between us."""
        live = physical_ms(record.hlc) + LIVE_RELAY_AGE_MS >= physical_ms(self.clock.last)
        if not self._accept_record(record, sender, addr, now):
            return False
        self._inconsistent(now)
        if live and self._lacked_by_another(record, sender):
            relay = RecordDatagram(self.node_id, record, hops=self.config.hop_limit)
            key = ("r", record.origin, record.seq)
            others = self._other_peers(sender, record.origin)
            keep = self._depended_on(sender, record.origin, now)
            for now_out in self._relays.offer(key, relay, now, others, keep):
                self._queue_relay(now_out)
            self._watch_echo(key, relay, sender, now)
        return True

    def _watch_echo(
        self, key: tuple[str, str, int], datagram: RecordDatagram, sender: str | None, now: float
    ) -> None:
        """We sent ``datagram`` on: if a single peer besides ``sender`` and
        the origin can carry it further, listen for its echo (node/relay.py)."""
        _, origin, _ = key
        beyond = [p for p in self.peers if p not in (sender, origin)]
        if len(beyond) == 1 and len(self.peers) <= ECHO_MAX_PEERS and self._fits(datagram):
            self._echoes.watch(key, datagram, beyond[0], now)

    def _fits(self, datagram: RecordDatagram) -> bool:
        return HEADER.size + len(datagram.body()) + MAC_LEN <= self.config.mtu

    def _peer_holds(self, peer_id: str, key: Hashable) -> bool | None:
        """Does ``peer_id`` hold record ``key`` by its newest vector (None: gone)?"""
        peer = self.peers.get(peer_id)
        if peer is None:
            return None
        assert isinstance(key, tuple)  # ("r", origin, seq): only records are watched
        return peer.vector.get(str(key[1]), 0) >= int(key[2])

    def _other_peers(self, sender: str, origin: str) -> int:
        """Peers that might relay what ``sender`` brought us instead of us
        (node/relay.py holds only when there is a choice of relayers)."""
        return sum(peer_id not in (sender, origin) for peer_id in self.peers)

    def _note_left_out(self, request: RequestDatagram, now: float) -> None:
        """A neighbour asks us for records: if one is a relay we cancelled,
        the copies we heard did not reach it, and it depends on us."""
        if request.sender not in self.peers:
            return
        # A repair asks for a few records; a router joining asks for whole
        # histories, which says nothing about who hears whom.
        wanted = [(o, a, b) for o, a, b in request.ranges if b - a < LEFT_OUT_SPAN]
        if not wanted:
            return
        for key in self._relays.left_out_keys():
            _, origin, seq = key
            if any(o == origin and a <= seq <= b for o, a, b in wanted) and self._relays.left_out(
                key, now
            ):
                self._dependants[request.sender] = now + DEPENDANT_HOLD
                self.relays_kept_for[request.sender] += 1
                return

    def _depended_on(self, sender: str, origin: str, now: float) -> bool:
        """Is a neighbour beyond ``sender`` and ``origin`` one that was left
        out when we cancelled before (``DEPENDANT_HOLD``)?"""
        if not self._dependants:
            return False
        for peer_id, until in list(self._dependants.items()):
            if until < now or peer_id not in self.peers:
                del self._dependants[peer_id]
        return any(p not in (sender, origin) for p in self._dependants)

    def _lacked_by_another(self, record: Record, sender: str) -> bool:
        """Does a peer other than ``sender`` lack ``record``, by the newest
        vector we know of it (its last whole vector, or ours when its digest
        last equalled ours)?"""
        return any(
            peer.vector.get(record.origin, 0) < record.seq
            for peer_id, peer in self.peers.items()
            if peer_id != sender
        )

    def _accept_record(self, record: Record, sender: str, addr: Addr, now: float) -> bool:
        """Hand a record new to us (live or from a BATCH) to the app; False if
        seen.  Our own origin's seqs are ours to give, but for the window a
        crash lost (``Sync.may_take_own``)."""
        if (record.origin, record.seq) in self.seen:
            self.dropped[Drop.DUPLICATE] += 1
            return False
        if record.origin == self.node_id and not self.sync.may_take_own(record.seq):
            self.dropped[Drop.OWN_ORIGIN] += 1
            return False
        self.seen.add(record.origin, record.seq)
        self.clock.observe(record.hlc)
        self._events.append(RecordReceived(record, sender, addr))
        return True

    def _receive_beacon(
        self, beacon: BeaconDatagram, addr: Addr, now: float, iface: str | None
    ) -> None:
        key = ("b", beacon.origin, beacon.boot_id, beacon.seq)
        new_peer = beacon.origin == beacon.sender and beacon.origin not in self.peers
        taken = self.table.receive_beacon(beacon, addr, now, iface)
        if new_peer and beacon.origin in self.peers and self._presence:
            # A router joined, or came back: one beacon tells it our users
            # online.  A new peer is no inconsistency in itself (its digest is
            # compared below): in a cell whose routers meet one another over
            # their first long intervals, a Trickle reset per peer met kept
            # routers near TRICKLE_IMIN for a minute (2.0-2.4 datagrams/s idle).
            self._beacon_soon(now)
        if not taken:
            self._relays.heard(key, now)
            if beacon.origin == beacon.sender and beacon.digest != self._digest():
                # Not taken (a reboot within an interval waits, node/nodes.py),
                # yet a neighbour that disagrees: our vectors go out now.
                self._inconsistent(now)
                if beacon.origin in self.peers:
                    self._disagreeing.add(beacon.origin)
            return
        if beacon.hops > 1:
            self.relayed_beacons += 1
            relay = replace(beacon, sender=self.node_id, hops=beacon.hops - 1)
            others = self._other_peers(beacon.sender, beacon.origin)
            for now_out in self._relays.offer(key, relay, now, others):
                self._queue(now_out)
        if beacon.origin == beacon.sender:
            self._compare(beacon, now)

    def _compare(self, beacon: BeaconDatagram, now: float) -> None:
        """A neighbour's beacon against our vector: Trickle's consistency."""
        node = self.nodes[beacon.origin]
        ours = self.known.as_dict()
        if beacon.digest == self._digest(ours):
            self._trickle.heard_consistent()
            node.vector = ours
            self._disagreeing.discard(beacon.origin)
        else:
            self._inconsistent(now)
            self._disagreeing.add(beacon.origin)
        self.sync.peer_vector(beacon.origin, now)  # a vector it had before, if left out

    def _a_peer_disagrees(self) -> bool:
        """Is the newest beacon of a live peer's one whose digest was not ours
        (node/trickle.py: then agreeing beacons do not keep us quiet)?"""
        if not self._disagreeing:
            return False
        self._disagreeing &= self.peers.keys()
        return bool(self._disagreeing)

    def _digest(self, vector: dict[str, int] | None = None) -> bytes:
        return vector_digest(self.known.as_dict() if vector is None else vector)

    def _inconsistent(self, now: float) -> None:
        self._trickle.inconsistent(now)
        if self._full_until is not None:
            self._full_until = max(self._full_until, now + FULL_VECTOR_HOLD)

    def _note_old_version(self, data: bytes, addr: Addr, now: float) -> None:
        """Name an authentic datagram of the old wire version (see the opening)."""
        version, _, _, _, sender, _ = HEADER.unpack_from(data)
        where = f"{addr[0]}:{addr[1]}"
        seen = self.old_version.pop(where, {"count": 0})
        seen.update(sender=sender.hex(), version=version, last_heard=now)
        seen["count"] += 1
        self.old_version[where] = seen  # the newest last
        while len(self.old_version) > MAX_OLD_VERSION_ROUTERS:
            del self.old_version[next(iter(self.old_version))]

    # -- sending -------------------------------------------------------------------------

    def _beacon(
        self, now: float | None = None, presence: Mapping[int, Sequence[str]] | None = None
    ) -> BeaconDatagram:
        """Our beacon: the whole vector while neighbours disagree (or at
        start-up), else its digest only; flooded when it carries users online
        far (see the opening comment)."""
        vector = self.known.as_dict()
        if len(vector) > MAX_VECTOR_ENTRIES:  # thousands of origins: send what fits
            vector = dict(islice(vector.items(), MAX_VECTOR_ENTRIES))
        full = self._full_until is None or (now is not None and now < self._full_until)
        return BeaconDatagram(
            self.node_id,
            self.config.node_name,
            self.boot_id,
            vector if full else {},
            self._presence if presence is None else presence,
            hops=self.config.hop_limit if self._floods(now) else 1,
            seq=self.beacon_seq,
            digest=vector_digest(vector),
        )

    def _floods(self, now: float | None) -> bool:
        """Does our next beacon go to the far end: a presence change, or a
        refresh of users online before the far routers forget them."""
        if self._flood_next:
            return True
        if not self._presence or now is None:
            return False
        refresh = self.config.beacon_interval  # well within peer_timeout, loss and all
        return self._last_flood is None or now - self._last_flood >= refresh

    def _send_beacon(self, now: float) -> None:
        if self._counter >= COUNTER_ROLLOVER:  # a new boot rather than a reused counter
            self.boot_id = self.rng.getrandbits(64)
            self.beacon_seq = 0
            self._counter = 0
        self.beacon_seq += 1  # a u32: at most one a MIN_BEACON_GAP lasts 136 years
        beacon = self._beacon(now)
        self._queue(beacon)
        if beacon.hops > 1:
            self._flood_next, self._last_flood = False, now
        if self._full_until is None:  # the start-up beacon went
            self._full_until = now
        self._last_beacon, self._presence_due = now, None
        self._speak_up = max(self._speak_up - 1, 0)
        self._trickle.sent(now)

    def _queue(self, datagram: Datagram, dest: Addr | None = None) -> None:
        """Queue for ``dest`` (None: the group), in fragments if above the MTU."""
        self._outbox.extend((data, dest) for data in self._encode(datagram))

    def _queue_relay(self, datagram: Datagram) -> None:
        self.record_relays_sent += isinstance(datagram, RecordDatagram)
        self._queue(datagram)

    def _queue_raw(self, data: bytes, dest: Addr | None) -> None:
        self._outbox.append((data, dest))

    def _encode(self, datagram: Datagram) -> list[bytes]:
        """Serialized whole if it fits the MTU, else as fragments (kept a
        while in ``sync`` so lost pieces can be sent again)."""
        key, mtu = self.keys[0], self.config.mtu
        datagram = replace(datagram, counter=self._next_counter())
        whole = datagram.serialize(key)
        if len(whole) <= mtu:
            return [whole]
        assert isinstance(datagram, (RecordDatagram, BeaconDatagram, BatchDatagram))
        self._transfer_id = (self._transfer_id + 1) & U32_MAX
        pieces = [
            replace(piece, counter=self._next_counter()).serialize(key)
            for piece in fragment.split(datagram, mtu=mtu, transfer_id=self._transfer_id)
        ]
        self.sync.fragments_sent(self._transfer_id, pieces)
        return pieces

    def _next_counter(self) -> int:
        self._counter = (self._counter + 1) & U32_MAX
        return self._counter
