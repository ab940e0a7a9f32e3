"""Anti-entropy: catch-up, gap repair and fragment repair (sans-I/O).

How this works: ``Sync`` belongs to one ``MeshProtocol`` (node/protocol.py),
which hands it the datagrams of these kinds and asks it for timers and paced
output.  Five parts, each small and bounded:

- ``CatchUp`` (the asker).  Every beacon from a direct peer carries its vector
  ``{origin: contiguous}``; compared with ours (``known``) it gives the ranges
  we lack.  If we lack anything and no request is live, ONE unicast REQUEST
  goes to the single peer that can fill the most, for at most
  ``MAX_RANGES_PER_REQUEST`` ranges (what fits one datagram).  Records (or
  GONE ranges) arriving from that peer are progress; when every asked range
  is in, or after ``REQUEST_TIMEOUT`` without progress (that peer is then
  avoided for ``PEER_BACKOFF`` if another can help), we plan again.  Before
  the first answer the same REQUEST goes again after ``FIRST_ANSWER_WAIT``
  (a lost request costs a fifth of a second).  A REQUEST is answered with at
  most ``CATCHUP_WINDOW`` records; having taken them, the asker asks for the
  next window: the asker's pace, so its socket buffer never overflows.  Cost
  is proportional to what is missing, never to the history.
- ``Responder``.  A REQUEST whose target is us queues range cursors per asker
  (bounded: ``MAX_SERVED_ASKERS``, ``MAX_QUEUED_RANGES``), answered round robin
  in BATCH datagrams filled up to the MTU (a record larger than the MTU goes as
  a fragmented BATCH of one), unicast to the asker or on the group if the
  request says so.  A range at or below the asker's contiguous seq (from its
  newest beacon; it never shrinks) is old news, a replay: clipped off
  ("request_stale"), so a recording of an earlier request, even of an earlier
  boot whose counters the replay window cannot judge, costs us nothing.
  Output is paced by a token bucket (``catchup_rate`` bytes/s,
  burst ``CATCHUP_BURST_DATAGRAMS`` datagrams) driven by ``get_timer`` /
  ``datagrams_to_send(now)``.  Only the next batch (and at most one GONE
  datagram beside it) is ever materialised.  Each asked seq is one of three:
  held (it goes in the batch), gone for good here (``RecordSource.gone_through``:
  expired or removed by moderation; runs of them go out as GONE ranges, sent
  after the batch built with them, and the cursor jumps past the run), or
  simply lacking (skipped and counted).
- ``GapRepair`` (NACKs).  A live record ``(o, s)`` with a small hole just below
  it means loss: after a random back-off in ``[NACK_MIN, NACK_MAX]`` we multicast
  a REQUEST (answer by multicast) to the peer that gave us the record.  Hearing
  someone else's multicast REQUEST covering our hole postpones ours (NACK
  suppression, RFC 5740's idea): the one multicast answer repairs us all.
  Retries are bounded; what is left goes to catch-up at the next beacon.
  At most ``MAX_NACK_ORIGINS`` origins are pending, ``MAX_NACKS_PER_PEER``
  of them aimed at any one peer.
- ``FragmentRepair``.  A partial reassembly with no new piece for
  ``FRAGMENT_REPAIR_DELAY`` asks its sender (unicast) for the missing indexes;
  the sender resends them from its ``SentCache``.  Bounded retries.

- ``OwnRecovery``.  After a crash, our own seqs that were reserved
  (node/store.py) but are not on disk: records that went out just before
  the power cut, or seqs never used.  Every direct peer heard while it is
  open is asked for them; ``recovery_time`` after the first, what nobody
  sent is declared gone by us, so no peer's vector for us stops at a hole.

Records from BATCH go through the same path as live ones (dedupe, clock,
``RecordReceived``) but are never relayed: catch-up stays between the two
nodes.  Nothing received touches our own origin's seqs but the lost window of
``OwnRecovery``.  A GONE range is taken only where we asked that peer (our
catch-up REQUEST or our NACK), never for our own origin and never above what
that peer's newest beacon claims (else clipped or refused, counted in
``dropped``); what is taken goes to the app as ``RecordsGone`` (the store
keeps it: ``Store.note_gone``) and is seen meanwhile (node/seen.py), so it is
never asked for again.  GONE names ranges, never a low-water mark: one seq
space holds messages, accounts and moderation records, and only messages
expire.  Progress is in ``stats`` (for /status).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.fragment import Reassembler, SentCache
from node.reasons import Drop
from node.record import RangeSet, Record
from node.seen import Seen
from node.wire import (
    BATCH_ENTRY,
    FRAGMENT_INDEX,
    FRAGMENT_REQUEST_HEAD,
    GONE_COUNT,
    GONE_RANGE,
    HEADER,
    MAC_LEN,
    MAX_GONE_RANGES,
    RECORD_HEAD,
    REQUEST_HEAD,
    REQUEST_RANGE,
    BatchDatagram,
    Datagram,
    DatagramKind,
    FragmentRequestDatagram,
    GoneDatagram,
    RequestDatagram,
    batch_size,
    record_body,
)

# -- constants ---------------------------------------------------------------------------

# Ranges per catch-up REQUEST: 64 ranges are 1,035 bytes, within the default
# MTU; smaller MTUs get fewer (``ranges_per_request``).  A node with more holes
# than that asks again as soon as the first answer is in.
MAX_RANGES_PER_REQUEST = 64
# Records one REQUEST is answered with at most: the asker's window.  The
# responder serves that many (GONE ranges, O(1) each, do not count) and drops
# the rest of the request; the asker, once it has taken that many, asks for
# the rest at once.  What the asker has not taken yet waits in its socket
# buffer, so the window must fit there (2,000 records are ~250 KB on the
# wire; node/transport.py asks for 1 MiB): the asker's pace, not the
# responder's.  Without it a router missing 100,000 records got them in one
# answer at the responder's rate and dropped thousands at its socket (4,285
# in one run), then waited for stalls and timeouts to ask again.  A responder
# of an older version answers whole requests: its asker still re-asks after
# a window, and the responder skips what it is already sending.
CATCHUP_WINDOW = 2_000
# No new record from the asked peer for this long: the request or part of its
# answer was lost, or the peer is gone.  One second is ~800 batches at the
# default rate, even shared by MAX_SERVED_ASKERS askers, and a fifth of a beacon
# interval, so a loss costs little.  Slower rates stretch it (``request_timeout``).
REQUEST_TIMEOUT = 1.0
# Before the first answer, the same REQUEST goes again (to the same peer)
# after this, then after twice as long since, and so on within
# REQUEST_TIMEOUT: a request or its first batch lost (one in five at 10 %
# loss each way) costs a fifth of a second, not a whole second, while a dead
# peer is still passed over after REQUEST_TIMEOUT.  An answer's first batch
# comes a round trip and a few batches of other askers' turns later (ms; a
# busy router's Python tens of ms), so 0.2 s is a loss, not a slow answer; a
# repeat the peer is still answering costs nothing (``Responder._enqueue``).
# A line of 12 at 10 % loss: p99 end to end 2.0 s with one resend after 1 s.
FIRST_ANSWER_WAIT = 0.2
# Once an answer flows, a pause longer than STALL_FACTOR of its smoothed gaps
# between datagrams (at least STALL_MIN) means its tail was lost: ask again
# for what is missing at once instead of waiting out REQUEST_TIMEOUT.  8 gaps
# leave room for a responder serving other askers in turn (round robin).
STALL_FACTOR = 8.0
STALL_MIN = 0.05
STALL_SMOOTHING = 0.2  # weight of the newest gap in the moving average
# A peer that let a request time out is passed over for two beacon intervals
# when another peer can fill the gap, so one dead link cannot stall catch-up.
PEER_BACKOFF = 10.0
# Catch-up pacing, bytes/s.  1 MB/s is 8 Mbit/s: a quarter or less of what an
# 802.11n/ac mesh link carries by unicast in practice (20-100 Mbit/s), so chat
# keeps most of the airtime while 100,000 messages (~15 MB) arrive in ~15 s.
# Multicast NACK answers share it; they are small.
CATCHUP_RATE = 1_000_000
# Burst: four datagrams back to back, about 4 ms of airtime at 8 Mbit/s: the
# bucket may send that much at once after a pause, never more.
CATCHUP_BURST_DATAGRAMS = 4
# Askers served at once: a few neighbours rebooting together.  More is a storm
# or an attack; they retry after REQUEST_TIMEOUT.
MAX_SERVED_ASKERS = 8
# Range cursors queued per asker: four full requests.  A cursor is ~50 bytes,
# whatever the range's length: 8 askers x 256 cursors stay under 100 KB.
MAX_QUEUED_RANGES = 256
# Seqs looked up while filling one batch: bounds the time one call spends
# skipping seqs we lack (a record is ~100 bytes, a batch holds ~10 of them).
MAX_SCAN_PER_BATCH = 1024
# Batches built per call of ``datagrams_to_send``: bounds the work of one call
# when batches come out empty; a zero timer brings us back at once.
MAX_BUILDS_PER_CALL = 64
# A token-bucket wake-up lands this much after the exact instant, so floating
# point (a clock reading near 1.7e9 s resolves ~0.24 us; a monotonic clock
# after months of uptime, ~1e7 s, ~2 ns) never wakes us a hair early and
# finds the bucket still short.
PACING_EPSILON = 1e-6
# NACK back-off: 20-60 ms.  Longer than a one-hop round trip on Wi-Fi (a few
# ms) so the first NACK is heard by the others before theirs fire; short enough
# that a lost chat line is back before a reader notices.
NACK_MIN = 0.02
NACK_MAX = 0.06
# After a NACK, wait this long (plus a new back-off) for the answer before asking
# again: the answer is paced behind at most a few batches.
NACK_RETRY = 0.5
# NACKs per hole before we leave it to catch-up (every beacon, 5 s).
NACK_MAX_TRIES = 4
# A hole wider than this is an outage, not loss: it goes to unicast catch-up, so
# a rebooted node never pulls history by multicast.
MAX_NACK_GAP = 32
# Origins with a NACK pending, and holes remembered per origin: a mesh has tens
# of origins, and loss bursts are short.
MAX_NACK_ORIGINS = 64
MAX_NACK_RANGES = 8
# NACKs aimed at one peer at once: a quarter of the table, so one peer feeding
# us records of many made-up origins, each above a hole, cannot take every
# slot from the others.  More holes at once from one peer is an outage:
# catch-up fills it at the next beacon.
MAX_NACKS_PER_PEER = MAX_NACK_ORIGINS // 4
# Someone else asked for our hole by multicast: hold ours this long, enough for
# the answer (a batch or two) to come back.
NACK_SUPPRESS_HOLD = 0.3
# A fragmented transfer with no new piece for this long lost pieces: pieces go
# out back to back (or paced, ~1 ms apart), so 250 ms of silence is loss.
FRAGMENT_REPAIR_DELAY = 0.25
# Requests per stalled transfer: 4 x 250 ms, well within REASSEMBLY_TIMEOUT.
MAX_FRAGMENT_REPAIRS = 4
# The queue key of multicast answers (not a node id: those are hex).
MULTICAST = "*"

Range = tuple[str, int, int]  # origin, first, last (inclusive)
Addr = tuple[str, int]


def request_timeout(mtu: int, rate: float) -> float:
    """REQUEST_TIMEOUT, or longer when a responder at ``rate`` serving every
    asker it may could leave us two MTUs' worth of turns behind."""
    return max(REQUEST_TIMEOUT, 2 * MAX_SERVED_ASKERS * mtu / rate)


