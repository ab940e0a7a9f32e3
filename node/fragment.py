"""Fragmentation: bodies larger than the MTU go out in numbered pieces.

How this works: ``split`` cuts the body of a RECORD, BEACON or BATCH datagram into
``FragmentDatagram``s of at most ``mtu`` bytes each once serialized (header,
fragment head and MAC included), all with one transfer id, index 0..count-1 and
the same hops-left.  The sender picks transfer ids (a counter) so that
``(sender, transfer id)`` names one transfer.

``Reassembler`` collects the pieces per ``(sender, transfer id)`` in any order,
ignores duplicates, and returns the inner datagram once every piece is in;
it carries the header counter of piece 0 (so a replay window can judge a
reassembled beacon, whatever order its pieces came in).
It is sans-I/O: ``now`` (monotonic seconds) is a parameter, ``get_timer``/``handle_timer`` time out
transfers that stop making progress.  Memory is bounded, and shared fairly
between senders: one sender holds at most ``MAX_PARTIAL_PER_SENDER`` partial
transfers and ``MAX_BUFFERED_PER_SENDER`` bytes (going over evicts its own
oldest transfer), and all together at most ``MAX_PARTIAL_TRANSFERS`` transfers
and ``MAX_BUFFERED_BYTES`` bytes (going over evicts the oldest transfer of the
sender holding the most).  So a sender that floods us with fragments, even
with the mesh key, pushes out its own transfers, never everyone else's.
Everything dropped is counted in ``dropped`` by reason (node/reasons.py
``Drop.DUPLICATE_FRAGMENT``, ``FRAGMENT_*``; pass the protocol's counter to
share it); timeouts and evictions count once per transfer.

``holds(piece)`` says, without changing anything, whether a piece would be a
duplicate, so the protocol can drop replays before charging the sender's
rate limit.

``missing(sender, transfer_id)`` lists the indexes still lacking and
``last_heard`` says when the transfer last made progress, so node/sync.py can
ask the sender for just those pieces (FRAGMENT_REQUEST).  On the sending side
``SentCache`` keeps the serialized pieces of the last few fragmented transfers,
bounded by ``MAX_CACHED_TRANSFERS`` and ``MAX_CACHED_BYTES``, to resend them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from node.reasons import Drop
from node.wire import (
    FRAGMENT_HEAD,
    HEADER,
    MAC_LEN,
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_FRAGMENTS,
    BatchDatagram,
    BeaconDatagram,
    FragmentDatagram,
    InnerDatagram,
    RecordDatagram,
    parse_body,
)

# RFC 8085 §3.2: without path MTU discovery stay well under 1,280 (the IPv6
# minimum link MTU) less IP/UDP headers; 1,200 is what QUIC settled on.
DEFAULT_MTU = 1200
# 576 is the datagram every IPv4 host must accept (RFC 791), less 20 IP and 8 UDP,
# is 548; we go down to 500 to leave room for an encapsulation on the way
# (PPPoE, a VPN between two sites).  A MAX_BODY still fits in 143 pieces.
MIN_MTU = 500
FRAGMENT_OVERHEAD = HEADER.size + FRAGMENT_HEAD.size + MAC_LEN
# A transfer that gets no new piece for this long is given up.  Pieces are sent
# back to back, so a live transfer completes in well under a second; 10 s (two
# beacons) leaves room for a later request-by-index repair round trip.
REASSEMBLY_TIMEOUT = 10.0
# Partial transfers held at once: a few neighbours each with a couple of large
# records or beacons in flight.  More means someone floods us: evict the oldest.
MAX_PARTIAL_TRANSFERS = 32
# Bytes of pieces held: four maximal bodies; trivial for a router's 64 MB.
MAX_BUFFERED_BYTES = 4 * MAX_BODY
# Per sender (the neighbour that put the pieces on the wire): an honest one has
# a beacon and a record or two in flight at once, each at most MAX_BODY.  Eight
# senders fill the table; beyond its share a sender evicts its own transfers.
MAX_PARTIAL_PER_SENDER = 4
MAX_BUFFERED_PER_SENDER = 2 * MAX_BODY
# Finished transfers remembered so late duplicate pieces do not start a new
# partial transfer that could only time out.
MAX_FINISHED_REMEMBERED = 256
# Sent transfers kept for resending pieces: a repair request comes within a
# second or two, by which time a router has sent at most a few large records.
MAX_CACHED_TRANSFERS = 16
# Bytes of sent pieces kept: two maximal bodies (a 4 KB record is ~4 pieces).
MAX_CACHED_BYTES = 2 * MAX_BODY


def piece_size(mtu: int) -> int:
    """Bytes of body one fragment carries at ``mtu``."""
    if not MIN_MTU <= mtu <= MAX_DATAGRAM:
        raise ValueError(f"mtu must be {MIN_MTU}..{MAX_DATAGRAM}: {mtu}")
    return mtu - FRAGMENT_OVERHEAD


def split(
    datagram: InnerDatagram, *, mtu: int = DEFAULT_MTU, transfer_id: int
) -> list[FragmentDatagram]:
    """Cut ``datagram``'s body into fragments that serialize to <= ``mtu`` bytes."""
    size = piece_size(mtu)
    body = datagram.body()
    count = max(1, -(-len(body) // size))
    if count > MAX_FRAGMENTS:
        raise ValueError(f"{len(body)} bytes need {count} > {MAX_FRAGMENTS} fragments")
    return [
        FragmentDatagram(
            datagram.sender,
            datagram.kind,
            transfer_id,
            index,
            count,
            body[index * size : (index + 1) * size],
            datagram.hops,
            datagram.counter,
        )
        for index in range(count)
    ]


@dataclass(slots=True)
class _Partial:
    inner_kind: int
    count: int
    hops: int
    counter: int
    last_heard: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Joins fragments back into RECORD/BEACON datagrams; bounded memory."""

    def __init__(
        self,
        *,
        timeout: float = REASSEMBLY_TIMEOUT,
        max_transfers: int = MAX_PARTIAL_TRANSFERS,
        max_bytes: int = MAX_BUFFERED_BYTES,
        max_per_sender: int = MAX_PARTIAL_PER_SENDER,
        max_bytes_per_sender: int = MAX_BUFFERED_PER_SENDER,
        dropped: Counter[Drop] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender
        self.max_bytes_per_sender = max_bytes_per_sender
        self.dropped: Counter[Drop] = Counter() if dropped is None else dropped
        self.buffered = 0  # bytes of pieces held
        self._partials: OrderedDict[tuple[str, int], _Partial] = OrderedDict()
        self._finished: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._transfers_of: Counter[str] = Counter()  # partial transfers per sender
        self._bytes_of: Counter[str] = Counter()  # bytes of pieces held per sender

    def holds(self, fragment: FragmentDatagram) -> bool:
        """Whether ``fragment`` would be dropped as a duplicate."""
        key = (fragment.sender, fragment.transfer_id)
        partial = self._partials.get(key)
        return key in self._finished or (partial is not None and fragment.index in partial.pieces)

    def senders(self) -> dict[str, tuple[int, int]]:
        """Per sender: ``(partial transfers, bytes held)``."""
        return {s: (n, self._bytes_of[s]) for s, n in self._transfers_of.items()}

    def receive(self, fragment: FragmentDatagram, now: float) -> InnerDatagram | None:
        """Take one fragment; the inner datagram once the last piece is in.

        Raises ``WireError`` only when the joined body does not parse.
        """
        key = (fragment.sender, fragment.transfer_id)
        if key in self._finished:
            self.dropped[Drop.DUPLICATE_FRAGMENT] += 1
            return None
        partial = self._partials.get(key)
        if partial is None:
            partial = self._start(key, fragment, now)
        elif partial.count != fragment.count or partial.inner_kind != fragment.inner_kind:
            self.dropped[Drop.FRAGMENT_MISMATCH] += 1
            return None
        if fragment.index in partial.pieces:
            self.dropped[Drop.DUPLICATE_FRAGMENT] += 1
            return None
        partial.pieces[fragment.index] = fragment.piece
        if fragment.index == 0:
            partial.counter = fragment.counter
        partial.size += len(fragment.piece)
        partial.last_heard = now
        sender = fragment.sender
        self.buffered += len(fragment.piece)
        self._bytes_of[sender] += len(fragment.piece)
        if partial.size > MAX_BODY:
            self._discard(key, Drop.FRAGMENT_TOO_LONG)
            return None
        if len(partial.pieces) == partial.count:
            return self._finish(key, sender)
        self._evict_while(lambda: self._bytes_of[sender] > self.max_bytes_per_sender, sender)
        self._evict_while(lambda: self.buffered > self.max_bytes, None, self._bytes_of)
        return None

    def missing(self, sender: str, transfer_id: int) -> list[int] | None:
        """Indexes not yet received; None if no such partial transfer."""
        partial = self._partials.get((sender, transfer_id))
        if partial is None:
            return None
        return [i for i in range(partial.count) if i not in partial.pieces]

    def last_heard(self, sender: str, transfer_id: int) -> float | None:
        """When the partial transfer last got a new piece; None if no such."""
        partial = self._partials.get((sender, transfer_id))
        return None if partial is None else partial.last_heard

    def first_piece(self, sender: str, transfer_id: int) -> tuple[int, bytes] | None:
        """``(inner kind, piece 0)`` of a partial transfer, if piece 0 is in."""
        partial = self._partials.get((sender, transfer_id))
        if partial is None or 0 not in partial.pieces:
            return None
        return partial.inner_kind, partial.pieces[0]

    def pending(self) -> list[tuple[str, int]]:
        """``(sender, transfer id)`` of each partial transfer, oldest first."""
        return list(self._partials)

    def get_timer(self) -> float | None:
        if not self._partials:
            return None
        return min(p.last_heard for p in self._partials.values()) + self.timeout

    def handle_timer(self, now: float) -> None:
        for key, partial in list(self._partials.items()):
            if now - partial.last_heard >= self.timeout:
                self._discard(key, Drop.FRAGMENT_TIMEOUT)

    def _start(self, key: tuple[str, int], fragment: FragmentDatagram, now: float) -> _Partial:
        sender = key[0]
        self._evict_while(lambda: self._transfers_of[sender] >= self.max_per_sender, sender)
        full = self.max_transfers
        self._evict_while(lambda: len(self._partials) >= full, None, self._transfers_of)
        partial = _Partial(
            fragment.inner_kind, fragment.count, fragment.hops, fragment.counter, now
        )
        self._partials[key] = partial
        self._transfers_of[sender] += 1
        return partial

    def _evict_while(
        self, over: Callable[[], bool], sender: str | None, held: Counter[str] | None = None
    ) -> None:
        """While ``over()``, evict the oldest transfer of ``sender``, or (None)
        of the sender that holds the most by ``held``."""
        while self._partials and over():
            if sender is None:
                assert held is not None
                victim = max(self._transfers_of, key=lambda s: held[s])
            else:
                victim = sender
            key = next((k for k in self._partials if k[0] == victim), None)
            if key is None:
                return
            self._discard(key, Drop.FRAGMENT_EVICTED)

    def _release(self, key: tuple[str, int]) -> _Partial:
        partial = self._partials.pop(key)
        sender = key[0]
        self.buffered -= partial.size
        self._bytes_of[sender] -= partial.size
        self._transfers_of[sender] -= 1
        if not self._transfers_of[sender]:
            del self._transfers_of[sender], self._bytes_of[sender]
        return partial

    def _discard(self, key: tuple[str, int], reason: Drop) -> None:
        self._release(key)
        self.dropped[reason] += 1

    def _finish(self, key: tuple[str, int], sender: str) -> InnerDatagram:
        partial = self._release(key)
        self._finished[key] = None
        if len(self._finished) > MAX_FINISHED_REMEMBERED:
            self._finished.popitem(last=False)
        body = b"".join(partial.pieces[i] for i in range(partial.count))
        inner = parse_body(
            partial.inner_kind, body, sender=sender, hops=partial.hops, counter=partial.counter
        )
        # INNER_KINDS admits only these
        assert isinstance(inner, (RecordDatagram, BeaconDatagram, BatchDatagram))
        return inner


class SentCache:
    """The serialized pieces of our recent fragmented transfers, by transfer
    id, oldest evicted first beyond ``max_transfers`` or ``max_bytes``."""

    def __init__(
        self, *, max_transfers: int = MAX_CACHED_TRANSFERS, max_bytes: int = MAX_CACHED_BYTES
    ) -> None:
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self.size = 0  # bytes held
        self._sent: OrderedDict[int, list[bytes]] = OrderedDict()

    def add(self, transfer_id: int, pieces: list[bytes]) -> None:
        self._drop(transfer_id)
        self._sent[transfer_id] = list(pieces)
        self.size += sum(len(p) for p in pieces)
        while self._sent and (len(self._sent) > self.max_transfers or self.size > self.max_bytes):
            self._drop(next(iter(self._sent)))

    def get(self, transfer_id: int) -> list[bytes] | None:
        return self._sent.get(transfer_id)

    def __len__(self) -> int:
        return len(self._sent)

    def _drop(self, transfer_id: int) -> None:
        pieces = self._sent.pop(transfer_id, None)
        if pieces is not None:
            self.size -= sum(len(p) for p in pieces)
