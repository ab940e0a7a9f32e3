"""Blobs between routers: a peer serves ``GET /mesh/blob/<sha256>``, and a
router that lacks a blob a page asks for fetches it from a peer that holds it.

How this works.  A record names its blob (hash and size) and carries a
thumbnail, so a room is complete everywhere as soon as the record arrives;
the full blob moves only when a page on some router first asks for it
(tests/bench/bench_blob_fec.py measured why: unicast pulls, see docs/BLOBS.md).

Serving (``install_mesh_blob_route``): the route streams the blob from the
store (node/blobs.py: never whole in memory, never bytes that do not hash to
the name), paced by one token bucket for all peers (``SERVE_RATE``, as
catch-up is paced) and at most ``MAX_SERVING`` at once.  Only routers of the
mesh may ask: the request carries ``X-Mesh-Auth: <unix time>.<nonce>.<mac>``,
the MAC an HMAC-SHA256 (16 bytes, as on the mesh's datagrams) under the mesh
key (node/keys.py: the current key signs, current and previous verify) over
method, path, time and nonce.  A request older or newer than ``MAX_SKEW``, or
one seen before (a replay, within the window), is refused 401.  Routers often
have no real-time clock, so a 401 for the time carries the server's own time,
MAC'd with the asker's nonce (``X-Mesh-Time``): the asker keeps the offset per
peer and asks once more, as Hawk does.  The bytes themselves need no MAC:
their hash is their name, checked by the fetcher.  What a peer may have is
the chat's to say (``servable``): any blob a held message names, a room's
or a direct one's (routers hold direct messages already; who may see one
is checked by the router serving the person's page), never an upload no
message names yet.

Fetching (``BlobFetcher.fetch``): one fetch per blob however many pages ask
at once (the others wait for it: ``shared``); the record's origin is asked
first, then the other peers; the response must have exactly the size the
record announced, and the bytes are hashed while they stream to a temp file
(``BlobStore.writer``): bytes that do not match are refused and not stored,
and the next peer is asked.  Every fetch is bounded in time (``DEADLINE``
whole, ``IO_TIMEOUT`` for any one read) and in size.

This module opens TCP connections with http.client: cooperative under
gevent's monkey patching (app/__main__.py), as everything in the app.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import random
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import bottle
import gevent
import gevent.event
import gevent.lock

from node.blobs import (
    CHUNK,
    BlobError,
    BlobMismatch,
    BlobMissing,
    BlobReader,
    BlobStore,
    is_sha256_hex,
)
from node.sync import TokenBucket

log = logging.getLogger(__name__)

MESH_BLOB_PREFIX = "/mesh/blob/"
AUTH_HEADER = "X-Mesh-Auth"
TIME_HEADER = "X-Mesh-Time"
# Who asks (its node id: not asked back) and how many routers the request
# has already crossed.  A router asked for a blob it lacks but knows of (a
# record names it) fetches it from its own neighbours first, so a blob goes
# hop by hop along the mesh, once per hop that needs it (A -> B -> C when C
# does not hear A).  Neither header is MAC'd: a forged one only makes a
# router with the key's trust ask once more or not at all.
FROM_HEADER = "X-Mesh-From"
HOPS_HEADER = "X-Mesh-Hops"
MAX_HOPS = 4  # a relay chain this long at most (the mesh's relay hop limit is alike)
# A relay answers 503 (ask again) if its own fetch takes longer than this,
# so the asker's read never times out while the relay fetches on; the asker
# asks again after ``RETRY_AFTER``.
RELAY_WAIT = 3.0
RETRY_AFTER = 1.0
MAC_BYTES = 16  # as node/wire.py's MAC_LEN: 128 bits
NONCE_BYTES = 8
# A request is good for this long either side of the server's clock: long
# enough for a slow link and a clock that drifts, short for a replay.
MAX_SKEW = 60.0
# Accepted requests remembered against replays (each for 2 x MAX_SKEW): far
# more than routers fetch in two minutes; only requests with a good MAC get in.
MAX_REMEMBERED = 4096
# Serving to peers is paced as catch-up is (node/sync.py CATCHUP_RATE), all
# peers together: a cell's air is shared with the chat's live traffic.
SERVE_RATE = 1_000_000
SERVE_BURST = 2 * CHUNK
MAX_SERVING = 4  # peers served at once; more get 503 and ask another peer
# Fetching: a whole fetch from one peer and then the next, and any one read.
DEADLINE = 60.0
IO_TIMEOUT = 5.0
MAX_PEERS_TRIED = 4  # the origin and three more: a blob nobody has is not searched for long


@dataclass(frozen=True)
class Peer:
    """A router that may hold a blob: its node id and where its chat listens."""

    node: str
    host: str
    port: int


# -- authentication ------------------------------------------------------------------------


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).digest()[:MAC_BYTES].hex()


def sign(key: bytes, method: str, path: str, when: int, nonce: str | None = None) -> str:
    """The ``X-Mesh-Auth`` value of a request."""
    nonce = nonce or secrets.token_hex(NONCE_BYTES)
    return f"{when}.{nonce}.{_mac(key, method, path, str(when), nonce)}"


def sign_time(key: bytes, when: int, nonce: str) -> str:
    """The ``X-Mesh-Time`` value: the server's time, bound to the asker's nonce."""
    return f"{when}.{_mac(key, 'time', str(when), nonce)}"


class Verifier:
    """Checks ``X-Mesh-Auth`` values; remembers those accepted (replays)."""

    def __init__(self, keys: Callable[[], Sequence[bytes]], wall: Callable[[], float]) -> None:
        self.keys, self.wall = keys, wall
        self._seen: OrderedDict[str, float] = OrderedDict()  # value -> when it may be forgotten

    def check(self, method: str, path: str, value: str) -> tuple[str, str]:
        """("", nonce) if good, else (reason, nonce): "malformed", "bad_mac",
        "skew" (the asker may retry with our time) or "replayed"."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            return "malformed", ""
        when, nonce, mac = parts
        if len(nonce) != 2 * NONCE_BYTES or len(mac) != 2 * MAC_BYTES:
            return "malformed", ""
        if not any(
            hmac.compare_digest(mac, _mac(k, method, path, when, nonce)) for k in self.keys()
        ):
            return "bad_mac", nonce
        now = self.wall()
        if abs(now - int(when)) > MAX_SKEW:
            return "skew", nonce
        self._expire(now)
        if value in self._seen:
            return "replayed", nonce
        self._seen[value] = now + 2 * MAX_SKEW
        if len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return "", nonce

    def _expire(self, now: float) -> None:
        while self._seen:
            value, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[value]


