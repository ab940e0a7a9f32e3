"""Admission: what a datagram must pass, after its MAC, before any work.

How this works: ``Admission.admit`` drops (and counts) a datagram that brings
nothing new, then one beyond its sender's allowance; only what passes both is
looked at.  Duplicates and replays are dropped first, so a device without the
key cannot drain an honest peer's allowance by replaying its traffic.

- Fresh.  A RECORD or BATCH whose records we hold is a "duplicate"; a FRAGMENT
  we hold, a "duplicate_fragment" (node/fragment.py).  Control datagrams
  (beacons, REQUEST, GONE, FRAGMENT_REQUEST) go through a replay window, RFC
  4303 section 3.4.3: per sender, its header counter must be new within the
  last ``REPLAY_WINDOW`` counters ("replayed").  Counters restart at every
  boot, and only a beacon names its boot, so ``ReplayGuard`` keeps, per node
  id (``MAX_REPLAY_SENDERS``, least recently heard evicted), its current boot
  and a few before it (``MAX_BOOTS_REMEMBERED``), each with the newest beacon
  seq taken and the window of its counters.  A sender's own beacon is judged
  by the window of the boot it names; any other control datagram by the
  window of the sender's current boot.  A boot never seen cannot be judged:
  the beacon rules (node/nodes.py) decide, and its window opens once taken.
- Within limits.  ``SenderLimits`` gives each sender (the header's) a token
  bucket of datagrams and one of bytes, derived from ``catchup_rate`` and the
  MTU (an honest peer's heaviest traffic is a catch-up answer); every
  origin's live records, direct or relayed, have ``ORIGIN_RECORDS_PER_S``,
  so a flood entering anywhere does not spend the allowance of the honest
  routers that relay it.  Beyond either: "rate_limited".

All times are the monotonic ``now`` the caller passes.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from node.fragment import Reassembler
from node.reasons import Drop
from node.sync import TokenBucket
from node.wire import (
    MAX_FRAGMENTS,
    BatchDatagram,
    BeaconDatagram,
    Datagram,
    FragmentDatagram,
    RecordDatagram,
)

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

    def seen(self, origin: str, boot: int, seq: int) -> Drop | None:
        """A beacon ``(origin, boot, seq)`` no newer than what we accepted of
        that boot: "duplicate_beacon" (current boot) or "stale_beacon"."""
        known = self._ids.get(origin)
        state = None if known is None else known.boots.get(boot)
        if known is None or state is None or seq > state.seq:
            return None
        return Drop.DUPLICATE_BEACON if boot == known.current else Drop.STALE_BEACON

    def accepted(self, origin: str, boot: int, seq: int) -> None:
        """The node table took this beacon as ``origin``'s newest."""
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


class Admission:
    """Freshness, then allowance (see the opening comment)."""

    def __init__(
        self,
        *,
        holds: Callable[[tuple[str, int]], bool],
        reassembler: Reassembler,
        dropped: Counter[Drop],
        catchup_rate: float,
        mtu: int,
    ) -> None:
        self.holds = holds  # a record id we hold, or handed out and not yet settled
        self.reassembler = reassembler
        self.dropped = dropped
        self.replays = ReplayGuard()
        per_s = max(MIN_PEER_DATAGRAMS_PER_S, PEER_DATAGRAM_FACTOR * catchup_rate / mtu)
        rate = max(PEER_RATE_FACTOR * catchup_rate, MIN_PEER_DATAGRAMS_PER_S * mtu)
        self.limits = SenderLimits(per_s, rate)
        self.origin_limits = SenderLimits(ORIGIN_RECORDS_PER_S, ORIGIN_RECORDS_PER_S * mtu)

    def admit(self, datagram: Datagram, size: int, now: float) -> bool:
        """True if ``datagram`` (``size`` bytes) may be looked at; else counted."""
        if not self._fresh(datagram):
            return False
        if not self._within_limits(datagram, size, now):
            self.dropped[Drop.RATE_LIMITED] += 1
            return False
        return True

    def fresh_control(self, datagram: Datagram) -> bool:
        """The replay window's verdict on a beacon, REQUEST, GONE or
        FRAGMENT_REQUEST; a sender's own beacon by the boot it names."""
        boot = None
        if isinstance(datagram, BeaconDatagram) and datagram.origin == datagram.sender:
            boot = datagram.boot_id
        return self.replays.fresh(datagram.sender, datagram.counter, boot)

    def status(self) -> dict[str, int]:
        return {
            "replay_senders": len(self.replays),
            "rate_senders": len(self.limits),
            "rate_origins": len(self.origin_limits),
            "peer_datagrams_per_s": round(self.limits.datagrams_per_s),
            "peer_bytes_per_s": round(self.limits.bytes_per_s),
        }

    def _fresh(self, datagram: Datagram) -> bool:
        """False (counted) for a datagram that brings nothing new."""
        if isinstance(datagram, RecordDatagram):
            record = datagram.record
            stale = self.holds((record.origin, record.seq))
            reason, times = Drop.DUPLICATE, 1
        elif isinstance(datagram, BatchDatagram):
            stale = all(self.holds((r.origin, r.seq)) for r in datagram.records)
            reason, times = Drop.DUPLICATE, len(datagram.records)
        elif isinstance(datagram, FragmentDatagram):
            stale = self.reassembler.holds(datagram)
            reason, times = Drop.DUPLICATE_FRAGMENT, 1
        else:
            stale = not self.fresh_control(datagram)
            reason, times = Drop.REPLAYED, 1
        if stale:
            self.dropped[reason] += times
        return not stale

    def _within_limits(self, datagram: Datagram, size: int, now: float) -> bool:
        """Charge a live record to its origin, then any datagram to its sender."""
        if isinstance(datagram, RecordDatagram):
            origin = datagram.record.origin
            if not self.origin_limits.admit(origin, 1, now):  # bytes: the sender's concern
                return False
        return self.limits.admit(datagram.sender, size, now)
