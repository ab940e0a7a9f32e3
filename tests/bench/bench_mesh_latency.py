"""Mesh latency: a WebSocket send on router A to the WebSocket delivery on B
(one hop) and on C (two hops, through B's relay), in network namespaces, at a
steady rate; side by side with a plain UDP round trip between the same
namespaces (a forwarder in B for two hops).

Topology: A on bridge 0, C on bridge 1, B on both: A and C cannot hear each
other.  Needs root (namespaces).  Targets: p99 under 10 ms one hop, under 15 ms
two hops, at 20 messages per second.

    .venv/bin/python tests/bench/bench_mesh_latency.py [seconds]
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, percentile, record_results, table, verdict

from tests.helpers import WsClient, wait_for
from tests.netns.netlab import Lab, ns_run, sweep

RATE = 20.0  # messages per second: a very busy room
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
SENDERS = 10  # each user may post 2/s (app/chat.py RATE_PER_SECOND): 10 users make 20/s
UDP_PORT = 9999
UDP_PROBES = 300


def listen(w: WsClient, arrivals: dict[str, float], stop: threading.Event) -> None:
    w.conn.settimeout(0.5)
    while not stop.is_set():
        try:
            raw = w.conn.recv()
        except Exception:
            continue
        now = time.perf_counter()
        frame = json.loads(raw)
        if frame.get("type") == "message":
            arrivals.setdefault(frame["text"], now)


def chat_latency(lab: Lab, tmp: Path) -> tuple[list[float], list[float], int]:
    key = tmp / "mesh.key"
    key.write_text(secrets.token_hex(32) + "\n")
    extra = ["--mesh-key-file", str(key), "--beacon-interval", "1", "--log-level", "warning"]
    a, b, c = (lab.start_router(n, tmp / n, extra) for n in ("a", "b", "c"))
    senders = [a.user(f"s{i}") for i in range(SENDERS)]
    wait_for(lambda: c.status()["accounts"] >= SENDERS, 10, "accounts on C")
    wb, wc = b.ws(b.user("bob")), c.ws(c.user("cat"))
    sockets = [a.ws(s) for s in senders]
    for w in (wb, wc, *sockets):
        w.recv_type("history")
    got_b: dict[str, float] = {}
    got_c: dict[str, float] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=listen, args=(w, d, stop), daemon=True)
        for w, d in ((wb, got_b), (wc, got_c))
    ]
    for t in threads:
        t.start()
    sent: dict[str, float] = {}
    n = int(SECONDS * RATE)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / RATE
        time.sleep(max(0.0, due - time.perf_counter()))
        text = f"m{i}"
        sent[text] = time.perf_counter()
        sockets[i % SENDERS].send({"type": "send", "text": text, "client_id": text})
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline and (len(got_b) < n or len(got_c) < n):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    lost = sum(1 for t in sent if t not in got_b or t not in got_c)
    one = [(got_b[t] - s) * 1000 for t, s in sent.items() if t in got_b]
    two = [(got_c[t] - s) * 1000 for t, s in sent.items() if t in got_c]
    return one, two, lost


def udp_rtts(lab: Lab, src: str, dst_addr: str) -> list[float]:
    ex = lab.hosts[src].executor
    assert ex is not None

    def probe() -> list[float]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        out = []
        for i in range(UDP_PROBES):
            payload = b"%d" % i + b"x" * 150
            t0 = time.perf_counter()
            try:
                s.sendto(payload, (dst_addr, UDP_PORT))
                while s.recv(2048) != payload:
                    pass
            except (TimeoutError, PermissionError):  # lost (EPERM: a loss rule, on the way out)
                continue
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(1 / RATE)
        s.close()
        return out

    return ex.submit(probe).result()


def in_ns(lab: Lab, host: str, *argv: str) -> subprocess.Popen[bytes]:
    helper = str(ROOT / "tests" / "bench" / "udp_echo.py")
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.hosts[host].ns, sys.executable, helper, *argv]
    )


def udp_baseline(lab: Lab) -> tuple[list[float], list[float]]:
    """Round trips A->B (echo in B), then A->B->C (B forwards to C's echo)."""
    procs = [in_ns(lab, "b", "echo", str(UDP_PORT))]
    try:
        time.sleep(0.5)
        one = udp_rtts(lab, "a", lab.hosts["b"].address(0))
        procs.pop().kill()
        procs += [
            in_ns(lab, "c", "echo", str(UDP_PORT)),
            in_ns(lab, "b", "forward", str(UDP_PORT), lab.hosts["c"].address(1)),
        ]
        time.sleep(0.5)
        two = udp_rtts(lab, "a", lab.hosts["b"].address(0))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return one, two


def main() -> int:
    if os.geteuid() != 0:
        print("bench_mesh_latency needs root (network namespaces)")
        return 1
    sweep()
    with Lab() as lab, tempfile.TemporaryDirectory() as d:
        lab.add_host("a", [0])
        lab.add_host("b", [0, 1])
        lab.add_host("c", [1])
        ns_run(lab.hosts["b"].ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        udp_one, udp_two = udp_baseline(lab)
        one, two, lost = chat_latency(lab, Path(d))
    rows = []
    for name, chat, udp in (("one hop (A->B)", one, udp_one), ("two hops (A->B->C)", two, udp_two)):
        rows.append(
            (
                name,
                f"{percentile(chat, 50):.2f}",
                f"{percentile(chat, 99):.2f}",
                f"{percentile(udp, 50):.2f}",
                f"{percentile(udp, 99):.2f}",
                f"{percentile(udp, 50) / 2:.2f}",
            )
        )
    table(
        f"mesh latency, ms ({len(one)} messages at {RATE:.0f}/s; UDP: {UDP_PROBES} probes)",
        rows,
        ("", "chat p50", "chat p99", "UDP RTT p50", "UDP RTT p99", "UDP one-way p50"),
    )
    print(f"  messages not delivered everywhere: {lost}")
    record_results(
        {
            "mesh.one_hop_p50_ms": percentile(one, 50),
            "mesh.one_hop_p99_ms": percentile(one, 99),
            "mesh.two_hops_p50_ms": percentile(two, 50),
            "mesh.two_hops_p99_ms": percentile(two, 99),
            "mesh.udp_rtt_one_hop_p50_ms": percentile(udp_one, 50),
            "mesh.udp_rtt_one_hop_p99_ms": percentile(udp_one, 99),
            "mesh.udp_rtt_two_hops_p50_ms": percentile(udp_two, 50),
            "mesh.udp_rtt_two_hops_p99_ms": percentile(udp_two, 99),
            "mesh.undelivered": lost,
        }
    )
    verdict("p99 one hop < 10 ms", percentile(one, 99) < 10, f"{percentile(one, 99):.2f} ms")
    verdict("p99 two hops < 15 ms", percentile(two, 99) < 15, f"{percentile(two, 99):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
