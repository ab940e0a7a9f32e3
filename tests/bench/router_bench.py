"""Router budget: the chat measured with a router's CPU and memory, beside
full speed, in one run (``make bench-router``; needs root for cgroups).

Every router process runs in a cgroup of its profile (tests/bench/router_lab.py;
docs/ROUTER-BUDGET.md justifies the profiles).  The test client, the 100
pages (tests/bench/wsload.py) and this script stay outside, at full speed.
Per profile:

1. start-up to the first page (GET /login answered 200) with 0, 10,000 and
   100,000 records of history (``--max-history`` large enough to keep them);
2. on the empty router: register (form, scrypt, answer) and login, timed;
3. on the 10,000-record router, 100 pages open in room 1: ``PROBES`` messages
   sent one at a time; send -> ack (p50, p99) and send -> the last of the 100
   pages has it (p50, p99);
4. catch-up: an empty router joins one that holds 10,000 records it lacks
   (loopback mesh, its own group port and key); seconds from its first page to
   holding them all;
5. peak memory: VmHWM of the router of step 3 (10,000 records, 100 pages,
   five logins) and the cgroup's own peak (page cache included).

Then, at full speed, cProfile of the start-up with 100,000 records and of the
probe run: the functions that take the time, printed (``--no-profile`` skips).
Figures go to tests/bench/router-results.json (tests/bench/report.py makes
the table).  Bounded: every wait has a deadline; about 5 minutes.

    .venv/bin/python tests/bench/router_bench.py [--profiles full,current,old]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import pstats
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_fanout import seed_accounts
from common import HERE, ROOT, percentile, record_results, table
from history import write_history
from router_lab import Profile, box, sweep

from tests.helpers import HttpSession, HttpTransport, Router, free_port, loopback_mesh

# Profiles: docs/ROUTER-BUDGET.md gives the published figures behind them.
BASE_SYSTEM_MB = 64  # kernel + OpenWrt userland with LuCI, as measured on routers
CURRENT = Profile(
    "current",
    "current router (MT7981-class)",
    cpu_percent=20,
    device_mb=256,
    memory_mb=256 - BASE_SYSTEM_MB,
)
OLD = Profile(
    "old",
    "older router (MT7621 / IPQ40xx-class)",
    cpu_percent=5,
    device_mb=128,
    memory_mb=128 - BASE_SYSTEM_MB,
)
PROFILES: dict[str, Profile | None] = {"full": None, "current": CURRENT, "old": OLD}

RECORDS = (0, 10_000, 100_000)
PROBE_RECORDS = 10_000  # history of the router the pages are open on
CATCHUP_RECORDS = 10_000
PAGES = 100
SENDERS = 4  # users taking turns: each stays inside its burst of 10 (app/chat.py)
PROBES = 40  # messages, one at a time: p99 of 40 is their largest but one
ROOMS = 4
MAX_HISTORY = 100_000  # per room: the default (5,000) would trim the 100,000 at start
START_TIMEOUT = 240.0  # 100,000 records on 5 % of a core take about a minute
PROBE_RUN_TIMEOUT = 600.0  # wsload bounds each probe (30 s) and the connects (60 s)
CATCHUP_TIMEOUT = 240.0
POLL = 0.25  # /status polls while catching up: a slow router must not spend itself on them
MB = 1024 * 1024
PROFILED = (
    "import cProfile, runpy, sys\n"
    "out = sys.argv[1]\n"
    "sys.argv = ['app', *sys.argv[2:]]\n"
    'cProfile.run(\'runpy.run_module("app", run_name="__main__", alter_sys=True)\','
    " out)\n"
)
PROFILE_TOP = 15  # functions printed per profile


@dataclass
class BoxedRouter(Router):
    """A router whose argv is wrapped (a cgroup, a profiler)."""

    wrap: Callable[[list[str]], list[str]] = field(default=lambda argv: argv)

    def argv(self) -> list[str]:
        return self.wrap(super().argv())


def page_status(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/login")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def launch(router: BoxedRouter) -> float:
    """Start the router; seconds from the start to its first page (GET /login 200)."""
    router.data_dir.mkdir(parents=True, exist_ok=True)
    router.log_path = router.data_dir.parent / f"{router.name}.log"
    with open(router.log_path, "ab") as logf:
        start = time.perf_counter()
        router.proc = subprocess.Popen(
            router.argv(),
            cwd=ROOT,
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    while page_status(router.port) != 200:
        if router.proc.poll() is not None:
            raise RuntimeError(
                f"router {router.name} exited ({router.proc.returncode}):\n{router.log()[-1500:]}"
            )
        if time.perf_counter() - start > START_TIMEOUT:
            raise RuntimeError(f"router {router.name} served no page in {START_TIMEOUT} s")
        time.sleep(0.02)
    return time.perf_counter() - start


def router_args() -> list[str]:
    """A lone router (the catch-up adds its own loopback mesh)."""
    return [
        "--no-mesh",
        "--log-level",
        "warning",
        "--max-history",
        str(MAX_HISTORY),
        "--rooms",
        str(ROOMS),
    ]


def hwm_mb(router: Router) -> float:
    """VmHWM: the most resident memory the router's process ever had."""
    assert router.proc is not None
    for line in Path(f"/proc/{router.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def cpu_seconds(router: Router) -> float:
    """User + system CPU time the router's process has used so far."""
    assert router.proc is not None
    fields = Path(f"/proc/{router.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_request(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def register_and_login(router: Router) -> tuple[float, float]:
    """Seconds for register (its form, then the POST) and login (the same)."""
    s = HttpSession(HttpTransport("127.0.0.1", router.port))

    def register() -> None:
        r = s.register("newcomer")
        assert r.status == 303, (r.status, r.text[:300])  # registering logs in

    def login() -> None:
        r = HttpSession(HttpTransport("127.0.0.1", router.port)).login("newcomer")
        assert r.status == 303, (r.status, r.text[:300])

    return timed_request(register), timed_request(login)


def probe(router: Router, tmp: Path) -> dict:
    """PAGES pages open in room 1; PROBES messages one at a time (wsload probe).
    Adds ``cpu_s``: the router's CPU time over the probes (the pages connected)."""
    names = [f"s{i}" for i in range(SENDERS)] + ["reader"]
    cookies = tmp / "cookies.json"
    cookies.write_text(json.dumps([router.user(n, register=False).cookie_header() for n in names]))
    argv = [
        sys.executable,
        str(HERE / "wsload.py"),
        "probe",
        "--port",
        str(router.port),
        "--clients",
        str(PAGES),
        "--senders",
        str(SENDERS),
        "--probes",
        str(PROBES),
        "--cookies",
        str(cookies),
        "--expect-history",
    ]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], PROBE_RUN_TIMEOUT)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        cpu0 = cpu_seconds(router)
        out, err = proc.communicate(timeout=PROBE_RUN_TIMEOUT)
        cpu1 = cpu_seconds(router)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not line.startswith("CONNECTED") or not out.strip():
        raise RuntimeError(f"wsload probe failed ({proc.returncode}): {line[:200]} {err[-2000:]}")
    return dict(json.loads(out.splitlines()[-1]), cpu_s=cpu1 - cpu0)


