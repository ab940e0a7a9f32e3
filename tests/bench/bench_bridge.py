"""Two meshes joined through a real Mosquitto (app/bridge.py): mesh A -> broker -> mesh B.

    python tests/bench/bench_bridge.py

- latency: 200 messages at 20 messages/s sent on A's bridge router by
  WebSocket, timed to their ``message`` frame on a page of B's bridge
  router (p50, p99);
- bytes per record on A's broker link (a TCP relay counts every byte both
  ways: MQTT framing, acknowledgements, vectors, pings);
- the retained messages 50 meshes of 10 routers, 2 bridges each, leave on
  the broker (computed from the messages as the bridge builds them);
- catch-up after a day offline: A's bridge router comes back with 10,000
  records posted while it was down (made in its data folder beforehand, as
  its users would have); the time until B holds them all, and the bytes.

Figures go to results.json under ``bridge.*`` (tests/bench/common.py).
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.bridge import topics
from app.chat import Chat, make_clock
from node.store import Store
from node.wire import BeaconDatagram
from tests.bench.common import percentile, record_results
from tests.bridge_lab import Broker, Uplink
from tests.helpers import Router, free_port, loopback_mesh, wait_for

RATE = 20.0  # messages per second, as the issue asks
MESSAGES = 200  # ten seconds at RATE: enough for a p99 of 2 samples
SENDERS = (
    10  # users at 2 messages/s each: the chat's per-user rate; 10 new accounts per device at most
)
OFFLINE_RECORDS = 10_000  # "a day offline", as the issue asks
USERS_OFFLINE = 1000  # posting 10 each: the chat's per-user burst
CATCHUP_TIMEOUT = 300.0  # seconds; at ANSWER_RATE 10,000 records take about 10 s


def router(tmp: Path, name: str, url: str, key: Path) -> Router:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    flags = [*loopback_mesh(folder), "--bridge", url, "--bridge-key-file", str(key)]
    # Room logs keep every record: B must hold all 10,000 (not the newest 5,000).
    extra = [*flags, "--log-level", "warning", "--max-history", str(2 * OFFLINE_RECORDS)]
    r = Router(folder / "data", free_port(), name, extra)
    r.data_dir.mkdir(parents=True, exist_ok=True)
    return r


def latency(a: Router, b: Router) -> list[float]:
    page = b.ws(b.user("reader"))
    page.recv_type("hello")
    senders = []
    for n in range(SENDERS):
        ws = a.ws(a.user(f"sender{n}"))
        ws.recv_type("hello")
        senders.append(ws)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}

    def read() -> None:  # the page, read as frames arrive, beside the senders
        deadline = time.monotonic() + MESSAGES / RATE + 60
        while len(seen) < MESSAGES and time.monotonic() < deadline:
            frame = page.recv(deadline - time.monotonic())
            if frame.get("type") == "message" and frame["text"].startswith("m"):
                seen.setdefault(frame["text"], time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    start = time.monotonic()
    for n in range(MESSAGES):
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        sent[f"m{n}"] = time.monotonic()
        senders[n % SENDERS].send({"type": "send", "text": f"m{n}", "client_id": f"c{n}"})
    reader.join()
    for ws in [page, *senders]:
        ws.close()
    assert len(seen) == MESSAGES, f"only {len(seen)} of {MESSAGES} crossed"
    return [(seen[t] - sent[t]) * 1000 for t in sent]


def fill_offline(data_dir: Path) -> None:
    """10,000 messages posted on A while its bridge was away."""
    store = Store(data_dir, 4)
    chat = Chat(store, "a1", clock=make_clock(store))
    for n in range(OFFLINE_RECORDS):
        chat.post(f"day{n % USERS_OFFLINE}", 1, f"offline message {n}")
    store.close()


def retained_footprint(meshes: int, routers: int, bridges: int) -> tuple[int, int]:
    """Retained messages and their bytes on the broker for ``meshes`` meshes
    of ``routers`` routers, ``bridges`` of them bridges, on one prefix: each
    bridge's vector holds every router of every mesh (all records travel
    everywhere), as the bridge publishes it (app/bridge.py), plus its flag."""
    rng = random.Random(50)
    origins = {secrets.token_hex(8): rng.randrange(1, 100_000) for _ in range(meshes * routers)}
    count = total = 0
    for _ in range(meshes * bridges):
        node = secrets.token_hex(8)
        topic = topics("valley-chat", node)
        beacon = BeaconDatagram(node, "bridge-router-name", 1, vector=origins, seq=1)
        total += len(topic["vector"]) + len(beacon.serialize(b"k" * 32))
        total += len(topic["online"]) + 1
        count += 2
    return count, total


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        key = tmp / "bridge.key"
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
        broker = Broker(tmp / "broker").start()
        uplink = Uplink(broker.port)
        a = router(tmp, "a1", broker.url("bench", port=uplink.port), key)
        b = router(tmp, "b1", broker.url("bench"), key)
        try:
            a.start()
            b.start()
            before = uplink.bytes
            ms = latency(a, b)
            per_record = (uplink.bytes - before) / MESSAGES
            a.stop()
            fill_offline(a.data_dir)
            before = uplink.bytes
            t0 = time.monotonic()
            a.start()
            a_id = a.status()["node_id"]
            wait_for(
                lambda: b.status()["vector"].get(a_id, 0) >= OFFLINE_RECORDS + MESSAGES,
                CATCHUP_TIMEOUT,
                "B to catch up",
            )
            catchup_s = time.monotonic() - t0
            catchup_bytes = uplink.bytes - before
        finally:
            a.stop()
            b.stop()
            uplink.close()
            broker.stop()
    retained, retained_bytes = retained_footprint(50, 10, 2)
    figures = {
        "bridge.retained_50_meshes_messages": retained,
        "bridge.retained_50_meshes_kb": retained_bytes / 1024,
        "bridge.latency_p50_ms": percentile(ms, 50),
        "bridge.latency_p99_ms": percentile(ms, 99),
        "bridge.bytes_per_record": per_record,
        "bridge.catchup_10000_s": catchup_s,
        "bridge.catchup_bytes_per_record": catchup_bytes / OFFLINE_RECORDS,
    }
    print(json.dumps(figures, indent=1))
    record_results(figures)


if __name__ == "__main__":
    main()
