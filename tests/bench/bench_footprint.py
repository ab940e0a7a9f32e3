"""Footprint benchmark: resident memory of ``python -m app --no-mesh`` idle,
with 10,000 records of history (4 rooms, written with node.store.Store before
the start) and with 500 WebSocket clients connected as well (held by the load
generator, tests/bench/wsload.py, in its own process); and the time from
starting the process to its first HTTP 200 on /login (median of 5 starts).

Side by side: the floor of our dependencies, a bare
``python -c "import gevent, bottle, geventwebsocket"`` process, and for the
start time a minimal Bottle app on gevent's WSGI server.

Targets (issue "Benchmarks"): 40 MB idle, 64 MB with 10,000 records and 500
clients, under 1 s to serve.  Run: make bench, or
.venv/bin/python tests/bench/bench_footprint.py
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_fanout import login_all, seed_accounts, stop
from common import ROOT, record_results, table, verdict
from history import write_history

from tests.helpers import Router, free_port

HERE = Path(__file__).resolve().parent
RECORDS = 10_000
ROOMS = 4
CLIENTS = 500
STARTS = 5
SETTLE = 1.0  # seconds after the first 200 (or the clients) before reading VmRSS
SERVE_TIMEOUT = 15.0
HOLD_TIMEOUT = 90.0
MB = 1024 * 1024
# glibc's default, fixed: a freed 16 MiB scrypt buffer is unmapped, not kept.
GLIBC_FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}

FLOOR = "import gevent, bottle, geventwebsocket, sys; print('ready', flush=True); sys.stdin.read()"
# The smallest server that answers like ours: Bottle on gevent's WSGI server.
MINIMAL_SERVER = """
from gevent import monkey; monkey.patch_all()
import sys, bottle, geventwebsocket
from gevent.pywsgi import WSGIServer
app = bottle.Bottle()
app.route("/login")(lambda: "<!doctype html><title>login</title>")
WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
"""


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") * 1024 / MB


def hwm_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") * 1024 / MB


def get_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def serving(
    argv: list[str],
    port: int,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start a server; yields it and the seconds from start to the first 200."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, **(env or {})),
    )
    try:
        while get_status(port, "/login") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - start > SERVE_TIMEOUT:
                raise RuntimeError(f"{argv} did not serve /login in {SERVE_TIMEOUT} s")
            time.sleep(0.005)
        yield proc, time.perf_counter() - start
    finally:
        stop(proc)


def ours_argv(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app",
        "--no-mesh",
        "--data-dir",
        str(data_dir),
        "--max-connections-per-address",
        "1000",  # every page is 127.0.0.1
        "--port",
        str(port),
        "--node-name",
        "bench",
        "--log-level",
        "warning",
    ]


def floor_rss() -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], SERVE_TIMEOUT)
        if not ready or not proc.stdout.readline().startswith(b"ready"):
            raise RuntimeError("the bare import process did not start")
        return rss_mb(proc.pid)
    finally:
        proc.stdin.close()
        stop(proc)


def starts(make_argv, repeats: int = STARTS) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds to the first 200 and median VmRSS once settled."""
    times, rss = [], []
    for _ in range(repeats):
        port = free_port()
        with serving(make_argv(port), port) as (proc, seconds):
            times.append(seconds)
            time.sleep(SETTLE)
            rss.append(rss_mb(proc.pid))
    return statistics.median(times), statistics.median(rss)


@contextlib.contextmanager
def held_clients(port: int, cookies: Path) -> Iterator[dict]:
    """CLIENTS WebSockets to room 1, open until the block ends."""
    argv = [
        sys.executable,
        str(HERE / "wsload.py"),
        "hold",
        "--port",
        str(port),
        "--clients",
        str(CLIENTS),
        "--cookies",
        str(cookies),
        "--expect-history",
    ]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], HOLD_TIMEOUT)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            proc.kill()
            raise RuntimeError(
                f"load generator not ready: {line!r} {proc.stderr.read().decode()[-2000:]}"
            )
        yield json.loads(line[len("READY ") :])
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the generator's cue to close its sockets and exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        stop(proc)


def with_clients(
    data_dir: Path,
    tmp: Path,
    env: dict[str, str] | None = None,
) -> tuple[float, float, float, dict]:
    """VmRSS after one login and with the clients, the peak, what the clients saw."""
    port = free_port()
    with serving(ours_argv(data_dir, port), port, env) as (proc, _):
        cookies = login_all(Router(data_dir, port, "bench"), ["reader"], tmp / "cookies.json")
        time.sleep(SETTLE)
        before = rss_mb(proc.pid)
        with held_clients(port, cookies) as seen:
            time.sleep(SETTLE)
            during = rss_mb(proc.pid)
            peak = hwm_mb(proc.pid)
        return before, during, peak, seen