def ranges_per_request(mtu: int) -> int:
    """Ranges one REQUEST carries at ``mtu``."""
    fits = (mtu - HEADER.size - MAC_LEN - REQUEST_HEAD.size) // REQUEST_RANGE.size
    return max(1, min(MAX_RANGES_PER_REQUEST, fits))


def _lacking(known: Seen, origin: str, first: int, last: int) -> list[tuple[int, int]]:
    """The parts of ``first..last`` of ``origin`` that ``known`` lacks."""
    if known.contiguous(origin) >= last:
        return []
    return [(max(a, first), b) for a, b in known.missing(origin, last) if b >= first]


def _count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(last - first + 1 for first, last in ranges)


def _within(spans: Iterable[tuple[int, int]], first: int, last: int) -> list[tuple[int, int]]:
    """The parts of ``first..last`` inside ``spans``, sorted and merged."""
    inside = RangeSet()
    for a, b in spans:
        if max(a, first) <= min(b, last):
            inside.add(max(a, first), min(b, last))
    return inside.ranges


# -- what the protocol gives us ----------------------------------------------------------


class RecordSource(Protocol):
    """Where a responder finds records to send: the store."""

    def get(self, origin: str, seq: int) -> Record | None:
        """The record ``(origin, seq)`` if held here."""

    def gone_through(self, origin: str, seq: int) -> int:
        """If ``(origin, seq)`` existed and is gone for good here (expired, or
        removed by moderation): the last seq ``L >= seq`` such that every seq
        in ``seq..L`` is gone (a source may stop short of the true end to bound
        its work).  Otherwise 0: held, or never seen here."""


