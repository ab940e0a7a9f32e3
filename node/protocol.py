"""The mesh protocol: a sans-I/O state machine, one per node.

How this works: the transport feeds what arrives to ``receive_datagram`` and
sends whatever ``datagrams_to_send`` returns (destination None: multicast to the
group on every mesh interface); it sleeps until ``get_timer()`` and then calls
``handle_timer``; the app drains ``next_event()``.  Every call takes ``now``,
wall-clock seconds; nothing here reads a clock, sleeps or opens a socket.

- Records.  ``send_record`` queues a local record for the group in one RECORD
  datagram, or in fragments when larger than the MTU.  A received record whose
  ``(origin, seq)`` is not in ``known`` is marked seen, folded into the hybrid
  clock and emitted as ``RecordReceived``; a seen one is dropped as
  "duplicate" (this also covers our own records relayed back to us).  A new
  record with hops-left > 1 is relayed to the group with hops-left - 1 and our
  id as sender, so chat crosses routers that cannot hear each other.
- Clock.  A record stamped too far in the future is still accepted, unchanged:
  every node must order it the same way.  ``HybridClock.observe`` refuses to
  follow it (clamps and counts in ``clock.clamped``) so our own stamps stay sane.
- Beacons.  At start (``get_timer()`` is 0.0, due at once), then every
  ``beacon_interval`` less up to ``BEACON_JITTER`` of it, and early (at most
  every ``MIN_BEACON_GAP``) when the local presence changes.  They carry name,
  boot id, a beacon number ``seq`` (1, 2, 3... per boot), version vector and
  users online, and go out with hops-left = ``hop_limit``.
- Beacon relay.  A beacon names its ``origin``; the header's sender is whoever
  put this copy on the wire.  ``nodes`` holds every node known from beacons,
  direct or relayed (name, boot id, vector, presence, hops away, ``via``), and
  ``presence()`` covers them all.  Only the newest beacon of an origin counts,
  and only it is relayed (hops-left - 1, while above 1), so each beacon crosses
  each node at most once:
    * same boot id: newer iff ``seq`` is higher; an equal or lower one is a
      relayed copy or reordered late: dropped as "duplicate_beacon";
    * another boot id: the origin restarted (boot ids are random, unordered),
      accepted only once the current boot has been silent ``beacon_interval``
      (it beacons at least that often), else "stale_beacon".  So a late or
      replayed copy of a previous boot cannot displace a live one, and a real
      restart shows within about one interval.  A wrong pick heals itself: the
      live boot wins back as soon as the other one is silent for an interval.
    * our own beacons relayed back: "duplicate_beacon", never relayed again.
  Both reasons are normal mesh traffic, like "duplicate" for records, not
  faults.  A node without an accepted beacon for ``peer_timeout`` is gone.
  Cost: every node relays every other node's beacon once, so N routers put
  N^2 beacons on the air per interval: 20 routers, 400 datagrams of ~350 bytes
  (20 vector entries, a few users) per 5 s: 80/s, ~220 kbit/s in all, fine for
  a neighbourhood.  Much larger meshes would relay only through chosen
  neighbours (OLSR's multipoint relays, RFC 7181).
- Peers.  ``peers`` are the nodes we hear directly: a beacon whose sender is
  its origin makes one (``PeerJoined``); its ``addr`` is where that node's own
  datagrams come from, never a relayer's.  A peer silent for ``peer_timeout``
  is lost (``PeerLost``) though it may stay in ``nodes`` through relays; a
  node that is gone takes its peer with it.
- Our own datagrams coming back (multicast loopback) are recognised by sender
  id, never by address (several nodes can share a host) and counted in
  ``looped``.  Anything malformed is counted in ``dropped`` by reason; nothing
  raises out of ``receive_datagram``.  Our own misuse raises ``ValueError``.
- Catch-up and repair live in node/sync.py (``self.sync``): beacons from peers
  trigger a unicast REQUEST for the ranges we lack, live records above a small
  hole trigger a NACK after a back-off (suppressed when another node asks
  first), REQUESTs aimed at us are answered from ``source`` in paced BATCHes
  (and GONE ranges for what expired or was deleted here), stalled fragment
  transfers ask their sender for the missing pieces.  Records
  from a BATCH are delivered like live ones but never relayed.  ``source``
  (``sync.RecordSource``: the store) defaults to one that holds nothing.
- Our own origin.  Its seqs are ours alone: a record of it from anyone is
  dropped ("own_origin"), catch-up never asks for it and a GONE never covers
  it, so a key holder cannot move what we number next.  The one exception is
  ``recover_own`` (the store's ``recovery``): seqs we reserved before a crash
  that are not on disk; peers are asked for them and what nobody holds is
  declared gone (``sync.OwnRecovery``).
- Wall-clock jumps (a router sets its clock from NTP after boot).  The beacon
  timer wakes us at least once per interval, so a step between calls that is
  negative or longer than ``MAX_STEP_INTERVALS`` intervals is a jump, not time
  spent listening: every stored time moves with it, so peers are not all lost
  at once, and the next beacon is never more than one interval ahead of ``now``.

Replays (SECURITY.md, section 2).  Anyone on the LAN can record our datagrams
and play them back later, MAC and all.  What each kind needs:
  * RECORD and BATCH: nothing more; a record is named by ``(origin, seq)`` and
    a replay is a "duplicate".  FRAGMENTs: the reassembler drops pieces it holds
    or just finished ("duplicate_fragment").
  * REQUEST: a replay would make us serve the same batches again, up to
    ``CATCHUP_RATE`` for a few hundred bytes: amplification.  GONE and
    FRAGMENT_REQUEST: cheaper, but no better.  Beacons: a replay would refresh
    a peer, or (after it went quiet) revive a dead node and its presence.
  So these control kinds go through a replay window, RFC 4303 section 3.4.3:
  per sender, its header counter must be new within the last ``REPLAY_WINDOW``
  counters ("replayed" otherwise).  The counter restarts at every boot, so the
  window is per sender *and boot*; a datagram names no boot, only a beacon
  does, so ``ReplayGuard`` keeps, per node id (bounded: ``MAX_REPLAY_SENDERS``
  ids, least recently heard evicted), its current boot and the last few
  (``MAX_BOOTS_REMEMBERED``), each with the newest beacon seq accepted from it
  and the window of its counters:
    - a REQUEST, GONE, FRAGMENT_REQUEST, or a beacon relayed by that sender, is
      judged by the window of the sender's current boot;
    - a sender's own beacon (origin == sender) by the window of the boot it
      names, if we know it; a boot we never saw goes to the beacon rules above
      (its counter cannot be judged: counters restart at 1), and once taken,
      a window opens for it with this beacon's counter marked;
    - a beacon of any origin whose boot we remember, at a seq no newer than
      the one accepted from that boot, is refused ("duplicate_beacon" for the
      current boot, "stale_beacon" for an earlier one), even after the node
      has gone from ``nodes``: a recording of a node that went quiet, or of
      an earlier boot, revives nothing.  A remembered boot with a *newer* seq
      is news, not a replay: it is judged by the beacon rules (so a wrong
      pick still heals).
  Until a restarted sender's new boot is taken (at most an interval, see
  "another boot" above) its control datagrams count as replayed: their
  counters are low.  We count our own counter only to ``COUNTER_ROLLOVER``:
  then we take a new boot id (peers see a restart) instead of wrapping.
  What is left: a beacon of a boot we never saw cannot be told from a live
  one.  A recording made before we started (or before we evicted that id) can
  be played to us, and a stream of them can keep a dead node shown for as
  long as the recording lasts, or displace a live boot that missed a beacon
  until it is heard again.  Records carry no such risk.
Floods.  ``SenderLimits`` gives every sender (the header's, after the MAC)
a token bucket of datagrams and one of bytes, derived from ``catchup_rate``
and the MTU (an honest peer's heaviest traffic is a catch-up answer at that
rate): ``PEER_DATAGRAM_FACTOR`` x rate / MTU datagrams/s (at least
``MIN_PEER_DATAGRAMS_PER_S``), ``PEER_RATE_FACTOR`` x rate bytes/s, each with
``PEER_BURST_SECONDS`` of burst; and every origin's live records, direct or
relayed, ``ORIGIN_RECORDS_PER_S`` (so a flood entering anywhere does not
spend the allowance of the honest routers that relay it).  Beyond either a
datagram is dropped ("rate_limited") before any work: no relay, no store, no
reply.  Only a
datagram that would do something new is charged: duplicates and replays are
dropped first, so a device without the key cannot drain an honest peer's
allowance by replaying its traffic.  ``nodes`` holds at most ``MAX_NODES``
("nodes_full"), the reassembler bounds each sender's share
(node/fragment.py), and so does gap repair (node/sync.py).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice

from node import fragment
from node.clock import HybridClock
from node.fragment import DEFAULT_MTU, Reassembler
from node.record import ORIGIN_RE, Record, VersionVector
from node.sync import (
    CATCHUP_RATE,
    CatchUpFinished,
    Host,
    NoRecords,
    RecordsGone,
    RecordSource,
    Sync,
    TokenBucket,
)
from node.wire import (
    HOPS_MAX,
    MAX_FRAGMENTS,
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

# Seconds between beacons: peers and presence stay fresh within a few seconds;
# a ~100-byte datagram every 5 s per router is nothing even on a busy channel.
BEACON_INTERVAL = 5.0
# Each interval is shortened by up to this fraction, at random, so routers that
# powered up together (after an outage) do not beacon in lockstep.
BEACON_JITTER = 0.2
# A presence change sends a beacon early, but no more often than this, so users
# hopping between rooms cannot turn beacons into a flood.
MIN_BEACON_GAP = 1.0
# A peer missing this many beacons in a row is lost: at 10% loss three losses in
# a row happen once in a thousand intervals, and users vanish within ~15 s.
PEER_TIMEOUT_INTERVALS = 3
PEER_TIMEOUT = PEER_TIMEOUT_INTERVALS * BEACON_INTERVAL
# Hops-left on a new record: it reaches nodes up to 7 links away, more than a
# neighbourhood chain of routers is long, while a loop dies out quickly.
DEFAULT_HOP_LIMIT = 7
# A step of the wall clock longer than this many beacon intervals between two
# calls is a jump (the beacon timer wakes us every interval); see above.
MAX_STEP_INTERVALS = 2

# -- replays and floods (see the opening comment) --------------------------------------
# Counters per replay window.  RFC 4303 asks for at least 32 and suggests 64
# for ESP, where every packet is windowed.  Here only control datagrams are,
# while records, batches and fragments move the same counter: at the catch-up
# rate a sender spends 64 counters in 80 ms.  1,024 counters (a 128-byte
# bitmap) forgive a control datagram overtaken by ~1 s of a busy sender.
REPLAY_WINDOW = 1024
# Node ids remembered for replays (boots, windows): a mesh has tens of routers;
# beyond this many (only a key holder can make them up) the least recently
# heard is forgotten.  Each costs a few hundred bytes: ~1 MB at most.
MAX_REPLAY_SENDERS = 1024
# Boots remembered per node id, the current one included: a router that
# restarts several times (a flaky power supply) cannot have an old boot's
# recorded beacons played back while we remember the boot.
MAX_BOOTS_REMEMBERED = 4
# Our own header counter is a u32: well before it would wrap (2^24 datagrams,
# hours at the catch-up rate, ahead; checked at every beacon) we start a new
# boot id, as RFC 4303 starts a new SA, so no counter is used twice in a boot.
COUNTER_ROLLOVER = U32_MAX - (1 << 24)
# Per-sender allowance.  An honest neighbour's heaviest traffic is a catch-up
# answer at ``catchup_rate`` (batches at least half full: a record that does
# not fit starts the next one), besides chat, beacons and relays of a
# neighbourhood's beacons (a few a second): twice the bytes and four times the
# datagrams of catch-up is generous, and so is a second's worth of burst (a
# fragmented record or beacon comes back to back: at most MAX_FRAGMENTS).
PEER_RATE_FACTOR = 2  # bytes/s: this many times catchup_rate
PEER_DATAGRAM_FACTOR = 4  # datagrams/s: this many times catchup_rate / MTU
# Floor for a slow catch-up rate: 20 routers' beacons relayed and a busy chat
# stay well below 200 datagrams/s.
MIN_PEER_DATAGRAMS_PER_S = 200
PEER_BURST_SECONDS = 1.0
# Live records (RECORD datagrams, direct or relayed) per second of one origin.
# A relayer passes on what it takes, and we charge what it passes to it: without
# this, a flood entering the mesh anywhere would be relayed by honest routers
# and spend *their* allowance with us.  Checked before the relayer is charged,
# so a relayer spends at most this much of its allowance on one origin.  A
# router's users post at most 2 messages a second each (app/chat.py): 100/s is
# 50 of them at once, with a burst of 2 x MAX_FRAGMENTS.  Records beyond it are
# not lost: catch-up fetches them in paced batches, which this does not limit.
ORIGIN_RECORDS_PER_S = 100
# Nodes known from beacons at once: a neighbourhood has tens of routers; a key
# holder inventing origins gets no further ("nodes_full").
MAX_NODES = 256


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordReceived:
    record: Record
    sender: str  # the node we got it from: the origin, or a relayer
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class PeerJoined:
    node_id: str
    name: str
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class PeerLost:
    node_id: str
    name: str


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Some node's users online changed: call ``presence()`` again."""


