"""Pictures and files in the chat: what the app keeps about blobs.

How this works.  The bytes live in the content-addressed store
(node/blobs.py); a message names its blob (hash, size, kind, name,
dimensions) and carries a small thumbnail (``BlobRef``, checked here both
when a page sends one and when one arrives from the mesh).  This module
keeps, per blob hash, the messages held here that name it (``named``): what
a page's ``GET /blob/<sha>`` needs to fetch a blob this router lacks (size
and origin, app/blobfetch.py), the name it is saved under, and when the
last message naming it goes (an admin's delete, retention, a room's clear)
the blob's file is deleted (``forget_gone``).  A peer that asks for a blob we
lack but know of gets it fetched from our neighbours first (``relay``), so a
blob travels hop by hop.

Who may have a blob (``may_see``, the access decision of a page's ``GET
/blob/<sha>``, app/routes_blobs.py).  Each message naming a blob is held
here with its audience: a room message's is everyone logged in (``PUBLIC``),
a direct message's the two people of its conversation (their identities,
app/direct.py).  A person may have a blob if some held message naming it is
theirs to read, or if they uploaded these bytes here within
``ORPHAN_GRACE`` (``uploaders``: they hold the bytes anyway, and so it is
the same whatever else names them).  Anyone else is answered as if the blob
did not exist, a guessed or overheard SHA-256 included; the same test
decides what a page may name in a message (``attach``), so nobody makes a
private blob public by naming its hash in a room.  An upload that no message
names yet is served to nobody but its uploader, and to no peer
(``servable``): a blob leaves this router only once a message names it.
Routers themselves are trusted with direct messages (they store and relay
the records), so a peer with the mesh key gets any blob a held message
names, room or direct (app/blobfetch.py); the check of a person is made by
the router that serves that person's page.

Uploads are counted per account, not per address, over any 24 hours
(``charge``: before the body is read, refunded if the upload fails).  The
count is kept in the data folder too (``UploadQuota``, ``uploads.json``:
written atomically at each charge and refund, only the last 24 hours, at
most ``QUOTA_ACCOUNTS`` accounts of ``QUOTA_ENTRIES`` entries), so a restart
or a power cut does not give everyone a fresh day.  An upload no message
names within ``ORPHAN_GRACE`` (the page went away between the upload and the
send) is deleted by ``sweep``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.blobfetch import BlobFetcher, MeshBlobServer, Peer
from app.i18n import N_
from app.images import (
    MAX_NAME_CHARS,
    MAX_SIDE,
    THUMB_MAX_BYTES,
    Kind,
    ThumbnailRefused,
    check_thumbnail,
    clean_name,
    sniff_file,
)
from node.blobs import MAX_BLOB_BYTES, BlobStore, is_sha256_hex
from node.logs import write_atomically

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
# An upload waits this long for the message that names it; then it goes.
ORPHAN_GRACE = 3600.0
# base64 of a THUMB_MAX_BYTES thumbnail.
THUMB_MAX_CHARS = 4 * ((THUMB_MAX_BYTES + 2) // 3)
BLOB_FIELDS = frozenset({"sha", "size", "kind", "name", "w", "h"})
KINDS = frozenset(k.value for k in Kind)
# The upload quota on disk (``UploadQuota``), in the data folder.
QUOTA_FILE = "uploads.json"
# Accounts that uploaded within 24 hours kept there: far more than upload on
# one router in a day; beyond, the one whose last upload is oldest is
# forgotten (its count restarts: it can only upload more, never less).
QUOTA_ACCOUNTS = 256
# Uploads kept per account: beyond, its two oldest become one, counted until
# a day after the later of them (stricter by at most that gap, never laxer).
# With QUOTA_ACCOUNTS the file stays under ~200 KB; it is a few hundred
# bytes on a normal day.
QUOTA_ENTRIES = 32
QUOTA_FILE_MAX = 1 << 20  # a bigger file is not ours: not read
ACCOUNT_ID_MAX = 64  # an account id is "<16 hex>:<seq>" (app/accounts.py)
NOT_HERE = N_("That file is not on this router: upload it again.")
# Who may read a message naming a blob: ``PUBLIC`` (a room's message: anyone
# logged in) or the identities of a direct conversation's two people.
Audience = frozenset[str] | None
PUBLIC: Audience = None


class AttachmentRefused(ValueError):
    """A blob reference or thumbnail that is not well formed; says why."""


@dataclass(frozen=True)
class BlobRef:
    """What a message says of its blob."""

    sha: str
    size: int
    kind: str  # a Kind value: "jpeg", "png", "webp", "gif" shown inline, "file" a download
    name: str
    w: int = 0
    h: int = 0

    def as_body(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "size": self.size,
            "kind": self.kind,
            "name": self.name,
            "w": self.w,
            "h": self.h,
        }


def _int(value: Any, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise AttachmentRefused(f"a blob's sizes are whole numbers from 0 to {high}")
    return value


def parse_blob(value: Any) -> BlobRef:
    """A record's ``blob`` field, bounded like every field from the mesh."""
    if not isinstance(value, dict) or set(value) != BLOB_FIELDS:
        raise AttachmentRefused("a blob is {sha, size, kind, name, w, h}")
    sha, kind, name = value["sha"], value["kind"], value["name"]
    if not isinstance(sha, str) or not is_sha256_hex(sha):
        raise AttachmentRefused("a blob is named by its SHA-256 in lower-case hex")
    if kind not in KINDS:
        raise AttachmentRefused("a blob's kind is jpeg, png, webp, gif or file")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise AttachmentRefused(f"a blob's name is 1 to {MAX_NAME_CHARS} characters")
    if clean_name(name, Kind(kind)) != name:
        raise AttachmentRefused("a blob's name is a clean file name")
    size = _int(value["size"], MAX_BLOB_BYTES)
    w, h = _int(value["w"], MAX_SIDE), _int(value["h"], MAX_SIDE)
    if kind != Kind.FILE and not (w and h):
        raise AttachmentRefused("an image has its dimensions")
    return BlobRef(sha, size, kind, name, w, h)


