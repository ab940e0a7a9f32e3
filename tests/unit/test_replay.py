"""Replays and floods (node/admission.py, node/nodes.py): the replay
window on control datagrams, per boot; nodes gone quiet stay gone; per-sender
allowances; per-sender shares of reassembly and gap repair.

A recording is made the way a device on the LAN makes one: the exact bytes a
node put on the air, played back later (``captured``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from node.admission import (
    MAX_REPLAY_SENDERS,
    MIN_PEER_DATAGRAMS_PER_S,
    ORIGIN_RECORDS_PER_S,
    REPLAY_WINDOW,
    ReplayGuard,
    ReplayWindow,
    SenderLimits,
)
from node.fragment import MAX_PARTIAL_PER_SENDER, MAX_PARTIAL_TRANSFERS, Reassembler, split
from node.nodes import BEACON_INTERVAL, MAX_NODES, PEER_TIMEOUT, PeerLost
from node.protocol import COUNTER_ROLLOVER, MeshProtocol
from node.record import Record, RecordKind
from node.sync import MAX_NACKS_PER_PEER
from node.wire import (
    BatchDatagram,
    BeaconDatagram,
    GoneDatagram,
    RecordDatagram,
    RequestDatagram,
    parse,
)
from tests.unit.mesh_sim import KEY, START, DictSource, LinkConfig, Mesh, by_hand, node_id

ME, PEER, OTHER, FAR = node_id(0), node_id(1), node_id(2), node_id(5)
PEER_ADDR, OTHER_ADDR = ("198.18.0.2", 8888), ("198.18.0.3", 8888)
ATTACKER_ADDR = ("198.18.0.99", 40000)
# A slow catch-up rate gives a small allowance: floods are cheap to simulate.
SLOW_RATE = 50_000


def drain(p: MeshProtocol) -> list:
    out = []
    while (event := p.next_event()) is not None:
        out.append(event)
    return out


def beacon(
    counter: int,
    seq: int,
    *,
    boot: int = 7,
    presence=None,
    sender=PEER,
    origin=PEER,
    hops=1,
    vector=None,
) -> bytes:
    name = "far" if origin == FAR else "peer"
    return BeaconDatagram(
        sender,
        name,
        boot,
        vector or {},
        presence or {},
        hops=hops,
        counter=counter,
        origin=origin,
        seq=seq,
    ).serialize(KEY)


def advance(p: MeshProtocol, start: float, end: float) -> None:
    """Let time pass as the transport would: a timer call every second."""
    now = start
    while now < end:
        now = min(end, now + 1.0)
        p.handle_timer(now)


def message(origin: str, seq: int, text: str = "hi", hlc: int = 1 << 16) -> Record:
    return Record(origin, seq, hlc, RecordKind.MESSAGE, 1, {"text": text})


# -- the window itself ------------------------------------------------------------------


def test_window_takes_each_counter_once_in_any_order_within_the_window():
    w = ReplayWindow()
    assert w.accept(0) and not w.accept(0)  # a counter may start at 0
    assert w.accept(5) and w.accept(3) and w.accept(4)  # reordered: fine
    assert not w.accept(3) and not w.accept(5)
    assert w.accept(5 + REPLAY_WINDOW - 1)
    assert not w.accept(4)  # fallen off the window: too old to tell, refused
    assert w.accept(6) and not w.accept(6)  # still inside: its first time
    assert w.accept(2**32 - 1)  # a jump as long as the whole counter space
    assert w.bitmap == 1
    assert not w.accept(2**32 - 1) and not w.accept(5 + REPLAY_WINDOW - 1)


def test_guard_is_bounded_and_forgets_the_least_recently_heard():
    guard = ReplayGuard(size=3)
    for i in range(5):
        guard.accepted(node_id(10 + i), boot=1, seq=1)
    assert len(guard) == 3
    assert guard.seen(node_id(10), 1, 1) is None  # forgotten
    assert guard.seen(node_id(14), 1, 1) == "duplicate_beacon"
    assert MAX_REPLAY_SENDERS >= 10 * 20  # room for a neighbourhood many times over


# -- replays of control datagrams ---------------------------------------------------------


def serving_protocol() -> tuple[MeshProtocol, DictSource]:
    source = DictSource()
    p = by_hand(source=source)
    for seq in range(1, 11):
        source.put(message(OTHER, seq))
        p.known.add(OTHER, seq)
    return p, source


def test_replayed_request_is_dropped_and_counted_and_serves_nothing_again():
    p, _ = serving_protocol()
    p.receive_datagram(beacon(1, 1), PEER_ADDR, START)
    p.datagrams_to_send(START)
    captured = RequestDatagram(PEER, ME, [(OTHER, 1, 10)], counter=2).serialize(KEY)
    p.receive_datagram(captured, PEER_ADDR, START)
    [(data, dest)] = p.datagrams_to_send(START)
    assert dest == PEER_ADDR and len(parse(data, [KEY]).records) == 10
    for k in range(1000):  # played back, from anywhere, for a minute
        now = START + 0.06 * k
        p.receive_datagram(captured, ATTACKER_ADDR, now)
        assert p.datagrams_to_send(now) == []
    assert p.dropped["replayed"] == 1000
    assert p.sync_stats["served_datagrams"] == 1  # no amplification
    assert p.peers[PEER].addr == PEER_ADDR  # a replay never moves a peer
    # The peer's next real request (a new counter) is served as usual.
    fresh = RequestDatagram(PEER, ME, [(OTHER, 1, 10)], counter=3).serialize(KEY)
    p.receive_datagram(fresh, PEER_ADDR, START + 60)
    assert len(p.datagrams_to_send(START + 60)) == 1


def test_replayed_gone_and_requests_reordered_within_the_window_are_taken_once():
    p, _ = serving_protocol()
    p.receive_datagram(beacon(1, 1), PEER_ADDR, START)
    gone = GoneDatagram(PEER, [(FAR, 1, 5)], counter=40).serialize(KEY)
    late = RequestDatagram(PEER, ME, [(OTHER, 1, 1)], counter=39).serialize(KEY)
    p.receive_datagram(gone, PEER_ADDR, START)
    p.receive_datagram(late, PEER_ADDR, START)  # overtaken on the way: still new
    p.receive_datagram(gone, ATTACKER_ADDR, START)
    p.receive_datagram(late, ATTACKER_ADDR, START)
    assert p.dropped["replayed"] == 2
    assert p.sync_stats["gone_received"] == 1 and p.sync_stats["requests_served"] == 1


def test_replayed_beacon_neither_refreshes_a_peer_nor_keeps_it_alive():
    p = by_hand()
    p.receive_datagram(beacon(1, 1, presence={1: ["pat"]}), PEER_ADDR, START)
    drain(p)
    captured = beacon(2, 2, presence={1: ["pat"]})
    p.receive_datagram(captured, PEER_ADDR, START + 1)
    # The peer is switched off.  Its recorded beacon, played back every
    # second, is refused: the peer is lost on time, and its user with it.
    lost_at = None
    now = START + 1
    while now < START + 1 + 2 * PEER_TIMEOUT:
        now += 1.0
        p.receive_datagram(captured, ATTACKER_ADDR, now)
        p.handle_timer(now)
        if any(isinstance(e, PeerLost) for e in drain(p)):
            lost_at = now
    assert lost_at is not None and lost_at <= START + 1 + PEER_TIMEOUT + 1
    assert p.presence() == {} and PEER not in p.nodes
    assert p.dropped["replayed"] == int(2 * PEER_TIMEOUT)


def test_node_gone_quiet_is_not_revived_by_any_recording_of_its_beacons():
    p = by_hand()
    recorded = [beacon(c, c, presence={1: ["pat"]}) for c in range(1, 4)]
    relayed = [
        beacon(50 + s, s, origin=FAR, sender=PEER, hops=5, presence={2: ["zed"]})
        for s in range(1, 4)
    ]
    for k in range(3):
        p.receive_datagram(recorded[k], PEER_ADDR, START + k)
        p.receive_datagram(relayed[k], PEER_ADDR, START + k)
    assert p.presence() == {1: [("pat", "peer")], 2: [("zed", "far")]}
    advance(p, START + 2, START + 2 + PEER_TIMEOUT)  # both went quiet: gone
    assert p.nodes == {} and p.presence() == {}
    drain(p)
    later = START + 2 + PEER_TIMEOUT + 5
    advance(p, START + 2 + PEER_TIMEOUT, later)
    for data in recorded + relayed:  # as recorded, from the recorder
        p.receive_datagram(data, ATTACKER_ADDR, later)
    # Relayed by a node that never sent them (its counters are not judged):
    # the beacons' (origin, boot, seq) are remembered past the node's life.
    other = OTHER
    p.receive_datagram(beacon(1, 1, sender=other, origin=other), OTHER_ADDR, later)
    for k, data in enumerate(recorded + relayed):
        inner = parse(data, [KEY])
        copy = replace(inner, sender=other, counter=100 + k, hops=4)
        p.receive_datagram(copy.serialize(KEY), OTHER_ADDR, later)
    assert set(p.nodes) == {other} and p.presence() == {}
    assert [type(e).__name__ for e in drain(p)] == ["PeerJoined"]  # OTHER, nobody else
    assert p.dropped["replayed"] == 6
    assert p.dropped["duplicate_beacon"] == 6
    # A newer beacon is news, not a replay: the node comes back for real.
    p.receive_datagram(beacon(4, 4, presence={1: ["pat"]}), PEER_ADDR, later + 1)
    assert p.presence() == {1: [("pat", "peer")]}


def test_restarted_peer_is_taken_and_its_old_boot_cannot_be_played_back():
    p, _ = serving_protocol()
    old = [beacon(c, c, boot=7, presence={1: ["old"]}) for c in (1, 2)]
    for data in old:
        p.receive_datagram(data, PEER_ADDR, START)
    request = RequestDatagram(PEER, ME, [(OTHER, 3, 10)], counter=5).serialize(KEY)
    p.receive_datagram(request, PEER_ADDR, START)
    assert len(p.datagrams_to_send(START)) == 1
    # It restarts: a new boot id, counters and beacon seqs from 1 again; it
    # still holds OTHER 1..10 (stored), and says so in its beacon.
    back = START + BEACON_INTERVAL + 1
    new = beacon(1, 1, boot=8, presence={1: ["new"]}, vector={OTHER: 10})
    p.receive_datagram(new, PEER_ADDR, back)
    assert p.nodes[PEER].boot_id == 8 and p.presence() == {1: [("new", "peer")]}
    gone = GoneDatagram(PEER, [(FAR, 1, 1)], counter=2).serialize(KEY)
    p.receive_datagram(gone, PEER_ADDR, back)  # counter 2 again, but of a new boot
    assert p.sync_stats["gone_received"] == 1
    # The old boot's recordings, played back: its beacons are judged by the
    # window of their own boot.  Its request names no boot, and its counter
    # (5) is new in boot 8, but it asks for what the peer's newest beacon
    # says it holds: old news, served to nobody.
    for data in [*old, request]:
        p.receive_datagram(data, ATTACKER_ADDR, back + 1)
    copy = replace(parse(old[1], [KEY]), sender=OTHER, counter=9, hops=3)
    p.receive_datagram(beacon(1, 1, sender=OTHER, origin=OTHER), OTHER_ADDR, back + 1)
    p.receive_datagram(copy.serialize(KEY), OTHER_ADDR, back + 1)
    assert p.nodes[PEER].boot_id == 8 and p.presence() == {1: [("new", "peer")]}
    assert p.datagrams_to_send(back + 1) == []
    assert p.dropped["replayed"] == 2
    assert p.dropped["stale_beacon"] == 1  # the relayed copy, judged by boot and seq
    assert p.sync_stats["request_stale"] == 1
    assert p.sync_stats["served_datagrams"] == 1
    # Once boot 8 has moved on by a window, the old counters are too old.
    p.receive_datagram(beacon(5 + REPLAY_WINDOW, 2, boot=8), PEER_ADDR, back + 2)
    p.receive_datagram(request, ATTACKER_ADDR, back + 2)
    assert p.dropped["replayed"] == 3


def test_restart_within_an_interval_is_taken_once_the_old_boot_is_silent():
    p = by_hand()
    p.receive_datagram(beacon(1, 1, boot=7), PEER_ADDR, START)
    p.receive_datagram(beacon(1, 1, boot=8), PEER_ADDR, START + 0.5)  # quick reboot
    assert p.nodes[PEER].boot_id == 7 and p.dropped["stale_beacon"] == 1
    p.receive_datagram(beacon(9, 2, boot=8), PEER_ADDR, START + 0.5 + BEACON_INTERVAL)
    assert p.nodes[PEER].boot_id == 8
    # Its control datagrams count from then on.
    gone = GoneDatagram(PEER, [(FAR, 1, 1)], counter=10).serialize(KEY)
    p.receive_datagram(gone, PEER_ADDR, START + 1 + BEACON_INTERVAL)
    assert p.sync_stats["gone_received"] == 1


def test_fragmented_beacon_played_back_after_the_transfer_is_forgotten_is_replayed():
    p = by_hand()
    big = {1: [f"user{i:03d}" for i in range(300)]}
    whole = BeaconDatagram(PEER, "peer", 7, {}, big, counter=1, seq=1)
    pieces = [replace(f, counter=1 + i) for i, f in enumerate(split(whole, transfer_id=5))]
    assert len(pieces) > 2
    for piece in reversed(pieces):  # piece 0 last: its counter names the beacon
        p.receive_datagram(piece.serialize(KEY), PEER_ADDR, START)
    assert p.presence()[1][0] == ("user000", "peer")
    p._reassembler._finished.clear()  # as after 256 other transfers
    for piece in pieces:
        p.receive_datagram(piece.serialize(KEY), ATTACKER_ADDR, START + 8)
    assert p.dropped["replayed"] == 1
    assert p.nodes[PEER].last_heard == START


def test_own_counter_never_wraps_within_a_boot():
    p = by_hand()
    p.handle_timer(START)
    [(data, _)] = p.datagrams_to_send(START)
    first = parse(data, [KEY])
    p._counter = COUNTER_ROLLOVER
    p.handle_timer(p.get_timer())
    [(data, _)] = p.datagrams_to_send(START + 5)
    after = parse(data, [KEY])
    assert (after.counter, after.seq) == (1, 1) and after.boot_id != first.boot_id
    assert p.boot_id == after.boot_id


# -- floods ---------------------------------------------------------------------------------


def test_allowance_is_derived_from_the_catch_up_rate_and_generous_for_it():
    p = by_hand()
    limits = p.admission.limits
    assert limits.bytes_per_s == 2 * 1_000_000
    assert limits.datagrams_per_s == pytest.approx(4 * 1_000_000 / 1200)
    slow = by_hand(catchup_rate=SLOW_RATE).admission.limits
    assert slow.datagrams_per_s == MIN_PEER_DATAGRAMS_PER_S
    # A responder pacing full batches at the rate stays inside it forever.
    bucket = SenderLimits(limits.datagrams_per_s, limits.bytes_per_s)
    now = START
    for _ in range(20_000):  # 20 s of catch-up at 1 MB/s
        assert bucket.admit(PEER, 1200, now)
        now += 1200 / 1_000_000


def test_flood_from_one_sender_is_limited_while_an_honest_peer_gets_through():
    """Node 2 holds the key and floods new records; node 0 takes only its
    allowance of them, while node 1's chat and presence arrive as usual."""
    mesh = Mesh.full(3, catchup_rate=SLOW_RATE, beacon_interval=1.0)
    mesh.set_presence(1, {1: ["ann"]})
    mesh.run_for(2.0)
    us, honest, flooder = mesh.nodes
    assert us.protocol.presence() == {1: [("ann", "node1")]}
    sent_at: dict[int, float] = {}
    flood_start = mesh.now
    for step in range(40):  # 4 s: 400 records a step from node 2, one from node 1
        for _ in range(400):
            mesh.send(2, "spam")
        record = mesh.send(1, f"honest {step}")
        sent_at[record.seq] = mesh.now
        mesh.run_for(0.1)
        assert us.protocol.presence() == {1: [("ann", "node1")]}
    got = {r.seq for r in us.records() if r.origin == honest.node_id}
    assert got == set(sent_at)  # every honest line, during the flood
    # Node 2's live records, direct or relayed by node 1, come within one
    # origin's allowance; so node 1 spends at most that much of its own
    # relaying them.  The rest comes by catch-up (node 2's beacons say it has
    # them), paced at the catch-up rate: the flood becomes a trickle.
    flood_got = sum(1 for r in us.records() if r.origin == flooder.node_id)
    live = flood_got - us.protocol.sync_stats["batch_records"]
    origin = us.protocol.admission.origin_limits
    allowance = origin.datagram_burst + ORIGIN_RECORDS_PER_S * (mesh.now - flood_start)
    assert us.protocol.dropped["rate_limited"] > 10_000
    assert live <= allowance
    assert us.protocol.relayed <= allowance + len(sent_at)
    served = us.protocol.sync_stats["batch_records"]
    assert served <= 2 * SLOW_RATE * (mesh.now - flood_start) / 60  # ~60+ bytes a record


