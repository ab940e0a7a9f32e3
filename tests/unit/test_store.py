from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.moderation import ChatPolicy
from node.record import Record, RecordKind
from node.store import (
    ACCOUNTS_LOG,
    MODERATION_LOG,
    Store,
    decode_line,
    encode_line,
    room_log_name,
)

ORIGIN_A = "a" * 16
ORIGIN_B = "b" * 16
# Every moderation record acts, as the store did before the admin binding
# (its moderation tests are about the store's guarantees, not who may act).
ANYONE = ChatPolicy(lambda record: True)


def msg(origin: str, seq: int, hlc: int, room: int = 1, text: str = "hi") -> Record:
    return Record(
        origin,
        seq,
        hlc,
        RecordKind.MESSAGE,
        room,
        {"author": "ann", "node": "r1", "time": 1000, "text": text},
    )


def test_line_round_trip_any_text() -> None:
    nasty = 'a\nb\r"}\\{"id":"x"}\x00\u2028 ✓ 👩‍👩‍👧'
    r = msg(ORIGIN_A, 7, 123, text=nasty)
    line = encode_line(r)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode_line(line)
    assert back == r and back.body == r.body


def test_append_and_reload(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=4)
    node_id = s.node_id
    assert s.append(msg(ORIGIN_A, 1, 10))
    assert s.append(msg(ORIGIN_A, 2, 20, room=2))
    assert not s.append(msg(ORIGIN_A, 1, 10)), "a duplicate id is not stored twice"
    s.close()
    lines = (tmp_path / room_log_name(1)).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == f"{ORIGIN_A}:1"
    s2 = Store(tmp_path, rooms=4)
    assert s2.node_id == node_id
    assert [r.seq for r in s2.messages(1)] == [1]
    assert [r.seq for r in s2.messages(2)] == [2]
    assert s2.vector.contiguous(ORIGIN_A) == 2