def parse_thumb(value: Any) -> bytes:
    """A record's ``thumb`` field: base64 of a small image (app/images.py
    ``check_thumbnail``), checked again on every router."""
    if not isinstance(value, str) or not 0 < len(value) <= THUMB_MAX_CHARS:
        raise AttachmentRefused(f"a thumbnail is base64 of at most {THUMB_MAX_BYTES} bytes")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise AttachmentRefused("a thumbnail is base64") from None
    try:
        check_thumbnail(data)
    except ThumbnailRefused as e:
        raise AttachmentRefused(str(e)) from None
    return data


# What the log line of a message naming a blob holds: its body's key, as
# the store writes it (app/chat.py finds older such messages by it).
BLOB_LINE = '"blob":'


def ref_of(body: Any) -> BlobRef | None:
    """The blob a stored message names, if any (a page's frame; never raises)."""
    try:
        return parse_blob(body.get("blob")) if "blob" in body else None
    except AttributeError:
        return None
    except AttachmentRefused:
        return None


def check_blob_fields(body: Any) -> bool:
    """A message's ``blob`` and ``thumb`` fields (when it has them) are well
    formed: the blob bounded, the thumbnail a small image (checked again on
    every router, whatever the sender checked)."""
    try:
        parse_blob(body.get("blob"))
        if "thumb" in body:
            parse_thumb(body["thumb"])
    except AttachmentRefused:
        return False
    return True


Charge = tuple[list[float], int]  # an upload's entry in UploadQuota and its bytes


