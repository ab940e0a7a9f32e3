"""node/blobs.py: content-addressed blobs in a real data folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.blobs import (
    CHUNK,
    TOUCH_INTERVAL,
    BlobMismatch,
    BlobMissing,
    BlobStore,
    BlobTooLarge,
)


class Wall:
    """A wall clock the test moves."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_blob_is_stored_under_its_hash_sharded(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"the flooded street" * 1000
    name = store.put(data)
    assert name == sha(data)
    assert files(tmp_path) == [f"blobs/{name[:2]}/{name}"]
    with store.open(name) as reader:
        assert reader.size == len(data)
        assert reader.read_all() == data
    assert store.status() | {"budget": 0} == {
        "count": 1,
        "bytes": len(data),
        "budget": 0,
        "stored": 1,
        "fetched": 0,
        "evicted": 0,
        "deleted": 0,
        "served": 1,
        "corrupt": 0,
        "refused": 0,
        "torn": 0,
    }


def test_the_same_bytes_twice_are_one_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.put(b"cat") == store.put(b"cat")
    assert len(store) == 1 and store.bytes == 3
    assert files(tmp_path / "blobs" / "tmp") == []


def test_bytes_that_do_not_match_the_announced_name_are_never_stored(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(BlobMismatch):
        store.put(b"not the cat", expected=sha(b"the cat"))
    with store.writer(sha(b"the cat"), 7, source="fetched") as w:
        w.write(b"the ca")
        with pytest.raises(BlobMismatch):  # short of the announced size
            w.commit()
    with pytest.raises(BlobTooLarge), store.writer(None, 3) as w:
        w.write(b"four")
    assert not store.has(sha(b"the cat")) and len(store) == 0
    assert files(tmp_path) == []
    assert store.status()["refused"] == 3


def test_a_torn_temp_file_is_removed_at_start(tmp_path: Path) -> None:
    BlobStore(tmp_path)
    torn = tmp_path / "blobs" / "tmp" / "0123456789abcdef.part"
    torn.write_bytes(b"half a pho")
    store = BlobStore(tmp_path)
    assert not torn.exists()
    assert store.status()["torn"] == 1 and len(store) == 0


def test_a_crash_before_the_rename_leaves_nothing_but_a_temp_file(tmp_path: Path) -> None:
    """A real process killed after writing and fsyncing, before commit's rename."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from node.blobs import BlobStore\n"
        "w = BlobStore(Path(sys.argv[1])).writer()\n"
        "w.write(b'x' * 200000)\n"
        "w._file.flush(); os.fsync(w._file.fileno())\n"
        "os._exit(9)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, check=False)
    assert done.returncode == 9
    assert len(files(tmp_path / "blobs" / "tmp")) == 1
    store = BlobStore(tmp_path)
    assert len(store) == 0 and store.status()["torn"] == 1
    assert files(tmp_path) == []


def test_a_blob_rotten_on_disk_is_never_served(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 5)
    name = BlobStore(tmp_path).put(data)
    path = tmp_path / "blobs" / name[:2] / name
    rotten = bytearray(data)
    rotten[-1] ^= 0x01
    path.write_bytes(bytes(rotten))
    store = BlobStore(tmp_path)  # a restart: not hashed yet in this process
    assert store.has(name)
    with pytest.raises(BlobMismatch):
        store.open(name)
    assert not store.has(name) and not path.exists()
    assert store.status()["corrupt"] == 1
    with pytest.raises(BlobMissing):
        store.open(name)


def test_a_blob_changed_while_held_is_cut_before_its_last_chunk(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(3 * CHUNK)
    name = store.put(data)  # hashed when written: not hashed again on open
    path = store.path(name)
    with open(path, "r+b") as f:  # changed behind the store's back
        f.seek(CHUNK + 1)
        f.write(b"\x00")
    got = []
    with pytest.raises(BlobMismatch):  # what came before the error matters too
        for chunk in store.open(name):
            got.append(chunk)
    assert sum(map(len, got)) < len(data)  # the end was never sent
    assert not store.has(name) and store.status()["corrupt"] == 1


def test_files_not_named_by_a_hash_are_never_served(tmp_path: Path) -> None:
    BlobStore(tmp_path)
    (tmp_path / "blobs" / "ab").mkdir()
    (tmp_path / "blobs" / "ab" / "index.html").write_text("<script>alert(1)</script>")
    wrong_shard = "cd" + "0" * 62
    (tmp_path / "blobs" / "ab" / wrong_shard).write_bytes(b"x")
    store = BlobStore(tmp_path)
    assert len(store) == 0 and store.status()["count"] == 0
    with pytest.raises(ValueError):
        store.open("../../etc/passwd")
    with pytest.raises(BlobMissing):
        store.open(wrong_shard)


def test_the_budget_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    wall = Wall()
    store = BlobStore(tmp_path, budget=10_000, wall=wall)
    blobs = [os.urandom(3_000) for _ in range(3)]
    names = []
    for data in blobs:
        wall.now += TOUCH_INTERVAL + 1
        names.append(store.put(data))
    wall.now += TOUCH_INTERVAL + 1
    store.open(names[0]).read_all()  # the oldest, used again: now the newest
    wall.now += 1
    fourth = store.put(os.urandom(3_000))
    assert store.bytes == 9_000 <= store.budget
    assert not store.has(names[1])  # least recently used
    assert all(store.has(n) for n in (names[0], names[2], fourth))
    assert store.status()["evicted"] == 1
    # The order survives a restart (the files' mtimes).
    again = BlobStore(tmp_path, budget=10_000, wall=wall)
    assert again.hashes() == [names[2], names[0], fourth]


def test_a_lower_budget_at_start_evicts_down_to_it(tmp_path: Path) -> None:
    wall = Wall()
    store = BlobStore(tmp_path, budget=10_000, wall=wall)
    names = []
    for _ in range(3):
        wall.now += TOUCH_INTERVAL + 1
        names.append(store.put(os.urandom(3_000)))
    smaller = BlobStore(tmp_path, budget=5_000, wall=wall)
    assert smaller.hashes() == [names[2]]
    assert smaller.status()["evicted"] == 2


def test_a_blob_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, budget=1_000)
    with pytest.raises(BlobTooLarge):
        store.writer(None, 1_001)
    with pytest.raises(BlobTooLarge), store.writer() as w:
        w.write(b"x" * 1_001)
    assert files(tmp_path) == []


def test_delete_by_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    name = store.put(b"an admin deletes this")
    assert store.delete(name)
    assert not store.delete(name)
    assert files(tmp_path) == [] and store.bytes == 0
    assert store.status()["deleted"] == 1
    assert len(BlobStore(tmp_path)) == 0


def test_a_reader_survives_the_blob_being_evicted_meanwhile(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(4 * CHUNK)
    name = store.put(data)
    reader = store.open(name)
    store.delete(name)
    assert reader.read_all() == data


def test_reading_a_big_blob_streams_in_bounded_memory(tmp_path: Path) -> None:
    """64 MB written and read back in a child process whose heap grows by far
    less than the blob (ru_maxrss: the high-water mark of its memory)."""
    script = (
        "import os, resource, sys\n"
        "from pathlib import Path\n"
        "from node.blobs import BlobStore, CHUNK\n"
        "store = BlobStore(Path(sys.argv[1]), budget=100 << 20, max_blob=100 << 20)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "block = os.urandom(CHUNK)\n"
        "with store.writer(None, 64 << 20) as w:\n"
        "    for _ in range((64 << 20) // CHUNK):\n"
        "        w.write(block)\n"
        "    name = w.commit()\n"
        "store._held[name].verified = False  # as after a restart: hashed on open too\n"
        "n = sum(len(c) for c in store.open(name))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(n, after - before)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert int(out[0]) == 64 << 20
    assert int(out[1]) < 8 * 1024  # KB: a few chunks, not 64 MB


def test_the_first_hash_of_a_blob_found_at_start_pauses_between_pieces(tmp_path: Path) -> None:
    data = os.urandom(5 * CHUNK)
    name = BlobStore(tmp_path).put(data)
    pauses = []
    store = BlobStore(tmp_path, pause=lambda: pauses.append(1))
    assert store.open(name).read_all() == data
    assert len(pauses) == 5  # one per piece: the app passes gevent.sleep
    store.open(name).read_all()
    assert len(pauses) == 5  # hashed once per process