def test_replays_do_not_spend_an_honest_peers_allowance():
    p = by_hand(catchup_rate=SLOW_RATE)
    p.receive_datagram(beacon(1, 1), PEER_ADDR, START)
    records = [
        RecordDatagram(PEER, message(PEER, s), counter=1 + s).serialize(KEY) for s in range(1, 4)
    ]
    batch = BatchDatagram(PEER, [message(PEER, 1)], counter=9).serialize(KEY)
    for data in records:
        p.receive_datagram(data, PEER_ADDR, START)
    for _ in range(5000):  # a keyless device replays all it recorded, in a burst
        for data in [*records, batch, beacon(1, 1)]:
            p.receive_datagram(data, ATTACKER_ADDR, START + 1)
    assert p.dropped["rate_limited"] == 0
    assert p.dropped["duplicate"] == 5000 * 4 and p.dropped["replayed"] == 5000
    new = RecordDatagram(PEER, message(PEER, 4), counter=10).serialize(KEY)
    p.receive_datagram(new, PEER_ADDR, START + 1)
    assert (PEER, 4) in p.seen


def test_nodes_are_bounded():
    p = by_hand()
    for i in range(MAX_NODES + 10):
        origin = f"{0xB000 + i:016x}"
        p.receive_datagram(beacon(1, 1, sender=origin, origin=origin), PEER_ADDR, START)
    assert len(p.nodes) == MAX_NODES and p.dropped["nodes_full"] == 10