class UploadQuota:
    """Bytes uploaded per account over the last 24 hours, in memory and in
    ``path``.  Times in memory are monotonic (a clock step at NTP sync moves
    nothing); on disk they are wall-clock seconds, read back as ages.  A time
    on disk after the clock's now (a router without a real-time clock that
    restarted at an older time) is read as "just now": it counts a whole
    day more, never less."""

    def __init__(
        self,
        path: Path,
        per_day: int,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.per_day = path, per_day
        self.wall, self.monotonic = wall, monotonic
        # account -> [when (monotonic), bytes], oldest first; the dict in the
        # order of each account's last upload (oldest first)
        self.spent: dict[str, deque[list[float]]] = {}
        self.counts: Counter[str] = Counter()
        self._load()

    def left(self, account: str) -> int:
        """Bytes ``account`` may still upload in the current 24 hours."""
        spent = self.spent.get(account)
        if spent is None:
            return self.per_day
        self._expire(account, self.monotonic())
        spent = self.spent.get(account)
        if spent is None:
            return self.per_day
        return max(0, self.per_day - int(sum(n for _, n in spent)))

    def charge(self, account: str, size: int) -> Charge:
        """Count ``size`` bytes against ``account``, on disk before this
        returns; what ``refund`` takes back."""
        entry = [self.monotonic(), float(size)]
        spent = self.spent.pop(account, None) or deque()
        spent.append(entry)
        if len(spent) > QUOTA_ENTRIES:
            first = spent.popleft()
            spent[0][1] += first[1]  # counted until a day after the later one
        self.spent[account] = spent  # now the most recent uploader
        while len(self.spent) > QUOTA_ACCOUNTS:
            del self.spent[next(iter(self.spent))]
            self.counts["quota_forgotten"] += 1
        self._save()
        return entry, size

    def refund(self, account: str, charged: Charge) -> None:
        """An upload that failed does not count (if its entry was merged
        with an older one, or has expired, nothing changes)."""
        entry, size = charged
        spent = self.spent.get(account)
        if spent is None or not any(e is entry for e in spent):
            return
        entry[1] -= size
        if entry[1] <= 0:
            spent.remove(entry)
            if not spent:
                del self.spent[account]
        self._save()

    def _expire(self, account: str, now: float) -> None:
        spent = self.spent[account]
        while spent and spent[0][0] <= now - DAY:
            spent.popleft()
        if not spent:
            del self.spent[account]

    def _save(self) -> None:
        now, wall = self.monotonic(), self.wall()
        for account in list(self.spent):
            self._expire(account, now)
        data = {
            "v": 1,
            "accounts": {
                a: [[int(wall - (now - when)) + 1, int(n)] for when, n in spent]
                for a, spent in self.spent.items()
            },
        }
        try:
            write_atomically(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as e:  # a full or read-only flash: the count stays in memory
            self.counts["quota_not_saved"] += 1
            log.warning("upload quota not saved to %s: %s", self.path, e)

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(QUOTA_FILE_MAX + 1)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("upload quota not read from %s: %s", self.path, e)
            return
        try:
            accounts = _quota_accounts(raw)
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deep for json
            self.counts["quota_file_bad"] += 1
            log.warning("upload quota file %s ignored: %s", self.path, e)
            return
        now, wall = self.monotonic(), self.wall()
        loaded = []
        for account, entries in accounts.items():
            spent = deque(
                [now - max(0.0, wall - when), float(n)]
                for when, n in entries[-QUOTA_ENTRIES:]
                if wall - when < DAY
            )
            if spent:
                loaded.append((spent[-1][0], account, spent))
        for _, account, spent in sorted(loaded)[-QUOTA_ACCOUNTS:]:
            self.spent[account] = spent


def _quota_accounts(raw: bytes) -> dict[str, list[tuple[int, int]]]:
    """``uploads.json``'s accounts, every field checked; ValueError if not ours."""
    if len(raw) > QUOTA_FILE_MAX:
        raise ValueError("too large")
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("v") != 1:
        raise ValueError("not version 1")
    accounts = data.get("accounts")
    if not isinstance(accounts, dict):
        raise ValueError("no accounts")
    found: dict[str, list[tuple[int, int]]] = {}
    for account, entries in accounts.items():
        if not 0 < len(account) <= ACCOUNT_ID_MAX or not isinstance(entries, list):
            raise ValueError("an account is an id and a list")
        pairs = []
        for e in entries:
            if not (
                isinstance(e, list)
                and len(e) == 2
                and all(type(x) is int and 0 <= x < 1 << 53 for x in e)
            ):
                raise ValueError("an upload is [unix seconds, bytes]")
            pairs.append((e[0], e[1]))
        found[account] = sorted(pairs)
    return found


@dataclass(frozen=True)
class Naming:
    """One held message naming a blob: who may read it, and the file name
    it gives the blob (two messages may name the same bytes differently)."""

    audience: Audience
    name: str

    def readable_by(self, person: str) -> bool:
        return self.audience is None or person in self.audience  # None: PUBLIC


@dataclass
class Named:
    """A blob as the messages held here name it."""

    size: int
    kind: str
    origin: str  # the router whose message first named it here: asked first
    rids: dict[tuple[str, int], Naming] = field(default_factory=dict)  # the messages naming it

    @property
    def public(self) -> bool:
        """Some room message names it: anyone logged in may have it."""
        return any(n.audience is PUBLIC for n in self.rids.values())

    def readable_by(self, person: str) -> bool:
        return any(n.readable_by(person) for n in self.rids.values())

    def name_for(self, person: str | None) -> str:
        """The file name a message ``person`` may read gives it ("" if
        none): never the name someone else's direct message gave it."""
        if person is None:
            return ""
        return next((n.name for n in self.rids.values() if n.readable_by(person)), "")


class Attachments:
    """The app's blob half: store, fetcher and peers' server, the messages
    naming each blob, and the upload quota."""

    def __init__(
        self,
        store: BlobStore,
        keys: Callable[[], Sequence[bytes]],
        peers: Callable[[], Sequence[Peer]],
        *,
        node_id: str,
        max_upload: int,
        per_day: int,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_upload = min(max_upload, store.max_blob)
        self.per_day = per_day
        self.wall, self.monotonic = wall, monotonic
        self.quota = UploadQuota(
            store.root.parent / QUOTA_FILE, per_day, wall=wall, monotonic=monotonic
        )
        self.fetcher = BlobFetcher(store, keys, peers, node_id=node_id, wall=wall)
        self.server = MeshBlobServer(
            store, keys, wall=wall, relay=self.relay, servable=self.servable
        )
        self.named: dict[str, Named] = {}
        self.pending: dict[str, float] = {}  # uploaded sha -> when, until a message names it
        # sha -> person (identity) -> when they uploaded it here: theirs to
        # see and to name for ORPHAN_GRACE, whatever else names it.
        self.uploaders: dict[str, dict[str, float]] = {}
        self.counts: Counter[str] = Counter()

    # -- messages naming blobs ------------------------------------------------------------

    def name(self, ref: BlobRef, rid: tuple[str, int], audience: Audience = PUBLIC) -> None:
        """The message ``rid`` (origin, seq) naming ``ref`` is held here;
        ``audience``: who may read it (``PUBLIC`` for a room's message, the
        two identities of a direct conversation)."""
        named = self.named.get(ref.sha)
        if named is None:
            named = self.named[ref.sha] = Named(ref.size, ref.kind, rid[0])
        named.rids[rid] = Naming(audience, ref.name)
        self.pending.pop(ref.sha, None)

    # -- who may have a blob --------------------------------------------------------------

    def may_see(self, sha: str, person: str | None) -> bool:
        """The access decision of a page: whether ``person`` (an identity,
        app/accounts.py ``Accounts.identity``; None: nobody logged in) may
        have the blob ``sha``.  True if a held message naming it is a room's,
        or a direct message of theirs, or if they uploaded these bytes here
        within ``ORPHAN_GRACE``.  False for everyone else, and for a blob
        nothing names: the page answers both as "not held" (404)."""
        if person is None:
            return False
        named = self.named.get(sha)
        if named is not None and named.readable_by(person):
            return True
        return person in self.uploaders.get(sha, ())

    def name_for(self, sha: str, person: str | None) -> str:
        """The name ``person`` downloads ``sha`` under: one a message they
        may read gives it ("" if none, e.g. their own upload not sent yet)."""
        named = self.named.get(sha)
        return "" if named is None else named.name_for(person)

    def is_public(self, sha: str) -> bool:
        """A room message names ``sha`` (anyone logged in may have it)."""
        named = self.named.get(sha)
        return named is not None and named.public

    def is_private(self, sha: str) -> bool:
        """Only direct messages name ``sha``: its pages are not cached."""
        named = self.named.get(sha)
        return named is not None and not named.public

    def servable(self, sha: str) -> bool:
        """What a peer (with the mesh key) may fetch: a blob some held
        message names, room or direct; never an upload no message names."""
        return sha in self.named

    def forget_gone(self, held: Callable[[str, int], bool]) -> int:
        """Messages are gone (an admin's delete, a room's clear, retention):
        each blob no held message names any more is deleted from the disk.
        ``held(origin, seq)`` says whether a message is still held.  Returns
        how many files were deleted."""
        deleted = 0
        for sha, named in list(self.named.items()):
            named.rids = {rid: who for rid, who in named.rids.items() if held(*rid)}
            if not named.rids:
                del self.named[sha]
                self.pending.pop(sha, None)
                self.uploaders.pop(sha, None)
                if self.store.delete(sha):
                    deleted += 1
        return deleted

    def attach(self, blob: Any, thumb: Any, by: str | None) -> tuple[BlobRef, str | None]:
        """What a page's message says of the blob it uploaded here (``blob``:
        ``{sha, name}``) and its thumbnail (base64, or None for a file):
        size, kind and dimensions from the bytes held, the name cleaned.
        ``by``: the sender's identity; a blob they may not have
        (``may_see``: someone else's direct message, a stranger's upload) is
        "not on this router", as one not held.  Raises AttachmentRefused."""
        if not isinstance(blob, dict) or not isinstance(blob.get("sha"), str):
            raise AttachmentRefused("a blob is {sha, name}")
        sha, name = blob["sha"], blob.get("name", "")
        if not is_sha256_hex(sha) or not self.may_see(sha, by) or not self.store.has(sha):
            raise AttachmentRefused(NOT_HERE)
        if not isinstance(name, str):
            raise AttachmentRefused("a blob's name is text")
        try:
            found = sniff_file(self.store.path(sha))
        except OSError:  # evicted meanwhile
            raise AttachmentRefused(NOT_HERE) from None
        size = self.store.size(sha) or 0
        w, h = (found.width, found.height) if found.inline else (0, 0)
        ref = BlobRef(sha, size, found.kind.value, clean_name(name, found.kind), w, h)
        if thumb is None or thumb == "":
            return ref, None
        parse_thumb(thumb)
        return ref, thumb

    def relay(self, sha: str, asker: str, hops: int) -> bool | None:
        """A peer asks for a blob we lack: fetch it if a message names it."""
        named = self.named.get(sha)
        if named is None or named.size > self.store.max_blob:
            return False
        return self.fetcher.fetch_for_peer(sha, named.size, named.origin, asker, hops)

    def fetch(self, sha: str) -> bool:
        """Held here, fetched from a peer if need be (a page asks): True if held."""
        if self.store.has(sha):
            return True
        named = self.named.get(sha)
        if named is None:
            return False
        return self.fetcher.fetch(sha, named.size, named.origin)

    # -- the upload quota -----------------------------------------------------------------

    def left_today(self, account: str) -> int:
        """Bytes ``account`` may still upload in the current 24 hours."""
        return self.quota.left(account)

    def charge(self, account: str, size: int) -> Charge:
        """Count an upload against ``account`` (before its body is read;
        kept in the data folder before this returns)."""
        return self.quota.charge(account, size)

    def refund(self, account: str, charged: Charge) -> None:
        """An upload that failed does not count."""
        self.quota.refund(account, charged)

    def uploaded(self, sha: str, person: str) -> None:
        """``person`` (an identity) stored an upload here: waiting for the
        message that names it, and theirs to see and name meanwhile."""
        self.counts["uploads"] += 1
        now = self.monotonic()
        self.uploaders.setdefault(sha, {})[person] = now
        if sha not in self.named:
            self.pending[sha] = now

    def sweep(self) -> int:
        """Delete uploads no message named within ``ORPHAN_GRACE``; forget
        who uploaded what longer ago than that."""
        now, gone = self.monotonic(), 0
        for sha, by in list(self.uploaders.items()):
            for person, when in list(by.items()):
                if now - when >= ORPHAN_GRACE:
                    del by[person]
            if not by:
                del self.uploaders[sha]
        for sha, when in list(self.pending.items()):
            if now - when >= ORPHAN_GRACE:
                del self.pending[sha]
                if sha not in self.named and self.store.delete(sha):
                    gone += 1
        self.counts["orphans_deleted"] += gone
        return gone

    def status(self) -> dict[str, Any]:
        return self.store.status() | {
            "named": len(self.named),
            "uploads": self.counts["uploads"],
            "orphans_deleted": self.counts["orphans_deleted"],
            "quota": {"accounts": len(self.quota.spent)} | dict(self.quota.counts),
            "limits": {"max_upload": self.max_upload, "upload_bytes_per_day": self.per_day},
            "fetch": self.fetcher.status(),
            "serve": dict(self.server.counts),
        }
