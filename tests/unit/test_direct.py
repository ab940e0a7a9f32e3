"""Direct messages and settings in the store and the chat, in process
(issue 16): where they are kept, how long, and what a peer may send.

Real stores on disk and real chats; the records from "peers" go through
``Chat.receive_records`` as the mesh hands them over.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from app.attachments import Attachments
from app.bridge import is_private
from app.chat import MAX_TEXT_CHARS, Chat, ChatError, check_remote_record
from app.direct import conversation_key
from app.moderation import ChatPolicy, Moderation
from node.blobs import BlobStore
from node.clock import pack
from node.record import Record, RecordKind
from node.store import DIRECT_LOG, SETTINGS_LOG, Store
from tests.helpers import receive_one
from tests.unit.test_images import SVG_WITH_SCRIPT, JPEG_37x23

POLICY = ChatPolicy(Moderation().authorizes)  # as app/server.py makes the store
PEER = "0f0f0f0f0f0f0f09"
NOW_MS = 1_800_000_000_000
THUMB = base64.b64encode(JPEG_37x23).decode()


def make_chat(path: Path, wall: list[float]) -> Chat:
    return Chat(Store(path, 2, policy=POLICY), "here", wall=lambda: wall[0])


def register(chat: Chat, *names: str) -> None:
    for name in names:
        chat.register(name, "correct horse", "correct horse")


def direct(seq: int, body: dict[str, Any], hlc_ms: int = NOW_MS, room: int = 0) -> Record:
    return Record(PEER, seq, pack(hlc_ms, 0), RecordKind.DIRECT, room, body)


def setting(seq: int, body: dict[str, Any], hlc_ms: int = NOW_MS) -> Record:
    return Record(PEER, seq, pack(hlc_ms, 0), RecordKind.SETTING, 0, body)


def good_dm(chat: Chat) -> dict[str, Any]:
    """Bob's message to ann as a peer writes it: names and identities."""
    ids = {"from_id": chat.accounts.person("bob"), "to_id": chat.accounts.person("ann")}
    return {"from": "bob", "to": "ann", **ids, "node": "far", "time": NOW_MS, "text": "hi ann"}


@pytest.fixture
def chat(tmp_path: Path) -> Chat:
    c = make_chat(tmp_path, [NOW_MS / 1000])
    register(c, "ann", "bob", "cat")
    return c


def test_a_direct_message_is_kept_per_conversation_and_reloaded(tmp_path: Path) -> None:
    wall = [NOW_MS / 1000]
    chat = make_chat(tmp_path, wall)
    register(chat, "ann", "bob", "cat")
    sent = chat.send_direct("ann", "Bob", "hello bob")  # names compare by key
    chat.send_direct("bob", "ann", "hello ann")
    chat.send_direct("cat", "ann", "cat here")
    key = chat.conversation("bob", "ann")
    assert (
        key
        == chat.conversation("Ann", "BOB")
        == conversation_key(str(chat.accounts.person("ann")), str(chat.accounts.person("bob")))
    )
    assert [r.body["text"] for r in chat.direct_history("ann", "bob")[0]] == [
        "hello bob",
        "hello ann",
    ]
    assert [r.body["text"] for r in chat.direct_history("ann", "cat")[0]] == ["cat here"]
    assert chat.direct_history("bob", "cat")[0] == []
    assert sent.room == 0 and chat.store.conversation_of(sent.origin, sent.seq) == key
    assert (tmp_path / DIRECT_LOG).exists()
    chat.store.close()
    again = Store(tmp_path, 2, policy=POLICY)
    assert [r.body["text"] for r in again.latest(key, 10)] == ["hello bob", "hello ann"]
    assert again.count(1) == 0, "no room holds a direct message"


