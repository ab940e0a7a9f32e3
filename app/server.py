"""Wiring: config -> store -> chat -> mesh link -> web server."""

from __future__ import annotations

import logging
import time

import gevent
from gevent.pywsgi import WSGIServer

from app.chat import Chat, iso_utc
from app.config import Config, parse_args
from app.meshlink import MeshLink
from app.retention import horizon_ms
from app.sessions import Sessions
from app.web import ChatHandler, build_app
from node.clock import pack, physical_ms
from node.store import Store

log = logging.getLogger("app")

# Batch fsyncs: at most this long between a flushed append and its fsync.  A
# power cut loses at most this much acknowledged chat; flash wear stays low.
SYNC_INTERVAL = 1.0


# How often the retention horizon is moved on: a message outlives its time by
# at most this much (and at most a tenth of a short test retention).
PURGE_CHECK_INTERVAL = 30.0
# Expired lines leave the files (a rewrite: flash wear) at most this often, or
# sooner when retention itself is shorter.
COMPACT_INTERVAL = 3600.0


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
        log.info("retention: %d messages older than %s dropped", gone, iso_utc(
            physical_ms(horizon)))
        for room in range(1, chat.rooms + 1):
            chat.hub.broadcast(room, {"type": "expired", "before_hlc": str(horizon)})
    for room in range(1, chat.rooms + 1):
        trimmed = chat.store.trim(room, config.max_history)
        if trimmed:
            log.info("room %d: %d oldest messages dropped (--max-history %d)", room,
                     trimmed, config.max_history)
            chat.hub.broadcast(room, {"type": "expired",
                                      "before_hlc": str(chat.store.size_horizon[room])})
            gone += trimmed
    return gone


def _purge_forever(chat: Chat, config: Config) -> None:
    check = min(PURGE_CHECK_INTERVAL, config.retention / 10)
    compact_every = min(COMPACT_INTERVAL, config.retention)
    pending = 0
    last_compact = time.monotonic()
    while True:
        pending += purge(chat, config)
        stale = pending + chat.store.stale_read_lines  # read markers superseded too
        if stale and time.monotonic() - last_compact >= compact_every:
            rewritten = chat.store.compact()
            log.info("retention: %d logs rewritten without %d expired lines", rewritten,
                     stale)
            pending, last_compact = 0, time.monotonic()
        gevent.sleep(check)


def make_server(config: Config) -> tuple[WSGIServer, Chat, MeshLink | None]:
    store = Store(config.data_dir, config.rooms)
    chat = Chat(store, config.node_name, admins=config.admin)
    mesh = MeshLink(config, chat) if config.mesh else None
    sessions = Sessions(config.data_dir)
    app = build_app(chat, sessions, captive_portal=config.captive_portal)
    server = WSGIServer((config.host, config.port), app, handler_class=ChatHandler,
                        log=None, error_log=logging.getLogger("app.http"))
    server.allow_upgrade = app.config["cc.allow_upgrade"]
    return server, chat, mesh


def run(argv: list[str]) -> int:
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
    if mesh is not None:
        mesh.start()
    log.info("node %s (%s) serving http://%s:%d/ with data in %s", chat.node_id,
             config.node_name, config.host, config.port, config.data_dir)
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
        chat.store.close()
    return 0
