"""node/protocol.py: one MeshProtocol driven by hand, and meshes of them."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import Counter
from itertools import combinations

import pytest

from node.clock import COUNTER_MASK, MAX_DRIFT_MS, HybridClock, pack, physical_ms
from node.fragment import DEFAULT_MTU
from node.nodes import MIN_BEACON_GAP
from node.protocol import (
    BEACON_INTERVAL,
    DEFAULT_HOP_LIMIT,
    PEER_TIMEOUT,
    MeshProtocol,
    PeerJoined,
    PeerLost,
    PresenceChanged,
    RecordReceived,
)
from node.record import Record, RecordKind, VersionVector
from node.relay import RELAY_WINDOW
from node.trickle import TRICKLE_IMIN
from node.wire import (
    HEADER,
    BeaconDatagram,
    DatagramKind,
    FragmentDatagram,
    RecordDatagram,
    parse,
)
from tests.unit.mesh_sim import KEY, START, LinkConfig, Mesh, encode, node_id, protocol

ME = node_id(0)
PEER = node_id(1)
PEER_ADDR = ("198.18.0.2", 8888)


def make_protocol(seed: int = 1, **kwargs) -> MeshProtocol:
    settings = dict(
        node_id=ME,
        node_name="me",
        keys=[KEY],
        clock=HybridClock(wall_ms=lambda: int(START * 1000)),
        known=VersionVector(),
        rng=random.Random(seed),
    )
    settings.update(kwargs)
    return protocol(settings)


def twin_rng(seed: int = 1) -> random.Random:
    """The rng as the protocol leaves it after its constructor."""
    rng = random.Random(seed)
    rng.getrandbits(64)  # boot id
    rng.getrandbits(32)  # first transfer id
    return rng


def events(protocol: MeshProtocol) -> list:
    out = []
    while (event := protocol.next_event()) is not None:
        out.append(event)
    return out


def peer_beacon(presence=None, name="peer", counter=1, **fields) -> bytes:
    beacon = BeaconDatagram(PEER, name, 7, {}, presence or {}, counter=counter, **fields)
    return beacon.serialize(KEY)


def peer_record(seq=1, hlc=1 << 16, hops=3, text="hi", origin=PEER) -> RecordDatagram:
    record = Record(origin, seq, hlc, RecordKind.MESSAGE, 1, {"text": text})
    return RecordDatagram(PEER, record, hops=hops)


# -- one protocol by hand: timers ----------------------------------------------------------


def test_first_beacon_is_due_at_once_then_paced_by_trickle():
    p = make_protocol()
    assert p.get_timer() == 0.0
    p.handle_timer(START)
    [(data, dest)] = p.datagrams_to_send(START)
    assert dest is None
    beacon = parse(data, [KEY])
    # Nobody online: it goes to the neighbours only, with the whole vector.
    assert beacon == BeaconDatagram(ME, "me", p.boot_id, {}, {}, hops=1, counter=1, seq=1)
    assert beacon.has_vector
    # Then Trickle: t in [I/2, I) of an interval starting at TRICKLE_IMIN,
    # doubling up to BEACON_INTERVAL; alone, every interval beacons.
    interval, start, sent = TRICKLE_IMIN, START, 1
    for _ in range(12):
        t = p.get_timer()
        assert start + interval / 2 <= t < start + interval
        p.handle_timer(t)
        [(data, _)] = p.datagrams_to_send(t)
        sent += 1
        assert parse(data, [KEY]).seq == sent
        assert p.get_timer() == start + interval  # the interval's end
        p.handle_timer(start + interval)
        start, interval = start + interval, min(2 * interval, BEACON_INTERVAL)
    assert interval == BEACON_INTERVAL
    assert p.sent == sent


def test_beacon_carries_vector_and_presence():
    known = VersionVector()
    for seq in (1, 2, 4):
        known.add(PEER, seq)
    p = make_protocol(known=known)
    p.set_presence({2: ["bo", "ana"]}, START)
    assert p.datagrams_to_send(START) == []  # the start-up beacon will carry it
    p.handle_timer(START)
    [(data, _)] = p.datagrams_to_send(START)
    beacon = parse(data, [KEY])
    assert beacon.vector == {PEER: 2}
    assert beacon.presence == {2: ("ana", "bo")}


def test_presence_change_beacons_early_but_rate_limited():
    p = make_protocol()
    p.handle_timer(START)
    p.datagrams_to_send(START)
    p.set_presence({1: ["ana"]}, START + 0.1)
    assert p.datagrams_to_send(START + 0.1) == []  # within MIN_BEACON_GAP of the last
    assert p.get_timer() <= START + MIN_BEACON_GAP
    out = []
    while not out and (t := p.get_timer()) <= START + MIN_BEACON_GAP:
        p.handle_timer(t)
        out = [parse(d, [KEY]) for d, _ in p.datagrams_to_send(t)]
    # The first beacon that carries the change floods to the far end.
    [first] = out
    assert first.presence == {1: ("ana",)} and first.hops == DEFAULT_HOP_LIMIT
    later = START + 3.0
    p.set_presence({1: ["ana"]}, later)  # no change: no beacon
    assert p.datagrams_to_send(later) == []
    p.set_presence({1: ["ana", "bo"]}, later)  # gap long enough: at once
    [(data, _)] = p.datagrams_to_send(later)
    beacon = parse(data, [KEY])
    assert beacon.presence == {1: ("ana", "bo")} and beacon.hops == DEFAULT_HOP_LIMIT


def test_peer_timer_is_exact_and_peer_is_lost_then():
    p = make_protocol()
    p.handle_timer(START)
    p.receive_datagram(peer_beacon({1: ["zoe"]}), PEER_ADDR, START + 1.0, iface="br-lan")
    assert events(p) == [PeerJoined(PEER, "peer", PEER_ADDR), PresenceChanged()]
    assert p.peers[PEER].iface == "br-lan"
    assert p.peers[PEER].last_heard == START + 1.0
    while True:
        now = p.get_timer()
        p.handle_timer(now)
        got = events(p)
        if got:
            break
        assert PEER in p.peers
    assert now == START + 1.0 + PEER_TIMEOUT
    assert got == [PeerLost(PEER, "peer"), PresenceChanged()]
    assert p.peers == {}
    assert p.presence() == {}


def test_a_wall_clock_jump_changes_no_timer_and_loses_no_peer():
    """Timers run on the monotonic ``now``; the wall clock feeds only the
    hybrid clock.  A router booted at its build date whose clock NTP sets a
    day ahead, and later an hour back, does all a steady twin does."""
    wall = [int(START * 1000)]
    jumpy = make_protocol(clock=HybridClock(wall_ms=lambda: wall[0]))
    steady = make_protocol()
    for p in (jumpy, steady):
        p.handle_timer(START)
    for second in range(1, 3 * int(PEER_TIMEOUT)):
        now = START + second
        wall[0] += {10: 86_400_000, 25: -3_600_000}.get(second, 0) + 1000
        beacon = peer_beacon(seq=second, counter=second)
        record = peer_record(seq=second, hlc=pack(wall[0], 0), hops=1).serialize(KEY)
        for p in (jumpy, steady):
            p.receive_datagram(beacon, PEER_ADDR, now)
            p.receive_datagram(record, PEER_ADDR, now)
            if p.get_timer() <= now:
                p.handle_timer(now)
        assert jumpy.get_timer() == steady.get_timer()
        assert jumpy.datagrams_to_send(now) == steady.datagrams_to_send(now)
        assert events(jumpy) == events(steady)
    assert PEER in jumpy.peers and jumpy.dropped == steady.dropped
    assert jumpy.clock.last != steady.clock.last  # the hybrid clock alone saw the jumps


# -- one protocol by hand: records -------------------------------------------------------


def other_peer_beacon(k: int) -> bytes:
    """A beacon of ``node_id(k)``, a neighbour besides PEER."""
    return BeaconDatagram(node_id(k), f"peer{k}", 7, {}, {}, counter=1).serialize(KEY)


def other_peer_addr(k: int) -> tuple[str, int]:
    return (f"198.18.0.{k + 1}", 8888)


def test_received_record_is_emitted_marked_seen_and_relayed():
    p = make_protocol()
    for k in (2, 3):  # two neighbours besides the sender: a choice of relayers
        p.receive_datagram(other_peer_beacon(k), other_peer_addr(k), START)
    assert [type(e) for e in events(p)] == [PeerJoined, PeerJoined]
    p.receive_datagram(peer_record(hops=3).serialize(KEY), PEER_ADDR, START)
    [event] = events(p)
    assert event == RecordReceived(peer_record().record, PEER, PEER_ADDR)
    assert event.record.body == {"text": "hi"}
    assert (PEER, 1) in p.seen and (PEER, 1) not in p.known  # the app settles it in the store
    assert p.datagrams_to_send(START) == []  # held a random moment (node/relay.py)
    held = p._relays.get_timer()
    assert held is not None and START <= held < START + RELAY_WINDOW
    p.handle_timer(held)
    [(data, dest)] = [(d, a) for d, a in p.datagrams_to_send(held) if d[1] == DatagramKind.RECORD]
    relay = parse(data, [KEY])
    assert (relay.sender, relay.hops, dest) == (ME, 2, None)
    assert relay.record.body == {"text": "hi"}
    assert (p.received, p.relayed, p.sent) == (3, 1, 2)  # and the start-up beacon
    assert p.beacon_status()["relays_suppressed"] == 0
    assert p.beacon_status()["relays_at_once"] == 0
    p.receive_datagram(peer_record(hops=3).serialize(KEY), PEER_ADDR, START)
    assert events(p) == []
    assert p.datagrams_to_send(START) == []
    assert p.dropped == Counter(duplicate=1)


def run_alone(p: MeshProtocol, until: float) -> float:
    """Run ``p``'s timers, nobody listening, up to ``until``; the time reached."""
    now = START
    while (timer := p.get_timer()) is not None and timer <= until:
        now = max(now, timer)
        p.handle_timer(now)
        p.datagrams_to_send(now)
    return now


