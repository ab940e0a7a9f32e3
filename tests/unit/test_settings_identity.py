"""Per-person settings (blocks, the attention switches, a conversation's
read marker) belong to people, not to names (app/direct.py): when two
routers cut off from each other both gave out a name, the owner of the name
does not inherit the displaced person's settings, and the displaced person
keeps hers under the name she takes next.  Settings written by the previous
release (keyed by name, on disk or from an older router on the mesh) still
count, for the person who holds the name now.

Real stores on disk and real chats, in process; the records from "peers" go
through ``Chat.receive_records`` as the mesh hands them over.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from app.accounts import Account
from app.chat import Chat, ChatError, check_remote_record
from node.clock import pack
from node.record import Record, RecordKind
from tests.helpers import receive_one
from tests.unit.test_direct import (
    NOW_MS,
    PEER,
    POLICY,
    make_chat,
    receive_all,
    register,
    registrations,
    setting,
)

OFF = {"sound": False, "vibrate": False}


def partitioned(tmp_path: Path) -> tuple[Chat, Chat, Account]:
    """Two routers cut off from each other, "near" and "far" (its clock a
    minute ahead, so what it stamps is later): both registered "ann".  Near's
    registration is the earlier, so once they meet near's ann owns the name
    and far's is displaced.  Bob's account (made on near) reached far before
    the cut.  Returns the two chats and far's ann's account."""
    near = make_chat(tmp_path / "near", [NOW_MS / 1000])
    far = make_chat(tmp_path / "far", [NOW_MS / 1000 + 60])
    register(near, "ann", "bob")
    receive_all(far, near, RecordKind.ACCOUNT, only="bob")
    register(far, "ann")
    (far_ann,) = registrations(far, "ann")
    return near, far, far_ann


def merge(*chats: Chat) -> None:
    """The cut heals: every chat gets every record of the others."""
    for to in chats:
        for source in chats:
            if source is not to:
                receive_all(to, source)


def rename_displaced(near: Chat, far: Chat, far_ann: Account, new_name: str = "ann2") -> None:
    assert far.accounts.owner("ann").id != far_ann.id, "far's ann is displaced"
    far.rename(far_ann, new_name)
    merge(near, far)


def test_a_displaced_persons_own_settings_stay_hers(tmp_path: Path) -> None:
    """Far's ann reads bob's message, blocks bob and turns the sound on, all
    while cut off.  Once the routers meet, the ann who owns the name has
    none of that (she chose vibrate only, and never blocked bob); once the
    displaced ann has renamed, all of it is hers under her new name."""
    near, far, far_ann = partitioned(tmp_path)
    last = far.send_direct("bob", "ann", "for the ann on far")
    assert far.mark_direct_read("ann", "bob", last.hlc)
    far.set_block("ann", "bob", True)
    far.set_attention("ann", True, False)
    near.set_attention("ann", False, True)
    merge(near, far)
    for chat in (near, far):
        assert not chat.is_blocked("bob", by="ann"), (
            f"{chat.node_name}: the owner of the name inherits the displaced ann's block"
        )
        assert chat.attention("ann") == {"sound": False, "vibrate": True}, chat.node_name
    near.send_direct("bob", "ann", "hello, owner of the name")  # not refused as blocked
    rename_displaced(near, far, far_ann)
    for chat in (near, far):
        assert chat.is_blocked("bob", by="ann2"), f"{chat.node_name}: the rename lost her block"
        assert chat.attention("ann2") == {"sound": True, "vibrate": False}, chat.node_name
        (conv,) = chat.conversations("ann2")
        assert conv["peer"] == "bob" and conv["blocked"] is True
        assert conv["unread"] == 0, f"{chat.node_name}: the rename lost her read marker"
        (owners,) = chat.conversations("ann")
        assert owners["peer"] == "bob" and owners["blocked"] is False and owners["unread"] == 1
        assert chat.attention("ann") == {"sound": False, "vibrate": True}
    with pytest.raises(ChatError) as e:
        far.send_direct("bob", "ann2", "still blocked?")
    assert e.value.code == "blocked"


def test_a_block_of_a_displaced_person_stays_on_her(tmp_path: Path) -> None:
    """Bob blocks far's ann while the routers are cut off: the owner of the
    name may still write to him, the displaced ann (renamed) may not."""
    near, far, far_ann = partitioned(tmp_path)
    far.set_block("bob", "ann", True)
    merge(near, far)
    for chat in (near, far):
        assert not chat.is_blocked("ann", by="bob"), (
            f"{chat.node_name}: the owner of the name is blocked for what the other ann did"
        )
    near.send_direct("ann", "bob", "hi bob")
    rename_displaced(near, far, far_ann)
    for chat in (near, far):
        assert chat.is_blocked("ann2", by="bob") and not chat.is_blocked("ann", by="bob")
        with pytest.raises(ChatError) as e:
            chat.send_direct("ann2", "bob", "let me in")
        assert e.value.code == "blocked"


def test_the_latest_setting_of_each_person_wins_in_any_arrival_order(tmp_path: Path) -> None:
    """The same settings (two anns, one of them renamed in between) reach
    routers in many orders, accounts before or after them: every router keeps
    the same records and gives each person the same settings."""
    near, far, far_ann = partitioned(tmp_path)
    settings = [
        near.set_block("ann", "bob", True),
        near.set_attention("ann", True, True),
        near.set_block("ann", "bob", False),  # near's ann: not blocking, sound and vibrate
        far.set_attention("ann", False, True),
        far.set_block("ann", "bob", True),
    ]
    receive_all(far, near, RecordKind.ACCOUNT, only="ann")  # far learns it is displaced
    far.rename(far_ann, "ann2")
    settings.append(far.set_block("ann2", "bob", False))
    settings.append(far.set_block("ann2", "bob", True))  # far's ann: blocking, vibrate only
    every = [*near.store.index.values(), *far.store.index.values()]
    accounts = sorted(
        {r.id: r for r in every if r.kind == RecordKind.ACCOUNT}.values(), key=lambda r: r.id
    )
    assert len(settings) == 7
    orders = [settings, settings[::-1]]
    shuffle = random.Random(16)
    for _ in range(18):
        orders.append(shuffle.sample(settings, len(settings)))
    kept = None
    for n, order in enumerate(orders):
        chat = make_chat(tmp_path / f"order{n}", [NOW_MS / 1000 + 120])
        batches = [accounts, *([r] for r in order)]
        if n % 2:
            batches = batches[1:] + batches[:1]  # the accounts arrive last
        for batch in batches:
            chat.receive_records(batch)
        assert not chat.is_blocked("bob", by="ann"), f"order {n}"
        assert chat.attention("ann") == {"sound": True, "vibrate": True}, f"order {n}"
        assert chat.is_blocked("bob", by="ann2"), f"order {n}"
        assert chat.attention("ann2") == {"sound": False, "vibrate": True}, f"order {n}"
        held = sorted(r.id for r in chat.store.index.values() if r.kind == RecordKind.SETTING)
        assert kept is None or held == kept, f"order {n} keeps other records"
        kept = held
    assert kept is not None and len(kept) == 4, "the latest of each of four keys"


# -- records of the previous release: keyed by name ----------------------------------


def legacy(chat: Chat, body: dict[str, Any]) -> Record:
    """A SETTING record as the previous release wrote it (names only),
    appended to this router's own log."""
    hlc = chat.clock.tick(int(chat.wall() * 1000))
    record = Record(chat.node_id, chat.store.next_seq(), hlc, RecordKind.SETTING, 0, body)
    assert chat.store.append(record)
    return record


