"""A relay that is still fetching (app/blobfetch.py ``RELAY_WAIT``): three
real routers on loopback in a line for blobs, A - B - C (C's only blob peer
is B, B's is A).  A file posted on A is big enough that B's fetch from A,
paced at ``SERVE_RATE``, takes longer than ``RELAY_WAIT``: B answers an
asker 503 with ``Retry-After`` while it fetches on, and C's page, which
asked first, gets the file once B has it, through C asking B again.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from app.blobfetch import (
    AUTH_HEADER,
    FROM_HEADER,
    HOPS_HEADER,
    MESH_BLOB_PREFIX,
    RELAY_WAIT,
    RETRY_AFTER,
    SERVE_RATE,
    sign,
)
from tests.helpers import Router, free_port, loopback_mesh, wait_for
from tests.integration.test_blobs_chat import blob_file, get, send_blob, upload

# Long enough at SERVE_RATE that B is still fetching when RELAY_WAIT ends
# (about 5 s from A to B, 5 s more from B to C).
SIZE = 5 * 1000 * 1000


@pytest.mark.parametrize(
    "peer_of",
    [
        {"a": [], "b": ["a"], "c": ["b"]},  # blobs go A -> B -> C only
        {"a": ["b"], "b": ["c", "a"], "c": ["b"]},  # both ways: B may ask C back
    ],
    ids=["one-way", "both-ways"],
)
def test_a_relay_still_fetching_answers_503_and_the_asker_asks_again(
    tmp_path: Path, peer_of: dict[str, list[str]]
) -> None:
    assert SIZE / SERVE_RATE > RELAY_WAIT + RETRY_AFTER + 0.5, "B must still be fetching"
    mesh = loopback_mesh(tmp_path)
    key = bytes.fromhex((tmp_path / "mesh.key").read_text().strip())
    ports = {name: free_port() for name in "abc"}
    routers = {}
    for name in "abc":
        peers = [f for p in peer_of[name] for f in ("--blob-peer", f"127.0.0.1:{ports[p]}")]
        r = Router(tmp_path / name / "data", ports[name], f"r{name}", [*mesh, *peers])
        r.data_dir.mkdir(parents=True)
        routers[name] = r
    a, b, c = routers["a"], routers["b"], routers["c"]
    try:
        for r in (a, b, c):
            r.start()
        ann, cat = a.user("ann"), c.user("cat")
        wa = a.ws(ann)
        wa.recv_type("history")
        data = os.urandom(SIZE)
        sha = hashlib.sha256(data).hexdigest()
        found = upload(a, ann, data, "leaflet.pdf")
        assert found["sha"] == sha and found["kind"] == "file"
        ack = send_blob(wa, found, None, "big1")
        assert ack["type"] == "ack", ack
        for r in (b, c):  # the message (not the file) is on every router
            wait_for(lambda r=r: r.status()["rooms"]["1"] == 1, 10, f"the message on {r.name}")
        assert not blob_file(b, sha).exists() and not blob_file(c, sha).exists()

        # C's page asks first: C asks B, B (which lacks it) fetches from A.
        got: dict[str, object] = {}

        def page_on_c() -> None:
            started = time.monotonic()
            got["answer"] = get(c, cat, f"/blob/{sha}")
            got["took"] = time.monotonic() - started

        page = threading.Thread(target=page_on_c)
        page.start()
        # Another asker of B meanwhile, speaking the peers' protocol itself:
        # B is still fetching after RELAY_WAIT, so it answers 503 + Retry-After.
        wait_for(lambda: b.status()["blobs"]["fetch"].get("inflight") == 1, 5, "B fetching")
        path = MESH_BLOB_PREFIX + sha
        headers = {
            AUTH_HEADER: sign(key, "GET", path, int(time.time())),
            FROM_HEADER: secrets.token_hex(8),
            HOPS_HEADER: "0",
        }
        asked = time.monotonic()
        status, answer_headers, _ = get_signed(b, path, headers)
        waited = time.monotonic() - asked
        assert status == 503, status
        assert answer_headers.get("retry-after") == str(int(RETRY_AFTER))
        assert RELAY_WAIT - 0.2 <= waited < RELAY_WAIT + 2, waited

        page.join(60)
        assert not page.is_alive(), "C's page never got an answer"
        code, headers_c, body = got["answer"]  # type: ignore[misc]
        assert code == 200, (code, body[:200], c.log()[-2000:])
        assert hashlib.sha256(body).hexdigest() == sha and len(body) == SIZE
        assert headers_c["content-disposition"].startswith("attachment")
        # C asked B, was told to ask again at least once, and got it in one fetch.
        fc = c.status()["blobs"]["fetch"]
        assert fc["fetches"] == 1 and fc["fetched"] == 1, fc
        assert fc.get("status_503", 0) >= 1, fc
        assert fc.get("failed", 0) == 0, fc
        sb = b.status()["blobs"]
        # C's first ask and ours at least; C's last ask found it held (or
        # waited for it: "relayed"), and B served it once, to C.
        assert sb["serve"]["relay_pending"] >= 2, sb["serve"]
        assert sb["serve"]["served"] == 1, sb["serve"]
        assert sb["fetch"]["fetches"] == 1 and sb["fetch"]["fetched"] == 1, sb["fetch"]
        # A served the file once (to B), never to C; each hop holds it now.
        assert a.status()["blobs"]["serve"]["served"] == 1
        assert blob_file(b, sha).read_bytes() == data
        assert blob_file(c, sha).read_bytes() == data
    finally:
        for r in (a, b, c):
            r.stop()


def get_signed(r: Router, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