def test_a_new_neighbour_that_agrees_resets_nothing_and_one_with_users_online_gets_a_beacon():
    p = make_protocol()
    now = run_alone(p, START + 4 * BEACON_INTERVAL)
    assert p.beacon_status()["interval_s"] == BEACON_INTERVAL
    resets = p.beacon_status()["resets"]
    p.receive_datagram(other_peer_beacon(2), other_peer_addr(2), now)  # its digest is ours
    assert node_id(2) in p.peers
    assert p.beacon_status()["resets"] == resets  # was a reset to TRICKLE_IMIN per peer met
    assert p.datagrams_to_send(now) == []
    # With users online, a new neighbour hears of them: one beacon, no reset.
    now += MIN_BEACON_GAP  # the last beacon went at ``now``; Trickle's next is far
    p.set_presence({1: ["ann"]}, now)
    assert len(p.datagrams_to_send(now)) == 1
    p.receive_datagram(other_peer_beacon(3), other_peer_addr(3), now)
    assert p.datagrams_to_send(now) == []  # MIN_BEACON_GAP after the last
    sent = []
    while (timer := p.get_timer()) is not None and timer <= now + MIN_BEACON_GAP:
        p.handle_timer(timer)
        sent += [d for d, _ in p.datagrams_to_send(timer)]
    [data] = sent
    assert parse(data, [KEY]).presence == {1: ("ann",)}
    assert p.beacon_status()["resets"] == resets
    assert p.beacon_status()["interval_s"] == BEACON_INTERVAL


