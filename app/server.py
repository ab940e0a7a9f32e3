"""Wiring: config -> store -> chat -> mesh link -> web server."""

from __future__ import annotations

import logging

import gevent
from gevent.pywsgi import WSGIServer

from app.chat import Chat
from app.config import Config, parse_args
from app.meshlink import MeshLink
from app.sessions import Sessions
from app.web import ChatHandler, build_app
from node.store import Store

log = logging.getLogger("app")

# Batch fsyncs: at most this long between a flushed append and its fsync.  A
# power cut loses at most this much acknowledged chat; flash wear stays low.
SYNC_INTERVAL = 1.0


def _sync_forever(store: Store) -> None:
    while True:
        gevent.sleep(SYNC_INTERVAL)
        store.sync()


def make_server(config: Config) -> tuple[WSGIServer, Chat, MeshLink | None]:
    store = Store(config.data_dir, config.rooms)
    chat = Chat(store, config.node_name)
    mesh = MeshLink(config, chat) if config.mesh else None
    sessions = Sessions(config.data_dir)
    app = build_app(chat, sessions)
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
    if mesh is not None:
        mesh.start()
    log.info("node %s (%s) serving http://%s:%d/ with data in %s", chat.node_id,
             config.node_name, config.host, config.port, config.data_dir)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop(timeout=1)
        if mesh is not None:
            mesh.stop()
        syncer.kill()
        chat.store.close()
    return 0
