"""Pictures across routers in network namespaces (issue 15, "Must show"):
a line A - B - C where A and C do not hear each other.

- A photo posted on A opens on C under 10 % loss on both links: C asks B,
  its only neighbour, which fetches it from A first (hop by hop).
- An admin's delete takes the blob off every router's disk.
- A router that was off catches up with the room (the message and its
  thumbnail) and fetches the photo only when a page asks for it.

The routers' web servers listen on every address of their namespace (as
OpenWrt's default config has them, ``option host '0.0.0.0'``): peers fetch
blobs from them over the mesh's links.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import struct
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import HttpSession, WsClient, wait_for
from tests.integration.test_moderation import bind_admin
from tests.netns.netlab import WEB_PORT, Lab, NetnsRouter
from tests.netns.test_mesh_netns import BEACON, MakeLab, key_file, mesh, require_netns
from tests.unit.test_images import JPEG_37x23

pytestmark = pytest.mark.netns

THUMB = base64.b64encode(JPEG_37x23).decode()
LOSS = 10  # percent, each way, on each of the two links
PHOTO_BYTES = 300_000  # a re-encoded phone photo


class OpenRouter(NetnsRouter):
    """A router whose web server listens on all its addresses (peers fetch there)."""

    def argv(self) -> list[str]:
        return [*super().argv(), "--host", "0.0.0.0"]


def start(lab: Lab, tmp_path: Path, name: str, key: Path, *extra: str) -> NetnsRouter:
    h = lab.hosts[name]
    data = tmp_path / name / "data"
    data.mkdir(parents=True, exist_ok=True)
    ifaces = [arg for i in sorted(h.ifaces) for arg in ("--mesh-iface", h.ifaces[i])]
    r = OpenRouter(
        data,
        WEB_PORT,
        name,
        [*ifaces, "--mesh-key-file", str(key), "--beacon-interval", BEACON, *extra],
        ns=h.ns,
        executor=h.executor,
    )
    lab.routers.append(r)
    r.start()
    return r


def photo() -> bytes:
    """A JPEG of about ``PHOTO_BYTES`` (the real 37 x 23 one with big APP
    segments of random bytes): a photo by its bytes and its size."""
    segments = b""
    while len(segments) < PHOTO_BYTES:
        payload = os.urandom(60_000)
        segments += b"\xff\xe9" + struct.pack(">H", len(payload) + 2) + payload
    return JPEG_37x23[:2] + segments + JPEG_37x23[2:]


def upload(r: NetnsRouter, s: HttpSession, data: bytes, name: str) -> dict[str, object]:
    token = s.csrf("/")
    headers = {"Cookie": s.cookie_header(), "X-CSRF-Token": token}
    status, _, body = s.transport("POST", f"/room/1/upload?name={quote(name)}", headers, data)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def get_blob(r: NetnsRouter, s: HttpSession, sha: str) -> tuple[int, bytes, float]:
    def fetch() -> tuple[int, bytes, float]:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=90)
        try:
            conn.request("GET", f"/blob/{sha}", headers={"Cookie": s.cookie_header()})
            resp = conn.getresponse()
            return resp.status, resp.read(), time.monotonic() - start
        finally:
            conn.close()

    assert r.executor is not None
    return r.executor.submit(fetch).result()


def post_photo(w: WsClient, found: dict[str, object], client_id: str) -> str:
    w.send(
        {
            "type": "send",
            "client_id": client_id,
            "text": "the street is flooded",
            "blob": {"sha": found["sha"], "name": found["name"]},
            "thumb": THUMB,
        }
    )
    ack = w.recv_until(lambda f: f.get("client_id") == client_id)
    assert ack["type"] == "ack", ack
    return str(ack["id"])


def blob_path(r: NetnsRouter, sha: str) -> Path:
    return r.data_dir / "blobs" / sha[:2] / sha


def line(make_lab: MakeLab, tmp_path: Path, *extra: str) -> tuple[Lab, list[NetnsRouter]]:
    require_netns()
    lab = make_lab()
    lab.add_host("ra", [0])
    lab.add_host("rb", [0, 1])
    lab.add_host("rc", [1])
    key = key_file(tmp_path / "mesh.key")
    routers = [start(lab, tmp_path, n, key, *extra) for n in ("ra", "rb", "rc")]
    heard(routers)
    return lab, routers


def heard(routers: list[NetnsRouter]) -> None:
    """Wait until A and C each hear B, and B hears both (blobs go to peers only)."""
    a, b, c = routers
    ids = {r.name: r.status()["node_id"] for r in routers}
    wait_for(lambda: set(mesh(b)["peers"]) == {ids["ra"], ids["rc"]}, 10, "B hears A and C")
    wait_for(lambda: set(mesh(a)["peers"]) == {ids["rb"]}, 10, "A hears B")
    wait_for(lambda: set(mesh(c)["peers"]) == {ids["rb"]}, 10, "C hears B")


def test_a_photo_posted_on_a_opens_on_c_through_b_under_loss(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab, (a, b, c) = line(make_lab, tmp_path)
    lab.add_loss("ra", 0, LOSS)  # A - B: 10 % each way
    lab.add_loss("rc", 1, LOSS)  # B - C: 10 % each way
    ann, cat = a.user("ann"), c.user("cat")
    wc = c.ws(cat)
    wc.recv_type("history")
    wa = a.ws(ann)
    wa.recv_type("history")
    data = photo()
    found = upload(a, ann, data, "flood.jpg")
    sha = str(found["sha"])
    assert found["kind"] == "jpeg" and sha == hashlib.sha256(data).hexdigest()
    sent = time.monotonic()
    mid = post_photo(wa, found, "p1")
    got = wc.recv_until(lambda f: f.get("type") == "message" and f.get("id") == mid, 30)
    to_thumbnail = time.monotonic() - sent
    assert got["thumb"] == THUMB and got["blob"]["sha"] == sha
    assert not blob_path(b, sha).exists() and not blob_path(c, sha).exists()
    status, body, took = get_blob(c, cat, sha)
    assert status == 200, body[:200]
    assert body == data
    # Hop by hop: B holds it now too, fetched once from A; C fetched it from B.
    assert blob_path(b, sha).read_bytes() == data
    assert blob_path(c, sha).read_bytes() == data
    bs, cs = b.status()["blobs"], c.status()["blobs"]
    assert bs["fetched"] == 1 and cs["fetched"] == 1
    assert bs["serve"].get("relayed", 0) + bs["serve"].get("served", 0) >= 1
    assert a.status()["blobs"]["serve"]["served"] >= 1
    assert lab.loss_drops("ra", 0) + lab.loss_drops("rc", 1) > 0, "the loss was real"
    print(
        f"\nthumbnail on C after {to_thumbnail:.2f} s; full photo ({len(data)} B) in {took:.2f} s"
    )
    for w in (wa, wc):
        w.close()


def test_an_admin_delete_removes_the_blob_from_every_routers_disk(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    _, (a, b, c) = line(make_lab, tmp_path)
    bind_admin(a, "boss", b, c)
    heard([a, b, c])
    boss = a.user("boss", register=False)
    cat = c.user("cat")
    wa = a.ws(boss)
    wa.recv_type("history")
    data = photo()
    found = upload(a, boss, data, "notice.jpg")
    sha = str(found["sha"])
    mid = post_photo(wa, found, "d1")
    wait_for(lambda: c.status()["rooms"]["1"] == 1, 15, "the message on C")
    assert get_blob(c, cat, sha)[0] == 200
    paths = [blob_path(r, sha) for r in (a, b, c)]
    assert all(p.exists() for p in paths), "held on A, B (the relay) and C"
    wa.send({"type": "delete", "id": mid})
    for r, p in zip((a, b, c), paths, strict=True):
        wait_for(lambda p=p: not p.exists(), 15, f"the blob gone from {r.name}'s disk")
    assert [r.status()["blobs"]["count"] for r in (a, b, c)] == [0, 0, 0]
    assert get_blob(c, cat, sha)[0] == 404
    wa.close()


def test_a_router_that_was_off_catches_up_and_fetches_only_when_asked(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    _, (a, b, c) = line(make_lab, tmp_path)
    cat = c.user("cat")
    ann = a.user("ann")
    wait_for(lambda: c.status()["accounts"] == 2, 10, "accounts on C")
    c.stop()
    wa = a.ws(ann)
    wa.recv_type("history")
    data = photo()
    found = upload(a, ann, data, "lost-cat.jpg")
    sha = str(found["sha"])
    mid = post_photo(wa, found, "o1")
    wait_for(lambda: b.status()["rooms"]["1"] == 1, 15, "the message on B")
    c.start()
    wait_for(lambda: c.status()["rooms"]["1"] == 1, 30, "C caught up with the room")
    heard([a, b, c])
    wc = c.ws(cat)
    history = wc.recv_type("history")
    (msg,) = [m for m in history["messages"] if m["id"] == mid]
    assert msg["thumb"] == THUMB and msg["blob"]["sha"] == sha
    time.sleep(2)  # caught up a while ago: still nothing fetched
    assert not blob_path(c, sha).exists()
    blobs = c.status()["blobs"]
    assert blobs["count"] == 0 and blobs["fetch"].get("fetches", 0) == 0
    assert not blob_path(b, sha).exists(), "nobody asked B's pages either"
    status, body, _ = get_blob(c, cat, sha)
    assert status == 200 and body == data
    assert c.status()["blobs"]["fetched"] == 1
    for w in (wa, wc):
        w.close()


def test_retention_removes_the_blob_from_every_routers_disk(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    _, (a, b, c) = line(make_lab, tmp_path, "--retention", "10s")
    ann, cat = a.user("ann"), c.user("cat")
    wa = a.ws(ann)
    wa.recv_type("history")
    data = photo()
    found = upload(a, ann, data, "market.jpg")
    sha = str(found["sha"])
    post_photo(wa, found, "e1")
    wait_for(lambda: c.status()["rooms"]["1"] == 1, 10, "the message on C")
    assert get_blob(c, cat, sha)[0] == 200
    paths = [blob_path(r, sha) for r in (a, b, c)]
    assert all(p.exists() for p in paths)
    for r, p in zip((a, b, c), paths, strict=True):
        wait_for(lambda p=p: not p.exists(), 30, f"the blob expired from {r.name}'s disk")
    assert [r.status()["rooms"]["1"] for r in (a, b, c)] == [0, 0, 0]
    wa.close()