def test_last_hop_is_not_relayed():
    p = make_protocol()
    p.receive_datagram(peer_record(hops=1).serialize(KEY), PEER_ADDR, START)
    assert len(events(p)) == 1
    assert p.datagrams_to_send(START) == []
    assert p.relayed == 0


def test_far_future_record_is_accepted_but_the_clock_clamps():
    p = make_protocol()
    now_ms = int(START * 1000)
    future = pack(now_ms + 3_600_000, 0)  # a router whose clock is an hour ahead
    p.receive_datagram(peer_record(hlc=future).serialize(KEY), PEER_ADDR, START)
    [event] = events(p)
    assert event.record.hlc == future  # unchanged: every node orders it the same
    assert p.clock.clamped == 1
    assert p.clock.last == pack(now_ms + MAX_DRIFT_MS, COUNTER_MASK)


def test_send_record_queues_a_stored_record():
    p = make_protocol(hop_limit=4)
    record = Record(ME, 1, 5, RecordKind.ACCOUNT, 0, {"username": "ana"})
    p.known.add(ME, 1)  # the store holds it
    p.send_record(record, START)
    [(data, dest)] = p.datagrams_to_send(START)
    sent = parse(data, [KEY])
    assert (sent.sender, sent.hops, sent.counter, dest) == (ME, 4, 1, None)
    assert sent.record == record and sent.record.body == record.body
    assert (ME, 1) in p.known


def test_large_record_goes_out_in_fragments_under_the_mtu():
    p = make_protocol(mtu=DEFAULT_MTU)
    record = Record(ME, 1, 5, RecordKind.MESSAGE, 1, {"text": "😀" * 2000})
    p.known.add(ME, 1)
    p.send_record(record, START)
    out = p.datagrams_to_send(START)
    assert len(out) == 7
    pieces = [parse(data, [KEY]) for data, _ in out]
    assert all(len(data) <= DEFAULT_MTU for data, _ in out)
    assert all(isinstance(f, FragmentDatagram) for f in pieces)
    assert [f.counter for f in pieces] == list(range(2, 9))  # one counter per datagram
    assert len({f.transfer_id for f in pieces}) == 1


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (Record(PEER, 1, 5, RecordKind.MESSAGE, 1, {}), "not our record"),
        (Record(ME, 0, 5, RecordKind.MESSAGE, 1, {}), "seq"),
        (Record(ME, 1, 5, RecordKind.MESSAGE, 1, {"t": "x" * 70_000}), "exceeds"),
        (Record(ME, 1, 5, RecordKind.MESSAGE, 1, {"t": {1, 2}}), "not JSON"),
        (Record(ME, 1, 5, RecordKind.MESSAGE, 1, {"t": "x"}), "store record"),
    ],
)
def test_send_record_misuse_raises(record, match):
    p = make_protocol()
    with pytest.raises(ValueError, match=match):
        p.send_record(record, START)
    assert p.datagrams_to_send(START) == []
    assert p.known.as_dict() == {}


@pytest.mark.parametrize(
    "settings",
    [
        {"node_id": "nothex"},
        {"keys": []},
        {"keys": [b""]},
        {"node_name": ""},
        {"hop_limit": 0},
        {"hop_limit": 256},
        {"beacon_interval": 0},
        {"mtu": 100},
    ],
)
def test_constructor_misuse_raises(settings):
    with pytest.raises(ValueError):
        make_protocol(**settings)


def test_set_presence_misuse_raises():
    p = make_protocol()
    with pytest.raises(ValueError):
        p.set_presence({1: [""]}, START)


