"""Blobs: pictures and files, stored by the SHA-256 of their bytes.

How this works: a blob lives in ``<data>/blobs/<first two hex digits>/<64 hex
digits>``, named by the SHA-256 of its bytes (lower-case hex), so one photo
posted twice, or fetched from two peers, is one file, and a name says what
its bytes must be.  256 shard folders keep every folder small on flash file
systems (jffs2 and ubifs list a folder linearly).

Writing is crash-safe: a ``BlobWriter`` streams into a temp file in
``blobs/tmp/`` while hashing, and ``commit()`` checks the size and the hash,
fsyncs, renames into place and fsyncs the shard folder.  A power cut leaves
either the whole blob under its name or a temp file, and every temp file is
removed at start (``torn``).  Bytes that do not hash to the name they were
announced under are never renamed into place (``BlobMismatch``).

Reading streams: ``open()`` returns a ``BlobReader`` that yields
``CHUNK``-sized pieces, never the whole blob (a router has 128 MB of RAM,
a blob may be several MB).  A blob found on disk at start is hashed once,
in chunks, the first time it is read in this process; and every read hashes
as it streams and holds back the last chunk until the hash matches.  So a
blob whose bytes no longer match its name (flash bit rot, an operator's
edit) is never served whole: the reader raises ``BlobMismatch`` instead of
yielding the end, the file is removed and counted as ``corrupt``.

Storage is bounded by a budget per router (bytes).  Committing a blob that
would go over it evicts the least recently used blobs first: "use" is a
commit or a read, kept in memory and in the file's mtime (touched at most
once an ``TOUCH_INTERVAL``, a metadata write on flash), so the order
survives a restart.  mtimes are the wall clock: a router whose clock steps
at NTP sync may evict in a slightly wrong order once; nothing else depends
on it.  A blob larger than the budget is refused (``BlobTooLarge``).
Unlinking a blob that is being read is safe: the reader holds its file open.

What a blob is (an image shown inline or a download), who may fetch it and
which records name it are the app's to know (app/images.py,
app/blobfetch.py); this module knows bytes and names.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

BLOB_DIR = "blobs"
TMP_DIR = "tmp"
TMP_SUFFIX = ".part"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Read and write in 64 KiB pieces: a few syscalls per photo, and no more than
# this much of a blob in memory per open reader or writer.
CHUNK = 64 * 1024
# Default storage for blobs per router: a few hundred photos of a few hundred
# KB.  Routers keep the data folder on flash (an overlay of 16-128 MB) or a
# USB stick; the operator sets it to fit (a flag, app/config.py).
DEFAULT_BUDGET = 64 * 1024 * 1024
# The largest blob at all, whatever the budget: 16 MiB is a long phone video's
# worth of a download; uploads have their own, smaller limit in the app.
MAX_BLOB_BYTES = 16 * 1024 * 1024
# A read moves a blob to the front of the eviction order in memory at once;
# on disk (its mtime) at most once an hour, so serving a popular photo does
# not write flash on every view.
TOUCH_INTERVAL = 3600.0


class BlobError(Exception):
    """Something about a blob is wrong; the subclass says what."""


class BlobMismatch(BlobError):
    """Bytes that do not hash to the name they were announced under."""


class BlobTooLarge(BlobError):
    """Over the size announced, ``MAX_BLOB_BYTES`` or the whole budget."""


class BlobMissing(BlobError):
    """No blob of that name here (never held, evicted or deleted)."""


def is_sha256_hex(name: str) -> bool:
    return SHA256_HEX.fullmatch(name) is not None


def _check_name(sha: str) -> None:
    if not is_sha256_hex(sha):
        raise ValueError(f"not a SHA-256 in lower-case hex: {sha!r}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Held:
    size: int
    last_used: float  # wall-clock seconds, as the file's mtime
    touched: float  # when the mtime was last written
    verified: bool  # hashed in this process (written here, or read once)


class BlobStore:
    """Content-addressed blobs in ``<data_dir>/blobs``, within ``budget`` bytes."""

    def __init__(
        self,
        data_dir: Path,
        budget: int = DEFAULT_BUDGET,
        *,
        max_blob: int = MAX_BLOB_BYTES,
        wall: Callable[[], float] = time.time,
        pause: Callable[[], object] = lambda: None,
    ) -> None:
        """``pause`` is called between pieces of a long hash (the first read
        of a blob found at start): the app passes ``gevent.sleep`` so that
        hashing 16 MB on a router CPU never stalls the other pages."""
        if budget <= 0 or max_blob <= 0:
            raise ValueError("budget and max_blob must be positive")
        self.root = Path(data_dir) / BLOB_DIR
        self.tmp = self.root / TMP_DIR
        self.budget = budget
        self.max_blob = min(max_blob, budget)
        self.wall = wall
        self.pause = pause
        self.counts: Counter[str] = Counter()  # for /status, see ``status()``
        self._held: dict[str, _Held] = {}
        self.bytes = 0
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self._load()

    # -- start ------------------------------------------------------------------------------

    def _load(self) -> None:
        """Remove torn temp files; index the blobs on disk by name, size and mtime."""
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            self.counts["torn"] += 1
        for shard in os.scandir(self.root):
            if shard.name == TMP_DIR or not shard.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(shard.path):
                if not (is_sha256_hex(entry.name) and entry.name[:2] == shard.name):
                    self.counts["foreign"] += 1  # not ours: left alone, never served
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_size > self.max_blob:
                    self.counts["foreign"] += 1
                    continue
                self._held[entry.name] = _Held(st.st_size, st.st_mtime, st.st_mtime, False)
                self.bytes += st.st_size
        if self.bytes > self.budget:  # the operator lowered the budget
            self._evict_for(0, keep="")
        if self.counts["torn"]:
            log.info("removed %d torn blob temp files", self.counts["torn"])

    # -- queries ----------------------------------------------------------------------------

    def path(self, sha: str) -> Path:
        _check_name(sha)
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return sha in self._held

    def size(self, sha: str) -> int | None:
        held = self._held.get(sha)
        return held.size if held else None

    def hashes(self) -> list[str]:
        """Every blob held, least recently used first."""
        return sorted(self._held, key=lambda s: self._held[s].last_used)

    def __len__(self) -> int:
        return len(self._held)

    def status(self) -> dict[str, Any]:
        """/status: what is held, and what happened since start."""
        return {
            "count": len(self._held),
            "bytes": self.bytes,
            "budget": self.budget,
            "stored": self.counts["stored"],  # written here (an upload)
            "fetched": self.counts["fetched"],  # written from a peer
            "evicted": self.counts["evicted"],
            "deleted": self.counts["deleted"],
            "served": self.counts["served"],
            "corrupt": self.counts["corrupt"],
            "refused": self.counts["refused"],  # writes that failed their check
            "torn": self.counts["torn"],
        }

    # -- writing ----------------------------------------------------------------------------

    def writer(
        self, expected: str | None = None, size: int | None = None, *, source: str = "stored"
    ) -> BlobWriter:
        """A writer for one blob.  ``expected``: the name it was announced
        under (a fetch), checked at commit; None for an upload (named by its
        hash).  ``size``: the exact size announced, if known.  ``source`` is
        the counter a commit adds to: "stored" or "fetched"."""
        if expected is not None:
            _check_name(expected)
        limit = self.max_blob
        if size is not None:
            if size < 0 or size > self.max_blob:
                self.counts["refused"] += 1
                raise BlobTooLarge(f"{size} bytes: blobs here are at most {self.max_blob}")
            limit = size
        return BlobWriter(self, expected, size, limit, source)

    def put(self, data: bytes, *, expected: str | None = None, source: str = "stored") -> str:
        """Store ``data`` (small blobs, tests); returns its name."""
        with self.writer(expected, len(data), source=source) as w:
            w.write(data)
            return w.commit()

    def _commit(self, tmp: Path, sha: str, size: int, source: str) -> None:
        """Rename a complete, checked temp file into place (``BlobWriter.commit``)."""
        if sha in self._held:  # the same bytes again: keep the first copy
            tmp.unlink()
            self._use(sha)
            return
        self._evict_for(size, keep=sha)
        final = self.path(sha)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        now = self.wall()
        os.utime(final, (now, now))
        self._held[sha] = _Held(size, now, now, True)
        self.bytes += size
        self.counts[source] += 1

    def _evict_for(self, size: int, keep: str) -> None:
        """Remove least recently used blobs until ``size`` more bytes fit."""
        for sha in self.hashes():
            if self.bytes + size <= self.budget:
                return
            if sha != keep:
                self._remove(sha)
                self.counts["evicted"] += 1

    # -- reading ----------------------------------------------------------------------------

    def open(self, sha: str) -> BlobReader:
        """A streaming reader of a held blob (``BlobMissing`` if none).  The
        file is open from here on: evicting it meanwhile does not cut a read."""
        _check_name(sha)
        held = self._held.get(sha)
        if held is None:
            raise BlobMissing(sha)
        try:
            f = open(self.path(sha), "rb")  # the reader owns it
        except FileNotFoundError:  # removed behind our back
            self._forget(sha)
            raise BlobMissing(sha) from None
        try:
            if not held.verified:
                digest = hashlib.sha256()
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    self.pause()
                if digest.hexdigest() != sha:
                    self._corrupt(sha)
                    raise BlobMismatch(f"{sha}: bytes on disk do not match the name")
                held.verified = True
                f.seek(0)
        except BaseException:
            f.close()
            raise
        self._use(sha)
        self.counts["served"] += 1
        return BlobReader(self, sha, f, held.size)

    def _use(self, sha: str) -> None:
        held = self._held[sha]
        now = self.wall()
        held.last_used = now
        if abs(now - held.touched) >= TOUCH_INTERVAL:
            held.touched = now
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path(sha), (now, now))

    def _corrupt(self, sha: str) -> None:
        log.warning("blob %s does not match its name: removed", sha)
        self.counts["corrupt"] += 1
        self._remove(sha)

    # -- removing ---------------------------------------------------------------------------

    def delete(self, sha: str) -> bool:
        """Remove a blob (an admin's delete, retention); True if it was held."""
        _check_name(sha)
        if sha not in self._held:
            return False
        self._remove(sha)
        self.counts["deleted"] += 1
        return True

    def _remove(self, sha: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha).unlink()
        self._forget(sha)

    def _forget(self, sha: str) -> None:
        held = self._held.pop(sha, None)
        if held is not None:
            self.bytes -= held.size


class BlobWriter:
    """One blob being written: ``write()`` pieces, then ``commit()``.  As a
    context manager it removes its temp file if it was not committed."""

    def __init__(
        self, store: BlobStore, expected: str | None, size: int | None, limit: int, source: str
    ) -> None:
        self.store, self.expected, self.size, self.limit = store, expected, size, limit
        self.source = source
        self.written = 0
        self._digest = hashlib.sha256()
        self._tmp = store.tmp / f"{secrets.token_hex(8)}{TMP_SUFFIX}"
        self._file = open(self._tmp, "xb")  # closed by commit or abort
        self.done = False

    def write(self, data: bytes) -> None:
        if self.done:
            raise ValueError("blob writer already closed")
        if self.written + len(data) > self.limit:
            self.abort()
            self.store.counts["refused"] += 1
            raise BlobTooLarge(f"over {self.limit} bytes")
        self._file.write(data)
        self._digest.update(data)
        self.written += len(data)

    def commit(self) -> str:
        """Check, fsync, rename into place; returns the blob's name."""
        if self.done:
            raise ValueError("blob writer already closed")
        sha = self._digest.hexdigest()
        if self.size is not None and self.written != self.size:
            self.abort()
            self.store.counts["refused"] += 1
            raise BlobMismatch(f"{self.written} bytes, {self.size} announced")
        if self.expected is not None and sha != self.expected:
            self.abort()
            self.store.counts["refused"] += 1
            raise BlobMismatch(f"bytes hash to {sha}, announced as {self.expected}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.done = True
        try:
            self.store._commit(self._tmp, sha, self.written, self.source)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            raise
        return sha

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class BlobReader:
    """A held blob's bytes, ``CHUNK`` at a time (an iterable a WSGI server
    can send as a response body; it calls ``close()``).  The last chunk is
    yielded only once the whole blob hashed to its name."""

    def __init__(self, store: BlobStore, sha: str, f: Any, size: int) -> None:
        self.store, self.sha, self._file, self.size = store, sha, f, size

    def __iter__(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        held_back = b""
        sent = 0
        try:
            while chunk := self._file.read(CHUNK):
                if held_back:
                    yield held_back
                held_back = chunk
                digest.update(chunk)
                sent += len(chunk)
                if sent > self.size:
                    break
            if sent != self.size or digest.hexdigest() != self.sha:
                if self.store.has(self.sha):
                    self.store._corrupt(self.sha)
                raise BlobMismatch(f"{self.sha}: changed on disk while read")
            if held_back:
                yield held_back
        finally:
            self.close()

    def read_all(self) -> bytes:
        """The whole blob (thumbnails and tests: small blobs only)."""
        return b"".join(self)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "BLOB_DIR",
    "CHUNK",
    "DEFAULT_BUDGET",
    "MAX_BLOB_BYTES",
    "BlobError",
    "BlobMismatch",
    "BlobMissing",
    "BlobReader",
    "BlobStore",
    "BlobTooLarge",
    "BlobWriter",
    "is_sha256_hex",
]
