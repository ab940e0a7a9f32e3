"""Pictures and files on a real router (app/routes_blobs.py): uploads are
refused before their body is read (411, 413, 429, and for a stranger 403),
and what is served never runs in the page's origin.

Every test talks to a ``python -m app`` process over real sockets.  The
"before the body is read" tests send the request's headers and *no body*,
then wait for the answer: a server that read (or drained) the body first
would never answer, and the test fails on its timeout.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import HttpSession, Router, routers
from tests.unit.test_images import HTML, PDF, SVG_WITH_SCRIPT, JPEG_37x23

MAX_UPLOAD = 64 * 1024
PER_DAY = 100 * 1024
ANSWER_WITHIN = 3.0  # seconds: an answer that needs the body never comes


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    extra = [
        "--no-mesh",
        "--max-upload",
        str(MAX_UPLOAD),
        "--upload-bytes-per-day",
        str(PER_DAY),
    ]
    with routers(tmp_path, "alpha", extra=extra) as (r,):
        yield r


def csrf_of(s: HttpSession) -> str:
    return s.csrf("/")  # the session's token, as every page of the session has it


def upload(
    r: Router, s: HttpSession, data: bytes, name: str = "photo.jpg", room: int = 1
) -> tuple[int, dict[str, str], dict[str, object]]:
    import http.client
    from urllib.parse import quote

    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/room/{room}/upload?name={quote(name)}",
            body=data,
            headers={
                "Cookie": s.cookie_header(),
                "X-CSRF-Token": csrf_of(s),
                "Content-Type": "application/octet-stream",
            },
        )
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, json.loads(body) if body else {}
    finally:
        conn.close()


def headers_only(r: Router, head: str) -> tuple[bytes, bool, float]:
    """Send a request's headers and no body; the answer, whether the server
    then closed the connection (with the body still unsent), and how long
    the answer took."""
    sock = socket.create_connection(("127.0.0.1", r.port), timeout=ANSWER_WITHIN)
    try:
        start = time.monotonic()
        sock.sendall(head.encode())
        answer = b""
        closed = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer, closed, time.monotonic() - start
    finally:
        sock.close()


def upload_head(r: Router, s: HttpSession | None, length: str | None, csrf: str = "") -> str:
    lines = ["POST /room/1/upload?name=big.bin HTTP/1.1", f"Host: 127.0.0.1:{r.port}"]
    if s is not None:
        lines.append(f"Cookie: {s.cookie_header()}")
        lines.append(f"X-CSRF-Token: {csrf or csrf_of(s)}")
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n"


def status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode()


# -- refused before the body is read ------------------------------------------------------


def test_too_large_is_refused_by_its_length_before_the_body(router: Router) -> None:
    s = router.user("ann")
    answer, closed, took = headers_only(router, upload_head(router, s, str(MAX_UPLOAD + 1)))
    assert status_line(answer).startswith("HTTP/1.1 413 "), answer[:300]
    assert closed, "the connection must close with the body unread, not wait to drain it"
    assert took < ANSWER_WITHIN
    assert b'"max_upload": 65536' in answer
    # A gigabyte is refused as fast: nothing of it is read.
    answer, closed, _ = headers_only(router, upload_head(router, s, str(1 << 30)))
    assert status_line(answer).startswith("HTTP/1.1 413") and closed
    assert router.status()["blobs"]["count"] == 0


def test_no_content_length_is_411_before_the_body(router: Router) -> None:
    s = router.user("ann")
    answer, closed, _ = headers_only(router, upload_head(router, s, None))
    assert status_line(answer).startswith("HTTP/1.1 411 "), answer[:300]
    assert closed


def test_a_stranger_or_a_forged_form_is_refused_before_the_body(router: Router) -> None:
    answer, closed, _ = headers_only(router, upload_head(router, None, "1000"))
    assert status_line(answer).startswith("HTTP/1.1 403 ") and closed, answer[:300]
    s = router.user("ann")
    head = upload_head(router, s, "1000", csrf="x" * 22)
    answer, closed, _ = headers_only(router, head)
    assert status_line(answer).startswith("HTTP/1.1 403 ") and closed, answer[:300]
    assert router.status()["blobs"]["count"] == 0


def test_the_daily_quota_counts_the_account_not_the_address(router: Router) -> None:
    ann = router.user("ann")
    piece = 40 * 1024
    for i in range(2):  # 80 KB of the 100 KB
        code, _, found = upload(router, ann, bytes([i]) * piece, "a.bin")
        assert code == 200, found
    answer, closed, _ = headers_only(router, upload_head(router, ann, str(piece)))
    assert status_line(answer).startswith("HTTP/1.1 429 "), answer[:300]
    assert closed, "refused before the body, like a 413"
    assert b'"left": ' + str(PER_DAY - 2 * piece).encode() in answer
    # The same address, another account: its own quota.
    bob = router.user("bob")
    code, _, found = upload(router, bob, b"\x07" * piece, "b.bin")
    assert code == 200, found
    # What is left still fits.
    code, _, found = upload(router, ann, b"\x09" * (PER_DAY - 2 * piece), "c.bin")
    assert code == 200, found


def test_a_body_cut_short_stores_nothing_and_is_not_counted(router: Router) -> None:
    s = router.user("ann")
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=5)
    sock.sendall(upload_head(router, s, "50000").encode() + b"x" * 20000)
    time.sleep(0.3)
    sock.close()
    time.sleep(0.3)
    assert router.status()["blobs"]["count"] == 0
    assert not list((router.data_dir / "blobs" / "tmp").iterdir()), "no temp file left"
    code, _, found = upload(router, s, b"y" * MAX_UPLOAD, "full.bin")  # the quota is whole
    assert code == 200, found


# -- what is served -----------------------------------------------------------------------


def test_a_photo_is_stored_by_its_hash_and_served_inline_cached(router: Router) -> None:
    s = router.user("ann")
    code, _, found = upload(router, s, JPEG_37x23, "cat.jpg")
    sha = hashlib.sha256(JPEG_37x23).hexdigest()
    assert code == 200
    assert found == {
        "sha": sha,
        "size": len(JPEG_37x23),
        "kind": "jpeg",
        "w": 37,
        "h": 23,
        "name": "cat.jpg",
    }
    assert (router.data_dir / "blobs" / sha[:2] / sha).read_bytes() == JPEG_37x23
    r = s.get(f"/blob/{sha}")
    assert r.status == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["x-content-type-options"] == "nosniff"
    # The route's own CSP and caching survive the app's security headers.
    assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert int(r.headers["content-length"]) == len(JPEG_37x23)
    blobs = router.status()["blobs"]
    assert (blobs["count"], blobs["bytes"], blobs["stored"]) == (1, len(JPEG_37x23), 1)
    assert {"fetched", "evicted", "deleted"} <= set(blobs)


@pytest.mark.parametrize(
    ("data", "name"),
    [(SVG_WITH_SCRIPT, "drawing.svg"), (HTML, "holiday.jpg"), (PDF, "notice.pdf")],
    ids=["svg-with-script", "html-named-jpg", "pdf"],
)
def test_anything_but_an_image_is_a_download_never_rendered(
    router: Router, data: bytes, name: str
) -> None:
    s = router.user("ann")
    code, _, found = upload(router, s, data, name)
    assert code == 200 and found["kind"] == "file" and (found["w"], found["h"]) == (0, 0)
    sha = found["sha"]
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    conn.request("GET", f"/blob/{sha}", headers={"Cookie": s.cookie_header()})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    h = {k.lower(): v for k, v in resp.getheaders()}
    assert resp.status == 200 and body == data
    assert h["content-type"] == "application/octet-stream"
    assert h["content-disposition"].startswith("attachment;")
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-security-policy"] == "default-src 'none'; sandbox"


def test_blobs_need_a_login(router: Router) -> None:
    s = router.user("ann")
    _, _, found = upload(router, s, JPEG_37x23)
    stranger = router.http()
    r = stranger.get(f"/blob/{found['sha']}")
    assert r.status == 303 and r.headers["location"] == "/login"
    assert JPEG_37x23[:4].decode("latin-1") not in r.text


def test_an_upload_not_sent_yet_is_its_uploaders_only(router: Router) -> None:
    """Stored before its message exists: another person who learns or
    guesses the hash gets the 404 of a blob nobody holds, until a room
    message names it (app/attachments.py ``may_see``)."""
    ann, bob = router.user("ann"), router.user("bob")
    _, _, found = upload(router, ann, JPEG_37x23, "cat.jpg")
    sha = found["sha"]
    assert ann.get(f"/blob/{sha}").status == 200
    nobody_holds = bob.get("/blob/" + "ab" * 32)
    early = bob.get(f"/blob/{sha}")
    assert early.status == 404 and early.text == nobody_holds.text
    w = router.ws(ann)
    w.recv_type("history")
    w.send({"type": "send", "client_id": "c", "text": "", "blob": {"sha": sha, "name": "cat.jpg"}})
    assert w.recv_until(lambda f: f.get("type") in ("ack", "error"))["type"] == "ack"
    assert bob.get(f"/blob/{sha}").status == 200
    w.close()


def test_an_unknown_or_malformed_blob_name_is_404(router: Router) -> None:
    s = router.user("ann")
    assert s.get("/blob/" + "ab" * 32).status == 404
    assert s.get("/blob/..%2f..%2fmesh.key").status == 404
    assert s.get("/blob/" + "AB" * 32).status == 404


def test_the_peers_route_needs_the_mesh_key(router: Router) -> None:
    s = router.user("ann")
    _, _, found = upload(router, s, JPEG_37x23)
    r = router.http().get(f"/mesh/blob/{found['sha']}")
    assert r.status == 401, "a page's session is not the mesh key"
    r = s.get(f"/mesh/blob/{found['sha']}")
    assert r.status == 401


def test_the_oldest_blob_is_evicted_and_then_no_longer_held_here(tmp_path: Path) -> None:
    extra = ["--no-mesh", "--blob-budget", "1M", "--max-upload", "512K"]
    with routers(tmp_path, "small", extra=extra) as (r,):
        s = r.user("ann")
        shas = []
        for i in range(3):  # 3 x 400 KB into a 1 MiB budget: the first goes
            code, _, found = upload(r, s, bytes([i + 1]) * 400_000, f"f{i}.bin")
            assert code == 200, found
            shas.append(found["sha"])
        blobs = r.status()["blobs"]
        assert (blobs["count"], blobs["evicted"], blobs["budget"]) == (2, 1, 1024 * 1024)
        assert blobs["bytes"] <= 1024 * 1024
        gone = s.get(f"/blob/{shas[0]}")
        assert gone.status == 404 and "no longer held here" in gone.text
        assert s.get(f"/blob/{shas[2]}").status == 200