def test_hostile_input_never_raises_and_is_counted():
    p = make_protocol()
    rng = random.Random(7)
    good = [peer_record(seq=s).serialize(KEY) for s in range(1, 4)] + [peer_beacon()]
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.3:
            data = rng.randbytes(rng.randrange(0, 300))
        elif choice < 0.6:
            data = bytearray(rng.choice(good))
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:  # validly signed, random body of every kind: a buggy or hostile peer
            kind = rng.choice([1, 2, 3, 4, 5, 6, 7, 8])
            head = HEADER.pack(1, kind, 0, rng.randrange(256), bytes.fromhex(PEER), 1)
            body = bytes([rng.choice([1, 2])]) + rng.randbytes(rng.randrange(0, 60))
            data = head + body
            data += hmac.new(KEY, data, hashlib.sha256).digest()[:16]
        p.receive_datagram(bytes(data), PEER_ADDR, START)
    assert p.received == 3000
    assert sum(p.dropped.values()) > 2000
    assert set(p.dropped) <= {
        "too_short",
        "bad_version",
        "old_version",
        "bad_mac",
        "bad_kind",
        "bad_flags",  # a REQUEST's own flags
        "not_peer",  # catch-up datagrams from a node that is no peer (yet)
        "malformed",
        "bad_json",
        "bad_utf8",
        "bad_record_kind",
        "duplicate",
        "duplicate_beacon",
        "stale_beacon",
        "duplicate_fragment",
        "fragment_mismatch",
        "too_long",
    }


def test_fragmented_peer_record_is_reassembled_and_relayed_in_fragments():
    p = make_protocol()
    big = peer_record(text="😀" * 2000, hops=2)
    for data in reversed(encode(big, KEY, transfer_id=5)):
        p.receive_datagram(data, PEER_ADDR, START)
    [event] = events(p)
    assert event.record.body == big.record.body
    p.handle_timer(START + RELAY_WINDOW)
    relayed = [parse(data, [KEY]) for data, _ in p.datagrams_to_send(START + RELAY_WINDOW)]
    relayed = [d for d in relayed if not isinstance(d, BeaconDatagram)]  # the start-up one
    assert len(relayed) == 7
    assert all(f.kind == DatagramKind.FRAGMENT and f.hops == 1 for f in relayed)
    assert p.limits_status()["partial_transfers"] == 0


# -- one protocol by hand: relayed beacons ------------------------------------------------

FAR = node_id(5)  # a node we hear only through PEER
FAR_ADDR = ("198.18.0.6", 8888)


def far_beacon(seq=1, presence=None, boot_id=9, hops=DEFAULT_HOP_LIMIT - 1, sender=PEER) -> bytes:
    beacon = BeaconDatagram(
        sender, "far", boot_id, {FAR: seq}, presence or {}, hops=hops, origin=FAR, seq=seq
    )
    return beacon.serialize(KEY)


def sent_beacons(p: MeshProtocol, now: float) -> list[BeaconDatagram]:
    return [parse(data, [KEY]) for data, _ in p.datagrams_to_send(now)]


def test_relayed_beacon_makes_a_node_not_a_peer_and_is_relayed_once():
    p = make_protocol()
    p.receive_datagram(far_beacon(presence={1: ["zoe"]}), PEER_ADDR, START)
    assert events(p) == [PresenceChanged()]  # no PeerJoined: FAR is not a neighbour
    assert p.peers == {}
    node = p.nodes[FAR]
    assert (node.name, node.boot_id, node.seq, node.hops, node.via) == ("far", 9, 1, 2, PEER)
    assert node.vector == {FAR: 1}
    assert p.presence() == {1: [("zoe", "far")]}
    # Relayed at once: no other neighbour could relay it instead (node/relay.py).
    [relay] = [b for b in sent_beacons(p, START) if b.origin == FAR]
    assert (relay.sender, relay.origin, relay.seq, relay.hops) == (
        ME,
        FAR,
        1,
        DEFAULT_HOP_LIMIT - 2,
    )
    assert relay.presence == {1: ("zoe",)} and relay.boot_id == 9
    assert (p.relayed_beacons, p.relayed) == (1, 0)
    # The same beacon again, through anyone: a duplicate, not relayed again.
    p.receive_datagram(far_beacon(presence={1: ["zoe"]}), PEER_ADDR, START)
    p.receive_datagram(far_beacon(presence={1: ["zoe"]}, sender=node_id(6)), FAR_ADDR, START)
    assert events(p) == []
    assert sent_beacons(p, START) == []
    assert p.dropped == Counter(duplicate_beacon=2)


def test_direct_copy_makes_the_peer_with_the_origins_own_address():
    p = make_protocol()
    p.receive_datagram(far_beacon(), PEER_ADDR, START)  # relayed copy first
    p.receive_datagram(far_beacon(sender=FAR), FAR_ADDR, START)  # then its own
    assert events(p) == [PeerJoined(FAR, "far", FAR_ADDR)]
    assert p.peers[FAR].addr == FAR_ADDR
    assert p.peers[FAR].node is p.nodes[FAR]
    assert (p.nodes[FAR].hops, p.nodes[FAR].via) == (1, FAR)
    assert p.dropped == Counter(duplicate_beacon=1)
    # A newer beacon relayed by PEER updates the node, never the peer's address.
    p.receive_datagram(far_beacon(seq=2, presence={1: ["zoe"]}), PEER_ADDR, START + 1)
    assert p.peers[FAR].addr == FAR_ADDR and p.peers[FAR].presence == {1: ("zoe",)}
    assert (p.nodes[FAR].hops, p.nodes[FAR].via) == (2, PEER)


