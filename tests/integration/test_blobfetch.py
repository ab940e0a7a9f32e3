"""Blobs between routers over real sockets: router processes on loopback
(tests/integration/blob_router.py: Bottle on gevent's pywsgi, the code of
app/blobfetch.py), one holding a blob, another fetching it when a page asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.blobfetch import AUTH_HEADER, MESH_BLOB_PREFIX, sign
from node.blobs import BlobStore
from tests.helpers import ROOT, START_TIMEOUT, free_port, wait_for


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def status(port: int) -> dict[str, Any]:
    code, _, body = get(port, "/test/status")
    assert code == 200
    return json.loads(body)


def answers(port: int) -> bool:
    try:
        return get(port, "/test/status")[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def blob_router(data: Path, key: Path, *args: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.blob_router",
            "--port",
            str(port),
            "--data",
            str(data),
            "--key-file",
            str(key),
            *args,
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: proc.poll() is not None or answers(port), START_TIMEOUT, "blob router")
        assert proc.poll() is None, "the blob router did not start"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def a_and_b(tmp_path: Path, key: Path, *a_args: str) -> Iterator[tuple[int, int]]:
    """Blob router A on ``tmp_path / "a"`` (with ``a_args``) and B on
    ``tmp_path / "b"``, which fetches from A as peer ``node-a``: their ports."""
    with (
        blob_router(tmp_path / "a", key, *a_args) as a,
        blob_router(tmp_path / "b", key, "--peer", f"node-a=127.0.0.1:{a}") as b,
    ):
        yield a, b


@contextlib.contextmanager
def lying_peer(size: int) -> Iterator[tuple[int, list[str]]]:
    """A peer on a real socket that answers every blob with ``size`` bytes
    that are not the blob (a broken or hostile router with the key)."""
    asked: list[str] = []

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"\x00" * size)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def seed(data: Path, blob: bytes) -> str:
    """A blob in a router's data folder before it starts."""
    return BlobStore(data).put(blob)