def held(router: Router) -> int:
    try:
        return sum(router.status()["rooms"].values())
    except (OSError, ValueError):  # too busy to answer in 10 s: ask again
        return -1


def catch_up(profile: Profile | None, tmp: Path) -> float:
    """Seconds from an empty router's first page until it holds CATCHUP_RECORDS."""
    tmp.mkdir(parents=True, exist_ok=True)
    mesh = loopback_mesh(tmp)
    peer_dir, new_dir = tmp / "peer" / "data", tmp / "new" / "data"
    write_history(peer_dir, CATCHUP_RECORDS, seed=7)
    with box(profile, "peer") as peer_box, box(profile, "new") as new_box:
        args = [a for a in router_args() if a != "--no-mesh"] + mesh
        peer = BoxedRouter(peer_dir, free_port(), "peer", args, wrap=peer_box.wrap)
        new = BoxedRouter(new_dir, free_port(), "new", args, wrap=new_box.wrap)
        try:
            launch(peer)
            launch(new)
            start = time.perf_counter()
            deadline = start + CATCHUP_TIMEOUT
            while held(new) < CATCHUP_RECORDS and time.perf_counter() < deadline:
                time.sleep(POLL)
            seconds = time.perf_counter() - start
            if held(new) < CATCHUP_RECORDS:
                raise RuntimeError(f"catch-up incomplete after {CATCHUP_TIMEOUT} s")
            return seconds
        finally:
            new.stop()
            peer.stop()