# -- serving -------------------------------------------------------------------------------


class MeshBlobServer:
    """The handler of ``GET /mesh/blob/<sha256>`` for peers."""

    def __init__(
        self,
        store: BlobStore,
        keys: Callable[[], Sequence[bytes]],
        *,
        rate: float = SERVE_RATE,
        max_serving: int = MAX_SERVING,
        wall: Callable[[], float] = time.time,
        relay: Callable[[str, str, int], bool | None] | None = None,
        servable: Callable[[str], bool] | None = None,
    ) -> None:
        """``relay(sha, asker, hops)``: fetch a blob we lack for a peer that
        asks for it: True once held, None while still fetching (503, ask
        again), False if it cannot be had.  None: serve only what is held.
        ``servable(sha)``: whether peers may have that blob at all (the
        chat's rule: one a held message names, app/attachments.py); others
        are answered 404 as not held.  None: whatever is held."""
        self.store = store
        self.keys = keys
        self.relay = relay
        self.servable = servable
        self.verifier = Verifier(keys, wall)
        self.wall = wall
        self.bucket = TokenBucket(rate, max(SERVE_BURST, CHUNK))
        self.slots = gevent.lock.BoundedSemaphore(max_serving)
        self.counts: Counter[str] = Counter()  # served, and refused by reason

    def handle(self, sha: str) -> Any:
        path = MESH_BLOB_PREFIX + sha
        reason, nonce = self.verifier.check("GET", path, bottle.request.get_header(AUTH_HEADER, ""))
        if reason:
            self.counts[reason] += 1
            if reason == "skew":
                now = int(self.wall())
                bottle.response.set_header(TIME_HEADER, sign_time(self.keys()[0], now, nonce))
            return self._plain(401, "mesh authentication failed: " + reason)
        refused = self._refuse_name(sha)
        if refused is not None:
            return refused
        if not self.store.has(sha) and self._relay(sha) is None:  # still fetching
            self.counts["relay_pending"] += 1
            bottle.response.set_header("Retry-After", str(int(RETRY_AFTER)))
            return self._plain(503, "fetching it from further away; ask again")
        if not self.slots.acquire(blocking=False):
            self.counts["busy"] += 1
            return self._plain(503, "serving other peers; ask another")
        try:
            reader = self.store.open(sha)
        except BlobError as e:  # not held, or did not match its name (removed by the store)
            self.slots.release()
            self.counts["missing" if isinstance(e, BlobMissing) else "corrupt"] += 1
            return self._not_held()
        except BaseException:
            self.slots.release()
            raise
        self.counts["served"] += 1
        bottle.response.content_type = "application/octet-stream"
        bottle.response.set_header("Content-Length", str(reader.size))
        return _Paced(reader, self.bucket, self.slots.release)

    def _relay(self, sha: str) -> bool | None:
        """Fetch a blob we lack for the asking peer, if we may (``relay``)."""
        hops = bottle.request.get_header(HOPS_HEADER, "0")
        hops_n = int(hops) if hops.isascii() and hops.isdigit() and len(hops) < 3 else MAX_HOPS
        if self.relay is None or hops_n >= MAX_HOPS:
            return False
        got = self.relay(sha, bottle.request.get_header(FROM_HEADER, "")[:64], hops_n + 1)
        if got:
            self.counts["relayed"] += 1
        return got

    def _refuse_name(self, sha: str) -> str | None:
        """The answer to a name that is none, or to a blob peers may not
        have (``servable``: no message names it, yet); None to go on."""
        if not is_sha256_hex(sha):
            return self._plain(400, "not a blob name")
        if self.servable is not None and not self.servable(sha):
            self.counts["not_named"] += 1
            return self._not_held()
        return None

    def _not_held(self) -> str:
        return self._plain(404, "not held here")

    def _plain(self, status: int, text: str) -> str:
        bottle.response.status = status
        bottle.response.content_type = "text/plain; charset=utf-8"
        return text