def test_retention_takes_direct_messages_and_keeps_settings(tmp_path: Path) -> None:
    wall = [NOW_MS / 1000]
    chat = make_chat(tmp_path, wall)
    register(chat, "ann", "bob")
    chat.send_direct("ann", "bob", "old news")
    chat.set_block("ann", "bob", True)
    chat.set_attention("ann", True, False)
    assert chat.store.expire(pack(NOW_MS + 60_000, 0)) == 1
    assert chat.direct_history("ann", "bob")[0] == []
    assert chat.is_blocked("bob", by="ann") and chat.attention("ann")["sound"]
    assert chat.store.compact() >= 1
    assert "old news" not in (tmp_path / DIRECT_LOG).read_text()
    chat.store.close()
    again = Store(tmp_path, 2, policy=POLICY)
    key = chat.conversation("ann", "bob")
    assert again.latest(key, 10) == []
    # A copy from a router that was away is refused: it is gone here.
    late = direct(1, {**good_dm(chat), "text": "old news"}, hlc_ms=NOW_MS)
    assert not again.append(late)


def test_the_latest_setting_wins_in_any_order(chat: Chat) -> None:
    on = setting(1, {"user": "ann", "setting": "block", "peer": "bob", "on": True}, NOW_MS + 2)
    off = setting(2, {"user": "ann", "setting": "block", "peer": "bob", "on": False}, NOW_MS + 1)
    assert receive_one(chat, on) and not receive_one(chat, off), "the older one is superseded"
    assert chat.is_blocked("bob", by="ann")
    with pytest.raises(ChatError) as e:
        chat.send_direct("bob", "ann", "let me in")
    assert e.value.code == "blocked" and "does not take" in str(e.value)
    with pytest.raises(ChatError) as e:
        chat.send_direct("ann", "bob", "but I may?")
    assert e.value.code == "blocked" and "You blocked" in str(e.value)
    chat.set_block("ann", "bob", False)
    chat.send_direct("bob", "ann", "thanks")


def test_no_one_writes_to_oneself_or_to_nobody(chat: Chat) -> None:
    for peer in ("ann", "ANN", "nobody", 7):
        with pytest.raises(ChatError) as e:
            chat.send_direct("ann", peer, "hello")
        assert e.value.code == "not_found"


def test_a_peers_direct_message_is_checked_field_by_field(chat: Chat) -> None:
    GOOD_DM = good_dm(chat)
    assert check_remote_record(direct(1, GOOD_DM), 2) is None
    bad: list[Record] = [
        direct(2, {**GOOD_DM, "extra": 1}),
        direct(3, {k: v for k, v in GOOD_DM.items() if k != "node"}),
        direct(4, {**GOOD_DM, "to": "bob"}),  # to oneself
        direct(5, {**GOOD_DM, "to": "BOB"}),  # the same person by key
        direct(6, {**GOOD_DM, "from": "no spaces allowed"}),
        direct(7, {**GOOD_DM, "to": ["ann"]}),
        direct(8, {**GOOD_DM, "text": "x" * (MAX_TEXT_CHARS + 1)}),
        direct(9, {**GOOD_DM, "text": "bell\x07"}),
        direct(10, {**GOOD_DM, "text": "   "}),
        direct(11, {**GOOD_DM, "time": True}),
        direct(12, {**GOOD_DM, "time": NOW_MS + 2 * 24 * 3600 * 1000}),  # far ahead of its HLC
        direct(13, {**GOOD_DM, "node": "n" * 200}),
        direct(14, GOOD_DM, room=1),  # a direct message is in no room
        direct(15, {k: v for k, v in GOOD_DM.items() if k != "to_id"}),
        direct(16, {**GOOD_DM, "to_id": GOOD_DM["from_id"]}),  # one person twice
        direct(17, {**GOOD_DM, "to_id": "ann"}),  # an identity is an account's id
        direct(18, {**GOOD_DM, "from_id": 7}),
    ]
    for record in bad:
        assert check_remote_record(record, 2) == "bad_direct", record.body
        assert not receive_one(chat, record)
    assert chat.refused["bad_direct"] == len(bad)
    assert receive_one(chat, direct(1, GOOD_DM))
    assert [r.body["text"] for r in chat.direct_history("ann", "bob")[0]] == ["hi ann"]