# -- per-sender shares of shared tables -----------------------------------------------------


def record_pieces(sender: str, transfer_id: int, size: int = 5000) -> list:
    big = RecordDatagram(sender, message(sender, 1, "x" * size))
    return split(big, transfer_id=transfer_id)


def test_one_sender_cannot_evict_everyone_elses_partial_transfers():
    r = Reassembler()
    honest = record_pieces(PEER, 1)
    r.receive(honest[0], START)
    for transfer in range(10 * MAX_PARTIAL_TRANSFERS):  # a flood of first pieces
        r.receive(record_pieces(FAR, 100 + transfer)[0], START + 1)
    assert r.senders()[FAR][0] == MAX_PARTIAL_PER_SENDER
    assert r.pending()[0] == (PEER, 1)
    inner = None
    for piece in honest[1:]:
        inner = r.receive(piece, START + 2)
    assert inner is not None and inner.record.body["text"] == "x" * 5000
    # When the whole table is full, the sender holding the most gives way.
    many = [node_id(20 + i) for i in range(MAX_PARTIAL_TRANSFERS)]
    for i, sender in enumerate(many):
        r.receive(record_pieces(sender, 500 + i)[0], START + 3)
    assert len(r.pending()) == MAX_PARTIAL_TRANSFERS
    assert max(n for n, _ in r.senders().values()) <= MAX_PARTIAL_PER_SENDER