def test_older_beacon_after_a_newer_one_changes_nothing():
    p = make_protocol()
    p.receive_datagram(far_beacon(seq=5, presence={1: ["new"]}), PEER_ADDR, START)
    events(p)
    sent_beacons(p, START)
    for seq in (4, 1, 5):  # reordered late, or a replay of an old one
        p.receive_datagram(far_beacon(seq=seq, presence={1: ["old"]}), PEER_ADDR, START + 1)
    assert p.presence() == {1: [("new", "far")]}
    assert p.nodes[FAR].last_heard == START
    assert events(p) == []
    assert sent_beacons(p, START + 1) == []
    assert p.dropped == Counter(duplicate_beacon=3)


def test_own_beacon_relayed_back_is_dropped_not_relayed():
    p = make_protocol()
    p.handle_timer(START)
    [mine] = sent_beacons(p, START)
    echo = BeaconDatagram(PEER, "me", mine.boot_id, hops=5, origin=ME, seq=mine.seq)
    p.receive_datagram(echo.serialize(KEY), PEER_ADDR, START)
    assert sent_beacons(p, START) == []
    assert ME not in p.nodes and p.presence() == {}
    assert p.dropped == Counter(duplicate_beacon=1)
    assert p.relayed_beacons == 0


def test_another_boot_wins_only_once_the_current_one_is_silent_an_interval():
    p = make_protocol()
    p.receive_datagram(far_beacon(seq=40, presence={1: ["live"]}), PEER_ADDR, START)
    events(p)
    sent_beacons(p, START)
    # Another boot while the current one beacons: a late copy or a replay.
    late = START + BEACON_INTERVAL - 0.1
    p.receive_datagram(far_beacon(seq=900, boot_id=8, presence={1: ["x"]}), PEER_ADDR, late)
    assert (p.nodes[FAR].boot_id, p.nodes[FAR].seq) == (9, 40)
    assert p.dropped == Counter(stale_beacon=1)
    assert sent_beacons(p, late) == []
    # Silent for an interval: it restarted; its beacons count from 1 again.
    restart = START + BEACON_INTERVAL
    p.receive_datagram(far_beacon(seq=1, boot_id=10, presence={1: ["back"]}), PEER_ADDR, restart)
    assert (p.nodes[FAR].boot_id, p.nodes[FAR].seq) == (10, 1)
    assert p.presence() == {1: [("back", "far")]}
    assert events(p) == [PresenceChanged()]
    p.handle_timer(restart + RELAY_WINDOW)
    relays = [b for b in sent_beacons(p, restart + RELAY_WINDOW) if b.origin == FAR]
    assert [b.boot_id for b in relays if b.boot_id != 9] == [10]
    # The old boot's beacons, now late, do not come back.
    p.receive_datagram(far_beacon(seq=41, presence={1: ["live"]}), PEER_ADDR, restart + 1)
    assert p.presence() == {1: [("back", "far")]}
    assert p.dropped == Counter(stale_beacon=2)


def test_relayed_node_times_out_from_its_last_beacon_and_peers_stay():
    p = make_protocol()
    p.handle_timer(START)
    p.receive_datagram(far_beacon(presence={1: ["zoe"]}), PEER_ADDR, START + 1)
    events(p)
    got = []
    for second in range(2, 60):  # PEER keeps beaconing and relaying; FAR went quiet
        now = START + second
        p.receive_datagram(peer_beacon(seq=second), PEER_ADDR, now)
        p.receive_datagram(peer_record(seq=second, hops=1).serialize(KEY), PEER_ADDR, now)
        p.handle_timer(now)
        got = [e for e in events(p) if not isinstance(e, (PeerJoined, RecordReceived))]
        if got:
            break
    assert now == START + 1 + PEER_TIMEOUT
    assert got == [PresenceChanged()]  # no PeerLost: FAR was no peer
    assert sorted(p.nodes) == [PEER] and sorted(p.peers) == [PEER]
    assert p.presence() == {}


# -- meshes --------------------------------------------------------------------------------


def delivered(mesh: Mesh) -> dict[int, list[str]]:
    return {n.index: [r.id for r in n.records()] for n in mesh.nodes}


def test_three_connected_nodes_each_get_a_record_exactly_once():
    mesh = Mesh.full(3)
    mesh.run_for(1.0)
    record = mesh.send(0, "hello")
    mesh.run_for(1.0)
    assert delivered(mesh) == {0: [], 1: [record.id], 2: [record.id]}
    for node in mesh.nodes[1:]:
        assert node.records()[0].body == record.body
        assert node.protocol.relayed == 1
    # Each neighbour has one neighbour besides the origin, so it cannot tell a
    # triangle from a line: both relay at once (node/relay.py).  Both relays
    # come back to the origin, and each reaches the other neighbour again.
    dups = [n.protocol.dropped["duplicate"] for n in mesh.nodes]
    assert dups == [2, 1, 1]
    assert [n.protocol.beacon_status()["echo_repeats"] for n in mesh.nodes] == [0, 0, 0]
    assert {n.index: sorted(n.protocol.peers) for n in mesh.nodes} == {
        0: [node_id(1), node_id(2)],
        1: [node_id(0), node_id(2)],
        2: [node_id(0), node_id(1)],
    }