def test_a_peers_setting_is_checked_field_by_field(chat: Chat) -> None:
    good = {"user": "ann", "setting": "attention", "sound": True, "vibrate": False}
    assert check_remote_record(setting(1, good), 2) is None
    hlc = pack(NOW_MS, 0)
    bad = [
        {**good, "sound": 1},
        {**good, "extra": True},
        {"user": "ann", "setting": "volume", "level": 11},
        {"user": "ann", "setting": "block", "peer": "ann", "on": True},  # oneself
        {"user": "ann", "setting": "block", "peer": "bob", "on": "yes"},
        {"user": "ann", "setting": "dm_read", "peer": "bob", "upto": str(hlc + 1)},  # future
        {"user": "ann", "setting": "dm_read", "peer": "bob", "upto": "x"},
        {"user": "a b", "setting": "attention", "sound": True, "vibrate": True},
    ]
    for n, body in enumerate(bad, start=2):
        assert check_remote_record(setting(n, body), 2) == "bad_setting", body
        assert not receive_one(chat, setting(n, body))
    padded = setting(20, {**good, "user": "a" * 32})
    assert check_remote_record(padded, 2) is None  # a long name is fine
    assert receive_one(chat, setting(1, good))
    assert chat.attention("ann") == {"sound": True, "vibrate": False}
    assert chat.attention("bob") == {"sound": False, "vibrate": False}


def test_settings_survive_a_restart_and_compaction(tmp_path: Path) -> None:
    wall = [NOW_MS / 1000]
    chat = make_chat(tmp_path, wall)
    register(chat, "ann", "bob")
    chat.set_attention("ann", True, True)
    wall[0] += 1
    chat.set_attention("ann", False, True)
    chat.store.compact()
    assert (tmp_path / SETTINGS_LOG).read_text().count("attention") == 1
    chat.store.close()
    again = make_chat(tmp_path, wall)
    assert again.attention("ann") == {"sound": False, "vibrate": True}


def test_scroll_back_and_search_stay_in_ones_own_conversation(chat: Chat) -> None:
    theirs = chat.send_direct("bob", "cat", "secret plans")
    chat.send_direct("ann", "bob", "plans for lunch")
    rid = (theirs.origin, theirs.seq)
    with pytest.raises(ChatError):
        chat.direct_older("ann", "bob", rid, 10)
    with pytest.raises(ChatError) as e:
        chat.direct_around("ann", "bob", rid)
    assert e.value.code == "not_found"
    with pytest.raises(ChatError):
        chat.around(1, rid)  # nor from a room
    found = chat.direct_search("ann", "bob", "PLANS")
    assert [f["text"] for f in found] == ["plans for lunch"]
    assert chat.search("ann", 1, "secret") == []


def test_the_room_list_counts_unread_direct_messages(chat: Chat) -> None:
    chat.send_direct("bob", "ann", "one")
    last = chat.send_direct("bob", "ann", "two")
    chat.send_direct("ann", "bob", "mine")
    (conv,) = chat.conversations("ann")
    assert conv["peer"] == "bob" and conv["unread"] == 2 and conv["last"]["text"] == "mine"
    assert chat.conversations("cat") == []
    assert chat.mark_direct_read("ann", "bob", last.hlc)
    assert chat.conversations("ann")[0]["unread"] == 0
    assert chat.conversations("bob")[0]["unread"] == 1


def test_a_direct_read_marker_not_yet_written_is_written_at_shutdown(tmp_path: Path) -> None:
    """As a room's: a marker held back by the rate limit is written when
    the router stops (``flush_reads``), so a restart does not forget it."""
    chat = make_chat(tmp_path, [NOW_MS / 1000])
    register(chat, "ann", "bob")
    first = chat.send_direct("bob", "ann", "one")
    last = chat.send_direct("bob", "ann", "two")
    assert chat.mark_direct_read("ann", "bob", first.hlc)  # written at once
    assert chat.mark_direct_read("ann", "bob", last.hlc)  # too soon: held back
    chat.flush_reads()
    chat.store.close()
    again = make_chat(tmp_path, [NOW_MS / 1000])
    assert again.direct_read_marker("ann", "bob") == last.hlc
    assert again.conversations("ann")[0]["unread"] == 0


