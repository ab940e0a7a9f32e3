from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must see the patched standard library.
import logging
import signal
import sys

from app.server import run

if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(run(sys.argv[1:]))