def attempt(figures: dict[str, float], key: str, fn: Callable[[], dict[str, float]]) -> None:
    """Run one measurement; a failure (a router killed for memory, a timeout)
    is printed and counted as ``<key>_failed``, and the run goes on."""
    try:
        figures.update(fn())
    except (RuntimeError, AssertionError, OSError, subprocess.TimeoutExpired) as e:
        print(f"  {key}: FAILED: {str(e)[:600]}", flush=True)
        figures[f"{key}_failed"] = 1


def startup(profile: Profile | None, tmp: Path, n: int, figures: dict[str, float]) -> None:
    data = tmp / f"start-{n}" / "data"
    if n:
        write_history(data, n)
    with box(profile, f"start-{n}") as cg:
        r = BoxedRouter(data, free_port(), f"start-{n}", router_args(), wrap=cg.wrap)
        try:
            figures[f"startup_{n}_s"] = launch(r)
            figures[f"startup_{n}_hwm_mb"] = hwm_mb(r)
            if n == 0:
                figures["register_s"], figures["login_s"] = register_and_login(r)
        finally:
            r.stop()
            figures[f"startup_{n}_oom_kills"] = cg.oom_kills()


def pages(profile: Profile | None, tmp: Path) -> dict[str, float]:
    data = tmp / "pages" / "data"
    write_history(data, PROBE_RECORDS, seed=3)
    seed_accounts(data, [f"s{i}" for i in range(SENDERS)] + ["reader"])
    with box(profile, "pages") as cg:
        r = BoxedRouter(data, free_port(), "pages", router_args(), wrap=cg.wrap)
        try:
            launch(r)
            result = probe(r, tmp)
            peak = hwm_mb(r)
        finally:
            r.stop()
        if result["lost"] or not result["ack_ms"]:
            print(f"  probes lost: {result['lost']} (first error: {result['first_error']})")
        return {
            "ack_p50_ms": percentile(result["ack_ms"], 50),
            "ack_p99_ms": percentile(result["ack_ms"], 99),
            "fanout_p50_ms": percentile(result["all_ms"], 50),
            "fanout_p99_ms": percentile(result["all_ms"], 99),
            "cpu_ms_per_message": result["cpu_s"] / PROBES * 1000,
            "probes_lost": result["lost"],
            "pages_open": result["clients"],
            "peak_mb": peak,
            "cgroup_peak_mb": cg.peak_mb(),
            "pages_oom_kills": cg.oom_kills(),
        }


def run_profile(name: str, profile: Profile | None) -> dict[str, float]:
    figures: dict[str, float] = {}
    if profile is not None:
        figures.update(
            cpu_percent=profile.cpu_percent,
            memory_mb=profile.memory_mb,
            device_mb=profile.device_mb,
        )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in RECORDS:
            print(f"[{name}] start-up with {n:,} records", flush=True)
            attempt(figures, f"startup_{n}", lambda n=n: startup(profile, tmp, n, figures) or {})
        print(f"[{name}] {PAGES} pages, {PROBES} probes", flush=True)
        attempt(figures, "pages", lambda: pages(profile, tmp))
        print(f"[{name}] catch-up of {CATCHUP_RECORDS:,} records", flush=True)
        attempt(
            figures,
            "catchup",
            lambda: {f"catchup_{CATCHUP_RECORDS}_s": catch_up(profile, tmp / "catchup")},
        )
    return {
        f"router.{name}.{k}": v for k, v in figures.items() if not math.isnan(v)
    }  # NaN: not measured here


# -- where the time goes (full speed, cProfile) -----------------------------------


def profiled_wrap(out: Path) -> Callable[[list[str]], list[str]]:
    def wrap(argv: list[str]) -> list[str]:
        assert argv[1:3] == ["-m", "app"], argv
        return [argv[0], "-c", PROFILED, str(out), *argv[3:]]

    return wrap


def print_profile(path: Path, title: str) -> None:
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(PROFILE_TOP)
        body = buf.getvalue()
        print(f"\n== cProfile: {title}, by {key}\n" + body[body.find("   ncalls") :].rstrip())


