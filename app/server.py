"""Wiring: config -> store -> chat -> web server (and, later, the mesh)."""

from __future__ import annotations

import logging

import gevent
from gevent.pywsgi import WSGIServer

from app.chat import Chat
from app.config import Config, parse_args
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


def make_server(config: Config) -> tuple[WSGIServer, Chat]:
    store = Store(config.data_dir, config.rooms)
    chat = Chat(store, config.node_name)
    sessions = Sessions(config.data_dir)
    app = build_app(chat, sessions)
    server = WSGIServer((config.host, config.port), app, handler_class=ChatHandler,
                        log=None, error_log=logging.getLogger("app.http"))
    server.allow_upgrade = app.config["cc.allow_upgrade"]
    return server, chat


def run(argv: list[str]) -> int:
    config = parse_args(argv)
    logging.getLogger().setLevel(config.log_level.upper())
    server, chat = make_server(config)
    syncer = gevent.spawn(_sync_forever, chat.store)
    log.info("node %s (%s) serving http://%s:%d/ with data in %s", chat.node_id,
             config.node_name, config.host, config.port, config.data_dir)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop(timeout=1)
        syncer.kill()
        chat.store.close()
    return 0
