"""A router's blob half on its own, for tests/integration/test_blobfetch.py:
a real Bottle app on gevent's pywsgi serving the peers' route
(app/blobfetch.py) and a page's route that fetches what it lacks, until the
chat mounts both (docs/BLOBS.md, "Wiring").

    python -m tests.integration.blob_router --port P --data DIR --key-file F
        [--peer NODE=HOST:PORT ...] [--rate BYTES_PER_S] [--clock-offset S]

Routes: ``/mesh/blob/<sha>`` (peers, mesh key), ``/blob/<sha>?size=N&origin=NODE``
(a page: fetched if need be, then served with app/images.py's headers) and
``/test/status`` (the counters, as JSON).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import bottle  # noqa: E402
import gevent  # noqa: E402
from gevent import pywsgi  # noqa: E402

from app.blobfetch import (  # noqa: E402
    BlobFetcher,
    MeshBlobServer,
    Peer,
    install_mesh_blob_route,
)
from app.images import serve_headers, sniff_file  # noqa: E402
from node.blobs import BlobError, BlobStore  # noqa: E402
from node.keys import load_or_make_keys  # noqa: E402


def make_app(args: argparse.Namespace) -> bottle.Bottle:
    store = BlobStore(Path(args.data), budget=args.budget, pause=gevent.sleep)
    keys = load_or_make_keys(Path(args.key_file))
    peers = []
    for spec in args.peer:
        node, _, where = spec.partition("=")
        host, _, port = where.rpartition(":")
        peers.append(Peer(node, host, int(port)))

    def wall() -> float:  # a router whose clock is off by --clock-offset
        return time.time() + args.clock_offset

    server = MeshBlobServer(
        store, lambda: keys, rate=args.rate, max_serving=args.max_serving, wall=wall
    )
    fetcher = BlobFetcher(store, lambda: keys, lambda: peers, deadline=args.deadline, wall=wall)
    app = bottle.Bottle()
    install_mesh_blob_route(app, server)

    @app.get("/blob/<sha>")
    def page_blob(sha: str) -> Any:
        size = int(bottle.request.query.get("size", "-1"))
        if not fetcher.fetch(sha, size, bottle.request.query.get("origin") or None):
            bottle.response.status = 404
            return "not held here, and no peer gave it"
        try:
            reader = store.open(sha)
        except BlobError:
            bottle.response.status = 404
            return "not held here"
        for name, value in serve_headers(sniff_file(store.path(sha)), "photo", reader.size):
            bottle.response.set_header(name, value)
        return reader

    @app.get("/test/status")
    def status() -> str:
        bottle.response.content_type = "application/json"
        return json.dumps(
            {"store": store.status(), "server": dict(server.counts), "fetcher": fetcher.status()}
        )

    return app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--rate", type=float, default=1_000_000)
    parser.add_argument("--budget", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--deadline", type=float, default=20.0)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--max-serving", type=int, default=4)
    args = parser.parse_args(argv)
    server = pywsgi.WSGIServer(("127.0.0.1", args.port), make_app(args), log=None)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