def profile_hot_paths(tmp: Path) -> None:
    data = tmp / "prof-start" / "data"
    write_history(data, RECORDS[-1])
    out = tmp / "startup.pstats"
    r = BoxedRouter(data, free_port(), "prof-start", router_args(), wrap=profiled_wrap(out))
    try:
        launch(r)
    finally:
        r.stop()
    print_profile(
        out, f"start-up with {RECORDS[-1]:,} records (until stopped after the first page)"
    )
    data = tmp / "prof-pages" / "data"
    write_history(data, PROBE_RECORDS, seed=3)
    seed_accounts(data, [f"s{i}" for i in range(SENDERS)] + ["reader"])
    out = tmp / "pages.pstats"
    r = BoxedRouter(data, free_port(), "prof-pages", router_args(), wrap=profiled_wrap(out))
    try:
        launch(r)
        probe(r, tmp)
    finally:
        r.stop()
    print_profile(
        out, f"{PAGES} pages connecting, 5 logins and {PROBES} probes ({PROBE_RECORDS:,} records)"
    )


def report(results: dict[str, float], names: list[str]) -> None:
    def f(name: str, key: str, fmt: str) -> str:
        v = results.get(f"router.{name}.{key}")
        if v is None:
            return (
                "FAILED"
                if any(k.startswith(f"router.{name}.") and k.endswith("_failed") for k in results)
                else "-"
            )
        return format(v, fmt)

    rows = [
        (f"start-up, {n:,} records (s)", *(f(p, f"startup_{n}_s", ".2f") for p in names))
        for n in RECORDS
    ]
    rows += [
        ("register (s)", *(f(p, "register_s", ".2f") for p in names)),
        ("login (s)", *(f(p, "login_s", ".2f") for p in names)),
        ("send -> ack p50 (ms)", *(f(p, "ack_p50_ms", ".1f") for p in names)),
        ("send -> ack p99 (ms)", *(f(p, "ack_p99_ms", ".1f") for p in names)),
        (f"one message to {PAGES} pages p50 (ms)", *(f(p, "fanout_p50_ms", ".1f") for p in names)),
        (f"one message to {PAGES} pages p99 (ms)", *(f(p, "fanout_p99_ms", ".1f") for p in names)),
        (
            "router CPU over the probes / probes (ms, idle work included)",
            *(f(p, "cpu_ms_per_message", ".2f") for p in names),
        ),
        (
            f"catch-up of {CATCHUP_RECORDS:,} (s)",
            *(f(p, f"catchup_{CATCHUP_RECORDS}_s", ".2f") for p in names),
        ),
        ("peak VmHWM, 10,000 records + 100 pages (MB)", *(f(p, "peak_mb", ".1f") for p in names)),
        (
            "  cgroup peak, page cache included (MB)",
            *(f(p, "cgroup_peak_mb", ".1f") for p in names),
        ),
        (
            f"peak VmHWM, start-up with {RECORDS[-1]:,} (MB)",
            *(f(p, f"startup_{RECORDS[-1]}_hwm_mb", ".1f") for p in names),
        ),
    ]
    header = (
        "",
        *(
            n
            if PROFILES[n] is None
            else f"{n} ({PROFILES[n].cpu_percent:g} %, {PROFILES[n].memory_mb} MB)"
            for n in names
        ),
    )
    table("router budget: full speed and router-class cgroups", rows, header)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", default=",".join(PROFILES))
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    args = p.parse_args(argv)
    names = args.profiles.split(",")
    if os.geteuid() != 0 and any(PROFILES[n] is not None for n in names):
        print("router_bench needs root (cgroups)")
        return 1
    left = sweep()
    if left:
        print(f"removed cgroups left by an earlier run: {left}")
    started = time.perf_counter()
    results: dict[str, float] = {}
    for name in names:
        results.update(run_profile(name, PROFILES[name]))
        print(f"  ({time.perf_counter() - started:.0f} s so far)", flush=True)
    record_results(results, HERE / "router-results.json")
    report(results, names)
    if not args.no_profile:
        with tempfile.TemporaryDirectory() as d:
            try:
                profile_hot_paths(Path(d))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                print(f"profiling failed: {e}")
    print(f"\n({time.perf_counter() - started:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