class NoRecords:
    """A source that holds nothing and has purged nothing."""

    def get(self, origin: str, seq: int) -> Record | None:
        return None

    def gone_through(self, origin: str, seq: int) -> int:
        return 0


class PeerView(Protocol):
    """What sync reads of a ``protocol.Peer``."""

    addr: Addr

    @property
    def vector(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RecordsGone:
    """A peer says ``first..last`` of ``origin`` are gone for good (expired,
    deleted), or, for our own origin, ``OwnRecovery`` declares the lost
    window's rest gone: the app keeps that, to answer the same to others."""

    origin: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class CatchUpFinished:
    """A catch-up request to ``peer`` ended: every asked range arrived
    (``complete``) or the peer stopped answering; ``records`` it brought."""

    peer: str
    records: int
    complete: bool


@dataclass(slots=True)
class Host:
    """The protocol's side: state we read and what we may do."""

    node_id: str
    known: Seen  # the store's vector, and what the app has yet to settle
    peers: Mapping[str, PeerView]
    mtu: int
    rng: random.Random
    dropped: Counter[Drop]
    stats: Counter[str]
    send: Callable[[Any, Addr | None], None]  # queue a datagram (fragments if needed)
    encode: Callable[[Any], list[bytes]]  # serialize (fragments if needed), not queued
    send_raw: Callable[[bytes, Addr], None]  # queue bytes already serialized
    accept: Callable[[Record, str, Addr, float], bool]  # deliver; False: a duplicate
    emit: Callable[[Any], None]  # an event for next_event()


# -- asking: bulk catch-up ---------------------------------------------------------------


@dataclass(slots=True)
class _Outstanding:
    peer: str
    ranges: list[Range]
    progress: float  # when it was sent or last brought something
    records: int = 0  # brought by this request and the windows before it
    gap: float | None = None  # smoothed time between the answer's datagrams
    window: int = 0  # records brought by this request (at most CATCHUP_WINDOW)
    reached: int = 0  # the furthest of them in the order asked (``CatchUp._position``)
    resend_at: float | None = None  # when to send it again, while nothing came
    resends: int = 0


class CatchUp:
    """One live unicast REQUEST at a time, to the peer that can fill the most."""

    def __init__(self, host: Host, rate: float) -> None:
        self.host = host
        self.timeout = request_timeout(host.mtu, rate)
        self.outstanding: _Outstanding | None = None
        self._avoid: dict[str, float] = {}  # peer -> until when we pass it over

    def plan(self, now: float) -> None:
        """Called on each beacon from a peer, on completion and on timeout."""
        if self.outstanding is not None:
            if self._complete():
                self._finish(True)
            elif now < self.outstanding.progress + self._wait() and self._alive():
                return  # (the very expression handle_timer uses: no float drift)
            else:
                self._give_up(now)
        choice = self._best_peer(now)
        if choice is not None:
            self._ask(*choice, now)

    def progress(
        self, peer: str, records: int, now: float, last: tuple[str, int] | None = None
    ) -> None:
        """``records`` new records (or GONE ranges: 0) arrived from
        ``peer``, ``last`` the id of the last; finish and re-plan once all
        is in, ask for the next window once this one is."""
        out = self.outstanding
        if out is None or out.peer != peer:
            return
        out.records += records
        out.window += records
        if last is not None:
            out.reached = max(out.reached, self._position(out, *last))
        gap = now - out.progress
        if out.records > records:  # not the first arrival: the first gap is the round trip
            out.gap = gap if out.gap is None else out.gap + STALL_SMOOTHING * (gap - out.gap)
        out.progress, out.resend_at = now, None  # it answers: no more resends
        self.host.stats["catchup_records"] += records
        if self._complete():
            self.plan(now)
        elif self._window_served(out) and out.peer in self.host.peers:
            wants = self._wants(self.host.peers[out.peer])  # the next window, same peer
            if wants:
                self.host.stats["catchup_windows"] += 1
                self._ask(out.peer, wants, now, out.records)

    @staticmethod
    def _position(out: _Outstanding, origin: str, seq: int) -> int:
        """Where ``(origin, seq)`` comes in what ``out`` asked for, from 1."""
        before = 0
        for o, first, last in out.ranges:
            if o == origin and first <= seq <= last:
                return before + seq - first + 1
            before += last - first + 1
        return 0

    @staticmethod
    def _window_served(out: _Outstanding) -> bool:
        """The responder has sent its window: we took all of it, or its last
        record came and most of the rest (what loss took goes into the next
        request; a responder that lacks much of what we asked, GONE runs
        say, serves past that position, so most must have come)."""
        return out.window >= CATCHUP_WINDOW or (
            out.reached >= CATCHUP_WINDOW and out.window >= CATCHUP_WINDOW * 3 // 4
        )

    def _wait(self) -> float:
        """How long an answer may pause before we ask again: the full timeout
        until it flows, then a few of its own gaps (a lost tail costs a
        fraction of a second, not a whole timeout)."""
        out = self.outstanding
        if out is None or out.gap is None:
            return self.timeout
        return min(self.timeout, max(STALL_MIN, STALL_FACTOR * out.gap))

    def get_timer(self) -> float | None:
        out = self.outstanding
        if out is None:
            return None
        give_up = out.progress + self._wait()
        return give_up if out.resend_at is None else min(out.resend_at, give_up)

    def handle_timer(self, now: float) -> None:
        out = self.outstanding
        if out is None:
            return
        if now >= out.progress + self._wait():
            self.plan(now)
        elif out.resend_at is not None and now >= out.resend_at:
            self._resend(out, now)

    def lag(self) -> dict[str, dict[str, int]]:
        """Per peer: records it has that we lack (``behind``), and records we
        have contiguously beyond its vector (``ahead``)."""
        ours, out = self.host.known.as_dict(), {}
        for peer_id, peer in sorted(self.host.peers.items()):
            behind = _count((f, la) for _, f, la in self._wants(peer))
            ahead = sum(max(0, c - peer.vector.get(o, 0)) for o, c in ours.items())
            out[peer_id] = {"behind": behind, "ahead": ahead}
        return out

    def outstanding_ranges(self) -> int:
        out = self.outstanding
        if out is None:
            return 0
        known = self.host.known
        return sum(bool(_lacking(known, o, f, la)) for o, f, la in out.ranges)

    def asked(self, peer: str, origin: str) -> list[tuple[int, int]]:
        """The ranges of ``origin`` our live request asks ``peer`` for."""
        out = self.outstanding
        if out is None or out.peer != peer:
            return []
        return [(first, last) for o, first, last in out.ranges if o == origin]

    def _wants(self, peer: PeerView) -> list[Range]:
        """What ``peer`` claims that we lack; never our own origin's (a
        beacon may claim anything of it: ``OwnRecovery`` asks what we lost)."""
        known, wants = self.host.known, []
        for origin, upto in peer.vector.items():
            if origin != self.host.node_id and known.contiguous(origin) < upto:
                wants += [(origin, f, la) for f, la in known.missing(origin, upto)]
        return wants

    def _best_peer(self, now: float) -> tuple[str, list[Range]] | None:
        """The peer that can fill the most; one we avoid only if no other can."""
        best: tuple[bool, int, str] | None = None
        chosen: list[Range] = []
        for peer_id, peer in sorted(self.host.peers.items()):
            wants = self._wants(peer)
            amount = _count((f, la) for _, f, la in wants)
            if not amount:
                continue
            rank = (self._avoid.get(peer_id, 0.0) <= now, amount, peer_id)
            if best is None or rank[:2] > best[:2]:
                best, chosen = rank, wants
        return None if best is None else (best[2], chosen)

    def _ask(self, peer_id: str, wants: list[Range], now: float, records: int = 0) -> None:
        host = self.host
        ranges = wants[: ranges_per_request(host.mtu)]
        self.outstanding = _Outstanding(
            peer_id, ranges, now, records, resend_at=now + FIRST_ANSWER_WAIT
        )
        request = RequestDatagram(host.node_id, peer_id, ranges)
        host.send(request, host.peers[peer_id].addr)
        host.stats["catchup_requests"] += 1
        host.stats["catchup_request_bytes"] += len(request.body()) + HEADER.size + MAC_LEN
        host.stats["catchup_asked_records"] += _count((f, la) for _, f, la in ranges)

    def _resend(self, out: _Outstanding, now: float) -> None:
        """Nothing came yet: the same REQUEST again, for what is still lacking."""
        known, host = self.host.known, self.host
        lacking = [(o, a, b) for o, f, la in out.ranges for a, b in _lacking(known, o, f, la)]
        if not lacking or out.peer not in host.peers:
            out.resend_at = None  # the next plan finishes or gives up
            return
        out.resends += 1
        out.resend_at = now + FIRST_ANSWER_WAIT * 2**out.resends
        request = RequestDatagram(host.node_id, out.peer, lacking[: ranges_per_request(host.mtu)])
        host.send(request, host.peers[out.peer].addr)
        host.stats["catchup_resends"] += 1

    def _complete(self) -> bool:
        return self.outstanding is not None and self.outstanding_ranges() == 0

    def _alive(self) -> bool:
        return self.outstanding is not None and self.outstanding.peer in self.host.peers

    def _finish(self, complete: bool) -> None:
        out, self.outstanding = self.outstanding, None
        assert out is not None
        self.host.stats["catchup_done" if complete else "catchup_timeouts"] += 1
        self.host.emit(CatchUpFinished(out.peer, out.records, complete))

    def _give_up(self, now: float) -> None:
        assert self.outstanding is not None
        if not self.outstanding.records:  # silent: pass it over; a lossy tail is no reason
            self._avoid[self.outstanding.peer] = now + PEER_BACKOFF
        self._avoid = {p: t for p, t in self._avoid.items() if t > now}  # stays small
        self._finish(False)


# -- answering: paced batches ------------------------------------------------------------


class TokenBucket:
    """``rate`` bytes/s, at most ``burst`` bytes at once; time passed in."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp: float | None = None  # when ``tokens`` was last brought up to date

    def take(self, size: int, now: float) -> bool:
        self._refill(now)
        if self.tokens < size:
            return False
        self.tokens -= size
        return True

    def ready_at(self, size: int) -> float:
        """When ``size`` bytes may go (``size`` <= burst)."""
        if self.stamp is None or self.tokens >= size:
            return 0.0 if self.stamp is None else self.stamp
        return self.stamp + (size - self.tokens) / self.rate + PACING_EPSILON

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now


@dataclass(slots=True)
class _Cursor:
    origin: str
    next: int
    last: int


@dataclass(slots=True)
class _Asker:
    dest: Addr | None  # None: answer on the group
    cursors: deque[_Cursor]
    peeked: tuple[Record, bytes] | None = None  # the front cursor's next record, encoded
    window: int = CATCHUP_WINDOW  # records left to serve for its newest request


class Responder:
    """Answers REQUESTs aimed at us, round robin over askers, paced."""

    def __init__(self, host: Host, source: RecordSource, rate: float) -> None:
        self.host = host
        self.source = source
        self.bucket = TokenBucket(rate, CATCHUP_BURST_DATAGRAMS * host.mtu)
        self._queues: OrderedDict[str, _Asker] = OrderedDict()
        self._ready: deque[tuple[bytes, Addr | None]] = deque()  # the next batch, serialized

    def receive_request(
        self, request: RequestDatagram, addr: Addr, holds: Mapping[str, int]
    ) -> None:
        """``holds``: the asker's vector from its newest beacon.  An asker
        only ever asks for what lies above its contiguous seq, which never
        shrinks; anything at or below it is a replay of an old request (or
        an answer it already has), so it is clipped off and counted."""
        key = MULTICAST if request.multicast else request.sender
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= MAX_SERVED_ASKERS:
                self.host.dropped[Drop.REQUEST_ASKERS_FULL] += 1
                return
            queue = self._queues[key] = _Asker(None, deque())
        queue.dest = None if request.multicast else addr
        queue.window = CATCHUP_WINDOW
        for origin, first, last in request.ranges:
            if last <= holds.get(origin, 0):
                self.host.stats["request_stale"] += 1
                continue
            start = max(first, holds.get(origin, 0) + 1)
            self._enqueue(queue, origin, start, min(last, self.host.known.highest(origin)))
        if not queue.cursors:
            del self._queues[key]

    def queued_ranges(self) -> dict[str, int]:
        return {key: len(q.cursors) for key, q in self._queues.items()}

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr | None]]:
        out: list[tuple[bytes, Addr | None]] = []
        builds = 0
        while True:
            if not self._ready:
                if not self._queues or builds >= MAX_BUILDS_PER_CALL:
                    break
                self._build()
                builds += 1
                continue
            data, dest = self._ready[0]
            if not self.bucket.take(len(data), now):
                break
            self._ready.popleft()
            out.append((data, dest))
            self.host.stats["served_datagrams"] += 1
            self.host.stats["served_bytes"] += len(data)
        return out

    def get_timer(self) -> float | None:
        if self._ready:
            return self.bucket.ready_at(len(self._ready[0][0]))
        if self._queues:  # more to build: at once
            return self.bucket.ready_at(0)
        return None

    def forget_lost_askers(self) -> None:
        for key in [k for k in self._queues if k != MULTICAST and k not in self.host.peers]:
            del self._queues[key]
            self.host.stats["askers_lost"] += 1

    def _enqueue(self, queue: _Asker, origin: str, first: int, last: int) -> None:
        if first > last:
            self.host.stats["request_unheld"] += 1  # beyond anything we ever heard of
            return
        if any(c.origin == origin and c.next <= first and last <= c.last for c in queue.cursors):
            return  # asked again while we are still on it (a retry, or another NACK)
        if len(queue.cursors) >= MAX_QUEUED_RANGES:
            self.host.dropped[Drop.REQUEST_RANGES_FULL] += 1
            return
        queue.cursors.append(_Cursor(origin, first, last))

    def _build(self) -> None:
        """Materialise the next batch of the asker whose turn it is, and the
        GONE ranges met on the way."""
        key, queue = next(iter(self._queues.items()))
        self._queues.move_to_end(key)
        gone: list[Range] = []
        records: list[Record] = []
        bodies: list[bytes] = []
        self._fill(queue, gone, records, bodies)
        if not queue.cursors:
            del self._queues[key]
        # The batch first: a GONE range often starts just above a record of
        # this batch (an account at seq 1, messages 2..100 expired), and the
        # asker takes it in O(1) when the record below is in already.
        if records:
            batch = BatchDatagram(self.host.node_id, records, encoded=bodies)
            self._ready.extend((data, queue.dest) for data in self.host.encode(batch))
            self.host.stats["served_records"] += len(records)
        if gone:
            datagram = GoneDatagram(self.host.node_id, gone)
            self._ready.extend((data, queue.dest) for data in self.host.encode(datagram))
            self.host.stats["gone_sent"] += 1
            self.host.stats["gone_ranges_sent"] += len(gone)

    def _gone_per_datagram(self) -> int:
        """GONE ranges that fit one datagram at our MTU."""
        room = self.host.mtu - HEADER.size - MAC_LEN - GONE_COUNT.size
        return max(1, min(MAX_GONE_RANGES, room // GONE_RANGE.size))

    def _fill(
        self, queue: _Asker, gone: list[Range], records: list[Record], bodies: list[bytes]
    ) -> None:
        size, mtu = batch_size([]), self.host.mtu
        gone_room = self._gone_per_datagram()
        for _ in range(MAX_SCAN_PER_BATCH):
            if not queue.cursors or size >= mtu or len(gone) >= gone_room:
                return
            cursor = queue.cursors[0]
            item, queue.peeked = queue.peeked, None
            if item is None or (item[0].origin, item[0].seq) != (cursor.origin, cursor.next):
                record = self._held(cursor)
                if record is None:
                    self._gone_or_skip(queue, cursor, gone)
                    continue
                item = self._encode(record)
            if item is not None and queue.window <= 0:  # the asker asks for more when ready
                queue.cursors.clear()
                queue.peeked = None
                self.host.stats["served_windows"] += 1
                return
            if item is not None:
                entry = BATCH_ENTRY.size + len(item[1])
                if records and size + entry > mtu:
                    queue.peeked = item  # the first record of the next batch
                    return
                queue.window -= 1
                records.append(item[0])
                bodies.append(item[1])
                size += entry
            self._advance(queue, cursor.next + 1)

    def _held(self, cursor: _Cursor) -> Record | None:
        """The record at the cursor if we hold it."""
        if (cursor.origin, cursor.next) not in self.host.known:
            return None
        return self.source.get(cursor.origin, cursor.next)

    def _encode(self, record: Record) -> tuple[Record, bytes] | None:
        try:
            return record, record_body(record)
        except ValueError:  # the store holds something we cannot send
            self.host.stats["served_unsendable"] += 1
            return None

    def _gone_or_skip(self, queue: _Asker, cursor: _Cursor, gone: list[Range]) -> None:
        """A seq we do not hold: the run of gone seqs it starts becomes a GONE
        range (joined to the previous one when they touch) and the cursor
        jumps past it; a seq we simply lack is skipped and counted."""
        origin, first = cursor.origin, cursor.next
        last = min(self.source.gone_through(origin, first), cursor.last)
        if last < first:
            self.host.stats["served_skipped"] += 1
            self._advance(queue, first + 1)
            return
        if gone and gone[-1][0] == origin and gone[-1][2] + 1 == first:
            first = gone.pop()[1]
        gone.append((origin, first, last))
        self._advance(queue, last + 1)

    @staticmethod
    def _advance(queue: _Asker, seq: int) -> None:
        cursor = queue.cursors[0]
        cursor.next = seq
        if cursor.next > cursor.last:
            queue.cursors.popleft()


# -- live gap repair: NACKs with suppression ---------------------------------------------


@dataclass(slots=True)
class _Nack:
    target: str  # the peer that gave us the record above the hole
    due: float
    holes: list[tuple[int, int]]
    tries: int = 0
    asked_of: str = ""  # the peer our last NACK went to ...
    asked: list[tuple[int, int]] = field(default_factory=list)  # ... and what it asked


class GapRepair:
    """Per origin, the holes below live records, NACKed after a back-off."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._nacks: dict[str, _Nack] = {}

    def live_record(self, record: Record, sender: str, now: float) -> None:
        """A new live record: schedule a NACK if it shows a fresh, small hole."""
        origin, seq = record.origin, record.seq
        if origin == self.host.node_id:  # our lost window: OwnRecovery asks for it
            return
        holes = self.host.known.missing(origin, seq - 1)
        if not holes or holes[-1][1] != seq - 1:
            return
        hole = holes[-1]
        if _count([hole]) > MAX_NACK_GAP or sender not in self.host.peers:
            self.host.stats["nack_left_to_catchup"] += 1
            return
        nack = self._nacks.get(origin)
        if nack is None:
            aimed = sum(n.target == sender for n in self._nacks.values())
            if len(self._nacks) >= MAX_NACK_ORIGINS or aimed >= MAX_NACKS_PER_PEER:
                self.host.stats["nack_full"] += 1
                return
            nack = self._nacks[origin] = _Nack(sender, now + self._backoff(), [])
        nack.target = sender
        if hole not in nack.holes and len(nack.holes) < MAX_NACK_RANGES:
            nack.holes.append(hole)

    def heard_request(self, request: RequestDatagram, now: float) -> None:
        """Someone else's multicast REQUEST: hold our NACKs that it covers."""
        asked: dict[str, list[tuple[int, int]]] = {}
        for origin, first, last in request.ranges:
            asked.setdefault(origin, []).append((first, last))
        for origin, spans in asked.items():
            nack = self._nacks.get(origin)
            if nack is None:
                continue
            lacking = self._lacking(origin, nack)
            if lacking and all(any(f <= a and b <= la for f, la in spans) for a, b in lacking):
                nack.due = max(nack.due, now + NACK_SUPPRESS_HOLD)
                self.host.stats["nacks_suppressed"] += 1

    def pending(self) -> int:
        return len(self._nacks)

    def asked(self, peer: str, origin: str) -> list[tuple[int, int]]:
        """The holes of ``origin`` our NACK asked ``peer`` for."""
        nack = self._nacks.get(origin)
        return nack.asked if nack is not None and nack.asked_of == peer else []

    def get_timer(self) -> float | None:
        return min((n.due for n in self._nacks.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for origin in [o for o, n in self._nacks.items() if now >= n.due]:
            self._fire(origin, now)

    def _fire(self, origin: str, now: float) -> None:
        nack = self._nacks[origin]
        lacking = self._lacking(origin, nack)
        host = self.host
        if not lacking or nack.tries >= NACK_MAX_TRIES or nack.target not in host.peers:
            del self._nacks[origin]
            host.stats["nacks_repaired" if not lacking else "nacks_given_up"] += 1
            return
        ranges = [(origin, a, b) for a, b in lacking[: ranges_per_request(host.mtu)]]
        host.send(RequestDatagram(host.node_id, nack.target, ranges, multicast=True), None)
        host.stats["nacks_sent"] += 1
        nack.asked_of, nack.asked = nack.target, [(a, b) for _, a, b in ranges]
        nack.tries += 1
        nack.holes = lacking[:MAX_NACK_RANGES]
        nack.due = now + NACK_RETRY + self._backoff()

    def _lacking(self, origin: str, nack: _Nack) -> list[tuple[int, int]]:
        known = self.host.known
        return [part for a, b in nack.holes for part in _lacking(known, origin, a, b)]

    def _backoff(self) -> float:
        return self.host.rng.uniform(NACK_MIN, NACK_MAX)


# -- fragment repair ---------------------------------------------------------------------


class FragmentRepair:
    """Asks for the pieces of stalled transfers; resends pieces we sent."""

    def __init__(self, host: Host, reassembler: Reassembler) -> None:
        self.host = host
        self.reassembler = reassembler
        self.sent = SentCache()
        self._asked: dict[tuple[str, int], tuple[float, int]] = {}  # key -> (when, how often)

    def fragments_sent(self, transfer_id: int, pieces: list[bytes]) -> None:
        self.sent.add(transfer_id, pieces)

    def receive_request(self, request: FragmentRequestDatagram, addr: Addr) -> None:
        pieces = self.sent.get(request.transfer_id)
        if pieces is None:
            self.host.stats["fragment_request_expired"] += 1
            return
        for index in sorted(set(request.indexes)):
            if index < len(pieces):
                self.host.send_raw(pieces[index], addr)
                self.host.stats["fragments_resent"] += 1

    def get_timer(self) -> float | None:
        due = [self._due(key) for key in self.reassembler.pending()]
        return min((d for d in due if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        pending = self.reassembler.pending()
        self._asked = {k: v for k, v in self._asked.items() if k in pending}
        for key in pending:
            due = self._due(key)
            if due is not None and now >= due:
                self._ask(key, now)

    def _holds_record_of(self, key: tuple[str, int]) -> bool:
        """Piece 0 of a RECORD names its id: do we hold it already?"""
        first = self.reassembler.first_piece(*key)
        if first is None or first[0] != DatagramKind.RECORD or len(first[1]) < RECORD_HEAD.size:
            return False
        origin, seq = RECORD_HEAD.unpack_from(first[1])[:2]
        return (origin.hex(), seq) in self.host.known

    def _due(self, key: tuple[str, int]) -> float | None:
        heard = self.reassembler.last_heard(*key)
        if heard is None or key[0] not in self.host.peers:
            return None
        asked, tries = self._asked.get(key, (heard, 0))
        if tries >= MAX_FRAGMENT_REPAIRS:
            return None
        return max(heard, asked) + FRAGMENT_REPAIR_DELAY

    def _ask(self, key: tuple[str, int], now: float) -> None:
        sender, transfer_id = key
        missing = self.reassembler.missing(sender, transfer_id)
        assert missing  # a pending transfer lacks a piece: the last one finishes it
        if self._holds_record_of(key):  # another relayer's copy of what we have
            self._asked[key] = (now, MAX_FRAGMENT_REPAIRS)
            self.host.stats["fragment_repair_not_needed"] += 1
            return
        room = self.host.mtu - HEADER.size - MAC_LEN - FRAGMENT_REQUEST_HEAD.size
        fits = room // FRAGMENT_INDEX.size
        request = FragmentRequestDatagram(self.host.node_id, sender, transfer_id, missing[:fits])
        self.host.send(request, self.host.peers[sender].addr)
        self._asked[key] = (now, self._asked.get(key, (now, 0))[1] + 1)
        self.host.stats["fragment_requests_sent"] += 1


# -- our own lost window ---------------------------------------------------------------------


class OwnRecovery:
    """Our own seqs reserved before a crash and not on disk (``window``).

    Each is a record that may have reached a peer just before the power cut,
    or a seq never used; only a peer can tell.  While the window is open,
    every direct peer gets a unicast REQUEST for what of it we still lack,
    at each of its beacons (our first requests after a restart may be taken
    as replays, or not served, until the peer has our new boot); the
    responder sends what it holds.  Records of our own origin are taken
    only here (``covers``).  ``wait`` after the first peer was heard, what
    nobody sent is declared gone by us: ``RecordsGone`` of our own origin
    (the store keeps it as gone, catch-up answers it as GONE), so no
    peer's vector for us stops at a hole.  Alone, we wait: nobody is there
    to disagree.  A peer that is off all that while and holds some of the
    window keeps it; the others hear it is gone (the limit of this scheme).
    """

    def __init__(self, host: Host, window: Sequence[tuple[int, int]], wait: float) -> None:
        self.host = host
        self.window = RangeSet(list(window))
        self.wait = wait
        self.deadline: float | None = None  # set when the first peer is heard

    def covers(self, seq: int) -> bool:
        """A record of our own origin with this seq may be taken."""
        return seq in self.window

    def peer_heard(self, peer: str, now: float) -> None:
        """A direct peer's beacon: ask it for what we still lack."""
        lacking = self._lacking()
        if not lacking:
            self.window = RangeSet()
            return
        if self.deadline is None:
            self.deadline = now + self.wait
        host = self.host
        ranges = [(host.node_id, a, b) for a, b in lacking[: ranges_per_request(host.mtu)]]
        host.send(RequestDatagram(host.node_id, peer, ranges), host.peers[peer].addr)
        host.stats["recovery_requests"] += 1

    def get_timer(self) -> float | None:
        return self.deadline if self.window.ranges else None

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline or not self.window.ranges:
            return
        host = self.host
        for first, last in self._lacking():
            host.known.add_range(host.node_id, first, last)
            host.emit(RecordsGone(host.node_id, first, last))
            host.stats["recovery_declared_gone"] += last - first + 1
        self.window = RangeSet()

    def _lacking(self) -> list[tuple[int, int]]:
        known, own = self.host.known, self.host.node_id
        return [part for a, b in self.window.ranges for part in _lacking(known, own, a, b)]


# -- the whole -----------------------------------------------------------------------------


class Sync:
    """The five parts behind one face for ``MeshProtocol``."""

    def __init__(
        self,
        host: Host,
        *,
        source: RecordSource,
        rate: float,
        reassembler: Reassembler,
        recovery_time: float,
        recover_own: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.host = host
        self.catchup = CatchUp(host, rate)
        self.responder = Responder(host, source, rate)
        self.gaps = GapRepair(host)
        self.fragments = FragmentRepair(host, reassembler)
        self.recovery = OwnRecovery(host, recover_own, recovery_time)

    # -- from the protocol -------------------------------------------------------------

    def peer_vector(self, peer: str, now: float) -> None:
        """A direct peer's newest beacon came in: maybe ask for what we lack."""
        self.recovery.peer_heard(peer, now)
        self.catchup.plan(now)

    def may_take_own(self, seq: int) -> bool:
        """A record of our own origin is taken only from the lost window."""
        return self.recovery.covers(seq)

    def live_record(self, record: Record, sender: str, now: float) -> None:
        self.gaps.live_record(record, sender, now)

    def fragments_sent(self, transfer_id: int, pieces: list[bytes]) -> None:
        self.fragments.fragments_sent(transfer_id, pieces)

    def receive(self, datagram: Datagram, addr: Addr, now: float) -> None:
        """A REQUEST, BATCH, GONE or FRAGMENT_REQUEST from another node."""
        if datagram.sender not in self.host.peers:
            self.host.dropped[Drop.NOT_PEER] += 1
            return
        if isinstance(datagram, RequestDatagram):
            self._receive_request(datagram, addr, now)
        elif isinstance(datagram, BatchDatagram):
            self._receive_batch(datagram, addr, now)
        elif isinstance(datagram, GoneDatagram):
            self._receive_gone(datagram, now)
        elif isinstance(datagram, FragmentRequestDatagram) and datagram.target == self.host.node_id:
            self.fragments.receive_request(datagram, addr)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr | None]]:
        return self.responder.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [
            self.catchup.get_timer(),
            self.responder.get_timer(),
            self.gaps.get_timer(),
            self.fragments.get_timer(),
            self.recovery.get_timer(),
        ]
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.responder.forget_lost_askers()
        self.catchup.handle_timer(now)
        self.gaps.handle_timer(now)
        self.fragments.handle_timer(now)
        self.recovery.handle_timer(now)

    def status(self) -> dict[str, Any]:
        """Counters and queue sizes for /status."""
        out = self.catchup.outstanding
        return {
            "catchup_peer": None if out is None else out.peer,
            "catchup_outstanding_ranges": self.catchup.outstanding_ranges(),
            "serving": self.responder.queued_ranges(),
            "nacks_pending": self.gaps.pending(),
            "recovery_open": len(self.recovery.window),
            "peers": self.catchup.lag(),
            **dict(sorted(self.host.stats.items())),
        }

    # -- receiving ---------------------------------------------------------------------

    def _receive_request(self, request: RequestDatagram, addr: Addr, now: float) -> None:
        if request.multicast:
            self.gaps.heard_request(request, now)
        if request.target == self.host.node_id:
            self.host.stats["requests_served"] += 1
            self.responder.receive_request(request, addr, self.host.peers[request.sender].vector)

    def _receive_batch(self, batch: BatchDatagram, addr: Addr, now: float) -> None:
        accept = self.host.accept
        new = sum(accept(r, batch.sender, addr, now) for r in batch.records)
        self.host.stats["batch_records"] += new
        if new:  # copies of what we hold (another's repair) are no progress
            last = batch.records[-1]
            self.catchup.progress(batch.sender, new, now, (last.origin, last.seq))

    def _receive_gone(self, datagram: GoneDatagram, now: float) -> None:
        known, stats = self.host.known, self.host.stats
        moved = False
        for origin, first, last in datagram.ranges:
            for a, b in self._gone_allowed(datagram.sender, origin, first, last):
                added = known.add_range(origin, a, b)
                if added:
                    moved = True
                    stats["gone_seqs_received"] += added
                    self.host.emit(RecordsGone(origin, a, b))
        stats["gone_received"] += 1
        if moved:
            self.catchup.progress(datagram.sender, 0, now)

    def _gone_allowed(self, peer: str, origin: str, first: int, last: int) -> list[tuple[int, int]]:
        """The parts of a GONE range from ``peer`` we may take: what we asked
        it for, up to what its newest beacon claims; never our own origin."""
        dropped = self.host.dropped
        if origin == self.host.node_id:
            dropped[Drop.GONE_OWN_ORIGIN] += 1
            return []
        asked = self.catchup.asked(peer, origin) + self.gaps.asked(peer, origin)
        parts = _within(asked, first, last)
        if not parts:
            dropped[Drop.GONE_NOT_ASKED] += 1
            return []
        claim = self.host.peers[peer].vector.get(origin, 0)
        kept = _within(parts, 1, claim)
        if not kept:
            dropped[Drop.GONE_ABOVE_CLAIM] += 1
        elif kept != [(first, last)]:
            self.host.stats["gone_ranges_clipped"] += 1
        return kept