def test_the_bridge_never_carries_private_records(chat: Chat) -> None:
    assert is_private(direct(1, good_dm(chat)))
    assert is_private(setting(1, {"user": "ann", "setting": "attention"}))
    plain = Record(PEER, 1, 1, RecordKind.MESSAGE, 1, {})
    assert not is_private(plain)


def test_settings_are_rate_limited_per_person(chat: Chat) -> None:
    """Each setting is a record on flash and a datagram to every router."""
    for n in range(5):
        chat.set_attention("ann", n % 2 == 0, False)
    with pytest.raises(ChatError) as e:
        chat.set_attention("ann", True, True)
    assert e.value.code == "rate_limited"
    chat.set_attention("bob", True, True)  # someone else's own allowance


def test_a_direct_message_belongs_to_accounts_not_to_names(tmp_path: Path) -> None:
    """Two routers cut off from each other both let someone register "ann";
    the earlier registration owns the name everywhere once they meet.  What
    bob wrote on the far router to *its* ann stays hers: the owner of the name
    never sees it, and it follows the displaced ann to her new name."""
    near_wall, far_wall = [NOW_MS / 1000], [NOW_MS / 1000 + 60]
    near, far = make_chat(tmp_path / "near", near_wall), make_chat(tmp_path / "far", far_wall)
    register(near, "ann", "bob")  # the first ann: she owns the name
    receive_all(far, near, RecordKind.ACCOUNT, only="bob")  # bob's account reached far
    register(far, "ann")  # cut off: far lets a second ann register
    far.send_direct("bob", "ann", "for the ann on far")
    receive_all(near, far)  # the cut heals: each gets everything
    receive_all(far, near)
    for chat in (near, far):
        assert [r.body["text"] for r in chat.direct_history("ann", "bob")[0]] == [], (
            "the owner of the name sees a message written to another account"
        )
    displaced = far.accounts.authenticate("ann", "correct horse")
    assert displaced is not None  # both anns chose the same password: the owner matches first
    (far_ann,) = [a for a in registrations(far, "ann") if a.id != near.accounts.owner("ann").id]
    far.rename(far_ann, "ann2")
    receive_all(near, far)
    for chat in (near, far):
        assert [r.body["text"] for r in chat.direct_history("ann2", "bob")[0]] == [
            "for the ann on far"
        ]
        assert [r.body["text"] for r in chat.direct_history("bob", "ann2")[0]] == [
            "for the ann on far"
        ]


def receive_all(to: Chat, source: Chat, kind: RecordKind | None = None, only: str = "") -> None:
    records = sorted(source.store.index.values(), key=lambda r: r.order_key)
    if kind is not None:
        records = [r for r in records if r.kind == kind and r.body.get("name") == only]
    to.receive_records([r for r in records if to.store.get(r.origin, r.seq) is None])


def registrations(chat: Chat, name: str) -> list[Any]:
    return [
        chat.accounts.by_id(r.id)
        for r in chat.store.accounts
        if r.body.get("name") == name and "account" not in r.body
    ]


# -- pictures and files in direct messages ------------------------------------------


def chat_with_blobs(path: Path, wall: list[float]) -> Chat:
    store = Store(path, 2, policy=POLICY)
    blobs = Attachments(
        BlobStore(path, 1 << 20),
        lambda: [b"k" * 32],
        list,
        node_id=store.node_id,
        max_upload=1 << 20,
        per_day=1 << 20,
    )
    return Chat(store, "here", wall=lambda: wall[0], blobs=blobs)


def blob_body(sha: str, name: str = "us.jpg") -> dict[str, Any]:
    blob = {"sha": sha, "size": len(JPEG_37x23), "kind": "jpeg", "name": name, "w": 37, "h": 23}
    return {"blob": blob, "thumb": THUMB}


