"""app/attachments.py on a real blob store in a temporary folder, with the
clock as a parameter: the quota's 24 hours, refunds, uploads no message
named, blobs going with the last message naming them, who may have a blob
(room messages: anyone logged in; direct ones: their two people; an upload:
its uploader), and the bounds of a blob message's fields."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.attachments import (
    ORPHAN_GRACE,
    QUOTA_ACCOUNTS,
    QUOTA_ENTRIES,
    QUOTA_FILE,
    AttachmentRefused,
    Attachments,
    BlobRef,
    check_blob_fields,
    parse_blob,
    parse_thumb,
)
from node.blobs import BlobStore
from tests.unit.test_images import PDF, SVG_WITH_SCRIPT, JPEG_37x23

DAY = 24 * 3600.0
# People, by their identities (app/accounts.py: an account's first registration id).
ANN, BOB, CAROL = "0a0a0a0a0a0a0a0a:1", "0b0b0b0b0b0b0b0b:1", "0c0c0c0c0c0c0c0c:1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path, clock: Clock, per_day: int = 1000, wall: Callable[[], float] = time.time
) -> Attachments:
    """Attachments on a blob store in ``tmp_path``, ``clock`` its monotonic clock."""
    store = BlobStore(tmp_path, 10 * 1024 * 1024)
    return Attachments(
        store,
        lambda: [b"k" * 32],
        list,
        node_id="0123456789abcdef",
        max_upload=1 << 20,
        per_day=per_day,
        wall=wall,
        monotonic=clock,
    )


def test_the_quota_is_per_account_over_any_24_hours(tmp_path: Path) -> None:
    clock = Clock()
    a = make(tmp_path, clock)
    a.charge("ann", 600)
    clock.now += 3600
    a.charge("ann", 300)
    assert a.left_today("ann") == 100
    assert a.left_today("bob") == 1000, "another account has its own"
    clock.now += DAY - 3600  # the first upload is a day old
    assert a.left_today("ann") == 700
    clock.now += 3600
    assert a.left_today("ann") == 1000


def test_a_failed_upload_is_refunded(tmp_path: Path) -> None:
    a = make(tmp_path, Clock())
    entry = a.charge("ann", 400)
    a.refund("ann", entry)
    assert a.left_today("ann") == 1000


# -- the quota kept in the data folder (UploadQuota, uploads.json) ---------------------------


class Restarts:
    """A router's two clocks across restarts: the wall clock goes on, the
    monotonic clock starts again from another value in each process."""

    def __init__(self) -> None:
        self.wall = Clock()
        self.wall.now = 1_800_000_000.0
        self.mono = Clock()

    def boot(self, tmp_path: Path, per_day: int = 1000) -> Attachments:
        self.mono.now = float(hash(self.wall.now) % 100_000)  # a new process
        return make(tmp_path, self.mono, per_day, wall=self.wall)

    def later(self, seconds: float) -> None:
        self.wall.now += seconds
        self.mono.now += seconds


def quota_file(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / QUOTA_FILE).read_text())
    return data


def test_a_restart_keeps_what_each_account_uploaded_today(tmp_path: Path) -> None:
    clocks = Restarts()
    a = clocks.boot(tmp_path)
    a.charge("ann", 600)
    clocks.later(3600)
    a.charge("ann", 300)
    a.charge("bob", 50)
    # A power cut: no clean stop, a new process with another monotonic clock.
    a = clocks.boot(tmp_path)
    assert a.left_today("ann") == 100
    assert a.left_today("bob") == 950
    # The 24 hours still slide from the uploads' times, not from the restart.
    clocks.later(DAY - 3600 + 2)
    a = clocks.boot(tmp_path)
    assert a.left_today("ann") == 700
    clocks.later(3600)
    assert a.left_today("ann") == 1000 and a.left_today("bob") == 1000


def test_a_refund_is_kept_too_and_old_uploads_leave_the_file(tmp_path: Path) -> None:
    clocks = Restarts()
    a = clocks.boot(tmp_path)
    a.charge("ann", 200)
    failed = a.charge("ann", 400)
    a.refund("ann", failed)
    assert clocks.boot(tmp_path).left_today("ann") == 800
    clocks.later(DAY + 5)
    a = clocks.boot(tmp_path)
    a.charge("bob", 10)  # the next write drops what is over a day old
    assert list(quota_file(tmp_path)["accounts"]) == ["bob"]
    assert not list(tmp_path.glob("*.tmp")), "written through a temp file, renamed"


def test_a_clock_set_back_at_restart_counts_uploads_as_just_now(tmp_path: Path) -> None:
    """A router without a real-time clock may boot at an older time: what
    was uploaded "in the future" counts a whole day from now, never less."""
    clocks = Restarts()
    a = clocks.boot(tmp_path)
    a.charge("ann", 700)
    clocks.wall.now -= 30 * DAY
    a = clocks.boot(tmp_path)
    assert a.left_today("ann") == 300
    clocks.later(DAY - 10)
    assert a.left_today("ann") == 300
    clocks.later(20)
    assert a.left_today("ann") == 1000


def test_the_file_is_bounded_in_accounts_and_entries(tmp_path: Path) -> None:
    clocks = Restarts()
    a = clocks.boot(tmp_path, per_day=10**9)
    for _ in range(QUOTA_ENTRIES + 10):
        a.charge("ann", 1000)
        clocks.later(60)
    for i in range(QUOTA_ACCOUNTS + 5):
        a.charge(f"acct{i:04d}:1", 1)
        clocks.later(1)
    accounts = quota_file(tmp_path)["accounts"]
    assert len(accounts) == QUOTA_ACCOUNTS
    assert "ann" not in accounts, "the account whose last upload is oldest goes first"
    assert "acct0000:1" not in accounts and f"acct{QUOTA_ACCOUNTS + 4:04d}:1" in accounts
    assert (tmp_path / QUOTA_FILE).stat().st_size < 200_000
    # Entries of one account merge, and what they count is kept.
    b = clocks.boot(tmp_path, per_day=10**9)
    for _ in range(QUOTA_ENTRIES + 10):
        b.charge("cat", 1000)
        clocks.later(60)
    assert len(quota_file(tmp_path)["accounts"]["cat"]) == QUOTA_ENTRIES
    assert clocks.boot(tmp_path, per_day=10**9).left_today("cat") == 10**9 - 1000 * (
        QUOTA_ENTRIES + 10
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "[]",
        '{"v": 2, "accounts": {}}',
        '{"v": 1, "accounts": {"ann": [[1, -5]]}}',
        '{"v": 1, "accounts": {"ann": [[1.5, 5]]}}',
        '{"v": 1, "accounts": {"ann": [[1, 5, 6]]}}',
        '{"v": 1, "accounts": {"' + "x" * 65 + '": []}}',
        '{"v": 1, "accounts": {"ann": "x"}}',
        "[" * 200_000,
        "\udcff",
    ],
)
def test_a_damaged_quota_file_is_ignored_and_rewritten(tmp_path: Path, text: str) -> None:
    (tmp_path / QUOTA_FILE).write_bytes(text.encode(errors="surrogateescape"))
    clocks = Restarts()
    a = clocks.boot(tmp_path)
    assert a.left_today("ann") == 1000
    assert a.status()["quota"]["quota_file_bad"] == 1
    a.charge("ann", 5)
    assert clocks.boot(tmp_path).left_today("ann") == 995


def test_an_upload_no_message_names_goes_after_the_grace(tmp_path: Path) -> None:
    clock = Clock()
    a = make(tmp_path, clock)
    kept = a.store.put(JPEG_37x23)
    orphan = a.store.put(b"nobody sent me")
    a.uploaded(kept, ANN)
    a.uploaded(orphan, ANN)
    a.name(BlobRef(kept, len(JPEG_37x23), "jpeg", "a.jpg", 37, 23), ("0123456789abcdef", 1))
    clock.now += ORPHAN_GRACE - 1
    assert a.sweep() == 0
    clock.now += 1
    assert a.sweep() == 1
    assert a.store.has(kept) and not a.store.has(orphan)


def test_a_blob_goes_with_the_last_message_naming_it(tmp_path: Path) -> None:
    a = make(tmp_path, Clock())
    sha = a.store.put(JPEG_37x23)
    ref = BlobRef(sha, len(JPEG_37x23), "jpeg", "a.jpg", 37, 23)
    held = {("0123456789abcdef", 1), ("fedcba9876543210", 7)}
    for rid in held:
        a.name(ref, rid)
    assert a.named[sha].origin in {"0123456789abcdef", "fedcba9876543210"}
    held.discard(("0123456789abcdef", 1))
    assert a.forget_gone(lambda o, s: (o, s) in held) == 0
    assert a.store.has(sha), "another message still names it"
    held.clear()
    assert a.forget_gone(lambda o, s: (o, s) in held) == 1
    assert not a.store.has(sha) and sha not in a.named
    assert a.status()["deleted"] == 1


def test_attach_takes_size_kind_and_dimensions_from_the_bytes(tmp_path: Path) -> None:
    a = make(tmp_path, Clock())
    sha = a.store.put(JPEG_37x23)
    a.uploaded(sha, ANN)
    thumb = base64.b64encode(JPEG_37x23).decode()
    ref, t = a.attach(
        {"sha": sha, "name": "C:\\photos\\cat.html", "size": 1, "kind": "file"}, thumb, ANN
    )
    assert ref == BlobRef(sha, len(JPEG_37x23), "jpeg", "cat.html.jpg", 37, 23)
    assert t == thumb
    with pytest.raises(AttachmentRefused):
        a.attach({"sha": "ab" * 32, "name": "x"}, None, ANN)  # not held here
    with pytest.raises(AttachmentRefused):
        a.attach({"sha": sha, "name": "x"}, base64.b64encode(SVG_WITH_SCRIPT).decode(), ANN)


GOOD = {
    "sha": hashlib.sha256(b"x").hexdigest(),
    "size": 1,
    "kind": "file",
    "name": "x.pdf",
    "w": 0,
    "h": 0,
}


@pytest.mark.parametrize(
    "change",
    [
        {"sha": "AB" * 32},
        {"sha": 5},
        {"size": -1},
        {"size": 17 * 1024 * 1024},
        {"size": 1.5},
        {"size": False},
        {"kind": "svg"},
        {"kind": "png", "w": 0, "h": 0},
        {"kind": "png", "w": 9000, "h": 10},
        {"name": ""},
        {"name": "a/b"},
        {"name": "x" * 121},
        {"name": "bad\u202etxt.exe"},
        {"extra": 1},
    ],
)
def test_a_blob_field_out_of_bounds_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(AttachmentRefused):
        parse_blob(GOOD | change)
    assert not check_blob_fields({"blob": GOOD | change})


def test_a_good_blob_field_and_thumbnail_pass() -> None:
    assert parse_blob(GOOD).name == "x.pdf"
    thumb = base64.b64encode(JPEG_37x23).decode()
    assert parse_thumb(thumb) == JPEG_37x23
    assert check_blob_fields({"blob": GOOD, "thumb": thumb})
    for bad in ("", "%%%", base64.b64encode(b"\xff\xd8\xff" * 3000).decode(), 7):
        with pytest.raises(AttachmentRefused):
            parse_thumb(bad)


# -- who may have a blob (the access decision of GET /blob/<sha>) ----------------------------

A_DM = frozenset({ANN, BOB})  # the audience of ann and bob's conversation


def test_a_blob_only_direct_messages_name_is_for_their_two_people(tmp_path: Path) -> None:
    a = make(tmp_path, Clock())
    sha = a.store.put(PDF)
    a.name(BlobRef(sha, len(PDF), "file", "plans.pdf"), ("0123456789abcdef", 1), A_DM)
    assert a.may_see(sha, ANN) and a.may_see(sha, BOB)
    assert not a.may_see(sha, CAROL), "a third person: as if it did not exist"
    assert not a.may_see(sha, None), "nobody logged in"
    assert a.is_private(sha) and not a.is_public(sha)
    assert a.servable(sha), "routers are trusted with direct messages: a peer may fetch it"
    assert a.name_for(sha, ANN) == "plans.pdf" and a.name_for(sha, CAROL) == ""
    # Knowing the hash, carol cannot name it in a message of her own (which
    # would make it hers, or public in a room): "not on this router", as a
    # blob not held.  Ann, who may see it, can send it on.
    with pytest.raises(AttachmentRefused) as refused:
        a.attach({"sha": sha, "name": "mine.pdf"}, None, CAROL)
    assert str(refused.value) == "That file is not on this router: upload it again."
    assert a.attach({"sha": sha, "name": "again.pdf"}, None, ANN)[0].name == "again.pdf"


def test_a_room_message_naming_the_same_bytes_makes_them_public_under_its_name(
    tmp_path: Path,
) -> None:
    a = make(tmp_path, Clock())
    sha = a.store.put(JPEG_37x23)
    dm, room = ("0123456789abcdef", 1), ("fedcba9876543210", 4)
    a.name(BlobRef(sha, len(JPEG_37x23), "jpeg", "our-secret.jpg", 37, 23), dm, A_DM)
    a.name(BlobRef(sha, len(JPEG_37x23), "jpeg", "street.jpg", 37, 23), room)
    assert a.may_see(sha, CAROL) and a.is_public(sha) and not a.is_private(sha)
    assert a.name_for(sha, CAROL) == "street.jpg", "never the name a direct message gave it"
    assert a.name_for(sha, ANN) in {"our-secret.jpg", "street.jpg"}
    # The room message goes (retention, an admin's delete): private again,
    # and kept, since the direct message still names it.
    assert a.forget_gone(lambda o, s: (o, s) == dm) == 0
    assert a.store.has(sha) and not a.may_see(sha, CAROL) and a.may_see(sha, BOB)
    assert a.is_private(sha)


def test_an_upload_no_message_names_is_its_uploaders_only_and_no_peers(tmp_path: Path) -> None:
    clock = Clock()
    a = make(tmp_path, clock)
    sha = a.store.put(JPEG_37x23)
    a.uploaded(sha, ANN)
    assert a.may_see(sha, ANN), "the uploader, who holds the bytes anyway"
    assert not a.may_see(sha, BOB) and not a.may_see(sha, CAROL)
    assert not a.servable(sha), "not sent yet: no peer gets it either"
    with pytest.raises(AttachmentRefused):
        a.attach({"sha": sha, "name": "x.jpg"}, None, BOB)
    a.name(BlobRef(sha, len(JPEG_37x23), "jpeg", "x.jpg", 37, 23), ("0123456789abcdef", 2), A_DM)
    assert a.may_see(sha, BOB) and a.servable(sha) and not a.may_see(sha, CAROL)
    clock.now += ORPHAN_GRACE
    a.sweep()
    assert a.store.has(sha) and a.may_see(sha, ANN), "now as one of the conversation"


def test_uploading_bytes_someone_else_sent_privately_tells_nothing(tmp_path: Path) -> None:
    """Carol uploads the very bytes ann sent bob: she may see and send what
    she uploaded (she has it), for the hour an upload waits, exactly as if
    nobody else held them; then no longer."""
    clock = Clock()
    a = make(tmp_path, clock)
    sha = a.store.put(JPEG_37x23)
    a.name(BlobRef(sha, len(JPEG_37x23), "jpeg", "x.jpg", 37, 23), ("0123456789abcdef", 1), A_DM)
    assert not a.may_see(sha, CAROL)
    a.uploaded(sha, CAROL)
    assert a.may_see(sha, CAROL) and a.name_for(sha, CAROL) == ""
    assert sha not in a.pending, "named already: not an orphan"
    clock.now += ORPHAN_GRACE
    assert a.sweep() == 0
    assert a.store.has(sha) and not a.may_see(sha, CAROL)
    assert not a.uploaders
