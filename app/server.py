"""Wiring: config -> store and clock -> mesh link -> chat -> web server.

The mesh link is made before the chat and given to it (app/mesh.py); the
link hands what it hears to the chat from ``start(chat)`` on.  With
``--bridge`` the chat's mesh is the radio link and the bridge to the broker
side by side (app/mesh.py ``Meshes``, app/bridge.py).  Every interval
here runs on the monotonic clock: the router setting its wall clock (NTP
after a boot at its build date) moves no purge, sync or log timer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer

from app.attachments import Attachments
from app.blobfetch import Peer
from app.bridge import Bridge
from app.chat import Chat, iso_utc, make_clock
from app.config import Config, parse_args
from app.hub import FRAME_TIMEOUT
from app.mesh import BlobPeers, Link, Meshes
from app.meshlink import MeshLink
from app.moderation import ChatPolicy, Moderation
from app.retention import horizon_ms
from app.routes_rooms import upgrade_check
from app.sessions import Sessions
from app.throttle import client_key
from app.web import ChatHandler, build_app
from node.blobs import BlobStore
from node.clock import HybridClock, pack, physical_ms
from node.keys import load_or_make_keys
from node.store import Store

log = logging.getLogger("app")

PRIVATE_UMASK = 0o077  # files 0600, folders 0700: see run()

# Batch fsyncs: at most this long between a flushed append and its fsync.  A
# power cut loses at most this much acknowledged chat; flash wear stays low.
SYNC_INTERVAL = 1.0


# How often the retention horizon is moved on: a message outlives its time by
# at most this much (and at most a tenth of a short test retention).
PURGE_CHECK_INTERVAL = 30.0
# Expired lines leave the files (a rewrite: flash wear) at most this often, or
# sooner when retention itself is shorter.
COMPACT_INTERVAL = 3600.0
# glibc's malloc: a freed block mapped on its own raises the mmap threshold to
# its size (up to 32 MiB), so the next scrypt buffer (16 MiB, app/accounts.py)
# comes from the hashing thread's heap and stays there for good: 16 MB of a
# router's RAM after the second login.  malloc_trim(0) does not give it back
# (it never trims the top of a thread's arena: measured).  A threshold set
# explicitly stays put, so every block this large or larger is its own
# mapping, returned at free.  128 KiB is glibc's own default threshold.
MMAP_THRESHOLD_BYTES = 128 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, glibc's <malloc.h>


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (``MMAP_THRESHOLD_BYTES``); True if done.

    False where there is no glibc: OpenWrt's musl maps large blocks on their
    own and unmaps them at free anyway.  (ctypes is python3-ctypes on
    OpenWrt, which gevent's cffi depends on.)
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - AttributeError unless glibc
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def _sync_forever(store: Store) -> None:
    while True:
        gevent.sleep(SYNC_INTERVAL)
        store.sync()


def purge(chat: Chat, config: Config) -> int:
    """Move the horizon on: forget, and take off the pages, expired messages."""
    now_ms = physical_ms(chat.clock.tick(int(chat.wall() * 1000)))
    horizon = pack(horizon_ms(now_ms, config.retention, config.purge_at), 0)
    gone = chat.store.expire(horizon)
    if gone:
        log.info(
            "retention: %d messages older than %s dropped", gone, iso_utc(physical_ms(horizon))
        )
        for room in range(1, chat.rooms + 1):
            chat.hub.broadcast(room, {"type": "expired", "before_hlc": str(horizon)})
        for key in list(chat.hub.topics):  # open direct conversations expire alike
            chat.hub.broadcast_topic(key, {"type": "expired", "before_hlc": str(horizon)})
    for room in range(1, chat.rooms + 1):
        trimmed = chat.store.trim(room, config.max_history)
        if trimmed:
            log.info(
                "room %d: %d oldest messages dropped (--max-history %d)",
                room,
                trimmed,
                config.max_history,
            )
            chat.hub.broadcast(
                room, {"type": "expired", "before_hlc": str(chat.store.size_horizon[room])}
            )
            gone += trimmed
    if gone:  # their pictures and files go with them
        chat.forget_gone_blobs()
    return gone


def _sweep_forever(attachments: Attachments) -> None:
    """Uploads no message came to name go (app/attachments.py ORPHAN_GRACE)."""
    while True:
        gevent.sleep(PURGE_CHECK_INTERVAL)
        attachments.sweep()


def _purge_forever(chat: Chat, config: Config) -> None:
    check = min(PURGE_CHECK_INTERVAL, config.retention / 10)
    compact_every = min(COMPACT_INTERVAL, config.retention)
    pending = 0
    last_compact = chat.monotonic()
    while True:
        pending += purge(chat, config)
        stale = pending + chat.store.gone_lines  # read markers superseded or expired too
        if stale and chat.monotonic() - last_compact >= compact_every:
            rewritten = chat.store.compact()
            log.info("retention: %d logs rewritten without %d expired lines", rewritten, stale)
            pending, last_compact = 0, chat.monotonic()
        gevent.sleep(check)


# Connections and descriptors.  Every connection costs a descriptor, and one
# more while a static file is sent on it; the router keeps this many for
# itself beyond its logs (one per room, accounts, moderation, reads): stdio,
# the listening socket, the event loop and resolver, the mesh's sockets,
# state, session and key files being rewritten, a compaction's temp file.
# So a flood of connections is refused at the cap, never ends in EMFILE on a
# log (a message lost) or on the mesh.
DESCRIPTOR_RESERVE = 64
DESCRIPTORS_PER_CONNECTION = 2
# The cap when descriptors allow more.  Set when a connected page cost about
# 90 KiB (1,000 was most of what a router with 128 MB of RAM could spare); an
# idle page is now about 5 KB (parked, app/hub.py Page; bench_footprint.py),
# so the cap bounds descriptors and the work of a fan-out more than memory.
MAX_CONNECTIONS = 1000
# Fewer than this and the router could not serve one family: refuse to start.
MIN_CONNECTIONS = 8
# A flood of refused connections writes one log line a minute, not one each.
REFUSAL_LOG_INTERVAL = 60.0


def connection_limit(config: Config, nofile: int) -> int:
    """Connections served at once under the descriptor limit ``nofile``;
    ValueError if it leaves room for fewer than ``MIN_CONNECTIONS``."""
    wanted = config.max_connections or MAX_CONNECTIONS
    if nofile < 0 or nofile == resource.RLIM_INFINITY:
        return wanted
    reserve = DESCRIPTOR_RESERVE + config.rooms + 3
    fits = (nofile - reserve) // DESCRIPTORS_PER_CONNECTION
    if fits < MIN_CONNECTIONS:
        need = reserve + MIN_CONNECTIONS * DESCRIPTORS_PER_CONNECTION
        raise ValueError(
            f"the descriptor limit (ulimit -n) is {nofile}: too few for "
            f"{config.rooms} rooms and {MIN_CONNECTIONS} connections; "
            f"raise it to {need} or more"
        )
    if wanted > fits:
        log.warning(
            "serving at most %d connections, not %d: the descriptor limit (ulimit -n) is %d",
            fits,
            wanted,
            nofile,
        )
    return min(wanted, fits)


class ChatServer(WSGIServer):
    """pywsgi with caps on connections: in all, and per client address (an
    IPv6 /64 counts as one, app/throttle.py).  A connection over a cap is
    closed at once, unread, before a greenlet or a buffer is spent on it.
    ``refused`` counts, by reason, those and the requests the handler
    (app/web.py ChatHandler) refused for their headers (431, 408) and the
    pages closed for a message left unfinished (``frame_too_slow``); the
    handler reads ``header_timeout``, ``idle_timeout`` and ``frame_timeout``
    from here, and asks ``allow_upgrade`` (app/routes_rooms.py
    ``upgrade_check``) before it answers a WebSocket handshake."""

    # A page's message, once begun, must be in within this (app/hub.py
    # FRAME_TIMEOUT); no flag sets it, a test may set it shorter.
    frame_timeout: float = FRAME_TIMEOUT

    def __init__(
        self,
        listener: tuple[str, int],
        application: Any,
        *,
        allow_upgrade: Callable[[dict[str, Any]], bool],
        max_connections: int,
        max_per_address: int,
        header_timeout: float,
        idle_timeout: float,
        refused: Counter[str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(listener, application, handler_class=ChatHandler, **kw)
        self.allow_upgrade = allow_upgrade
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.header_timeout, self.idle_timeout = header_timeout, idle_timeout
        self.connections = 0
        self.attachments: Attachments | None = None  # pictures and files, for the sweeper
        self.per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter() if refused is None else refused
        self._logged_at: float | None = None
        # Sockets handed to their pages (app/hub.py Page), from handle to do_close.
        self._kept_open: set[Any] = set()

    def do_handle(self, sock: Any, address: Any) -> None:
        key = client_key(address[0]) if isinstance(address, tuple) else "?"
        if self.connections >= self.max_connections:
            return self._refuse(sock, "server_full")
        if self.per_address[key] >= self.max_per_address:
            return self._refuse(sock, "address_full")
        self.connections += 1
        self.per_address[key] += 1
        try:
            super().do_handle(sock, address)
        except BaseException:
            self._release(key)
            raise
        return None

    def handle(self, sock: Any, address: Any) -> None:
        key = client_key(address[0]) if isinstance(address, tuple) else "?"
        handler = self.handler_class(sock, address, self)
        try:
            handler.handle()
        finally:
            # An open page's socket outlives its handler (app/hub.py Page):
            # it is closed, and counted out, when the page ends.
            page = getattr(handler, "cc_page", None)
            if page is not None and page.hand_over(partial(self._release, key)):
                self._kept_open.add(sock)
            else:
                self._release(key)

    def do_close(self, sock: Any, *args: Any) -> None:
        if sock in self._kept_open:  # the page's now
            self._kept_open.discard(sock)
            return
        super().do_close(sock, *args)

    def _release(self, key: str) -> None:
        self.connections -= 1
        self.per_address[key] -= 1
        if self.per_address[key] <= 0:
            del self.per_address[key]

    def _refuse(self, sock: Any, reason: str) -> None:
        sock.close()
        self.refused[reason] += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            self._logged_at = now
            log.warning(
                "connections closed unread so far: %s (at most %d in all, %d per address)",
                dict(self.refused),
                self.max_connections,
                self.max_per_address,
            )


def make_mesh(config: Config, store: Store, clock: HybridClock) -> Link | None:
    """The radio mesh, the bridge, both (side by side) or neither."""
    links: list[tuple[str, Link]] = []
    if config.mesh:
        links.append(("radio", MeshLink(config, store, clock)))
    if config.bridge is not None:
        links.append(("bridge", Bridge(config, store, clock)))
    if len(links) == 1 and links[0][0] == "radio":
        return links[0][1]
    return Meshes(links) if links else None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def blob_peers(config: Config, mesh: Link | None) -> Callable[[], list[Peer]]:
    """Where blobs this router lacks are asked for: the mesh's neighbours
    (their chat on our own ``--port``) and the ``--blob-peer`` addresses."""
    fixed = [Peer(spec, *_host_port(spec)) for spec in config.blob_peer]

    def peers() -> list[Peer]:
        found = list(fixed)
        if isinstance(mesh, BlobPeers):
            for node, host in mesh.peer_addresses().items():
                if host in LOOPBACK_HOSTS and config.host in LOOPBACK_HOSTS:
                    continue  # a router on this machine: not on our port (that is us)
                found.append(Peer(node, host, config.port))
        return found

    return peers


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host.strip("[]"), int(port)


def make_attachments(config: Config, store: Store, mesh: Link | None) -> Attachments:
    # Blobs between routers are authenticated with the mesh's key
    # (app/meshlink.py); a lone router (--no-mesh, no --blob-peer) asks and
    # answers nobody, and makes no key.
    keys = load_or_make_keys(config.key_file) if config.mesh or config.blob_peer else []
    blobs = BlobStore(config.data_dir, config.blob_budget, pause=gevent.sleep)
    return Attachments(
        blobs,
        lambda: keys,
        blob_peers(config, mesh),
        node_id=store.node_id,
        max_upload=config.max_upload,
        per_day=config.upload_bytes_per_day,
    )


def make_server(config: Config) -> tuple[WSGIServer, Chat, Link | None]:
    max_connections = connection_limit(config, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    # Deletes and clears take effect only by a bound admin (app/moderation.py).
    policy = ChatPolicy(Moderation(config.admin).authorizes)
    store = Store(config.data_dir, config.rooms, policy=policy)
    clock = make_clock(store)  # one hybrid clock for the chat and its mesh
    mesh = make_mesh(config, store, clock)
    attachments = make_attachments(config, store, mesh)
    chat = Chat(
        store, config.node_name, mesh=mesh, clock=clock, admins=config.admin, blobs=attachments
    )
    sessions = Sessions(config.data_dir)
    refused: Counter[str] = Counter()  # connections and requests refused, for /status
    app = build_app(
        chat,
        sessions,
        captive_portal=config.captive_portal,
        http_refused=refused,
        retention=config.retention,
        blobs=attachments,
    )
    server = ChatServer(
        (config.host, config.port),
        app,
        allow_upgrade=upgrade_check(chat, sessions),
        max_connections=max_connections,
        refused=refused,
        max_per_address=config.max_connections_per_address,
        header_timeout=config.header_timeout,
        idle_timeout=config.idle_timeout,
        log=None,
        error_log=logging.getLogger("app.http"),
    )
    server.attachments = attachments
    return server, chat, mesh


def run(argv: list[str]) -> int:
    # Everything the router makes is its user's alone: the data folder holds
    # password hashes, session digests and maybe the mesh key, and a router
    # may run other services' users.  Set before anything is created.
    os.umask(PRIVATE_UMASK)
    fix_mmap_threshold()  # before the store loads: its blocks follow the rule too
    config = parse_args(argv)
    logging.getLogger().setLevel(config.log_level.upper())
    try:
        server, chat, mesh = make_server(config)
    except (OSError, ValueError) as e:  # a port in use, a bad key file, no such interface
        log.error("cannot start: %s", e)
        return 2
    syncer = gevent.spawn(_sync_forever, chat.store)
    purger = gevent.spawn(_purge_forever, chat, config)
    tracker = gevent.spawn(chat.delivery.run_forever)
    sweeper = gevent.spawn(_sweep_forever, server.attachments) if server.attachments else None
    if mesh is not None:
        mesh.start(chat)  # what the mesh hears goes to the chat from here on
    log.info(
        "node %s (%s) serving http://%s:%d/ with data in %s",
        chat.node_id,
        config.node_name,
        config.host,
        config.port,
        config.data_dir,
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        chat.flush_reads()  # while the mesh still runs: the markers go out too
        server.stop(timeout=1)
        if mesh is not None:
            mesh.stop()
        syncer.kill()
        purger.kill()
        tracker.kill()
        if sweeper is not None:
            sweeper.kill()
        chat.store.close()
    return 0