def test_a_picture_in_a_direct_message_is_for_its_two_people(tmp_path: Path) -> None:
    """Sent here and received from a peer, and after a restart: the blob is
    ann's and bob's; cat, a third person, may neither have it nor name it."""
    wall = [NOW_MS / 1000]
    chat = chat_with_blobs(tmp_path, wall)
    register(chat, "ann", "bob", "cat")
    blobs = chat.blobs
    assert blobs is not None
    ann, bob, cat = (str(chat.accounts.person(n)) for n in ("ann", "bob", "cat"))
    mine = blobs.store.put(JPEG_37x23)
    blobs.uploaded(mine, ann)
    record = chat.send_direct("ann", "bob", "", blob={"sha": mine, "name": "us.jpg"}, thumb=THUMB)
    assert record.body["blob"]["sha"] == mine and record.body["text"] == ""
    frame = chat.direct_history("bob", "ann")[0][-1]
    assert frame.body["thumb"] == THUMB
    assert blobs.may_see(mine, bob) and blobs.may_see(mine, ann)
    assert not blobs.may_see(mine, cat)
    with pytest.raises(ChatError) as e:  # cat names its hash in a room: refused
        chat.post("cat", 1, "", blob={"sha": mine, "name": "leak.jpg"}, thumb=THUMB)
    assert e.value.code == "bad_blob"
    with pytest.raises(ChatError):  # nor in a direct message of hers
        chat.send_direct("cat", "bob", "", blob={"sha": mine, "name": "leak.jpg"}, thumb=THUMB)
    # One from a peer, bob's to ann, naming bytes this router lacks: noted
    # for the two of them, so a page of theirs may have it fetched.
    far = hashlib.sha256(b"far away photo").hexdigest()
    assert receive_one(chat, direct(1, {**good_dm(chat), "text": "", **blob_body(far)}))
    assert blobs.may_see(far, ann) and not blobs.may_see(far, cat)
    assert blobs.servable(far) and blobs.is_private(far)
    chat.store.close()
    again = chat_with_blobs(tmp_path, wall)
    assert again.blobs is not None
    for sha in (mine, far):
        assert again.blobs.may_see(sha, ann) and again.blobs.may_see(sha, bob)
        assert not again.blobs.may_see(sha, cat), "after a restart as before"
    # Retention takes the messages, and their blobs with them.
    assert again.store.expire(pack(NOW_MS + 60_000, 0)) == 2
    assert again.forget_gone_blobs() == 1  # the one held here; the peer's was never fetched
    assert not again.blobs.store.has(mine) and not again.blobs.may_see(mine, ann)


def test_a_peers_direct_picture_is_checked_as_a_room_picture(chat: Chat) -> None:
    sha = hashlib.sha256(JPEG_37x23).hexdigest()
    good = {**good_dm(chat), "text": "", **blob_body(sha)}
    assert check_remote_record(direct(1, good), 2) is None
    assert check_remote_record(direct(1, {**good, "text": "a caption"}), 2) is None
    no_thumb = {k: v for k, v in good.items() if k != "thumb"}
    assert check_remote_record(direct(1, {**no_thumb, **blob_body(sha)}), 2) is None
    bad_blob = {**good, "blob": {**good["blob"], "sha": "AB" * 32}}
    assert check_remote_record(direct(2, bad_blob), 2) == "bad_blob"
    svg = base64.b64encode(SVG_WITH_SCRIPT).decode()
    assert check_remote_record(direct(3, {**good, "thumb": svg}), 2) == "bad_blob"
    only_thumb = {**good_dm(chat), "thumb": THUMB}  # a thumbnail without its blob
    assert check_remote_record(direct(4, only_thumb), 2) == "bad_direct"
    assert check_remote_record(direct(5, {**good, "text": "bell\x07"}), 2) == "bad_direct"
    long_caption = {**good, "text": "\U0001f600" * MAX_TEXT_CHARS}  # 8,000 bytes and the thumbnail
    assert check_remote_record(direct(6, long_caption), 2) is None
    assert is_private(direct(1, good)), "the bridge never carries it"