def main() -> None:
    floor = floor_rss()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        empty, history = tmp / "empty", tmp / "history"
        empty.mkdir()
        write_history(history, RECORDS)
        seed_accounts(history, ["reader"])
        t_min, rss_min = starts(lambda port: [sys.executable, "-c", MINIMAL_SERVER, str(port)])
        t_idle, rss_idle = starts(lambda port: ours_argv(empty, port))
        t_hist, rss_hist = starts(lambda port: ours_argv(history, port))
        before, during, peak, seen = with_clients(history, tmp)
        before_fixed, during_fixed, _, _ = with_clients(history, tmp, GLIBC_FIXED_MMAP)
    table(
        "footprint: resident memory, VmRSS (MB; median of "
        f"{STARTS} starts, {SETTLE:.0f} s after the first 200)",
        [
            ("bare import of gevent, bottle, geventwebsocket", f"{floor:.1f}", "", ""),
            ("minimal Bottle app on gevent pywsgi", f"{rss_min:.1f}", "", ""),
            (
                "ours idle, empty data folder",
                f"{rss_idle:.1f}",
                f"{rss_idle - floor:+.1f}",
                f"{rss_idle / floor:.2f}",
            ),
            (
                f"ours with {RECORDS:,} records",
                f"{rss_hist:.1f}",
                f"{rss_hist - floor:+.1f}",
                f"{rss_hist / floor:.2f}",
            ),
            (
                f"ours with {RECORDS:,} records + {seen['clients']} clients",
                f"{during:.1f}",
                f"{during - floor:+.1f}",
                f"{during / floor:.2f}",
            ),
            (
                "  peak (VmHWM) while they connected",
                f"{peak:.1f}",
                f"{peak - floor:+.1f}",
                f"{peak / floor:.2f}",
            ),
            (
                "  the same, glibc mmap threshold fixed (see below)",
                f"{during_fixed:.1f}",
                f"{during_fixed - floor:+.1f}",
                f"{during_fixed / floor:.2f}",
            ),
        ],
        ("", "MB", "vs floor", "ratio"),
    )
    print(
        f"  (the login before the clients: {before - rss_hist:+.1f} MB.  scrypt takes 16 MiB;"
        " left alone, glibc raises\n   its mmap threshold when a freed mmap goes back and"
        " keeps the next buffer on the heap;\n   app/server.py pins the threshold (mallopt),"
        " as MALLOC_MMAP_THRESHOLD_="
        f"{GLIBC_FIXED_MMAP['MALLOC_MMAP_THRESHOLD_']} does.\n   OpenWrt's musl unmaps it anyway.)"
    )
    cost = during_fixed - before_fixed  # as is, the clients reuse the kept scrypt heap
    print(
        f"  ({seen['clients']} clients cost {cost:.1f} MB, "
        f"{cost * MB / max(1, seen['clients']) / 1024:.1f} KB each, measured with the "
        f"threshold fixed; {seen['histories']} history frames received)"
    )
    table(
        f"start to the first HTTP 200 on /login (s, median of {STARTS} starts)",
        [
            ("empty data folder", f"{t_min:.3f}", f"{t_idle:.3f}", f"{t_idle / t_min:.1f}x"),
            (f"{RECORDS:,} records", f"{t_min:.3f}", f"{t_hist:.3f}", f"{t_hist / t_min:.1f}x"),
        ],
        ("", "minimal app", "ours", "ratio"),
    )
    record_results(
        {
            "footprint.floor_mb": floor,
            "footprint.minimal_mb": rss_min,
            "footprint.idle_mb": rss_idle,
            f"footprint.records_{RECORDS}_mb": rss_hist,
            f"footprint.records_{RECORDS}_clients_{CLIENTS}_mb": during,
            f"footprint.records_{RECORDS}_clients_{CLIENTS}_peak_mb": peak,
            f"footprint.records_{RECORDS}_clients_{CLIENTS}_mmap_fixed_mb": during_fixed,
            "footprint.per_client_kb": cost * MB / max(1, seen["clients"]) / 1024,
            "footprint.first_200_s": t_idle,
            f"footprint.first_200_records_{RECORDS}_s": t_hist,
            "footprint.first_200_minimal_s": t_min,
        }
    )
    verdict("idle <= 40 MB", rss_idle <= 40, f"{rss_idle:.1f} MB")
    verdict(
        f"{RECORDS:,} records + {CLIENTS} clients <= 64 MB",
        during <= 64 and seen["clients"] == CLIENTS,
        f"{during:.1f} MB; {during_fixed:.1f} MB without the kept scrypt buffer",
    )
    verdict(
        "first 200 < 1 s",
        max(t_idle, t_hist) < 1.0,
        f"{t_idle:.2f} s empty, {t_hist:.2f} s with {RECORDS:,} records",
    )


if __name__ == "__main__":
    main()
