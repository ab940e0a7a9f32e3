"""Issue #13, item 9: one signed GONE must not stop a router.

A holder of the mesh key may send GONE ranges; we take only what we asked
THAT peer for (its catch-up request or our NACK), never for our own origin,
never above what that peer's newest beacon claims; the rest is refused and
counted by reason.  One protocol driven by hand on virtual time, and a real
Store fed the events as app/meshlink.py feeds it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

from node.clock import HybridClock
from node.record import MAX_SEQ, Record, RecordKind, VersionVector
from node.store import Store
from node.sync import NACK_MAX, RecordsGone
from node.wire import BeaconDatagram, GoneDatagram, RecordDatagram, RequestDatagram, parse
from tests.unit.mesh_sim import KEY, START, by_hand, node_id

ME = node_id(0)
PEER, OTHER_PEER = node_id(1), node_id(2)
PEER_ADDR, OTHER_ADDR = ("198.18.0.2", 8888), ("198.18.0.3", 8888)
FAR = node_id(9)  # a third router's records
_COUNTER = itertools.count(1)


def sealed(datagram) -> bytes:
    return replace(datagram, counter=next(_COUNTER)).serialize(KEY)


def beacon(sender: str, vector: dict[str, int], seq: int) -> bytes:
    return sealed(BeaconDatagram(sender, "peer", 7, vector, seq=seq))


def record(origin: str, seq: int) -> Record:
    return Record(origin, seq, (1 << 16) * seq, RecordKind.MESSAGE, 1, {"text": f"m{seq}"})


def requests(p, now: float) -> list[RequestDatagram]:
    out = [parse(data, [KEY]) for data, _ in p.datagrams_to_send(now)]
    return [d for d in out if isinstance(d, RequestDatagram)]


def gone_events(p) -> list[RecordsGone]:
    out = []
    while (event := p.next_event()) is not None:
        if isinstance(event, RecordsGone):
            out.append(event)
    return out


def test_the_issue_attack_cannot_touch_our_seqs_and_the_router_keeps_posting(
    tmp_path: Path,
) -> None:
    """A fresh sender (one beacon, claiming nothing) names every origin, ours
    included, for 1..2^32-1: nothing of it is taken."""
    store = Store(tmp_path, rooms=1)
    p = by_hand(node_id=store.node_id, known=VersionVector(), clock=HybridClock(), source=store)
    p.receive_datagram(beacon(PEER, {}, 1), PEER_ADDR, START)
    attack = GoneDatagram(
        PEER, [(store.node_id, 1, MAX_SEQ), (FAR, 1, MAX_SEQ), (PEER, 1, MAX_SEQ)]
    )
    p.receive_datagram(sealed(attack), PEER_ADDR, START)
    for event in gone_events(p):  # as app/meshlink.py does
        store.note_gone(event.origin, event.first, event.last)
    assert p.seen.highest(store.node_id) == 0 and p.seen.highest(FAR) == 0
    assert store.next_seq() == 1
    assert p.dropped["gone_own_origin"] == 1
    assert p.dropped["gone_not_asked"] == 2


def test_gone_for_our_own_origin_is_refused_even_when_the_beacon_claims_it() -> None:
    p = by_hand()
    p.receive_datagram(beacon(PEER, {ME: 500}, 1), PEER_ADDR, START)
    p.receive_datagram(sealed(GoneDatagram(PEER, [(ME, 1, 500)])), PEER_ADDR, START)
    assert p.seen.highest(ME) == 0 and gone_events(p) == []
    assert p.dropped["gone_own_origin"] == 1


def test_gone_is_clipped_to_the_asked_ranges_and_the_peers_claim() -> None:
    p = by_hand()
    p.datagrams_to_send(START)
    p.receive_datagram(beacon(PEER, {FAR: 50}, 1), PEER_ADDR, START)
    asked = requests(p, START)
    assert [r.ranges for r in asked] == [((FAR, 1, 50),)]
    wide = GoneDatagram(PEER, [(FAR, 1, 1000), (FAR, 2000, 3000)])
    p.receive_datagram(sealed(wide), PEER_ADDR, START + 0.01)
    assert p.seen.contiguous(FAR) == 50 and p.seen.highest(FAR) == 50
    assert [(e.first, e.last) for e in gone_events(p)] == [(1, 50)]
    assert p.sync_stats["gone_ranges_clipped"] == 1
    assert p.dropped["gone_not_asked"] == 1


def test_gone_above_the_peers_claim_is_refused() -> None:
    """What we asked another peer for, claimed by it, is not this one's to say."""
    p = by_hand()
    p.datagrams_to_send(START)
    p.receive_datagram(beacon(OTHER_PEER, {FAR: 40}, 1), OTHER_ADDR, START)
    p.receive_datagram(beacon(PEER, {FAR: 10}, 1), PEER_ADDR, START)
    [asked] = requests(p, START)
    assert asked.target == OTHER_PEER
    p.receive_datagram(sealed(GoneDatagram(PEER, [(FAR, 1, 40)])), PEER_ADDR, START + 0.01)
    assert p.seen.highest(FAR) == 0
    assert p.dropped["gone_not_asked"] == 1


def test_gone_answering_our_nack_is_taken_and_only_for_the_hole() -> None:
    p = by_hand()
    p.datagrams_to_send(START)
    for seq in range(1, 5):
        p.known.add(FAR, seq)
    # The catch-up request goes to OTHER_PEER (it claims the most) ...
    p.receive_datagram(beacon(OTHER_PEER, {FAR: 30}, 1), OTHER_ADDR, START)
    p.receive_datagram(beacon(PEER, {FAR: 20}, 1), PEER_ADDR, START)
    assert [r.target for r in requests(p, START)] == [OTHER_PEER]
    # ... and a live record from PEER above a hole 5..9 makes a NACK to PEER.
    p.receive_datagram(sealed(RecordDatagram(PEER, record(FAR, 10))), PEER_ADDR, START)
    now = START + NACK_MAX + 0.001
    p.handle_timer(now)
    nacks = requests(p, now)
    assert [(r.target, r.ranges) for r in nacks] == [(PEER, ((FAR, 5, 9),))]
    gone = GoneDatagram(PEER, [(FAR, 5, 9), (FAR, 11, 20)])
    p.receive_datagram(sealed(gone), PEER_ADDR, now + 0.01)
    assert [(e.first, e.last) for e in gone_events(p)] == [(5, 9)]
    assert p.seen.contiguous(FAR) == 10 and 11 not in [
        s for s in range(11, 21) if (FAR, s) in p.seen
    ]
    assert p.dropped["gone_not_asked"] == 1


def test_gone_after_the_request_ended_is_refused() -> None:
    """A recording of an old answer (replay windows aside) takes nothing."""
    p = by_hand()
    p.datagrams_to_send(START)
    p.receive_datagram(beacon(PEER, {}, 1), PEER_ADDR, START)
    p.receive_datagram(sealed(GoneDatagram(PEER, [(FAR, 1, 5)])), PEER_ADDR, START)
    assert p.seen.highest(FAR) == 0
    assert p.dropped["gone_not_asked"] == 1
    assert p.sync_stats["gone_received"] == 1  # heard, counted, refused