def test_out_of_order_arrivals_sorted_by_hlc_origin_seq(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    for r in [
        msg(ORIGIN_B, 1, 50),
        msg(ORIGIN_A, 1, 50),
        msg(ORIGIN_A, 2, 10),
        msg(ORIGIN_B, 2, 99),
    ]:
        s.append(r)
    expected = [(10, ORIGIN_A, 2), (50, ORIGIN_A, 1), (50, ORIGIN_B, 1), (99, ORIGIN_B, 2)]
    assert [r.order_key for r in s.messages(1)] == expected
    s.close()
    assert [r.order_key for r in Store(tmp_path, rooms=1).messages(1)] == expected


def test_since_is_by_arrival_and_before_is_by_order(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    s.append(msg(ORIGIN_A, 1, 100))
    s.append(msg(ORIGIN_A, 2, 200))
    s.append(msg(ORIGIN_B, 1, 150))  # arrives last, sorts in the middle
    assert [r.id for r in s.since(1, (ORIGIN_A, 2), 10)] == [f"{ORIGIN_B}:1"]
    assert s.since(1, (ORIGIN_A, 1), 1) is None, "more than the limit: start afresh"
    assert s.since(1, ("c" * 16, 1), 10) is None
    assert s.last_arrival(1) == f"{ORIGIN_B}:1"
    assert [r.id for r in s.before(1, (ORIGIN_A, 2), 10)] == [f"{ORIGIN_A}:1", f"{ORIGIN_B}:1"]
    assert [r.id for r in s.before(1, (ORIGIN_A, 2), 1)] == [f"{ORIGIN_B}:1"]
    assert s.before(1, ("c" * 16, 9), 5) is None


def test_torn_last_line_is_moved_aside_and_log_stays_appendable(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    s.append(msg(ORIGIN_A, 1, 10))
    s.close()
    path = tmp_path / room_log_name(1)
    torn = encode_line(msg(ORIGIN_A, 2, 20))[:-9]  # a crash in the middle of a write
    with open(path, "ab") as f:
        f.write(torn)
    s2 = Store(tmp_path, rooms=1)
    assert [r.seq for r in s2.messages(1)] == [1]
    assert s2.torn_bytes == len(torn)
    assert (tmp_path / (room_log_name(1) + ".torn")).read_bytes() == torn + b"\n"
    assert s2.append(msg(ORIGIN_A, 3, 30))
    s2.close()
    for line in path.read_bytes().splitlines():
        decode_line(line)  # every line is a whole record again
    assert [r.seq for r in Store(tmp_path, rooms=1).messages(1)] == [1, 3]


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"[1,2]",
        b'{"id":"zz:1"}',
        b"{}",
        b'{"id":"' + b"a" * 16 + b':1","hlc":"x","kind":"message","room":1,"body":{}}',
        b"\xff\xfe",
    ],
)
def test_corrupt_middle_line_is_skipped_and_kept(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / room_log_name(1)
    tmp_path.mkdir(exist_ok=True)
    good1, good2 = encode_line(msg(ORIGIN_A, 1, 10)), encode_line(msg(ORIGIN_A, 2, 20))
    path.write_bytes(good1 + garbage + b"\n" + good2)
    s = Store(tmp_path, rooms=1)
    assert [r.seq for r in s.messages(1)] == [1, 2]
    assert s.skipped_lines == 1
    assert garbage in path.read_bytes(), "the bad line stays for a person to look at"


def test_crash_at_every_byte_leaves_a_readable_log(tmp_path: Path) -> None:
    lines = b"".join(encode_line(msg(ORIGIN_A, i, i * 10, text="x" * i)) for i in range(1, 6))
    for cut in range(len(lines) + 1):
        d = tmp_path / str(cut)
        d.mkdir()
        (d / room_log_name(1)).write_bytes(lines[:cut])
        s = Store(d, rooms=1)
        whole = lines[:cut].count(b"\n")
        assert [r.seq for r in s.messages(1)] == list(range(1, whole + 1))
        s.append(msg(ORIGIN_B, 1, 1))
        s.close()
        assert len(list(Store(d, rooms=1).messages(1))) == whole + 1


def test_accounts_go_to_their_own_file(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    s.append(Record(ORIGIN_A, 1, 5, RecordKind.ACCOUNT, 0, {"name": "ann", "hash": "scrypt$x"}))
    s.close()
    assert "ann" in (tmp_path / ACCOUNTS_LOG).read_text()
    assert not (tmp_path / room_log_name(1)).exists()
    assert [r.body["name"] for r in Store(tmp_path, rooms=1).accounts] == ["ann"]


def test_next_seq_and_max_hlc_survive_restart(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    me = s.node_id
    assert s.next_seq() == 1
    s.append(msg(me, 1, 500))
    s.append(msg(ORIGIN_B, 1, 900))
    s.close()
    s2 = Store(tmp_path, rooms=1)
    assert s2.next_seq() == 2
    assert s2.max_hlc == 900


def test_misuse_raises(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=2)
    with pytest.raises(ValueError, match="no room 3"):
        s.append(msg(ORIGIN_A, 1, 1, room=3))
    with pytest.raises(ValueError):
        Store(tmp_path / "x", rooms=0)


def test_bad_node_id_file_is_an_error_not_a_new_identity(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("not-hex\n")
    with pytest.raises(ValueError, match="node id"):
        Store(tmp_path, rooms=1)


def test_sync_fsyncs_only_dirty_logs(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=2)
    assert s.sync() == 0
    s.append(msg(ORIGIN_A, 1, 1))
    assert s.sync() == 1
    assert s.sync() == 0
    s.close()
    assert os.path.getsize(tmp_path / room_log_name(1)) > 0


def test_append_many_merges_an_old_batch_in_order(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=2)
    for i in range(1, 101):
        s.append(msg(ORIGIN_A, i, i * 10))
    batch = [msg(ORIGIN_B, i, i * 10 + 5, room=1 + i % 2) for i in range(100, 0, -1)]
    batch.append(msg(ORIGIN_A, 3, 30))  # a duplicate inside the batch
    new = s.append_many(batch)
    assert len(new) == 100
    keys = [r.order_key for r in s.messages(1)] + [r.order_key for r in s.messages(2)]
    assert len(keys) == 200
    for room in (1, 2):
        ordered = [r.order_key for r in s.messages(room)]
        assert ordered == sorted(ordered)
    assert s.vector.contiguous(ORIGIN_B) == 100
    s.close()
    again = Store(tmp_path, rooms=2)
    assert [r.order_key for r in again.messages(1)] == [r.order_key for r in s.messages(1)]


def test_append_many_is_all_or_nothing_on_misuse(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    with pytest.raises(ValueError, match="no room 2"):
        s.append_many([msg(ORIGIN_A, 1, 1), msg(ORIGIN_A, 2, 2, room=2)])
    assert s.count(1) == 0 and not (tmp_path / room_log_name(1)).exists()


def test_expire_drops_old_messages_keeps_accounts_and_marks_them_gone(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=2)
    s.append(Record(ORIGIN_A, 1, 5, RecordKind.ACCOUNT, 0, {"name": "ann", "hash": "scrypt$x"}))
    for seq in range(2, 12):
        s.append(msg(ORIGIN_A, seq, seq * 100, room=1 + seq % 2))
    s.append(msg(ORIGIN_B, 1, 250))
    assert s.expire(600) == 5  # A:2..5 (hlc 200..500) and B:1 (250); 600 itself stays
    assert s.gone.seqs[ORIGIN_A].ranges == [(2, 5)] and s.gone.seqs[ORIGIN_B].ranges == [(1, 1)]
    assert [r.seq for r in s.messages(1) if r.origin == ORIGIN_A] == [6, 8, 10]
    assert [r.seq for r in s.messages(2)] == [7, 9, 11]
    assert s.get(ORIGIN_A, 1) is not None, "accounts never expire"
    assert s.get(ORIGIN_A, 3) is None
    assert s.vector.contiguous(ORIGIN_A) == 11 and s.vector.contiguous(ORIGIN_B) == 1
    assert s.expire(500) == 0, "the horizon never moves back"
    assert not s.append(msg(ORIGIN_B, 2, 590)), "expired on receipt"
    assert s.since(2, (ORIGIN_A, 7), 10) is not None
    s.close()
    # Restart before compaction: the old lines are still in the files, but
    # nothing comes back.
    again = Store(tmp_path, rooms=2)
    assert again.horizon == 600 and again.skipped_lines == 0
    assert sorted(r.seq for r in again.messages(2)) == [7, 9, 11]
    assert again.vector.contiguous(ORIGIN_A) == 11


def test_compact_rewrites_logs_atomically_keeping_bad_lines(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    for seq in range(1, 6):
        s.append(msg(ORIGIN_A, seq, seq * 100))
    s.close()
    path = tmp_path / room_log_name(1)
    with open(path, "ab") as f:
        f.write(b"garbage line\n")
    s = Store(tmp_path, rooms=1)
    s.expire(300)
    assert s.compact() == 1
    lines = path.read_bytes().splitlines()
    assert [decode_line(ln).seq for ln in lines[:-1]] == [3, 4, 5]
    assert lines[-1] == b"garbage line"
    assert not list(tmp_path.glob("*.tmp"))
    assert s.append(msg(ORIGIN_A, 6, 600)), "the log is appendable after the rewrite"
    s.close()
    assert [r.seq for r in Store(tmp_path, rooms=1).messages(1)] == [3, 4, 5, 6]
    assert Store(tmp_path, rooms=1).compact() == 0, "nothing to do: no rewrite"


def test_own_seq_continues_after_everything_expired(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    me = s.node_id
    for seq in range(1, 4):
        s.append(msg(me, seq, seq * 100))
    s.expire(10_000)
    s.compact()
    s.close()
    again = Store(tmp_path, rooms=1)
    assert again.count(1) == 0
    assert again.next_seq() == 4, "a seq is never reused, even after a purge"


def moderation(origin: str, seq: int, hlc: int, room: int, **body: str) -> Record:
    return Record(origin, seq, hlc, RecordKind.MODERATION, room, {"by": "boss", **body})


@pytest.mark.parametrize("tombstone_first", [False, True])
def test_delete_beats_its_message_in_any_arrival_order(
    tmp_path: Path, tombstone_first: bool
) -> None:
    s = Store(tmp_path, rooms=1, policy=ANYONE)
    m = msg(ORIGIN_A, 1, 100)
    t = moderation(ORIGIN_B, 1, 200, 1, action="delete", target=m.id)
    for r in [t, m] if tombstone_first else [m, t]:
        s.append(r)
    assert s.count(1) == 0 and s.get(ORIGIN_A, 1) is None
    assert s.is_gone(ORIGIN_A, 1) and (ORIGIN_A, 1) in s.vector
    assert not s.append(m), "never stored again"
    s.close()
    again = Store(tmp_path, rooms=1, policy=ANYONE)
    assert again.count(1) == 0 and again.is_gone(ORIGIN_A, 1)
    assert len(again.moderation) == 1


@pytest.mark.parametrize("order", ["before", "after", "mixed"])
def test_clear_removes_older_messages_in_any_arrival_order(tmp_path: Path, order: str) -> None:
    s = Store(tmp_path, rooms=2, policy=ANYONE)
    old = [msg(ORIGIN_A, i, i * 10) for i in range(1, 6)]
    newer = msg(ORIGIN_A, 6, 1000)
    other_room = msg(ORIGIN_B, 1, 20, room=2)
    clear = moderation(ORIGIN_B, 2, 500, 1, action="clear")
    batches = {
        "before": [clear, *old, newer, other_room],
        "after": [*old, newer, other_room, clear],
        "mixed": [old[0], old[1], clear, *old[2:], newer, other_room],
    }[order]
    for r in batches:
        s.append(r)
    assert [r.seq for r in s.messages(1)] == [6]
    assert s.count(2) == 1
    assert all(s.is_gone(ORIGIN_A, i) for i in range(1, 6))
    assert s.vector.contiguous(ORIGIN_A) == 6
    s.expire(1)  # any compaction-triggering path
    s.compact()
    s.close()
    assert [r.seq for r in Store(tmp_path, rooms=2, policy=ANYONE).messages(1)] == [6]


def test_gone_through_names_runs_of_gone_seqs_never_a_held_one(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1, policy=ANYONE)
    s.append(Record(ORIGIN_A, 1, 5, RecordKind.ACCOUNT, 0, {"name": "ann", "hash": "scrypt$x"}))
    for seq in range(2, 53):
        s.append(msg(ORIGIN_A, seq, seq * 100))
    s.append(moderation(ORIGIN_B, 1, 9000, 1, action="delete", target=f"{ORIGIN_A}:52"))
    assert s.expire(5100) == 49  # messages 2..50
    assert s.gone.seqs[ORIGIN_A].ranges == [(2, 50)]
    assert s.gone_through(ORIGIN_A, 1) == 0, "the account at seq 1 is held"
    assert s.gone_through(ORIGIN_A, 2) == 50
    assert s.gone_through(ORIGIN_A, 30) == 50
    assert s.gone_through(ORIGIN_A, 51) == 0, "held"
    assert s.gone_through(ORIGIN_A, 52) == 52, "deleted"
    assert s.gone_through(ORIGIN_A, 53) == 0, "never seen"
    assert s.gone_through(ORIGIN_B, 1) == 0


def test_a_seq_never_received_is_not_gone_after_a_purge(tmp_path: Path) -> None:
    """Seq 1 (an account) never arrived; messages 2..20 expired.  Seq 1 must
    stay missing (to be asked for), never be answered as gone."""
    s = Store(tmp_path, rooms=1)
    for seq in range(2, 21):
        s.append(msg(ORIGIN_A, seq, seq * 100))
    s.expire(10_000)
    assert not s.is_gone(ORIGIN_A, 1) and s.gone_through(ORIGIN_A, 1) == 0
    assert (ORIGIN_A, 1) not in s.vector
    assert s.gone_through(ORIGIN_A, 2) == 20
    s.close()
    again = Store(tmp_path, rooms=1)
    assert (ORIGIN_A, 1) not in again.vector and again.gone_through(ORIGIN_A, 2) == 20
    assert again.vector.missing(ORIGIN_A, 20) == [(1, 1)]


def test_gone_reported_by_a_peer_is_kept_and_answered(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    s.note_gone(ORIGIN_A, 1, 500)
    s.save_state_if_changed()
    assert s.gone_through(ORIGIN_A, 1) == 500 and s.vector.contiguous(ORIGIN_A) == 500
    s.close()
    again = Store(tmp_path, rooms=1)
    assert again.gone_through(ORIGIN_A, 7) == 500 and again.vector.contiguous(ORIGIN_A) == 500


def test_a_record_that_cannot_be_written_is_not_held(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=1)
    with pytest.raises(UnicodeEncodeError):
        s.append(msg(ORIGIN_A, 1, 1, text="\ud800"))
    assert s.count(1) == 0 and (ORIGIN_A, 1) not in s.vector
    assert s.append(msg(ORIGIN_A, 2, 2))
    assert s.latest(1, 10)[0].seq == 2


def test_trim_keeps_the_newest_and_refuses_older_arrivals(tmp_path: Path) -> None:
    s = Store(tmp_path, rooms=2)
    for seq in range(1, 11):
        s.append(msg(ORIGIN_A, seq, seq * 100))
    s.append(msg(ORIGIN_A, 11, 150, room=2))
    assert s.trim(1, keep=4) == 6
    assert [r.seq for r in s.messages(1)] == [7, 8, 9, 10]
    assert s.count(2) == 1, "another room keeps its own"
    assert not s.append(msg(ORIGIN_B, 1, 650)), "older than the room's size horizon"
    assert s.append(msg(ORIGIN_B, 2, 650, room=2)), "room 2 has no such horizon"
    assert s.gone_through(ORIGIN_A, 1) == 6
    assert s.trim(1, keep=4) == 0
    s.close()
    again = Store(tmp_path, rooms=2)
    assert [r.seq for r in again.messages(1)] == [7, 8, 9, 10]
    assert again.size_horizon == {1: 700}


def test_a_delete_naming_no_id_on_disk_takes_nothing_out_and_start_up_goes_on(
    tmp_path: Path,
) -> None:
    """A moderation.log line (tampered, or from an older version) whose
    target is not an id: "²" is a digit to str.isdigit() but not to int(),
    and int() of 5,000 digits raises.  It removes nothing; the router starts."""
    (tmp_path / room_log_name(1)).write_bytes(encode_line(msg(ORIGIN_A, 1, 100)))
    targets = [f"{ORIGIN_A}:\u00b2", f"{ORIGIN_A}:" + "9" * 5000]
    (tmp_path / MODERATION_LOG).write_bytes(
        b"".join(
            encode_line(moderation(ORIGIN_B, seq, 200, 1, action="delete", target=target))
            for seq, target in enumerate(targets, start=1)
        )
    )
    s = Store(tmp_path, rooms=1, policy=ANYONE)
    assert s.count(1) == 1 and len(s.moderation) == 2 and s.skipped_lines == 0


def test_without_a_policy_no_record_acts_on_another(tmp_path: Path) -> None:
    """node/policy.py INERT: what a moderation record means is the app's."""
    s = Store(tmp_path, rooms=1)
    m = msg(ORIGIN_A, 1, 100)
    s.append(m)
    assert s.append(moderation(ORIGIN_B, 1, 200, 1, action="delete", target=m.id))
    assert s.append(moderation(ORIGIN_B, 2, 300, 1, action="clear"))
    assert s.count(1) == 1 and not s.is_gone(ORIGIN_A, 1)
    read = Record(ORIGIN_B, 3, 400, RecordKind.READ, 1, {"user": "ann", "room": 1, "upto": 100})
    assert not s.append(read), "a READ record without a key is held by nobody"


def test_gone_is_counted_by_reason(tmp_path: Path) -> None:
    """One word for what is not held here, with the reason: /status shows these."""
    s = Store(tmp_path, rooms=1, policy=ANYONE)
    for seq in range(1, 5):
        s.append(msg(ORIGIN_A, seq, seq * 100))
    s.append(moderation(ORIGIN_B, 1, 900, 1, action="delete", target=f"{ORIGIN_A}:4"))
    s.expire(300)  # A:1, A:2
    s.note_gone(ORIGIN_B, 5, 7)
    reads = [
        Record(ORIGIN_B, seq, 950 + seq, RecordKind.READ, 1, {"user": "Ann", "room": 1, "upto": up})
        for seq, up in ((2, 300), (3, 400))
    ]
    for r in reads:
        assert s.append(r)
    assert s.gone_counts() == {"expired": 2, "removed": 1, "reported": 3, "superseded": 1}
    assert [r.seq for r in s.messages(1)] == [3]


def test_since_finds_a_record_exactly_limit_arrivals_back_and_no_further(tmp_path: Path) -> None:
    """Arrival order, not sorted order: records arrive out of order."""
    s = Store(tmp_path, rooms=2)
    hlcs = [50, 10, 40, 20, 30, 60]
    for seq, hlc in enumerate(hlcs, start=1):
        s.append(msg(ORIGIN_A, seq, hlc))
    s.append(msg(ORIGIN_B, 1, 5, room=2))
    assert [r.seq for r in s.since(1, (ORIGIN_A, 2), 4)] == [4, 5, 3, 6]
    assert s.since(1, (ORIGIN_A, 2), 3) is None
    assert s.since(1, (ORIGIN_A, 6), 0) == []
    assert s.since(1, (ORIGIN_B, 1), 10) is None, "another room's record"
    assert s.since(2, (ORIGIN_A, 6), 10) is None
    assert s.before(2, (ORIGIN_A, 3), 10) is None, "another room's record"
    assert [r.seq for r in s.before(1, (ORIGIN_A, 3), 10)] == [2, 4, 5]