def test_a_peer_cannot_take_every_nack_slot():
    p = by_hand()
    p.receive_datagram(beacon(1, 1), PEER_ADDR, START)
    p.receive_datagram(beacon(1, 1, sender=OTHER, origin=OTHER), OTHER_ADDR, START)
    origins = [f"{0xC000 + i:016x}" for i in range(3 * MAX_NACKS_PER_PEER)]
    for k, origin in enumerate(origins):  # seq 2 of each: seq 1 lost
        data = RecordDatagram(PEER, message(origin, 2), hops=1, counter=10 + k).serialize(KEY)
        p.receive_datagram(data, PEER_ADDR, START)
    assert p.sync.gaps.pending() == MAX_NACKS_PER_PEER
    data = RecordDatagram(OTHER, message(FAR, 2), hops=1, counter=10).serialize(KEY)
    p.receive_datagram(data, OTHER_ADDR, START)
    assert p.sync.gaps.pending() == MAX_NACKS_PER_PEER + 1  # the other peer's hole
    assert p.sync_stats["nack_full"] == 2 * MAX_NACKS_PER_PEER


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_honest_lossy_reordering_mesh_trips_none_of_it(seed):
    mesh = Mesh.full(3, seed=seed, link=LinkConfig(drop=0.1, reorder=0.05))
    mesh.run_for(1.0)
    mesh.set_presence(0, {2: ["ann"]})
    for k in range(300):
        mesh.send(k % 3, f"m{k}")
        mesh.run_for(0.01)
    mesh.run_for(10.0)
    dropped = sum((n.protocol.dropped for n in mesh.nodes), Counter())
    assert dropped["replayed"] == dropped["rate_limited"] == dropped["nodes_full"] == 0
    assert all(len(n.source.records) == 300 for n in mesh.nodes)
    assert mesh.nodes[1].protocol.presence() == {2: [("ann", "node0")]}