def test_chain_relays_from_a_to_c_exactly_once():
    mesh = Mesh.chain(3)
    mesh.run_for(1.0)
    assert sorted(mesh.nodes[0].protocol.peers) == [node_id(1)]  # A cannot hear C
    record = mesh.send(0, "over the hill")
    mesh.run_for(1.0)
    assert delivered(mesh) == {0: [], 1: [record.id], 2: [record.id]}
    [event] = mesh.nodes[2].events_of(RecordReceived)
    assert (event.sender, event.addr) == (node_id(1), mesh.nodes[1].addr)
    assert event.record.body == record.body


@pytest.mark.parametrize("hop_limit", [1, 2, 7])
def test_hop_limit_stops_the_flood_not_the_record(hop_limit):
    # Issue #12: no hop wall.  Relays stop at the limit; past it the routers
    # that disagree repair hop by hop (Trickle at its shortest interval).
    mesh = Mesh.chain(hop_limit + 4, hop_limit=hop_limit)
    mesh.run_for(BEACON_INTERVAL * 2)  # an idle mesh: Trickle at its longest
    record = mesh.send(0, "how far?")
    mesh.run_for(0.3)
    relayers = {
        n.index
        for n in mesh.nodes
        for data in n.sent_datagrams
        if isinstance(d := parse(data, [KEY]), RecordDatagram) and d.record.id == record.id
    }
    assert 0 in relayers
    mesh.run_for(2.0)
    # The origin's flood stops at the limit: the first router past it takes
    # the record by repair (a BATCH), and it floods on from there.
    assert mesh.nodes[hop_limit + 1].protocol.sync_stats["batch_records"] == 1
    assert all([r.id for r in n.records()] == [record.id] for n in mesh.nodes[1:])


def test_default_hop_limit_is_more_links_than_a_neighbourhood_is_across():
    assert DEFAULT_HOP_LIMIT == 16


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_and_reordering_never_deliver_twice(seed):
    mesh = Mesh.full(4, seed=seed, link=LinkConfig(duplicate=0.5, reorder=0.05))
    mesh.run_for(1.0)
    sent = {}
    for round_ in range(10):
        for i in range(4):
            record = mesh.send(i, f"{i}-{round_}")
            sent[record.id] = record
        mesh.run_for(0.01)
    mesh.run_for(1.0)
    for node in mesh.nodes:
        ids = [r.id for r in node.records()]
        assert sorted(ids) == sorted(k for k in sent if not k.startswith(node.node_id))
        for r in node.records():
            assert r.body == sent[r.id].body


def assert_exactly_once_and_same_order(mesh: Mesh, sent: dict[str, Record]) -> None:
    orders = {}
    for node in mesh.nodes:
        records = node.records()
        assert len({r.id for r in records}) == len(records)  # exactly once
        for r in records:
            assert r == sent[r.id] and r.body == sent[r.id].body
            assert r.origin != node.node_id
        mine = [r for r in sent.values() if r.origin == node.node_id]
        orders[node.index] = [r.id for r in sorted(records + mine, key=lambda r: r.order_key)]
    for a, b in combinations(orders.values(), 2):  # sorted logs agree wherever they overlap
        common = set(a) & set(b)
        assert [x for x in a if x in common] == [x for x in b if x in common]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", ["full", "chain"])
def test_random_loss_is_tolerated(seed, shape):
    link = LinkConfig(drop=0.3, duplicate=0.2, reorder=0.03)
    mesh = getattr(Mesh, shape)(5, seed=seed, link=link)
    rng = random.Random(seed)
    sent = {}
    for _ in range(40):
        record = mesh.send(rng.randrange(5), "x" * rng.randrange(0, 3000))
        sent[record.id] = record
        mesh.run_for(rng.uniform(0, 0.5))
    mesh.run_for(2.0)
    assert_exactly_once_and_same_order(mesh, sent)
    assert sum(len(n.records()) for n in mesh.nodes) > 40  # most of it got through


def test_a_node_with_another_key_is_heard_by_nobody():
    mesh = Mesh.full(3, keys={2: b"some other mesh's key"})
    mesh.run_for(BEACON_INTERVAL * 2)
    outsider = mesh.send(2, "anyone?")
    insider = mesh.send(0, "hello")
    mesh.run_for(1.0)
    assert delivered(mesh) == {0: [], 1: [insider.id], 2: []}
    assert sorted(mesh.nodes[0].protocol.peers) == [node_id(1)]
    assert sorted(mesh.nodes[1].protocol.peers) == [node_id(0)]
    assert mesh.nodes[2].protocol.peers == {}
    for node in mesh.nodes:
        assert node.protocol.dropped["bad_mac"] > 0
    assert outsider.id not in {r.id for n in mesh.nodes for r in n.records()}


