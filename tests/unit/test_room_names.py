"""Room names are moderation records (app/moderation.py ``ROOM_NAME``):
checked on receipt field by field, the latest authorized one wins by
(hlc, origin, seq) whatever the arrival order; and the resend memory
(app/resend.py) is bounded."""

from __future__ import annotations

from app.chat import ROOM_NAME_MAX, ROOM_TOPIC_MAX, check_remote_record
from app.moderation import Moderation
from app.resend import PER_USER, USERS_MAX, WINDOW, SentIds
from node.clock import pack
from node.record import Record, RecordKind

PEER = "c" * 16
ADMIN_ID = "a" * 16 + ":1"
NOW_MS = 1_700_000_000_000


def naming(seq: int = 1, hlc_ms: int = NOW_MS, room: int = 1, **change: object) -> Record:
    body = {"action": "name", "by": "boss", "account": ADMIN_ID, "name": "Garden", "topic": ""}
    body.update(change)
    return Record(PEER, seq, pack(hlc_ms, 0), RecordKind.MODERATION, room, body)


def test_a_name_record_is_checked_like_every_record() -> None:
    assert check_remote_record(naming(), 4) is None
    assert (
        check_remote_record(naming(name="n" * ROOM_NAME_MAX, topic="é" * ROOM_TOPIC_MAX), 4) is None
    )
    bad = [
        naming(name="n" * (ROOM_NAME_MAX + 1)),
        naming(topic="t" * (ROOM_TOPIC_MAX + 1)),
        naming(name="two\nlines"),
        naming(name=" padded"),
        naming(name="bell\x07"),
        naming(name=5),
        naming(room=0),
        naming(room=5),
        naming(extra="field"),
    ]
    for record in bad:
        assert check_remote_record(record, 4) == "bad_moderation", record.body
    body = {k: v for k, v in naming().body.items() if k != "topic"}
    missing = Record(PEER, 1, pack(NOW_MS, 0), RecordKind.MODERATION, 1, body)
    assert check_remote_record(missing, 4) == "bad_moderation"


def test_the_latest_authorized_name_wins_in_any_order() -> None:
    older, newer = naming(1, NOW_MS, name="Old"), naming(2, NOW_MS + 1, name="New")
    forged = naming(3, NOW_MS + 2, name="Squat", account="b" * 16 + ":1")
    for order in ([older, newer, forged], [forged, newer, older]):
        m = Moderation([f"boss={ADMIN_ID}"])
        for record in order:
            m.add(record)
        assert m.room_name(1) == ("New", "")
        assert m.room_name(2) == ("", "")
    assert Moderation([f"boss={ADMIN_ID}"]).refusal(forged) == "not_admin"


def test_resend_memory_is_bounded_per_user_in_users_and_in_time() -> None:
    sent = SentIds()
    for i in range(PER_USER + 5):
        sent.remember("ann", f"c{i}", f"id{i}", 0.0)
    assert sent.first("ann", "c0", 0.0) is None  # the oldest went first
    assert sent.first("ann", f"c{PER_USER + 4}", 0.0) == f"id{PER_USER + 4}"
    assert sent.first("bob", f"c{PER_USER + 4}", 0.0) is None  # per user
    assert sent.first("ann", f"c{PER_USER + 4}", WINDOW + 1) is None  # and in time
    for u in range(USERS_MAX + 10):
        sent.remember(f"user{u}", "c", "id", 1.0)
    assert sent.first("ann", f"c{PER_USER + 4}", 1.0) is None  # least recently active out
    assert len(sent) == USERS_MAX