class _Paced:
    """A reader's chunks, paced by a shared bucket; ``done`` once, at the end."""

    def __init__(self, reader: BlobReader, bucket: TokenBucket, done: Callable[[], Any]) -> None:
        self.reader, self.bucket, self.done = reader, bucket, done
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.reader:
                while not self.bucket.take(len(chunk), time.monotonic()):
                    gevent.sleep(max(0.001, self.bucket.ready_at(len(chunk)) - time.monotonic()))
                yield chunk
        finally:  # also when the first chunk raises: Bottle then never calls close()
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reader.close()
            self.done()


def install_mesh_blob_route(app: bottle.Bottle, server: MeshBlobServer) -> None:
    """Mount the peers' route on the chat's Bottle app (app/web.py)."""
    app.route(MESH_BLOB_PREFIX + "<sha>", "GET", server.handle)


# -- fetching ------------------------------------------------------------------------------


class FetchFailed(Exception):
    """One peer could not give the blob; the message says why."""


class BlobFetcher:
    """Fetches blobs this router lacks from peers that hold them."""

    def __init__(
        self,
        store: BlobStore,
        keys: Callable[[], Sequence[bytes]],
        peers: Callable[[], Sequence[Peer]],
        *,
        deadline: float = DEADLINE,
        io_timeout: float = IO_TIMEOUT,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        node_id: str = "",
    ) -> None:
        """``node_id``: ours, sent as ``X-Mesh-From`` so a relay never asks us back."""
        self.node_id = node_id
        self.store, self.keys, self.peers = store, keys, peers
        self.deadline, self.io_timeout, self.wall = deadline, io_timeout, wall
        self.rng = rng or random.Random()
        self.offsets: dict[str, float] = {}  # node -> its clock minus ours (from X-Mesh-Time)
        self.inflight: dict[str, gevent.event.AsyncResult] = {}
        self.counts: Counter[str] = Counter()  # for /status

    def fetch(self, sha: str, size: int, origin: str | None = None) -> bool:
        """Make sure the blob is held here, fetching it if need be: True if
        it is.  Callers asking for the same blob meanwhile share one fetch;
        the fetch goes on if a caller goes away (its page closed)."""
        return bool(self.start(sha, size, origin).wait(self.deadline + 1.0))

    def fetch_for_peer(
        self, sha: str, size: int, origin: str | None, asker: str, hops: int
    ) -> bool | None:
        """A relay's fetch (``MeshBlobServer``'s ``relay``): True once held,
        None if still fetching after ``RELAY_WAIT`` (it goes on), False if
        no other peer gave it.  ``asker`` is not asked."""
        done = self.start(sha, size, origin, exclude=asker, hops=hops)
        got = done.wait(RELAY_WAIT)
        return bool(got) if done.ready() else None

    def start(
        self, sha: str, size: int, origin: str | None, *, exclude: str = "", hops: int = 0
    ) -> gevent.event.AsyncResult:
        """The fetch of ``sha``, started if none is under way: its result is
        True once the blob is held here, False if no peer gave it."""
        if not is_sha256_hex(sha) or size < 0:
            raise ValueError("a blob is named by its SHA-256 and has a size")
        done: gevent.event.AsyncResult
        if self.store.has(sha):
            done = gevent.event.AsyncResult()
            done.set(True)
            return done
        if size > self.store.max_blob:
            self.counts["too_large"] += 1
            done = gevent.event.AsyncResult()
            done.set(False)
            return done
        waiting = self.inflight.get(sha)
        if waiting is None:
            waiting = gevent.event.AsyncResult()
            self.inflight[sha] = waiting
            self.counts["fetches"] += 1
            gevent.spawn(self._run, sha, size, origin, waiting, exclude, hops)
        else:
            self.counts["shared"] += 1
        return waiting

    def _order(self, origin: str | None, exclude: str = "") -> list[Peer]:
        peers = [p for p in self.peers() if not exclude or p.node != exclude]
        self.rng.shuffle(peers)  # spread the others' load
        peers.sort(key=lambda p: p.node != origin)  # the origin first (a stable sort)
        return peers[:MAX_PEERS_TRIED]

    def _run(
        self,
        sha: str,
        size: int,
        origin: str | None,
        done: gevent.event.AsyncResult,
        exclude: str = "",
        hops: int = 0,
    ) -> None:
        ok = False
        end = time.monotonic() + self.deadline
        try:
            todo = self._order(origin, exclude)
            while todo and not ok:
                again: list[Peer] = []  # relays still fetching it: asked again shortly
                for peer in todo:
                    left = end - time.monotonic()
                    if left <= 0:
                        self.counts["timeout"] += 1
                        again = []
                        break
                    try:
                        with gevent.Timeout(left, FetchFailed("deadline")):
                            self._fetch_from(peer, sha, size, hops)
                        ok = True
                        self.counts["fetched"] += 1
                        break
                    except (FetchFailed, OSError, http.client.HTTPException, BlobError) as e:
                        self.counts[_reason(e)] += 1
                        if str(e) == "status_503":
                            again.append(peer)
                        log.info("blob %s from %s: %s", sha[:12], peer.node, e)
                todo = again
                if todo and not ok:
                    gevent.sleep(min(RETRY_AFTER, max(0.0, end - time.monotonic())))
                    if time.monotonic() >= end:
                        self.counts["timeout"] += 1
                        break
            if not ok:
                self.counts["failed"] += 1
        finally:
            del self.inflight[sha]
            done.set(ok or self.store.has(sha))

    def _fetch_from(self, peer: Peer, sha: str, size: int, hops: int = 0) -> None:
        path = MESH_BLOB_PREFIX + sha
        conn = http.client.HTTPConnection(peer.host, peer.port, timeout=self.io_timeout)
        try:
            resp, nonce = self._request(conn, peer, path, hops)
            if resp.status == 401 and self._learn_time(peer, resp, nonce):
                resp.read()
                resp, nonce = self._request(conn, peer, path, hops)
            if resp.status != 200:
                raise FetchFailed(f"status_{resp.status}")
            length = resp.getheader("Content-Length", "")
            if not length.isdigit() or int(length) != size:
                raise FetchFailed("wrong_size")
            with self.store.writer(sha, size, source="fetched") as w:
                while w.written < size:
                    chunk = resp.read(min(CHUNK, size - w.written))
                    if not chunk:
                        raise FetchFailed("short")
                    w.write(chunk)
                w.commit()  # BlobMismatch: not stored, the next peer is asked
        finally:
            conn.close()

    def _request(
        self, conn: http.client.HTTPConnection, peer: Peer, path: str, hops: int = 0
    ) -> tuple[http.client.HTTPResponse, str]:
        when = int(self.wall() + self.offsets.get(peer.node, 0.0))
        nonce = secrets.token_hex(NONCE_BYTES)
        auth = sign(self.keys()[0], "GET", path, when, nonce)
        headers = {AUTH_HEADER: auth, HOPS_HEADER: str(hops)}
        if self.node_id:
            headers[FROM_HEADER] = self.node_id
        conn.request("GET", path, headers=headers)
        return conn.getresponse(), nonce

    def _learn_time(self, peer: Peer, resp: http.client.HTTPResponse, nonce: str) -> bool:
        """Take the peer's clock from a signed ``X-Mesh-Time``; True if taken."""
        value = resp.getheader(TIME_HEADER, "")
        when, _, mac = value.partition(".")
        if not when.isdigit() or len(when) > 12:
            return False
        if not any(hmac.compare_digest(mac, _mac(k, "time", when, nonce)) for k in self.keys()):
            return False
        self.offsets[peer.node] = int(when) - self.wall()
        self.counts["clock_offsets"] += 1
        return True

    def status(self) -> dict[str, int]:
        return dict(self.counts) | {"inflight": len(self.inflight)}


def _reason(e: BaseException) -> str:
    """The counter a failed attempt adds to."""
    if isinstance(e, FetchFailed):
        return str(e)
    if isinstance(e, BlobMismatch):
        return "mismatch"
    if isinstance(e, BlobError):
        return "refused"
    return "unreachable"
