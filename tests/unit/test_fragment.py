"""node/fragment.py: splitting under the MTU, reassembly under loss, bounds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from node.fragment import (
    DEFAULT_MTU,
    FRAGMENT_OVERHEAD,
    MAX_BUFFERED_BYTES,
    MAX_FINISHED_REMEMBERED,
    MAX_PARTIAL_TRANSFERS,
    MIN_MTU,
    REASSEMBLY_TIMEOUT,
    Reassembler,
    piece_size,
    split,
)
from node.record import Record, RecordKind
from node.wire import (
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_FRAGMENTS,
    BeaconDatagram,
    DatagramKind,
    FragmentDatagram,
    RecordDatagram,
    WireError,
    parse,
)
from tests.unit.mesh_sim import encode

KEY = b"fragment test key"
SENDER = "00000000000000a1"
OTHER = "00000000000000b2"


def big_record(chars: int = 2000, seq: int = 1, sender: str = SENDER) -> RecordDatagram:
    body = {"author": "ana", "text": "😀" * chars}
    record = Record(SENDER, seq, 1 << 16, RecordKind.MESSAGE, 1, body)
    return RecordDatagram(sender, record, hops=5, counter=77)


def test_constants_are_consistent():
    assert FRAGMENT_OVERHEAD == 41
    assert piece_size(DEFAULT_MTU) == 1159
    # The largest body still fits in MAX_FRAGMENTS pieces at the smallest MTU,
    # and the buffer holds at least one whole transfer.
    assert -(-MAX_BODY // piece_size(MIN_MTU)) <= MAX_FRAGMENTS
    assert MAX_BUFFERED_BYTES >= MAX_BODY


@pytest.mark.parametrize("mtu", [MIN_MTU, 600, 1000, DEFAULT_MTU, 1500, 9000, MAX_DATAGRAM])
@pytest.mark.parametrize("chars", [0, 100, 290, 2000, 8000])
def test_split_respects_mtu_and_joins_back(mtu, chars):
    datagram = big_record(chars)
    body = datagram.body()
    pieces = split(datagram, mtu=mtu, transfer_id=7)
    assert len(pieces) == max(1, -(-len(body) // piece_size(mtu)))
    assert all(len(p.serialize(KEY)) <= mtu for p in pieces)
    assert b"".join(p.piece for p in pieces) == body
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert {(p.count, p.transfer_id, p.inner_kind, p.hops, p.sender) for p in pieces} == {
        (len(pieces), 7, DatagramKind.RECORD, 5, SENDER)
    }
    reassembler = Reassembler()
    results = [reassembler.receive(p, 0.0) for p in pieces]
    assert results[:-1] == [None] * (len(pieces) - 1)
    assert results[-1] == datagram
    assert results[-1].record.body == datagram.record.body
    assert reassembler.buffered == 0
    assert not reassembler.pending()


def test_emoji_message_of_2000_characters_needs_several_fragments():
    data = encode(big_record(2000), KEY, transfer_id=1)
    assert len(data) == 7
    assert all(len(d) <= DEFAULT_MTU for d in data)
    assert all(isinstance(parse(d, [KEY]), FragmentDatagram) for d in data)


def test_encode_sends_small_datagrams_whole():
    small = big_record(10)
    assert encode(small, KEY, transfer_id=0) == [small.serialize(KEY)]


def test_transfer_id_from_the_caller():
    assert split(big_record(), transfer_id=99)[0].transfer_id == 99


@pytest.mark.parametrize("mtu", [MIN_MTU - 1, 0, MAX_DATAGRAM + 1])
def test_impossible_mtu_raises(mtu):
    with pytest.raises(ValueError, match="mtu"):
        split(big_record(), mtu=mtu, transfer_id=1)


def test_too_many_fragments_raises():
    # Unreachable with a valid datagram (MAX_BODY fits at MIN_MTU): a stub shows
    # the check is there.
    class Huge:
        sender, kind, hops, counter = SENDER, DatagramKind.RECORD, 1, 0

        def body(self) -> bytes:
            return bytes(piece_size(MIN_MTU) * MAX_FRAGMENTS + 1)

    with pytest.raises(ValueError, match="fragments"):
        split(Huge(), mtu=MIN_MTU, transfer_id=1)


def test_beacon_round_trip_through_fragments():
    beacon = BeaconDatagram(
        SENDER, "node", 3, {f"{i:016x}": i for i in range(500)}, {1: [f"u{i}" for i in range(300)]}
    )
    pieces = split(beacon, transfer_id=1)
    assert len(pieces) > 1
    reassembler = Reassembler()
    out = [reassembler.receive(p, 0.0) for p in reversed(pieces)]
    assert out[-1] == beacon


@pytest.mark.parametrize("seed", range(40))
def test_shuffled_duplicated_and_lossy_delivery(seed):
    rng = random.Random(seed)
    transfers = {
        (sender, tid): big_record(rng.randrange(300, 3000), seq=tid + 1, sender=sender)
        for sender in (SENDER, OTHER)
        for tid in range(3)
    }
    stream = []
    for (_, tid), datagram in transfers.items():
        for piece in split(datagram, transfer_id=tid):
            stream += [piece] * rng.choice([0, 1, 1, 1, 2, 3])  # lost, once, repeated
    rng.shuffle(stream)
    dropped: Counter[str] = Counter()
    reassembler = Reassembler(dropped=dropped)
    done = [out for p in stream if (out := reassembler.receive(p, 0.0)) is not None]
    for out in done:  # each complete transfer comes out exactly once, intact
        assert out == transfers[(out.sender, out.record.seq - 1)]
        assert out.record.body == transfers[(out.sender, out.record.seq - 1)].record.body
    assert len({(o.sender, o.record.seq - 1) for o in done}) == len(done)
    complete = {
        key
        for key, d in transfers.items()
        if {p.index for p in stream if (p.sender, p.transfer_id) == key}
        == set(range(len(split(d, transfer_id=0))))
    }
    assert {(o.sender, o.record.seq - 1) for o in done} == complete
    # Every piece not used is counted as a duplicate; partials wait for repair.
    used = sum(len(split(transfers[k], transfer_id=0)) for k in complete)
    partial_pieces = sum(
        len(split(transfers[k], transfer_id=0)) - len(reassembler.missing(*k))
        for k in reassembler.pending()
    )
    assert dropped["duplicate_fragment"] == len(stream) - used - partial_pieces
    started = {(p.sender, p.transfer_id) for p in stream}
    assert set(reassembler.pending()) == started - complete


def test_missing_lists_lacking_indexes():
    pieces = split(big_record(), transfer_id=3)
    reassembler = Reassembler()
    for index in (0, 2, 5):
        reassembler.receive(pieces[index], 0.0)
    assert reassembler.missing(SENDER, 3) == [1, 3, 4, 6]
    assert reassembler.missing(SENDER, 4) is None
    assert reassembler.pending() == [(SENDER, 3)]
    assert reassembler.buffered == sum(len(pieces[i].piece) for i in (0, 2, 5))


def test_timeout_drops_a_stalled_transfer():
    pieces = split(big_record(), transfer_id=3)
    reassembler = Reassembler()
    assert reassembler.get_timer() is None
    reassembler.receive(pieces[0], 100.0)
    assert reassembler.get_timer() == 100.0 + REASSEMBLY_TIMEOUT
    reassembler.receive(pieces[1], 104.0)  # progress pushes the timeout back
    assert reassembler.get_timer() == 104.0 + REASSEMBLY_TIMEOUT
    reassembler.handle_timer(104.0 + REASSEMBLY_TIMEOUT - 0.001)
    assert reassembler.pending() == [(SENDER, 3)]
    reassembler.handle_timer(104.0 + REASSEMBLY_TIMEOUT)
    assert reassembler.pending() == []
    assert reassembler.buffered == 0
    assert reassembler.dropped == Counter(fragment_timeout=1)
    assert reassembler.get_timer() is None


def test_too_many_partial_transfers_evicts_the_oldest():
    reassembler = Reassembler(max_transfers=3)
    for tid in range(5):
        reassembler.receive(split(big_record(), transfer_id=tid)[0], float(tid))
    assert reassembler.pending() == [(SENDER, 2), (SENDER, 3), (SENDER, 4)]
    assert reassembler.dropped["fragment_evicted"] == 2
    assert Reassembler().max_transfers == MAX_PARTIAL_TRANSFERS


def test_too_many_bytes_evicts_the_oldest():
    pieces = {tid: split(big_record(), transfer_id=tid) for tid in range(3)}
    reassembler = Reassembler(max_bytes=5000)
    for tid in range(3):
        for piece in pieces[tid][:2]:  # 2 * 1159 bytes each
            reassembler.receive(piece, 0.0)
    assert reassembler.pending() == [(SENDER, 1), (SENDER, 2)]
    assert reassembler.buffered == 4 * 1159
    assert reassembler.dropped["fragment_evicted"] == 1
    # The evicted transfer can start again and complete (if it fits alone).
    for piece in split(big_record(800), transfer_id=0):
        out = reassembler.receive(piece, 1.0)
    assert out is not None
    assert reassembler.buffered <= 5000


def test_mismatched_pieces_are_dropped():
    reassembler = Reassembler()
    first = split(big_record(), transfer_id=1)[0]
    reassembler.receive(first, 0.0)
    other_count = FragmentDatagram(SENDER, DatagramKind.RECORD, 1, 1, 9, b"x")
    other_kind = FragmentDatagram(SENDER, DatagramKind.BEACON, 1, 1, first.count, b"x")
    assert reassembler.receive(other_count, 0.0) is None
    assert reassembler.receive(other_kind, 0.0) is None
    assert reassembler.dropped == Counter(fragment_mismatch=2)
    assert reassembler.missing(SENDER, 1) == list(range(1, first.count))


def test_late_duplicates_after_completion_are_dropped():
    pieces = split(big_record(), transfer_id=1)
    reassembler = Reassembler()
    for piece in pieces:
        reassembler.receive(piece, 0.0)
    assert reassembler.receive(pieces[3], 0.0) is None
    assert reassembler.pending() == []
    assert reassembler.dropped == Counter(duplicate_fragment=1)


def test_finished_memory_is_bounded():
    reassembler = Reassembler()
    for tid in range(MAX_FINISHED_REMEMBERED + 1):
        piece = FragmentDatagram(SENDER, DatagramKind.RECORD, tid, 0, 1, big_record(1).body())
        assert reassembler.receive(piece, 0.0) is not None
    first = FragmentDatagram(SENDER, DatagramKind.RECORD, 0, 0, 2, b"x")
    assert reassembler.receive(first, 0.0) is None  # forgotten: starts a new transfer
    assert reassembler.pending() == [(SENDER, 0)]


def test_pieces_adding_up_past_max_body_are_dropped():
    reassembler = Reassembler()
    half = bytes(MAX_BODY // 2 + 1)
    for index in range(2):
        reassembler.receive(FragmentDatagram(SENDER, DatagramKind.RECORD, 1, index, 3, half), 0)
    assert reassembler.dropped == Counter(fragment_too_long=1)
    assert reassembler.pending() == []
    assert reassembler.buffered == 0


def test_joined_body_that_does_not_parse_raises_wire_error():
    reassembler = Reassembler()
    reassembler.receive(FragmentDatagram(SENDER, DatagramKind.RECORD, 1, 0, 2, b"garbage"), 0)
    with pytest.raises(WireError) as info:
        reassembler.receive(FragmentDatagram(SENDER, DatagramKind.RECORD, 1, 1, 2, b"!"), 0)
    assert info.value.reason == "malformed"
    assert reassembler.buffered == 0
