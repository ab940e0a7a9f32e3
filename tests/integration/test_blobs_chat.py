"""Pictures and files in the chat, across real routers on loopback
(app/attachments.py, app/chat.py, app/routes_blobs.py).

- A photo posted on A reaches B's pages with its thumbnail at once; its
  bytes move only when a page on B asks, fetched from A, then held on B.
- An admin's delete takes the blob off every router's disk; so does retention.
- A file downloads under its name, as an attachment.
- Every field of a blob message from the mesh is bounded, and the
  thumbnail checked again: a record that breaks one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from node.clock import pack
from node.record import Record, RecordKind
from node.store import room_log_name
from tests.helpers import (
    HttpSession,
    Router,
    WsClient,
    free_port,
    loopback_mesh,
    running,
    wait_for,
)
from tests.integration.test_hardening_records import KeyHolder
from tests.integration.test_moderation import bind_admin
from tests.unit.test_images import PDF, SVG_WITH_SCRIPT, JPEG_37x23

THUMB = base64.b64encode(JPEG_37x23).decode()
KEY_HOLDER = "0f0f0f0f0f0f0f05"


def two_routers(tmp_path: Path, *extra: str) -> list[Router]:
    mesh = loopback_mesh(tmp_path)
    ports = [free_port(), free_port()]
    made = []
    for i, name in enumerate(("ra", "rb")):
        other = ports[1 - i]
        r = Router(
            tmp_path / name / "data",
            ports[i],
            name,
            [*mesh, "--blob-peer", f"127.0.0.1:{other}", *extra],
        )
        r.data_dir.mkdir(parents=True)
        made.append(r)
    return made


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[Router]]:
    with running(two_routers(tmp_path)) as made:
        yield made


def upload(r: Router, s: HttpSession, data: bytes, name: str) -> dict[str, object]:
    token = s.csrf("/")
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/room/1/upload?name={quote(name)}",
            body=data,
            headers={"Cookie": s.cookie_header(), "X-CSRF-Token": token},
        )
        resp = conn.getresponse()
        found = json.loads(resp.read())
        assert resp.status == 200, found
        return found  # type: ignore[no-any-return]
    finally:
        conn.close()


def send_blob(
    w: WsClient, found: dict[str, object], thumb: str | None, client_id: str
) -> dict[str, object]:
    frame: dict[str, object] = {
        "type": "send",
        "client_id": client_id,
        "text": "",
        "blob": {"sha": found["sha"], "name": found["name"]},
    }
    if thumb is not None:
        frame["thumb"] = thumb
    w.send(frame)
    return w.recv_until(
        lambda f: f.get("client_id") == client_id and f.get("type") in ("ack", "error")
    )


def send_photo(
    r: Router, s: HttpSession, w: WsClient, name: str, client_id: str
) -> tuple[str, dict[str, object]]:
    """``JPEG_37x23`` uploaded as ``name`` and sent on ``w`` with its
    thumbnail: its sha and the ack."""
    found = upload(r, s, JPEG_37x23, name)
    ack = send_blob(w, found, THUMB, client_id)
    assert ack["type"] == "ack", ack
    return str(found["sha"]), ack


def get(r: Router, s: HttpSession, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": s.cookie_header()})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def blob_file(r: Router, sha: str) -> Path:
    return r.data_dir / "blobs" / sha[:2] / sha


def test_a_photo_from_a_is_fetched_by_b_only_when_a_page_asks(pair: list[Router]) -> None:
    a, b = pair
    ann = a.user("ann")
    bob = b.user("bob")
    wb = b.ws(bob)
    wb.recv_type("history")
    wa = a.ws(ann)
    wa.recv_type("history")
    sha, ack = send_photo(a, ann, wa, "street.jpg", "p1")
    mine = wa.recv_until(lambda f: f.get("type") == "message" and f.get("id") == ack["id"])
    assert mine["blob"] == {
        "sha": sha,
        "size": len(JPEG_37x23),
        "kind": "jpeg",
        "name": "street.jpg",
        "w": 37,
        "h": 23,
    }
    assert mine["thumb"] == THUMB and mine["text"] == ""
    # B's page has the message and its thumbnail: the room is complete there...
    theirs = wb.recv_until(lambda f: f.get("type") == "message" and f.get("id") == ack["id"], 10)
    assert theirs["blob"] == mine["blob"] and theirs["thumb"] == THUMB
    # ...and the photo itself is not on B until a page there asks.
    assert not blob_file(b, sha).exists()
    assert b.status()["blobs"]["count"] == 0
    status, headers, body = get(b, bob, f"/blob/{sha}")
    assert status == 200 and body == JPEG_37x23
    assert headers["content-type"] == "image/jpeg"
    assert blob_file(b, sha).read_bytes() == JPEG_37x23
    blobs = b.status()["blobs"]
    assert (blobs["count"], blobs["fetched"]) == (1, 1)
    assert blobs["fetch"]["fetched"] == 1
    assert a.status()["blobs"]["serve"]["served"] == 1
    # Asked again: served from B's own copy, no second fetch.
    assert get(b, bob, f"/blob/{sha}")[0] == 200
    assert b.status()["blobs"]["fetch"]["fetches"] == 1


def test_an_admin_delete_takes_the_blob_off_every_router(tmp_path: Path) -> None:
    with running(two_routers(tmp_path)) as (a, b):
        bind_admin(a, "boss", b)
        boss = a.user("boss", register=False)
        bob = b.user("bob")
        wa = a.ws(boss)
        wa.recv_type("history")
        sha, ack = send_photo(a, boss, wa, "cat.jpg", "d1")
        wait_for(lambda: b.status()["rooms"]["1"] == 1, 10, "the message on B")
        assert get(b, bob, f"/blob/{sha}")[0] == 200
        assert blob_file(a, sha).exists() and blob_file(b, sha).exists()
        wa.send({"type": "delete", "id": ack["id"]})
        wait_for(lambda: not blob_file(a, sha).exists(), 5, "the blob gone from A")
        wait_for(lambda: not blob_file(b, sha).exists(), 10, "the blob gone from B")
        assert a.status()["blobs"]["deleted"] == 1 and b.status()["blobs"]["deleted"] == 1
        assert get(b, bob, f"/blob/{sha}")[0] == 404


def test_a_file_downloads_under_its_name(pair: list[Router]) -> None:
    a, b = pair
    ann = a.user("ann")
    wa = a.ws(ann)
    wa.recv_type("history")
    found = upload(a, ann, PDF, "notice for the street.pdf")
    assert found["kind"] == "file"
    ack = send_blob(wa, found, None, "f1")
    assert ack["type"] == "ack", ack
    bob = b.user("bob")
    wait_for(lambda: b.status()["rooms"]["1"] == 1, 10, "the message on B")
    status, headers, body = get(b, bob, f"/blob/{found['sha']}")
    assert status == 200 and body == PDF
    assert headers["content-disposition"] == (
        'attachment; filename="notice for the street.pdf"; '
        "filename*=UTF-8''notice%20for%20the%20street.pdf"
    )
    assert headers["content-type"] == "application/octet-stream"


def test_a_send_naming_a_blob_not_held_or_a_bad_thumbnail_is_refused(pair: list[Router]) -> None:
    a, _ = pair
    ann = a.user("ann")
    wa = a.ws(ann)
    wa.recv_type("history")
    ghost = {"sha": "ab" * 32, "name": "x.jpg"}
    err = send_blob(wa, ghost, THUMB, "g1")
    assert err["type"] == "error" and err["code"] == "bad_blob", err
    found = upload(a, ann, JPEG_37x23, "x.jpg")
    svg_thumb = base64.b64encode(SVG_WITH_SCRIPT).decode()
    err = send_blob(wa, found, svg_thumb, "g2")
    assert err["type"] == "error" and err["code"] == "bad_blob", err
    err = send_blob(wa, found, base64.b64encode(b"\xff\xd8\xff" * 3000).decode(), "g3")
    assert err["type"] == "error" and err["code"] == "bad_blob", err
    assert a.status()["rooms"]["1"] == 0


def blob_record(seq: int, **change: object) -> Record:
    sha = hashlib.sha256(JPEG_37x23).hexdigest()
    blob: dict[str, object] = {
        "sha": sha,
        "size": len(JPEG_37x23),
        "kind": "jpeg",
        "name": "a.jpg",
        "w": 37,
        "h": 23,
    }
    body: dict[str, object] = {
        "author": "mallory",
        "node": "far",
        "time": 1_700_000_000_000,
        "text": "",
        "blob": blob,
        "thumb": THUMB,
    }
    for k, v in change.items():
        if k in blob:
            blob[k] = v
        elif v is None:
            body.pop(k)
        else:
            body[k] = v
    now_ms = int(time.time() * 1000)
    body["time"] = now_ms
    return Record(KEY_HOLDER, seq, pack(now_ms, seq), RecordKind.MESSAGE, 1, body)


def test_blob_fields_from_the_mesh_are_bounded_and_the_thumbnail_rechecked(
    tmp_path: Path,
) -> None:
    with running(two_routers(tmp_path)[:1]) as (r,):
        holder = KeyHolder(r, bytes.fromhex((tmp_path / "mesh.key").read_text().split()[0]))
        bad = {
            "svg thumbnail": {"thumb": base64.b64encode(SVG_WITH_SCRIPT).decode()},
            "big thumbnail": {"thumb": base64.b64encode(JPEG_37x23 * 20).decode()},
            "not base64": {"thumb": "%%%%"},
            "upper-case sha": {"sha": "AB" * 32},
            "short sha": {"sha": "ab" * 31},
            "size over the limit": {"size": 1 << 40},
            "negative size": {"size": -1},
            "unknown kind": {"kind": "svg"},
            "image without dimensions": {"w": 0},
            "side over the limit": {"w": 100_000},
            "a path for a name": {"name": "../../etc/passwd"},
            "an empty name": {"name": ""},
            "a bool for a size": {"size": True},
            "an unknown field": {"extra": 1},
        }
        for seq, change in enumerate(bad.values(), start=1):
            holder.send(blob_record(seq, **change))
        good = len(bad) + 1
        holder.send(blob_record(good))
        wait_for(lambda: r.status()["rooms"]["1"] == 1, 10, "the good record stored")
        refused = r.status()["store"]["refused"]
        assert sum(refused.values()) == len(bad), refused
        assert refused.get("bad_blob", 0) >= 10, refused
        line = (r.data_dir / room_log_name(1)).read_text().strip()
        assert json.loads(line)["id"] == f"{KEY_HOLDER}:{good}"
        holder.close()


def test_retention_removes_the_blob_with_its_message(tmp_path: Path) -> None:
    with running(two_routers(tmp_path, "--retention", "10s")[:1]) as (r,):
        ann = r.user("ann")
        w = r.ws(ann)
        w.recv_type("history")
        sha, _ = send_photo(r, ann, w, "x.jpg", "r1")
        assert blob_file(r, sha).exists()
        wait_for(lambda: not blob_file(r, sha).exists(), 25, "the blob expired with its message")
        assert r.status()["rooms"]["1"] == 0