def test_own_looped_back_datagrams_are_ignored_even_on_one_host():
    mesh = Mesh.full(3, loopback=True, same_host=True)
    mesh.run_for(BEACON_INTERVAL * 2)
    record = mesh.send(0, "echo")
    mesh.run_for(1.0)
    assert delivered(mesh) == {0: [], 1: [record.id], 2: [record.id]}
    for node in mesh.nodes:
        assert node.protocol.looped > 0
        assert node.node_id not in node.protocol.peers
        assert len(node.protocol.peers) == 2  # same address, still told apart
        assert "own" not in node.protocol.dropped


def test_own_record_relayed_back_is_a_duplicate():
    mesh = Mesh.chain(2)
    mesh.send(0, "boomerang")
    mesh.run_for(1.0)
    assert mesh.nodes[0].records() == []
    assert mesh.nodes[0].protocol.dropped["duplicate"] == 1
    assert mesh.nodes[1].protocol.relayed == 1


def test_presence_shows_up_on_peers_and_disappears_after_timeout():
    mesh = Mesh.chain(2)
    mesh.run_for(1.0)
    mesh.set_presence(1, {1: ["ana", "bo"], 3: ["zoë"]})
    mesh.run_for(MIN_BEACON_GAP + 0.1)
    watcher = mesh.nodes[0]
    assert watcher.protocol.presence() == {
        1: [("ana", "node1"), ("bo", "node1")],
        3: [("zoë", "node1")],
    }
    assert watcher.events_of(PresenceChanged)
    assert mesh.nodes[1].protocol.presence() == {}  # not including self
    watcher.events.clear()
    mesh.set_presence(1, {1: ["ana"]})
    mesh.run_for(MIN_BEACON_GAP + 0.1)
    assert watcher.protocol.presence() == {1: [("ana", "node1")]}
    assert watcher.events == [PresenceChanged()]
    watcher.events.clear()
    mesh.nodes[1].up = False  # switched off
    mesh.run_for(PEER_TIMEOUT + BEACON_INTERVAL)
    assert watcher.protocol.presence() == {}
    assert watcher.events == [PeerLost(node_id(1), "node1"), PresenceChanged()]


def test_big_record_reassembles_under_reordering_and_duplication():
    link = LinkConfig(duplicate=0.5, reorder=0.02)
    for seed in range(10):
        mesh = Mesh.full(3, seed=seed, link=link)
        record = mesh.send(0, "😀" * 2000)
        mesh.run_for(1.0)
        assert len(mesh.nodes[0].sent_datagrams) > 1
        for node in mesh.nodes:
            assert all(len(d) <= DEFAULT_MTU for d in node.sent_datagrams)
        for node in mesh.nodes[1:]:
            [got] = node.records()
            assert got.body == record.body


def test_big_beacon_is_fragmented_and_understood():
    mesh = Mesh.chain(2)
    users = [f"someone-with-a-long-name-{i:03d}" for i in range(200)]
    mesh.set_presence(1, {1: users, 2: users[:50]})
    mesh.run_for(1.0)
    presence = mesh.nodes[0].protocol.presence()
    assert [u for u, _ in presence[1]] == sorted(users)
    assert len(presence[2]) == 50
    assert any(isinstance(parse(d, [KEY]), FragmentDatagram) for d in mesh.nodes[1].sent_datagrams)


def test_peers_track_vectors_from_beacons():
    mesh = Mesh.full(2)
    first = mesh.send(0, "one")
    mesh.send(0, "two")
    mesh.run_for(BEACON_INTERVAL + 0.1)
    peer = mesh.nodes[1].protocol.peers[node_id(0)]
    assert peer.vector == {first.origin: 2}
    assert peer.name == "node0"
    assert peer.boot_id == mesh.nodes[0].protocol.boot_id
    assert mesh.nodes[1].events_of(PeerJoined) == [
        PeerJoined(node_id(0), "node0", mesh.nodes[0].addr)
    ]


# -- meshes: beacons relayed ---------------------------------------------------------------


def test_chain_shows_presence_from_two_hops_away_via_the_middle():
    mesh = Mesh.chain(3)
    a, b, c = mesh.nodes
    mesh.set_presence(2, {1: ["cat"], 2: ["cy"]})
    mesh.set_presence(1, {1: ["bob"]})
    mesh.run_for(1.0)
    assert a.protocol.presence() == {1: [("bob", "node1"), ("cat", "node2")], 2: [("cy", "node2")]}
    assert sorted(a.protocol.peers) == [b.node_id]  # A still cannot hear C
    assert sorted(a.protocol.nodes) == [b.node_id, c.node_id]
    far = a.protocol.nodes[c.node_id]
    assert (far.name, far.hops, far.via) == ("node2", 2, b.node_id)
    assert far.boot_id == c.protocol.boot_id
    assert a.events_of(PeerJoined) == [PeerJoined(b.node_id, "node1", b.addr)]
    assert c.protocol.presence() == {1: [("bob", "node1")]}  # and back the other way
    # Nobody relays its own beacon back out.
    for node in mesh.nodes:
        for data in node.sent_datagrams:
            beacon = parse(data, [KEY])
            if isinstance(beacon, BeaconDatagram) and beacon.origin == node.node_id:
                assert beacon.hops in (1, DEFAULT_HOP_LIMIT)  # neighbours only, or far
    assert c.protocol.dropped["duplicate_beacon"] > 0  # B relayed C's beacons back