def test_settings_on_disk_from_the_previous_release_still_count(tmp_path: Path) -> None:
    """After an upgrade, a block, the attention switches and a read marker
    that the previous release wrote (keyed by name) belong to the person who
    holds the name; a change made now replaces them, and a later one from a
    router still running that release replaces that in turn."""
    wall = [NOW_MS / 1000]
    chat = make_chat(tmp_path, wall)
    register(chat, "ann", "bob")
    last = chat.send_direct("bob", "ann", "hi ann")
    legacy(chat, {"user": "ann", "setting": "block", "peer": "bob", "on": True})
    legacy(chat, {"user": "ann", "setting": "attention", "sound": True, "vibrate": False})
    legacy(chat, {"user": "ann", "setting": "dm_read", "peer": "bob", "upto": str(last.hlc)})
    chat.store.close()
    chat = make_chat(tmp_path, wall)  # the new release starts on that data folder
    assert chat.is_blocked("bob", by="ann") and chat.attention("ann")["sound"] is True
    (conv,) = chat.conversations("ann")
    assert conv["unread"] == 0 and conv["blocked"] is True
    assert chat.direct_read_marker("ann", "bob") == last.hlc
    wall[0] += 1
    chat.set_block("ann", "bob", False)
    chat.set_attention("ann", False, True)
    assert not chat.is_blocked("bob", by="ann")
    chat.store.close()
    chat = make_chat(tmp_path, wall)
    assert not chat.is_blocked("bob", by="ann")
    assert chat.attention("ann") == {"sound": False, "vibrate": True}
    # A router still on the previous release sends an older block (it was
    # cut off): the newer choice stands.  Then a newer one: it wins.
    old = {"user": "ann", "setting": "block", "peer": "bob", "on": True}
    chat.receive_records([setting(1, old, hlc_ms=NOW_MS + 500)])
    assert not chat.is_blocked("bob", by="ann")
    chat.receive_records([setting(2, old, hlc_ms=NOW_MS + 5_000)])
    assert chat.is_blocked("bob", by="ann")


