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
   the hybrid clock and, with hops-left > 1, relayed to the group with our id
   as sender; a beacon goes to the node table (node/nodes.py), and only an
   origin's newest is relayed; catch-up and repair kinds go to node/sync.py;
   fragments are reassembled first (node/fragment.py).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from node import fragment
from node.admission import ORIGIN_RECORDS_PER_S, Admission
from node.clock import HybridClock
from node.config import DEFAULT_HOP_LIMIT, MeshConfig
from node.fragment import Reassembler
from node.nodes import (
    BEACON_INTERVAL,
    PEER_TIMEOUT,
    BeaconTimer,
    NodeTable,
    PeerJoined,
    PeerLost,
    PresenceChanged,
)
from node.reasons import Drop
from node.record import Record, VersionVector
from node.seen import Seen
from node.sync import CatchUpFinished, Host, NoRecords, RecordsGone, RecordSource, Sync
from node.wire import (
    MAX_VECTOR_ENTRIES,
    U32_MAX,
    BatchDatagram,
    BeaconDatagram,
    Datagram,
    FragmentDatagram,
    InnerDatagram,
    RecordDatagram,
    WireError,
    parse,
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
        self.relayed = 0  # records we passed on
        self.relayed_beacons = 0  # other nodes' beacons we passed on
        self.looped = 0  # our own datagrams heard back (multicast loopback)
        self.dropped: Counter[Drop] = Counter()
        self._presence: dict[int, tuple[str, ...]] = {}
        self._beacon()  # checks node_name now rather than at the first timer
        self._counter = 0
        self._transfer_id = rng.getrandbits(32)
        self._beacons = BeaconTimer(config.beacon_interval, rng)
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
            accept=self._accept_record,
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

    def set_presence(self, presence: Mapping[int, Sequence[str]], now: float) -> None:
        """Local users online per room; a change is beaconed early."""
        normalized = self._beacon(presence).presence  # validates: ValueError
        if normalized == self._presence:
            return
        self._presence = {room: tuple(users) for room, users in normalized.items()}
        if self._beacons.presence_changed(now):
            self._send_beacon(now)

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, iface: str | None = None
    ) -> None:
        self.received += 1
        try:
            datagram = parse(data, self.keys)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            return
        if datagram.sender == self.node_id:
            self.looped += 1
            return
        if not self.admission.admit(datagram, len(data), now):
            return
        self.table.heard(datagram.sender, addr, now, iface)
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
            self._beacons.get_timer(),
            self.table.get_timer(),
            self._reassembler.get_timer(),
            self.sync.get_timer(),
        ]
        return min(t for t in timers if t is not None)

    def handle_timer(self, now: float) -> None:
        if self._beacons.due(now):
            self._send_beacon(now)
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
            self._queue(RecordDatagram(self.node_id, record, hops=datagram.hops - 1))
        self.sync.live_record(record, datagram.sender, now)

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
        if not self.table.receive_beacon(beacon, addr, now, iface):
            return
        if beacon.hops > 1:
            self.relayed_beacons += 1
            self._queue(replace(beacon, sender=self.node_id, hops=beacon.hops - 1))
        if beacon.origin == beacon.sender:
            self.sync.peer_vector(beacon.origin, now)

    # -- sending -------------------------------------------------------------------------

    def _beacon(self, presence: Mapping[int, Sequence[str]] | None = None) -> BeaconDatagram:
        vector = self.known.as_dict()
        if len(vector) > MAX_VECTOR_ENTRIES:  # thousands of origins: send what fits
            vector = dict(islice(vector.items(), MAX_VECTOR_ENTRIES))
        return BeaconDatagram(
            self.node_id,
            self.config.node_name,
            self.boot_id,
            vector,
            self._presence if presence is None else presence,
            hops=self.config.hop_limit,
            seq=self.beacon_seq,
        )

    def _send_beacon(self, now: float) -> None:
        if self._counter >= COUNTER_ROLLOVER:  # a new boot rather than a reused counter
            self.boot_id = self.rng.getrandbits(64)
            self.beacon_seq = 0
            self._counter = 0
        self.beacon_seq += 1  # a u32: at most one a MIN_BEACON_GAP lasts 136 years
        self._queue(self._beacon())
        self._beacons.sent(now)

    def _queue(self, datagram: Datagram, dest: Addr | None = None) -> None:
        """Queue for ``dest`` (None: the group), in fragments if above the MTU."""
        self._outbox.extend((data, dest) for data in self._encode(datagram))

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