def test_chain_loses_the_far_nodes_users_after_the_timeout():
    mesh = Mesh.chain(3)
    a = mesh.nodes[0]
    mesh.set_presence(2, {1: ["cat"]})
    mesh.run_for(1.0)
    assert a.protocol.presence() == {1: [("cat", "node2")]}
    a.events.clear()
    mesh.nodes[2].up = False
    # Its last beacon went out at most an interval ago: gone within the timeout.
    stopped = mesh.now
    mesh.run_until(stopped + PEER_TIMEOUT - BEACON_INTERVAL - 0.1)
    assert a.protocol.presence() == {1: [("cat", "node2")]}  # not yet
    mesh.run_until(stopped + PEER_TIMEOUT + 0.1)
    assert a.protocol.presence() == {}
    assert node_id(2) not in a.protocol.nodes
    assert a.events == [PresenceChanged()]
    assert sorted(a.protocol.peers) == [node_id(1)]  # B is still there


@pytest.mark.parametrize("seed", range(6))
def test_duplicated_and_reordered_beacons_never_bring_old_presence_back(seed):
    # A ring of 4 gives two ways round; copies arrive twice and up to 3 s late,
    # later than the next presence change.
    link = LinkConfig(duplicate=0.5, reorder=3.0)
    mesh = Mesh(4, [(0, 1), (1, 2), (2, 3), (3, 0)], seed=seed, link=link)
    states = [[f"gen{i}"] for i in range(8)]
    seen = []
    for users in states:
        mesh.set_presence(2, {1: users})
        for _ in range(120):  # 1.2 s: past MIN_BEACON_GAP, so each state goes out
            mesh.run_for(0.01)
            got = [u for u, _ in mesh.nodes[0].protocol.presence().get(1, [])]
            if got and (not seen or seen[-1] != got):
                seen.append(got)
    mesh.run_for(4.0)
    last = [u for u, _ in mesh.nodes[0].protocol.presence()[1]]
    if last != seen[-1]:
        seen.append(last)
    order = [states.index(users) for users in seen]
    assert order == sorted(set(order)), order  # only ever forward, never back
    assert order[-1] == len(states) - 1
    assert mesh.nodes[0].protocol.dropped["duplicate_beacon"] > 0


@pytest.mark.parametrize("hop_limit", [1, 2, 3])
def test_hop_limit_bounds_presence_propagation(hop_limit):
    mesh = Mesh.chain(hop_limit + 2, hop_limit=hop_limit)
    mesh.set_presence(0, {1: ["ann"]})
    mesh.run_for(1.0)
    for i in range(1, hop_limit + 1):
        assert mesh.nodes[i].protocol.nodes[node_id(0)].hops == i
    assert node_id(0) not in mesh.nodes[hop_limit + 1].protocol.nodes


def test_beacons_of_a_quiet_full_mesh_are_not_relayed():
    # Issue #12: the N^2 of relayed beacons is gone; nobody online, nothing floods.
    n = 5
    mesh = Mesh.full(n)
    mesh.run_for(0.1)  # the start-up beacons only
    for node in mesh.nodes:
        assert node.protocol.relayed_beacons == 0
        assert len(node.protocol.nodes) == n - 1
        assert all(other.hops == 1 for other in node.protocol.nodes.values())
    assert sum(len(node.sent_datagrams) for node in mesh.nodes) == n


def test_a_peer_stamping_records_a_year_ahead_cannot_drag_the_mesh_clock():
    """Node 2's clock is a year fast: its records reach everyone unchanged
    (so every node orders them alike), but no node's clock follows it further
    than MAX_DRIFT_MS past its own wall clock, and each counts the clamp."""
    year_ms = 365 * 86_400_000
    mesh = Mesh.chain(3)  # node 0 hears node 2 only through node 1's relay
    mesh.run_for(1.0)
    liar = mesh.nodes[2]
    for k in range(5):
        wall_ms = int(mesh.now * 1000)
        hlc = pack(wall_ms + year_ms, k)
        body = {"author": "lia", "node": "node2", "time": wall_ms + year_ms, "text": f"{k}"}
        record = Record(liar.node_id, k + 1, hlc, RecordKind.MESSAGE, 1, body)
        mesh.store(2, record)
        liar.protocol.send_record(record, mesh.now)
        mesh._flush(liar)
        mesh.run_for(0.5)
    for node in mesh.nodes[:2]:
        got = [r for r in node.records() if r.origin == liar.node_id]
        assert [physical_ms(r.hlc) - int(r.body["time"]) for r in got] == [0] * 5  # unchanged
        wall_ms = int(mesh.now * 1000)
        assert physical_ms(node.protocol.clock.last) <= wall_ms + MAX_DRIFT_MS
        assert node.protocol.clock.clamped == 5
    # Our own next record is stamped near our wall clock, not a year ahead,
    # and still after everything we stamped before.
    mine = mesh.send(0, "after the liar")
    assert physical_ms(mine.hlc) <= int(mesh.now * 1000) + MAX_DRIFT_MS
    mesh.run_for(1.0)
    assert mine.id in {r.id for r in mesh.nodes[1].records()}