def test_an_old_setting_of_a_name_given_twice_goes_to_its_holder(tmp_path: Path) -> None:
    """A record of the previous release names only a name: it belongs to the
    person who holds that name now (what the previous release did).  When
    an earlier registration of the name arrives, the old record follows the
    name to its owner; the displaced person keeps only what she sets from
    the new release on."""
    near, far, far_ann = partitioned(tmp_path)
    legacy(far, {"user": "ann", "setting": "attention", "sound": True, "vibrate": True})
    legacy(far, {"user": "bob", "setting": "block", "peer": "ann", "on": True})
    assert far.attention("ann")["sound"] and far.is_blocked("ann", by="bob")
    far.set_block("ann", "bob", True)  # the new release: hers
    merge(near, far)
    rename_displaced(near, far, far_ann)
    for chat in (near, far):
        assert chat.attention("ann") == {"sound": True, "vibrate": True}
        assert chat.is_blocked("ann", by="bob"), "bob's old block follows the name"
        assert chat.attention("ann2") == OFF
        assert not chat.is_blocked("ann2", by="bob")
        assert chat.is_blocked("bob", by="ann2") and not chat.is_blocked("bob", by="ann")


def test_a_peers_setting_of_either_form_is_checked_field_by_field(tmp_path: Path) -> None:
    chat = make_chat(tmp_path, [NOW_MS / 1000])
    register(chat, "ann", "bob")
    ann, bob = chat.accounts.person("ann"), chat.accounts.person("bob")
    hlc = str(pack(NOW_MS, 0))
    good = [
        {"user": "ann", "user_id": ann, "setting": "block", "peer": "bob", "peer_id": bob},
        {"user": "ann", "setting": "block", "peer": "bob"},  # the previous release's
    ]
    for n, body in enumerate(good, start=1):
        record = setting(n, {**body, "on": True})
        assert check_remote_record(record, 2) is None, record.body
    new = {"user": "ann", "user_id": ann, "setting": "block", "peer": "bob", "peer_id": bob}
    bad = [
        {**new, "on": True, "peer_id": ann},  # herself
        {**new, "on": True, "user_id": "ann"},  # an identity is an account's id
        {**new, "on": True, "peer_id": None},
        {**{k: v for k, v in new.items() if k != "peer_id"}, "on": True},  # half of each form
        {"user": "ann", "user_id": ann, "setting": "attention", "sound": True},
        {"user": "ann", "user_id": 7, "setting": "attention", "sound": True, "vibrate": True},
        {"user": "ann", "user_id": ann, "setting": "dm_read", "peer": "bob", "upto": hlc},
        {**new, "setting": "dm_read", "upto": str(pack(NOW_MS, 0) + 1)},  # the future
    ]
    for n, body in enumerate(bad, start=10):
        assert check_remote_record(setting(n, body), 2) == "bad_setting", body
        assert not receive_one(chat, setting(n, body))
    read = {**new, "setting": "dm_read", "upto": hlc}
    attention = {"user": "ann", "user_id": ann, "setting": "attention"}
    for n, body in enumerate((read, {**attention, "sound": True, "vibrate": False}), start=30):
        assert receive_one(chat, setting(n, body)), body
    assert chat.attention("ann") == {"sound": True, "vibrate": False}
    assert chat.attention("bob") == OFF
    assert chat.direct_read_marker("ann", "bob") == int(hlc)


def test_a_settings_key_is_its_people_or_for_an_old_record_its_names() -> None:
    """The store keeps the latest per key (node/policy.py): a key made of the
    record alone, so every router keeps the same one whatever it has heard;
    an identity's key never equals a name's, nor a READ marker's."""
    ann, bob = "0123456789abcdef:1", "0123456789abcdef:2"
    new = {"user": "Ann", "user_id": ann, "setting": "block", "peer": "bob", "peer_id": bob}
    old = {"user": "Ann", "setting": "block", "peer": "Bob", "on": True}
    assert POLICY.supersedes_key(setting(1, {**new, "on": True})) == ("block", ann, bob)
    assert POLICY.supersedes_key(setting(2, old)) == ("block", "ann", "bob")
    attention = {"user": "ann", "user_id": ann, "setting": "attention"}
    assert POLICY.supersedes_key(setting(3, attention)) == ("attention", ann)
    read = Record(
        PEER, 4, pack(NOW_MS, 0), RecordKind.READ, 1, {"user": "ann", "room": 1, "upto": "1"}
    )
    assert POLICY.supersedes_key(read) == ("ann", 1)
    # The longest a setting can be fits its bound.
    longest = {
        "user": "a" * 32,
        "user_id": f"{'f' * 16}:{2**32 - 1}",
        "setting": "dm_read",
        "peer": "b" * 32,
        "peer_id": f"{'e' * 16}:{2**32 - 1}",
        "upto": str(pack(NOW_MS, 0)),
    }
    assert check_remote_record(setting(5, longest), 2) is None
