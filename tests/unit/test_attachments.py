"""app/attachments.py on a real blob store in a temporary folder, with the
clock as a parameter: the quota's 24 hours, refunds, uploads no message
named, blobs going with the last message naming them, and the bounds of a
blob message's fields."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from app.attachments import (
    ORPHAN_GRACE,
    AttachmentRefused,
    Attachments,
    BlobRef,
    check_blob_fields,
    parse_blob,
    parse_thumb,
)
from node.blobs import BlobStore
from tests.unit.test_images import SVG_WITH_SCRIPT, JPEG_37x23

DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, per_day: int = 1000) -> Attachments:
    store = BlobStore(tmp_path, 10 * 1024 * 1024)
    return Attachments(
        store,
        lambda: [b"k" * 32],
        list,
        node_id="0123456789abcdef",
        max_upload=1 << 20,
        per_day=per_day,
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


def test_an_upload_no_message_names_goes_after_the_grace(tmp_path: Path) -> None:
    clock = Clock()
    a = make(tmp_path, clock)
    kept = a.store.put(JPEG_37x23)
    orphan = a.store.put(b"nobody sent me")
    a.uploaded(kept)
    a.uploaded(orphan)
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
    thumb = base64.b64encode(JPEG_37x23).decode()
    ref, t = a.attach(
        {"sha": sha, "name": "C:\\photos\\cat.html", "size": 1, "kind": "file"}, thumb
    )
    assert ref == BlobRef(sha, len(JPEG_37x23), "jpeg", "cat.html.jpg", 37, 23)
    assert t == thumb
    with pytest.raises(AttachmentRefused):
        a.attach({"sha": "ab" * 32, "name": "x"}, None)  # not held here
    with pytest.raises(AttachmentRefused):
        a.attach({"sha": sha, "name": "x"}, base64.b64encode(SVG_WITH_SCRIPT).decode())


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