Event = RecordReceived | PeerJoined | PeerLost | PresenceChanged | CatchUpFinished | RecordsGone
Addr = tuple[str, int]


@dataclass(slots=True)
class Node:
    """A node known from its newest beacon, heard directly or relayed."""

    name: str
    boot_id: int
    seq: int  # of the newest beacon accepted
    last_heard: float  # when that beacon came (wall clock, moved with clock jumps)
    hops: int  # links away: 1 is a peer; fewest over the copies of the newest beacon
    via: str  # the neighbour that copy came from (the node itself when hops is 1)
    vector: dict[str, int] = field(default_factory=dict)
    presence: dict[int, tuple[str, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class Peer:
    """A node we hear directly; what its beacons say is in ``node``."""

    addr: tuple[str, int]  # where its own datagrams come from
    last_heard: float  # its last datagram to us (wall clock, moved with clock jumps)
    node: Node  # the same object as ``MeshProtocol.nodes[node_id]``
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


# -- replay windows and per-sender allowances ----------------------------------------------

_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayWindow:
    """RFC 4303 section 3.4.3: the highest counter accepted, and a bitmap of
    the ``REPLAY_WINDOW`` counters up to it (bit i: ``highest - i`` seen)."""

    __slots__ = ("bitmap", "highest")

    def __init__(self) -> None:
        self.highest = -1  # nothing yet (a counter may be 0)
        self.bitmap = 0

    def accept(self, counter: int) -> bool:
        """Mark ``counter`` seen; False if it was, or is too old to tell."""
        if counter > self.highest:
            shift = counter - self.highest
            self.bitmap = 1 if shift >= REPLAY_WINDOW else (self.bitmap << shift | 1) & _WINDOW_MASK
            self.highest = counter
            return True
        offset = self.highest - counter
        if offset >= REPLAY_WINDOW or self.bitmap >> offset & 1:
            return False
        self.bitmap |= 1 << offset
        return True


@dataclass(slots=True)
class _Boot:
    seq: int  # the newest beacon seq accepted from this boot
    window: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass(slots=True)
class _Remembered:
    current: int  # boot id
    boots: OrderedDict[int, _Boot]  # oldest first, the current one included


class ReplayGuard:
    """Per node id: its recent boots, each with its newest beacon seq and the
    replay window of its counters; bounded, least recently heard evicted."""

    def __init__(self, size: int = MAX_REPLAY_SENDERS) -> None:
        self.size = size
        self._ids: OrderedDict[str, _Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def fresh(self, sender: str, counter: int, boot: int | None = None) -> bool:
        """Mark ``counter`` in the window of ``boot`` (None: the sender's
        current boot); False if it was seen or is too old.  True, unmarked,
        when we know no such boot: nothing to judge by."""
        known = self._ids.get(sender)
        if known is None:
            return True
        state = known.boots.get(known.current if boot is None else boot)
        return state is None or state.window.accept(counter)

    def seen(self, origin: str, boot: int, seq: int) -> str | None:
        """A beacon ``(origin, boot, seq)`` no newer than what we accepted of
        that boot: "duplicate_beacon" (current boot) or "stale_beacon"."""
        known = self._ids.get(origin)
        state = None if known is None else known.boots.get(boot)
        if state is None or seq > state.seq:
            return None
        return "duplicate_beacon" if boot == known.current else "stale_beacon"

    def accepted(self, origin: str, boot: int, seq: int) -> None:
        """The protocol took this beacon as ``origin``'s newest."""
        known = self._ids.get(origin)
        if known is None:
            known = self._ids[origin] = _Remembered(boot, OrderedDict())
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
        self._ids.move_to_end(origin)
        known.current = boot
        state = known.boots.get(boot)
        if state is None:
            state = known.boots[boot] = _Boot(seq)
            if len(known.boots) > MAX_BOOTS_REMEMBERED:
                known.boots.popitem(last=False)
        known.boots.move_to_end(boot)
        state.seq = max(state.seq, seq)


class SenderLimits:
    """A token bucket of datagrams and one of bytes per sender; bounded, least
    recently heard evicted (a sender that comes back starts with a full one)."""

    def __init__(
        self, datagrams_per_s: float, bytes_per_s: float, size: int = MAX_REPLAY_SENDERS
    ) -> None:
        self.datagrams_per_s = datagrams_per_s
        self.bytes_per_s = bytes_per_s
        self.datagram_burst = max(2 * MAX_FRAGMENTS, datagrams_per_s * PEER_BURST_SECONDS)
        self.byte_burst = bytes_per_s * PEER_BURST_SECONDS
        self.size = size
        self._buckets: OrderedDict[str, tuple[TokenBucket, TokenBucket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, sender: str, size: int, now: float) -> bool:
        """Take one datagram of ``size`` bytes from ``sender``'s allowance."""
        buckets = self._buckets.get(sender)
        if buckets is None:
            buckets = self._buckets[sender] = (
                TokenBucket(self.datagrams_per_s, self.datagram_burst),
                TokenBucket(self.bytes_per_s, self.byte_burst),
            )
            if len(self._buckets) > self.size:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(sender)
        count, volume = buckets
        if not count.take(1, now):
            return False
        if volume.take(size, now):
            return True
        count.tokens += 1  # both or neither
        return False

    def shift(self, delta: float) -> None:
        for count, volume in self._buckets.values():
            count.shift(delta)
            volume.shift(delta)


# -- the state machine -------------------------------------------------------------------


class MeshProtocol:
    def __init__(
        self,
        *,
        node_id: str,
        node_name: str,
        keys: Sequence[bytes],
        clock: HybridClock,
        known: VersionVector,
        rng: random.Random,
        beacon_interval: float = BEACON_INTERVAL,
        hop_limit: int = DEFAULT_HOP_LIMIT,
        mtu: int = DEFAULT_MTU,
        source: RecordSource | None = None,
        catchup_rate: float = CATCHUP_RATE,
        recover_own: Sequence[tuple[int, int]] = (),
    ) -> None:
        if not ORIGIN_RE.fullmatch(node_id):
            raise ValueError(f"node_id must be 16 lowercase hex digits: {node_id!r}")
        if not keys or not all(isinstance(k, bytes) and k for k in keys):
            raise ValueError("keys: one or more non-empty bytes, the current key first")
        if not beacon_interval > 0:
            raise ValueError(f"beacon_interval must be positive: {beacon_interval}")
        if not 1 <= hop_limit <= HOPS_MAX:
            raise ValueError(f"hop_limit must be 1..{HOPS_MAX}: {hop_limit}")
        fragment.piece_size(mtu)  # raises ValueError for an impossible mtu
        if not catchup_rate > 0:
            raise ValueError(f"catchup_rate must be positive: {catchup_rate}")
        self.node_id = node_id
        self.node_name = node_name
        self.keys = list(keys)
        self.clock = clock
        self.known = known
        self.rng = rng
        self.beacon_interval = beacon_interval
        self.peer_timeout = PEER_TIMEOUT_INTERVALS * beacon_interval
        self.hop_limit = hop_limit
        self.mtu = mtu
        self.boot_id = rng.getrandbits(64)  # tells peers we restarted
        self.beacon_seq = 0  # of our last beacon
        self.nodes: dict[str, Node] = {}  # every live node but us, direct or relayed
        self.peers: dict[str, Peer] = {}  # the nodes among them we hear directly
        self.sent = 0  # datagrams handed out by datagrams_to_send
        self.received = 0  # datagrams handed to receive_datagram, good or bad
        self.relayed = 0  # records we passed on
        self.relayed_beacons = 0  # other nodes' beacons we passed on
        self.looped = 0  # our own datagrams heard back (multicast loopback)
        self.clock_jumps = 0  # wall-clock jumps smoothed over
        self.dropped: Counter[str] = Counter()
        self._presence: dict[int, tuple[str, ...]] = {}
        self._beacon()  # checks node_name now rather than at the first timer
        self._counter = 0
        self._transfer_id = rng.getrandbits(32)
        self._next_beacon: float | None = None  # None: due at once (start-up)
        self._last_beacon: float | None = None
        self._last_now: float | None = None
        self._outbox: list[tuple[bytes, tuple[str, int] | None]] = []
        self._events: deque[Event] = deque()
        self._reassembler = Reassembler(dropped=self.dropped)
        self._replays = ReplayGuard()
        per_s = max(MIN_PEER_DATAGRAMS_PER_S, PEER_DATAGRAM_FACTOR * catchup_rate / mtu)
        rate = max(PEER_RATE_FACTOR * catchup_rate, MIN_PEER_DATAGRAMS_PER_S * mtu)
        self._limits = SenderLimits(per_s, rate)
        self._origin_limits = SenderLimits(ORIGIN_RECORDS_PER_S, ORIGIN_RECORDS_PER_S * mtu)
        self.sync_stats: Counter[str] = Counter()  # catch-up and repair, for /status
        self.sync = Sync(
            Host(
                node_id,
                known,
                self.peers,
                mtu,
                rng,
                self.dropped,
                self.sync_stats,
                send=self._queue,
                encode=self._encode,
                send_raw=self._queue_raw,
                accept=self._accept_record,
                emit=self._events.append,
            ),
            source=source or NoRecords(),
            rate=catchup_rate,
            reassembler=self._reassembler,
            # Every live neighbour beacons within an interval: after the first
            # is heard, PEER_TIMEOUT_INTERVALS of them let each be asked, twice
            # lost beacons and all, before the rest of the window is gone.
            recover_own=recover_own,
            recovery_time=self.peer_timeout,
        )

    # -- the caller's side ---------------------------------------------------------------

    def send_record(self, record: Record, now: float) -> None:
        """Queue a record made here for the group; it is marked seen."""
        self._observe_now(now)
        if record.origin != self.node_id:
            raise ValueError(f"not our record: origin {record.origin}")
        datagram = RecordDatagram(self.node_id, record, hops=self.hop_limit)
        datagram.body()  # ValueError if not JSON or larger than wire.MAX_RECORD_JSON
        self.known.add(record.origin, record.seq)
        self._queue(datagram)

    def set_presence(self, presence: Mapping[int, Sequence[str]], now: float) -> None:
        """Local users online per room; a change is beaconed early."""
        self._observe_now(now)
        normalized = self._beacon(presence).presence  # validates: ValueError
        if normalized == self._presence:
            return
        self._presence = dict(normalized)
        if self._next_beacon is None:
            return  # the start-up beacon is still due and will carry it
        earliest = now if self._last_beacon is None else self._last_beacon + MIN_BEACON_GAP
        if now >= earliest:
            self._send_beacon(now)
        else:
            self._next_beacon = min(self._next_beacon, earliest)

    def receive_datagram(
        self, data: bytes, addr: tuple[str, int], now: float, iface: str | None = None
    ) -> None:
        self._observe_now(now)
        self.received += 1
        try:
            datagram = parse(data, self.keys)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            return
        if datagram.sender == self.node_id:
            self.looped += 1
            return
        if not self._fresh(datagram):
            return
        if not self._within_limits(datagram, len(data), now):
            self.dropped["rate_limited"] += 1
            return
        peer = self.peers.get(datagram.sender)
        if peer is not None:  # only what is new moves a peer: a replay never does
            peer.last_heard, peer.addr, peer.iface = now, addr, iface
        if isinstance(datagram, FragmentDatagram):
            self._receive_fragment(datagram, addr, now, iface)
        elif isinstance(datagram, (RecordDatagram, BeaconDatagram, BatchDatagram)):
            self._receive_inner(datagram, addr, now, iface)
        else:
            self.sync.receive(datagram, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int] | None]]:
        self._observe_now(now)
        out, self._outbox = self._outbox, []
        out += self.sync.datagrams_to_send(now)
        self.sent += len(out)
        return out

    def get_timer(self) -> float | None:
        timers = [0.0 if self._next_beacon is None else self._next_beacon]
        heard = [p.last_heard for p in self.peers.values()]
        heard += [n.last_heard for n in self.nodes.values()]
        if heard:
            timers.append(min(heard) + self.peer_timeout)
        others = (self._reassembler.get_timer(), self.sync.get_timer())
        timers += [t for t in others if t is not None]
        return min(timers)

    def handle_timer(self, now: float) -> None:
        self._observe_now(now)
        if self._next_beacon is None or now >= self._next_beacon:
            self._send_beacon(now)
        self._expire(now)
        self.sync.handle_timer(now)
        self._reassembler.handle_timer(now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def presence(self) -> dict[int, list[tuple[str, str]]]:
        """Room -> sorted ``(username, node name)`` over live nodes (not us)."""
        rooms: dict[int, list[tuple[str, str]]] = {}
        for node in self.nodes.values():
            for room, users in node.presence.items():
                rooms.setdefault(room, []).extend((user, node.name) for user in users)
        return {room: sorted(users) for room, users in sorted(rooms.items())}

    def sync_status(self) -> dict:
        """Catch-up and repair progress: counters, outstanding ranges, queues."""
        return self.sync.status()

    def missing_fragments(self, sender: str, transfer_id: int) -> list[int] | None:
        """Fragment indexes still lacking in a partial transfer (for repair)."""
        return self._reassembler.missing(sender, transfer_id)

    def limits_status(self) -> dict:
        """How full the bounded tables are, and the per-sender allowance."""
        partial = self._reassembler.senders()
        return {
            "nodes": len(self.nodes),
            "replay_senders": len(self._replays),
            "rate_senders": len(self._limits),
            "rate_origins": len(self._origin_limits),
            "peer_datagrams_per_s": round(self._limits.datagrams_per_s),
            "peer_bytes_per_s": round(self._limits.bytes_per_s),
            "partial_transfers": sum(n for n, _ in partial.values()),
            "partial_bytes": sum(b for _, b in partial.values()),
        }

    # -- receiving -----------------------------------------------------------------------

    def _fresh(self, datagram: Datagram) -> bool:
        """False (counted) for a datagram that brings nothing new: a record we
        hold, a piece we hold, a control datagram the replay window refuses.
        Checked before the sender's allowance is charged."""
        if isinstance(datagram, RecordDatagram):
            record = datagram.record
            stale = (record.origin, record.seq) in self.known
            reason, times = "duplicate", 1
        elif isinstance(datagram, BatchDatagram):
            stale = all((r.origin, r.seq) in self.known for r in datagram.records)
            reason, times = "duplicate", len(datagram.records)
        elif isinstance(datagram, FragmentDatagram):
            stale = self._reassembler.holds(datagram)
            reason, times = "duplicate_fragment", 1
        else:
            stale = not self._fresh_control(datagram)
            reason, times = "replayed", 1
        if stale:
            self.dropped[reason] += times
        return not stale

    def _within_limits(self, datagram: Datagram, size: int, now: float) -> bool:
        """Charge a live record to its origin, then any datagram to its sender."""
        if isinstance(datagram, RecordDatagram):
            origin = datagram.record.origin
            if not self._origin_limits.admit(origin, 1, now):  # bytes: the sender's concern
                return False
        return self._limits.admit(datagram.sender, size, now)

    def _fresh_control(self, datagram: Datagram) -> bool:
        """The replay window's verdict on a beacon, REQUEST, GONE or
        FRAGMENT_REQUEST; a sender's own beacon by the boot it names."""
        own = isinstance(datagram, BeaconDatagram) and datagram.origin == datagram.sender
        boot = datagram.boot_id if own else None  # type: ignore[union-attr]
        return self._replays.fresh(datagram.sender, datagram.counter, boot)

    def _receive_fragment(
        self, piece: FragmentDatagram, addr: tuple[str, int], now: float, iface: str | None
    ) -> None:
        try:
            inner = self._reassembler.receive(piece, now)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            return
        if isinstance(inner, BeaconDatagram) and not self._fresh_control(inner):
            self.dropped["replayed"] += 1  # its pieces replayed after we forgot the transfer
            return
        if inner is not None:
            self._receive_inner(inner, addr, now, iface)

    def _receive_inner(
        self, datagram: InnerDatagram, addr: tuple[str, int], now: float, iface: str | None
    ) -> None:
        if isinstance(datagram, RecordDatagram):
            self._receive_record(datagram, addr, now)
        elif isinstance(datagram, BatchDatagram):
            self.sync.receive(datagram, addr, now)
        else:
            self._receive_beacon(datagram, addr, now, iface)

    def _receive_record(self, datagram: RecordDatagram, addr: tuple[str, int], now: float) -> None:
        record = datagram.record
        if not self._accept_record(record, datagram.sender, addr, now):
            return
        if datagram.hops > 1:
            self.relayed += 1
            self._queue(RecordDatagram(self.node_id, record, hops=datagram.hops - 1))
        self.sync.live_record(record, datagram.sender, now)

    def _accept_record(self, record: Record, sender: str, addr: Addr, now: float) -> bool:
        """Deliver a record new to us (live or from a BATCH); False if seen.
        Our own origin's seqs are ours to give, but for the window a crash
        lost (``Sync.may_take_own``)."""
        if (record.origin, record.seq) in self.known:
            self.dropped["duplicate"] += 1
            return False
        if record.origin == self.node_id and not self.sync.may_take_own(record.seq):
            self.dropped["own_origin"] += 1
            return False
        self.known.add(record.origin, record.seq)
        self.clock.observe(record.hlc, int(now * 1000))
        self._events.append(RecordReceived(record, sender, addr))
        return True

    def _receive_beacon(
        self, beacon: BeaconDatagram, addr: tuple[str, int], now: float, iface: str | None
    ) -> None:
        if beacon.origin == self.node_id:  # ours, relayed back
            self.dropped["duplicate_beacon"] += 1
            return
        newest, presence_changed = self._update_node(beacon, now)
        if not newest and beacon.origin not in self.nodes:
            return  # refused before it made a node: nodes full, or a recording
        if newest and beacon.origin == beacon.sender:
            # A boot just taken has a window now: mark this beacon in it.
            self._replays.fresh(beacon.sender, beacon.counter, beacon.boot_id)
        if beacon.origin == beacon.sender and beacon.sender not in self.peers:
            peer = Peer(addr, now, self.nodes[beacon.sender], iface)
            self.peers[beacon.sender] = peer
            self._events.append(PeerJoined(beacon.sender, peer.name, addr))
        if presence_changed:
            self._events.append(PresenceChanged())
        if newest and beacon.hops > 1:
            self.relayed_beacons += 1
            self._queue(replace(beacon, sender=self.node_id, hops=beacon.hops - 1))
        if newest and beacon.origin == beacon.sender:
            self.sync.peer_vector(beacon.origin, now)

    def _update_node(self, beacon: BeaconDatagram, now: float) -> tuple[bool, bool]:
        """Take the beacon into ``nodes`` if it is the origin's newest:
        ``(newest, presence changed)``; see the opening comment."""
        direct = beacon.origin == beacon.sender
        # Hops away, assuming one hop limit across the mesh (the beacon carries
        # hops left, not hops taken).
        hops = 1 if direct else max(2, self.hop_limit - beacon.hops + 1)
        node = self.nodes.get(beacon.origin)
        replay = self._replays.seen(beacon.origin, beacon.boot_id, beacon.seq)
        if node is None and (replay or len(self.nodes) >= MAX_NODES):
            self.dropped[replay or "nodes_full"] += 1  # a node gone quiet stays gone
            return False, False
        if node is None:
            self._replays.accepted(beacon.origin, beacon.boot_id, beacon.seq)
            self.nodes[beacon.origin] = Node(
                beacon.name,
                beacon.boot_id,
                beacon.seq,
                now,
                hops,
                beacon.sender,
                dict(beacon.vector),
                dict(beacon.presence),
            )
            return True, bool(beacon.presence)
        if beacon.boot_id == node.boot_id and beacon.seq <= node.seq:
            if beacon.seq == node.seq and hops < node.hops:  # a shorter way to it
                node.hops, node.via = hops, beacon.sender
            self.dropped["duplicate_beacon"] += 1
            return False, False
        if beacon.boot_id != node.boot_id and (
            replay or now - node.last_heard < self.beacon_interval
        ):
            self.dropped["stale_beacon"] += 1  # a boot seen before, or the current one lives
            return False, False
        self._replays.accepted(beacon.origin, beacon.boot_id, beacon.seq)
        changed = node.presence != beacon.presence or (
            bool(node.presence) and node.name != beacon.name
        )
        node.name, node.boot_id, node.seq = beacon.name, beacon.boot_id, beacon.seq
        node.last_heard, node.hops, node.via = now, hops, beacon.sender
        node.vector, node.presence = dict(beacon.vector), dict(beacon.presence)
        return True, changed

    def _expire(self, now: float) -> None:
        """Forget nodes without a beacon, and peers not heard directly, for
        ``peer_timeout``; a node that goes takes its peer with it."""
        gone = {nid for nid, n in self.nodes.items() if now - n.last_heard >= self.peer_timeout}
        for node_id, peer in list(self.peers.items()):
            if node_id in gone or now - peer.last_heard >= self.peer_timeout:
                del self.peers[node_id]
                self._events.append(PeerLost(node_id, peer.name))
        had_presence = False
        for node_id in gone:
            had_presence = bool(self.nodes.pop(node_id).presence) or had_presence
        if had_presence:
            self._events.append(PresenceChanged())

    # -- sending -------------------------------------------------------------------------

    def _beacon(self, presence: Mapping[int, Sequence[str]] | None = None) -> BeaconDatagram:
        vector = self.known.as_dict()
        if len(vector) > MAX_VECTOR_ENTRIES:  # thousands of origins: send what fits
            vector = dict(islice(vector.items(), MAX_VECTOR_ENTRIES))
        return BeaconDatagram(
            self.node_id,
            self.node_name,
            self.boot_id,
            vector,
            self._presence if presence is None else presence,
            hops=self.hop_limit,
            seq=self.beacon_seq,
        )

    def _send_beacon(self, now: float) -> None:
        if self._counter >= COUNTER_ROLLOVER:  # a new boot rather than a reused counter
            self.boot_id = self.rng.getrandbits(64)
            self.beacon_seq = 0
            self._counter = 0
        self.beacon_seq += 1  # a u32: at most one a MIN_BEACON_GAP lasts 136 years
        self._queue(self._beacon())
        self._last_beacon = now
        jitter = 1.0 - BEACON_JITTER * self.rng.random()
        self._next_beacon = now + self.beacon_interval * jitter

    def _queue(self, datagram: Datagram, dest: Addr | None = None) -> None:
        """Queue for ``dest`` (None: the group), in fragments if above the MTU."""
        self._outbox.extend((data, dest) for data in self._encode(datagram))

    def _queue_raw(self, data: bytes, dest: Addr | None) -> None:
        self._outbox.append((data, dest))

    def _encode(self, datagram: Datagram) -> list[bytes]:
        """Serialized whole if it fits the MTU, else as fragments (kept a
        while in ``sync`` so lost pieces can be sent again)."""
        key = self.keys[0]
        datagram = replace(datagram, counter=self._next_counter())
        whole = datagram.serialize(key)
        if len(whole) <= self.mtu:
            return [whole]
        assert isinstance(datagram, (RecordDatagram, BeaconDatagram, BatchDatagram))
        self._transfer_id = (self._transfer_id + 1) & U32_MAX
        pieces = [
            replace(piece, counter=self._next_counter()).serialize(key)
            for piece in fragment.split(datagram, mtu=self.mtu, transfer_id=self._transfer_id)
        ]
        self.sync.fragments_sent(self._transfer_id, pieces)
        return pieces

    def _next_counter(self) -> int:
        self._counter = (self._counter + 1) & U32_MAX
        return self._counter

    # -- time ----------------------------------------------------------------------------

    def _observe_now(self, now: float) -> None:
        """Smooth over wall-clock jumps; keep the next beacon within an interval."""
        last, self._last_now = self._last_now, now
        if last is not None:
            step = now - last
            if step < 0 or step > MAX_STEP_INTERVALS * self.beacon_interval:
                self.clock_jumps += 1
                self._shift_times(step)
        if self._next_beacon is not None:
            self._next_beacon = min(self._next_beacon, now + self.beacon_interval)

    def _shift_times(self, delta: float) -> None:
        for peer in self.peers.values():
            peer.last_heard += delta
        for node in self.nodes.values():
            node.last_heard += delta
        if self._next_beacon is not None:
            self._next_beacon += delta
        if self._last_beacon is not None:
            self._last_beacon += delta
        self._reassembler.shift(delta)
        self._limits.shift(delta)
        self._origin_limits.shift(delta)
        self.sync.shift(delta)
