"""Unread counts: READ records (how far a user has read a room) kept per
user on the server, surviving a restart, following the person to another
router, checked when they come from a peer, buried when superseded and
expired with retention."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app import reads
from app.chat import READ_RECORD_INTERVAL, Chat, check_remote_record
from app.moderation import ChatPolicy, Moderation
from node.record import Record, RecordKind
from node.store import READS_LOG, Store
from tests.helpers import (
    HttpSession,
    Router,
    WsClient,
    loopback_mesh,
    receive_one,
    routers,
    wait_for,
)

OTHER = "b" * 16
POLICY = ChatPolicy(Moderation().authorizes)  # as app/server.py makes the store


def unread(session: HttpSession) -> dict[int, int]:
    """Room -> unread count, from the room list (``/``)."""
    page = session.get("/")
    assert page.status == 200, page.text[:300]
    return {
        int(n): int(u) for n, u in re.findall(r'data-room="(\d+)" data-unread="(\d+)"', page.text)
    }


def post(w: WsClient, text: str) -> dict:
    w.send({"type": "send", "text": text, "client_id": text[:60]})
    w.recv_until(lambda f: f.get("type") == "ack" and f["client_id"] == text[:60])
    return w.recv_until(lambda f: f.get("type") == "message" and f["text"] == text)


def read_lines(r: Router) -> list[dict]:
    path = r.data_dir / READS_LOG
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def test_counts_per_room_own_messages_never_count_and_a_restart_keeps_them(tmp_path: Path) -> None:
    with routers(tmp_path, "solo", extra=["--no-mesh"]) as (r,):
        ann_http = r.user("ann")
        bob_http = r.user("bob")
        bob1, bob2 = r.ws(bob_http, 1), r.ws(bob_http, 2)
        last = [post(bob1, f"one {i}") for i in range(3)][-1]
        for i in range(2):
            post(bob2, f"two {i}")
        assert unread(ann_http) == {1: 3, 2: 2, 3: 0, 4: 0}
        assert unread(bob_http) == {1: 0, 2: 0, 3: 0, 4: 0}  # his own

        ann = r.ws(ann_http, 1)
        ann.recv_type("history")
        ann.send({"type": "read", "upto": last["hlc"]})
        wait_for(lambda: unread(ann_http)[1] == 0, what="room 1 read")
        assert unread(ann_http) == {1: 0, 2: 2, 3: 0, 4: 0}
        # Ann's own message in room 2 adds nothing; Bob's next one does.
        ann2 = r.ws(ann_http, 2)
        post(ann2, "mine")
        assert unread(ann_http)[2] == 2
        post(bob1, "one more")
        assert unread(ann_http)[1] == 1
        lines = read_lines(r)
        assert [ln["kind"] for ln in lines] == ["read"]
        assert lines[0]["body"] == {"user": "ann", "room": 1, "upto": int(last["hlc"])}
        # A marker that does not move forward writes nothing.
        ann.send({"type": "read", "upto": last["hlc"]})
        ann.send({"type": "read", "upto": "0"})
        ann.send({"type": "read", "upto": "12x"})
        assert ann.recv_type("error")["code"] == "bad_request"
        assert len(read_lines(r)) == 1

        r.stop()
        r.start()
        ann_http = r.user("ann", register=False)
        assert unread(ann_http) == {1: 1, 2: 2, 3: 0, 4: 0}


def test_a_read_on_one_router_clears_the_count_on_the_other(tmp_path: Path) -> None:
    extra = [*loopback_mesh(tmp_path)]
    with routers(tmp_path, "ra", "rb", extra=extra) as (a, b):
        ann_a = a.user("ann")
        bob = a.ws(a.user("bob"), 1)
        last = [post(bob, f"news {i}") for i in range(3)][-1]
        wait_for(
            lambda: b.status()["rooms"]["1"] == 3 and b.status()["accounts"] == 2,
            what="messages and accounts on B",
        )
        ann_b = b.user("ann", register=False)
        assert unread(ann_b)[1] == 3
        ann = a.ws(ann_a, 1)
        ann.recv_type("history")
        ann.send({"type": "read", "upto": last["hlc"]})
        wait_for(lambda: unread(ann_b)[1] == 0, what="the read marker on B")
        assert [ln["body"]["user"] for ln in read_lines(b)] == ["ann"]


def make_chat(path: Path, wall: list[float]) -> Chat:
    return Chat(Store(path, 2, policy=POLICY), "here", wall=lambda: wall[0])


def message(seq: int, hlc: int, author: str = "bob", room: int = 1) -> Record:
    return Record(
        OTHER,
        seq,
        hlc,
        RecordKind.MESSAGE,
        room,
        {"author": author, "node": "there", "time": 1, "text": f"m{seq}"},
    )


def read(
    seq: int, hlc: int, upto: object, user: str = "ann", room: int = 1, **extra: object
) -> Record:
    return Record(
        OTHER, seq, hlc, RecordKind.READ, room, {"user": user, "room": room, "upto": upto, **extra}
    )


def test_markers_are_rate_limited_and_the_latest_wins(tmp_path: Path) -> None:
    wall = [1000.0]
    chat = make_chat(tmp_path, wall)
    chat.receive_records([message(i, 100 * i) for i in range(1, 6)])
    assert reads.unread(chat.store, 1, "ann") == 5
    assert chat.mark_read("ann", 1, 200)  # written at once
    assert reads.read_marker(chat.store, "ann", 1) == 200
    assert chat.mark_read("Ann", 1, 300)  # too soon: pending, but counted already
    assert reads.read_marker(chat.store, "ann", 1) == 200 and chat.read_marker("ANN", 1) == 300
    assert reads.unread(chat.store, 1, "ann", chat.read_marker("ann", 1)) == 2
    assert not chat.mark_read("ann", 1, 250)  # backwards: nothing
    assert chat.mark_read("ann", 1, 10**19)  # past the newest message: clamped
    assert chat.read_marker("ann", 1) == 500
    wall[0] += READ_RECORD_INTERVAL
    first = chat.store.latest_of(("ann", 1))
    assert first is not None
    written = chat.write_read(("ann", 1))
    assert written is not None and written.body["upto"] == 500
    # The superseded marker is gone for good: answered as gone, not stored again.
    assert chat.store.get(first.origin, first.seq) is None
    assert chat.store.is_gone(first.origin, first.seq)
    assert not receive_one(chat, first)
    # From a peer: an older marker changes nothing, a newer one wins.
    assert not receive_one(chat, read(10, 600, "400"))
    assert reads.read_marker(chat.store, "ann", 1) == 500
    assert receive_one(chat, read(11, 650, "550"))
    assert reads.read_marker(chat.store, "ann", 1) == 550
    chat.store.close()
    again = Store(tmp_path, 2, policy=POLICY)
    assert reads.read_marker(again, "ann", 1) == 550
    assert again.skipped_lines == 0
    assert again.compact() == 1  # the superseded lines leave reads.log
    assert len((tmp_path / READS_LOG).read_text().splitlines()) == 1
    again.close()
    third = Store(tmp_path, 2, policy=POLICY)
    assert reads.read_marker(third, "ann", 1) == 550
    assert third.is_gone(first.origin, first.seq) and third.is_gone(OTHER, 10)


def test_markers_expire_with_retention(tmp_path: Path) -> None:
    chat = make_chat(tmp_path, [1000.0])
    chat.receive_records([message(1, 100), read(2, 150, 100), message(3, 300)])
    assert reads.unread(chat.store, 1, "ann") == 1
    chat.store.expire(200)
    assert chat.store.latest_by_key == {} and chat.store.is_gone(OTHER, 2)
    assert reads.unread(chat.store, 1, "ann") == 1  # what remains is after the marker anyway
    assert not receive_one(chat, read(2, 150, 100))
    assert not receive_one(chat, read(4, 160, 100))  # older than the horizon
    assert chat.store.compact() == 2  # room-1.log and reads.log
    chat.store.close()
    again = Store(tmp_path, 2, policy=POLICY)
    assert again.latest_by_key == {} and again.is_gone(OTHER, 2)


def test_read_records_from_peers_are_checked(tmp_path: Path) -> None:
    good = read(1, 500, "400")
    assert check_remote_record(good, 4) is None
    assert check_remote_record(read(1, 500, 400), 4) is None
    bad = [
        read(1, 500, "600"),  # reads the future
        read(1, 500, "-1"),
        read(1, 500, "4e2"),
        read(1, 500, True),
        read(1, 500, "9" * 21),
        read(1, 500, 2**64),
        read(1, 500, "1", user="bad name"),
        read(1, 500, "1", user=7),
        read(1, 500, "1", room=9),
        read(1, 500, "1", extra="x"),
        Record(OTHER, 1, 500, RecordKind.READ, 1, {"user": "ann", "room": 2, "upto": 1}),
        Record(OTHER, 1, 500, RecordKind.READ, 1, {"user": "ann", "room": True, "upto": 1}),
        Record(OTHER, 1, 500, RecordKind.READ, 0, {"user": "ann", "room": 0, "upto": 1}),
    ]
    for record in bad:
        assert check_remote_record(record, 4) == "bad_read", record
    chat = make_chat(tmp_path, [1000.0])
    assert not chat.receive_records(bad[:3])
    assert chat.refused["bad_read"] == 3
