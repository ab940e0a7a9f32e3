"""Issue #13, item 8: a sequence number is never reused, even after a power cut.

Seqs are reserved in blocks, durably, before the first of a block is used
(node/store.py); after a restart allocation starts above the reservation,
and the part of it that is not on disk (the lost window) is recovered from
peers where they hold it, the rest declared gone by us (node/sync.py,
``OwnRecovery``).  Store tests use real files; protocol tests the simulated
mesh on virtual time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from node.record import MAX_SEQ, Record, RecordKind
from node.store import SEQ_BLOCK, SEQ_FILE, SeqExhausted, Store, room_log_name
from node.sync import RecordsGone
from node.wire import BatchDatagram, BeaconDatagram, RecordDatagram, RequestDatagram, parse
from tests.unit.mesh_sim import KEY, START, DictSource, Mesh, by_hand, node_id
from tests.unit.test_gone_guard import requests, sealed

ME, PEER = node_id(0), node_id(1)
PEER_ADDR = ("198.18.0.2", 8888)


def msg(origin: str, seq: int, text: str = "hi") -> Record:
    return Record(
        origin,
        seq,
        1000 + seq,
        RecordKind.MESSAGE,
        1,
        {"author": "ann", "node": "r1", "time": 1000, "text": text},
    )


def post(store: Store, text: str) -> Record:
    record = msg(store.node_id, store.next_seq(), text)
    assert store.append(record)
    return record


def power_cut(store: Store, keep_lines: int) -> None:
    """The process dies (nothing closed, nothing more fsynced) and the log
    loses every line after the first ``keep_lines``: the last second."""
    path = store.data_dir / room_log_name(1)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep_lines]))


# -- the store: reservation ----------------------------------------------------------------


def test_seq_of_a_record_lost_in_a_power_cut_is_never_used_again(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    for k in range(5):
        post(s, f"m{k + 1}")  # seqs 1..5; 4 and 5 reached peers, then the power went
    power_cut(s, keep_lines=3)
    back = Store(tmp_path, rooms=1)
    assert back.vector.highest(back.node_id) == 3
    seq = back.next_seq()
    assert seq > 5, "seqs 4 and 5 are other messages at the peers"
    assert seq == SEQ_BLOCK + 1  # allocation starts above the reservation
    assert back.recovery == [(4, SEQ_BLOCK)]  # the lost window, for the mesh to settle


def test_a_block_is_reserved_with_one_durable_write(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    path = tmp_path / SEQ_FILE
    post(s, "first")
    assert int(path.read_text()) == SEQ_BLOCK
    inode = os.stat(path).st_ino  # write_atomically makes a new file each time
    for k in range(SEQ_BLOCK - 1):
        post(s, f"m{k}")
    assert os.stat(path).st_ino == inode, "no write within a block"
    post(s, "the first of the next block")
    assert int(path.read_text()) == 2 * SEQ_BLOCK
    assert os.stat(path).st_ino != inode


def test_a_crash_skips_the_rest_of_the_block_a_clean_stop_hands_it_back(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    post(s, "one")
    s.sync()  # nothing lost: the process dies, the log is whole
    crashed = Store(tmp_path, rooms=1)
    assert crashed.recovery == [(2, SEQ_BLOCK)]  # never used, but who knows: the mesh settles
    assert crashed.next_seq() == SEQ_BLOCK + 1
    crashed.close()  # a clean stop: every log fsynced, the unused rest handed back
    assert int((tmp_path / SEQ_FILE).read_text()) == SEQ_BLOCK
    again = Store(tmp_path, rooms=1)
    assert again.recovery == [(2, SEQ_BLOCK)], "still unsettled: kept for the mesh"
    assert again.next_seq() == SEQ_BLOCK + 1
    post(again, "two")
    again.close()
    last = Store(tmp_path, rooms=1)
    assert last.recovery == [(2, SEQ_BLOCK)] and last.next_seq() == SEQ_BLOCK + 2


def test_data_from_before_reservations_continues_where_it_was(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    post(s, "one")
    s.close()
    (tmp_path / SEQ_FILE).unlink()  # a data folder of an older version
    again = Store(tmp_path, rooms=1)
    assert again.recovery == [] and again.next_seq() == 2


def test_a_garbled_reservation_file_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    Store(tmp_path, rooms=1).close()
    (tmp_path / SEQ_FILE).write_text("lots\n")
    with pytest.raises(ValueError, match="seq"):
        Store(tmp_path, rooms=1)


def test_allocation_past_the_wire_limit_raises(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    s.append(msg(s.node_id, MAX_SEQ - 1))
    last = s.next_seq()
    assert last == MAX_SEQ
    s.append(msg(s.node_id, last))
    with pytest.raises(SeqExhausted):
        s.next_seq()


def test_a_log_line_beyond_the_seq_limit_is_skipped_and_counted(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    me = s.node_id
    s.close()
    line = {
        "id": f"{me}:{MAX_SEQ + 1}",
        "hlc": 5,
        "kind": "message",
        "room": 1,
        "body": {"text": "x"},
    }
    (tmp_path / room_log_name(1)).write_text(json.dumps(line) + "\n")
    again = Store(tmp_path, rooms=1)
    assert again.skipped_lines == 1
    assert again.next_seq() == 1


# -- the protocol: nothing received touches our seqs, but the lost window -----------------------


def test_a_record_of_our_own_origin_from_a_peer_is_refused() -> None:
    p = by_hand()
    p.receive_datagram(sealed(BeaconDatagram(PEER, "peer", 7, {}, seq=1)), PEER_ADDR, START)
    p.receive_datagram(sealed(RecordDatagram(PEER, msg(ME, 7))), PEER_ADDR, START)
    p.receive_datagram(sealed(BatchDatagram(PEER, [msg(ME, 8)])), PEER_ADDR, START)
    assert p.next_event() is not None  # PeerJoined
    assert p.next_event() is None
    assert (ME, 7) not in p.seen and (ME, 8) not in p.seen
    assert p.dropped["own_origin"] == 2


def test_a_beacon_claiming_our_own_origin_makes_us_ask_nothing() -> None:
    p = by_hand()
    p.datagrams_to_send(START)
    p.receive_datagram(sealed(BeaconDatagram(PEER, "peer", 7, {ME: 500}, seq=1)), PEER_ADDR, START)
    assert requests(p, START) == []


def test_lost_window_is_asked_of_each_peer_and_its_records_taken() -> None:
    p = by_hand(recover_own=[(4, 12)])
    p.datagrams_to_send(START)
    p.receive_datagram(sealed(BeaconDatagram(PEER, "peer", 7, {ME: 5}, seq=1)), PEER_ADDR, START)
    asked = requests(p, START)
    assert [(r.target, r.ranges) for r in asked] == [(PEER, ((ME, 4, 12),))]
    p.receive_datagram(sealed(BatchDatagram(PEER, [msg(ME, 4), msg(ME, 5)])), PEER_ADDR, START)
    p.receive_datagram(sealed(RecordDatagram(PEER, msg(ME, 13))), PEER_ADDR, START)
    assert (ME, 4) in p.seen and (ME, 5) in p.seen and (ME, 13) not in p.seen
    assert p.dropped["own_origin"] == 1


class StoreLikeSource(DictSource):
    """As the store answers: a seq of ours that ``known`` holds (declared
    gone) and no record is gone."""

    def __init__(self, base: DictSource, known) -> None:
        super().__init__()
        self.records, self.known = base.records, known

    def is_gone(self, origin: str, seq: int) -> bool:
        rid = (origin, seq)
        return origin == ME and rid not in self.records and rid in self.known()


def test_power_cut_mesh_recovers_the_lost_window_and_converges() -> None:
    """Node 0 posts 1..5, node 1 holds them, node 0 loses 4 and 5 (it had
    reserved through 12).  Back up: 4 and 5 come back from node 1, 6..12 are
    declared gone by node 0, its next post is 13, and both hold the same."""
    mesh = Mesh.full(2)
    mesh.run_for(1.0)
    sent = [mesh.send(0, f"m{k}") for k in range(1, 6)]
    mesh.run_for(1.0)
    assert {(ME, s) for s in range(1, 6)} <= mesh.nodes[1].source.ids()
    mesh.nodes[0].up = False
    for seq in (4, 5):
        del mesh.nodes[0].source.records[(ME, seq)]
    mesh.run_for(20.0)  # node 1 forgets the old boot
    mesh.nodes[0].source = StoreLikeSource(
        mesh.nodes[0].source, lambda: mesh.nodes[0].protocol.known
    )
    mesh.settings["recover_own"] = [(4, 12)]
    back = mesh.restart(0)
    del mesh.settings["recover_own"]
    back.next_seq = 13
    mesh.run_for(0.5)
    mesh.send(0, "after the power cut")
    mesh.run_until_quiet(60, lambda: mesh.nodes[1].protocol.known.contiguous(ME) == 13)
    other = mesh.nodes[1]
    assert sorted(r.seq for r in back.records() if r.origin == ME) == [4, 5]
    assert [r.body for r in back.records() if r.origin == ME] == [sent[3].body, sent[4].body]
    assert [(e.first, e.last) for e in back.events_of(RecordsGone)] == [(6, 12)]
    assert back.protocol.known.contiguous(ME) == 13 == other.protocol.known.contiguous(ME)
    assert back.source.ids() == other.source.ids()
    assert other.source.get(ME, 13).body["text"] == "after the power cut"
    unicast = [parse(d, [KEY]) for d in back.sent_unicast]
    assert any(isinstance(d, RequestDatagram) and d.ranges[0][0] == ME for d in unicast)