def held(data: Path) -> list[Path]:
    """Every file under the blob folder (blobs and temp files)."""
    return sorted(p for p in (data / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def blob() -> bytes:
    return os.urandom(700_000)


def test_a_page_on_b_gets_a_blob_only_a_holds(tmp_path: Path, blob: bytes) -> None:
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    with a_and_b(tmp_path, key) as (a, b):
        code, headers, body = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-a")
        assert code == 200
        assert hashlib.sha256(body).hexdigest() == sha and body == blob
        # Random bytes are no image: a download, never rendered.
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"].startswith("attachment;")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert status(b)["store"]["fetched"] == 1
        # From now on B serves it itself.
        code, _, again = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-a")
        assert code == 200 and again == blob
        assert status(a)["server"]["served"] == 1
        assert status(b)["fetcher"]["fetches"] == 1
    assert held(tmp_path / "b") == [tmp_path / "b" / "blobs" / sha[:2] / sha]


def test_a_wrong_mesh_key_is_refused(tmp_path: Path, blob: bytes) -> None:
    sha = seed(tmp_path / "a", blob)
    with (
        blob_router(tmp_path / "a", key_file(tmp_path / "a.key")) as a,
        blob_router(
            tmp_path / "c", key_file(tmp_path / "c.key"), "--peer", f"node-a=127.0.0.1:{a}"
        ) as c,
    ):
        code, _, _ = get(c, f"/blob/{sha}?size={len(blob)}&origin=node-a")
        assert code == 404
        assert status(a)["server"] == {"bad_mac": 1}
        assert status(c)["fetcher"]["status_401"] == 1
        # Without any key, or with a replayed request, A serves nothing either.
        assert get(a, MESH_BLOB_PREFIX + sha)[0] == 401
        a_key = bytes.fromhex((tmp_path / "a.key").read_text().strip())
        good = sign(a_key, "GET", MESH_BLOB_PREFIX + sha, int(time.time()))
        assert get(a, MESH_BLOB_PREFIX + sha, {AUTH_HEADER: good})[0] == 200
        assert get(a, MESH_BLOB_PREFIX + sha, {AUTH_HEADER: good})[0] == 401
        assert status(a)["server"] == {"bad_mac": 1, "malformed": 1, "served": 1, "replayed": 1}
    assert held(tmp_path / "c") == []


def test_corrupted_bytes_are_refused_and_not_stored(tmp_path: Path, blob: bytes) -> None:
    key = key_file(tmp_path / "mesh.key")
    sha = hashlib.sha256(blob).hexdigest()
    with (
        lying_peer(len(blob)) as (liar, asked),
        blob_router(tmp_path / "b", key, "--peer", f"node-x=127.0.0.1:{liar}") as b,
    ):
        code, _, _ = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-x")
        assert code == 404
        assert asked == [MESH_BLOB_PREFIX + sha]
        assert status(b)["fetcher"]["mismatch"] == 1
        assert status(b)["store"]["count"] == 0
    assert held(tmp_path / "b") == []  # no blob, no temp file


def test_after_a_liar_the_next_peer_gives_the_blob(tmp_path: Path, blob: bytes) -> None:
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    with (
        lying_peer(len(blob)) as (liar, asked),
        blob_router(tmp_path / "a", key) as a,
        blob_router(
            tmp_path / "b",
            key,
            "--peer",
            f"node-x=127.0.0.1:{liar}",
            "--peer",
            f"node-a=127.0.0.1:{a}",
        ) as b,
    ):
        code, _, body = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-x")  # the liar first
        assert code == 200 and body == blob
        assert len(asked) == 1
        fetcher = status(b)["fetcher"]
        assert fetcher["mismatch"] == 1 and fetcher["fetched"] == 1


def test_a_blob_rotten_on_the_holders_disk_is_never_served(tmp_path: Path, blob: bytes) -> None:
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    path = tmp_path / "a" / "blobs" / sha[:2] / sha
    rotten = bytearray(path.read_bytes())
    rotten[len(rotten) // 2] ^= 1  # one bit flipped on flash
    path.write_bytes(bytes(rotten))
    with a_and_b(tmp_path, key) as (a, b):
        assert get(b, f"/blob/{sha}?size={len(blob)}&origin=node-a")[0] == 404
        assert status(a)["server"] == {"corrupt": 1}
        assert status(a)["store"]["count"] == 0  # removed from A
        assert status(b)["fetcher"]["status_404"] == 1
    assert not path.exists()
    assert held(tmp_path / "b") == []


def test_concurrent_askers_share_one_fetch(tmp_path: Path) -> None:
    blob = os.urandom(1_500_000)
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    # A serves at 1 MB/s: the fetch takes 1.5 s, and every page asks meanwhile.
    with a_and_b(tmp_path, key, "--rate", "1000000") as (a, b), ThreadPoolExecutor(8) as pool:
        barrier = threading.Barrier(8)

        def ask(_: int) -> tuple[int, bytes]:
            barrier.wait()
            code, _, body = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-a")
            return code, body

        results = list(pool.map(ask, range(8)))
        assert all(code == 200 and body == blob for code, body in results)
        assert status(a)["server"] == {"served": 1}
        fetcher = status(b)["fetcher"]
        assert fetcher["fetches"] == 1 and fetcher["shared"] == 7 and fetcher["fetched"] == 1


def test_a_peer_whose_clock_is_off_is_asked_again_in_its_time(tmp_path: Path, blob: bytes) -> None:
    """Routers without a real-time clock boot at their build date: A is a
    day behind; B learns A's time from A's signed 401 and asks again."""
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    with a_and_b(tmp_path, key, "--clock-offset", "-86400") as (a, b):
        code, _, body = get(b, f"/blob/{sha}?size={len(blob)}&origin=node-a")
        assert code == 200 and body == blob
        assert status(a)["server"] == {"skew": 1, "served": 1}
        assert status(b)["fetcher"]["clock_offsets"] == 1


def test_a_size_unlike_the_records_is_refused(tmp_path: Path, blob: bytes) -> None:
    key = key_file(tmp_path / "mesh.key")
    sha = seed(tmp_path / "a", blob)
    with a_and_b(tmp_path, key) as (_, b):
        assert get(b, f"/blob/{sha}?size={len(blob) - 1}&origin=node-a")[0] == 404
        assert status(b)["fetcher"]["wrong_size"] == 1
    assert held(tmp_path / "b") == []


def test_a_blob_changed_on_the_holders_disk_while_held_is_cut(tmp_path: Path) -> None:
    """A blob A has read once (hashed) changes on disk: A's next read hashes
    as it streams, never sends the end, removes the blob, and its serving
    slot (one here) is free for the next peer."""
    key = key_file(tmp_path / "mesh.key")
    mesh_key = bytes.fromhex(key.read_text().strip())
    small, other = os.urandom(10_000), os.urandom(10_000)
    sha, other_sha = seed(tmp_path / "a", small), seed(tmp_path / "a", other)

    def ask(name: str) -> tuple[int, bytes]:
        path = MESH_BLOB_PREFIX + name
        auth = sign(mesh_key, "GET", path, int(time.time()))
        try:
            code, _, body = get(a, path, {AUTH_HEADER: auth})
        except (http.client.HTTPException, OSError):  # cut mid-response
            return 0, b""
        return code, body

    with blob_router(tmp_path / "a", key, "--max-serving", "1") as a:
        assert ask(sha) == (200, small)
        path = tmp_path / "a" / "blobs" / sha[:2] / sha
        path.write_bytes(small[:-1] + bytes([small[-1] ^ 1]))
        code, body = ask(sha)
        assert code != 200 or body != small[:-1] + bytes([small[-1] ^ 1])
        assert body != small
        assert status(a)["store"]["corrupt"] == 1 and not path.exists()
        assert ask(other_sha) == (200, other)
        assert status(a)["server"] == {"served": 3}
