"""Fan-out benchmark: one router, 500 WebSocket clients in room 1, held by a
separate load-generator process (tests/bench/wsload.py).

(a) Throughput: 100 senders post 10 messages each as fast as the sockets take
them (1,000 messages; the router allows a user a burst of 10, then 2/s);
deliveries per second over all 500 clients, from the first send to the last
delivery; median of 3 runs.  (b) Latency: the senders take turns posting 20
messages per second for BENCH_SECONDS (default 30); p50/p99 send-to-delivery
latency over every delivery.

Side by side, with the same clients and messages (tests/bench/broadcast_servers.py):
a minimal broadcast server written with the ``websockets`` asyncio library
(the baseline), and the limit: a gevent server that splices bytes and
``sendall``-s one pre-framed frame to every socket.

Targets (issue "Benchmarks"): at least 1.5x the baseline's deliveries per
second; p99 under 50 ms at the steady rate.  Run: make bench, or
.venv/bin/python tests/bench/bench_fanout.py
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import ROOT, record_results, table, verdict

from app.accounts import hash_password
from node.record import Record, RecordKind
from node.store import Store
from tests.helpers import PASSWORD, Router, free_port

HERE = Path(__file__).resolve().parent
CLIENTS = 500
SENDERS = 100  # one user each: the router's rate limit is per user
BURST = 10  # messages per sender in (a): within the router's burst (app/chat.py)
RATE = 20.0  # messages per second in (b): a very busy room
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
REPEATS = 3
TEXT_LEN = 80  # characters per message: a typical chat line
START_TIMEOUT = 15.0
# Connect + REPEATS throughput runs (each bounded in wsload.py) + latency + slack.
LOADGEN_TIMEOUT = 60 + REPEATS * 130 + SECONDS + 30


@contextlib.contextmanager
def process(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, killed on the way out whatever happens."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited: {proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not listen on {port}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_load(port: int, cookies: Path | None, *, ours: bool) -> dict:
    argv = [
        sys.executable,
        str(HERE / "wsload.py"),
        "fanout",
        "--port",
        str(port),
        "--clients",
        str(CLIENTS),
        "--senders",
        str(SENDERS),
        "--burst",
        str(BURST),
        "--repeats",
        str(REPEATS),
        "--rate",
        str(RATE),
        "--seconds",
        str(SECONDS),
        "--text-len",
        str(TEXT_LEN),
    ]
    if cookies is not None:
        argv += ["--cookies", str(cookies)]
    if ours:
        argv.append("--expect-history")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=LOADGEN_TIMEOUT)
    finally:
        stop(proc)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-3000:]}")
    return json.loads(out.decode().splitlines()[-1])


def seed_accounts(data_dir: Path, names: list[str]) -> None:
    """Accounts written into the data folder before the router starts.

    The router lets one address register only a few accounts (app/throttle.py);
    the benchmark needs a hundred users, so it writes their ACCOUNT records
    (one scrypt hash shared by all) as another router's sync would.
    """
    store = Store(data_dir, rooms=4)
    hashed = hash_password(PASSWORD)
    hlc = int(time.time() * 1000) << 16
    try:
        for i, name in enumerate(names):
            store.append(
                Record(
                    store.node_id,
                    store.next_seq(),
                    hlc + i,
                    RecordKind.ACCOUNT,
                    0,
                    {"name": name, "hash": hashed},
                )
            )
    finally:
        store.close()


def login_all(router: Router, names: list[str], path: Path) -> Path:
    """Log every user in once over HTTP; their Cookie headers, as a JSON file."""
    path.write_text(json.dumps([router.user(n, register=False).cookie_header() for n in names]))
    return path


def run_ours(tmp: Path) -> dict:
    router = Router(
        tmp / "router" / "data",
        free_port(),
        "bench",
        ["--no-mesh", "--log-level", "warning", "--max-connections-per-address", "1000"],
    )  # every page is 127.0.0.1
    names = [f"s{i:03d}" for i in range(SENDERS)]
    seed_accounts(router.data_dir, names)
    try:
        router.start()
        print(f"logging {SENDERS} users in to our router (scrypt: a few seconds)...", flush=True)
        cookie_file = login_all(router, names, tmp / "cookies.json")
        return run_load(router.port, cookie_file, ours=True)
    finally:
        router.stop()


def run_other(kind: str) -> dict:
    port = free_port()
    with process([sys.executable, str(HERE / "broadcast_servers.py"), kind, str(port)], port):
        return run_load(port, None, ours=False)


def summary(result: dict) -> dict[str, float]:
    runs = result["throughput"]
    lat = result["latency"]
    return {
        "rate": statistics.median(r["per_second"] for r in runs),
        "complete": all(r["delivered"] == r["expected"] for r in runs),
        "delivered": min(r["delivered"] for r in runs),
        "expected": runs[0]["expected"],
        "p50": lat["p50_ms"],
        "p99": lat["p99_ms"],
        "max": lat["max_ms"],
        "lat_delivered": lat["delivered"],
        "lat_expected": lat["expected"],
    }


def main() -> None:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        results["ours"] = run_ours(Path(d))
    print("websockets baseline...", flush=True)
    results["websockets"] = run_other("websockets")
    print("limit...", flush=True)
    results["limit"] = run_other("limit")
    s = {k: summary(v) for k, v in results.items()}
    base, ours, limit = s["websockets"], s["ours"], s["limit"]
    table(
        f"fan-out: {CLIENTS} clients in one room, {SENDERS * BURST:,} messages "
        f"({SENDERS} senders x {BURST}) of {TEXT_LEN} characters; median of {REPEATS} runs",
        [
            (
                "deliveries per second",
                f"{base['rate']:,.0f}",
                f"{ours['rate']:,.0f}",
                f"{limit['rate']:,.0f}",
                f"{ours['rate'] / base['rate']:.2f}",
            ),
            (
                "all delivered",
                *(f"{x['delivered']:,}/{x['expected']:,}" for x in (base, ours, limit)),
                "",
            ),
        ],
        ("", "websockets", "ours", "limit", "ours/websockets"),
    )
    table(
        f"latency at {RATE:.0f} messages/s for {SECONDS:.0f} s, send to delivery "
        f"over all {CLIENTS} clients (ms)",
        [
            (
                "p50",
                f"{base['p50']:.1f}",
                f"{ours['p50']:.1f}",
                f"{limit['p50']:.1f}",
                f"{ours['p50'] / base['p50']:.2f}",
            ),
            (
                "p99",
                f"{base['p99']:.1f}",
                f"{ours['p99']:.1f}",
                f"{limit['p99']:.1f}",
                f"{ours['p99'] / base['p99']:.2f}",
            ),
            ("max", f"{base['max']:.1f}", f"{ours['max']:.1f}", f"{limit['max']:.1f}", ""),
            (
                "delivered",
                *(f"{x['lat_delivered']:,}/{x['lat_expected']:,}" for x in (base, ours, limit)),
                "",
            ),
        ],
        ("", "websockets", "ours", "limit", "ours/websockets"),
    )
    for name, r in results.items():
        if r.get("errors") or r.get("lost") or r.get("closed_by_server"):
            print(
                f"  note {name}: {r['errors']} error frames (first: {r['first_error']}), "
                f"{r['lost']} sockets lost, {r['closed_by_server']} closed by the server"
            )
    figures = {}
    for name, x in s.items():
        figures.update(
            {
                f"fanout.{name}_per_s": x["rate"],
                f"fanout.{name}_p50_ms": x["p50"],
                f"fanout.{name}_p99_ms": x["p99"],
                f"fanout.{name}_undelivered": (
                    x["expected"] - x["delivered"] + x["lat_expected"] - x["lat_delivered"]
                ),
            }
        )
    record_results(figures)
    verdict(
        ">= 1.5x the websockets baseline's deliveries/s",
        ours["rate"] >= 1.5 * base["rate"] and ours["complete"],
        f"{ours['rate'] / base['rate']:.2f}x",
    )
    verdict(
        "p99 < 50 ms at 20 messages/s",
        ours["p99"] < 50 and ours["lat_delivered"] == ours["lat_expected"],
        f"{ours['p99']:.1f} ms",
    )


if __name__ == "__main__":
    main()
