"""Markdown from the benchmarks' results: ``results.json`` (``make bench``)
and ``router-results.json`` (``make bench-router``), each one flat object of
figure name to number plus machine, Python version and date.

    report.py                  write tests/bench/results.md and router-results.md
    report.py --readme         also rewrite README.md between the markers
                               <!-- bench:begin --> ... <!-- bench:end --> and
                               <!-- bench-router:begin --> ... <!-- bench-router:end -->

A table cell is a template: ``{name}`` or ``{name:format}`` takes the figure;
a cell whose figures are missing (a bench not run, or one that failed) says
so.  Nothing else in README.md is touched.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = ROOT / "README.md"
FIELD = re.compile(r"\{([a-z0-9_.]+)(?::([^}]*))?\}")
MISSING = "not measured"

BENCH_ROWS = [
    (
        "fan-out, 500 clients in one room, 1,000 messages (`bench_fanout.py`)",
        "{fanout.ours_per_s:,.0f} deliveries/s",
        "`websockets` asyncio broadcast server {fanout.websockets_per_s:,.0f}/s; pre-framed "
        "bytes straight to the sockets {fanout.limit_per_s:,.0f}/s",
        ("≥ 1.5x baseline", lambda r: r["fanout.ours_per_s"] >= 1.5 * r["fanout.websockets_per_s"]),
    ),
    (
        "latency, 500 clients, 20 msg/s (`bench_fanout.py`)",
        "p50 {fanout.ours_p50_ms:.1f} ms, p99 {fanout.ours_p99_ms:.1f} ms",
        "`websockets` p50 {fanout.websockets_p50_ms:.1f}, p99 {fanout.websockets_p99_ms:.1f}",
        ("p99 < 50 ms", lambda r: r["fanout.ours_p99_ms"] < 50),
    ),
    (
        "mesh latency, WebSocket send on A → delivery on B / C, 20 msg/s "
        "(`bench_mesh_latency.py`, namespaces)",
        "one hop p50 {mesh.one_hop_p50_ms:.2f}, p99 {mesh.one_hop_p99_ms:.2f} ms; two hops p50 "
        "{mesh.two_hops_p50_ms:.2f}, p99 {mesh.two_hops_p99_ms:.2f} ms",
        "raw UDP round trip A↔B p50 {mesh.udp_rtt_one_hop_p50_ms:.2f}, p99 "
        "{mesh.udp_rtt_one_hop_p99_ms:.2f} ms; A↔B↔C p50 {mesh.udp_rtt_two_hops_p50_ms:.2f}, "
        "p99 {mesh.udp_rtt_two_hops_p99_ms:.2f} ms",
        (
            "p99 < 10 / 15 ms",
            lambda r: r["mesh.one_hop_p99_ms"] < 10 and r["mesh.two_hops_p99_ms"] < 15,
        ),
    ),
    (
        "store appends, flushed one by one (`bench_store.py`)",
        "{store.append_per_s:,.0f} records/s",
        "the same JSON lines made and written to a plain file: {store.append_plain_per_s:,.0f}/s",
        ("≥ 1/3 of plain", lambda r: r["store.append_per_s"] >= r["store.append_plain_per_s"] / 3),
    ),
    (
        "store merge of 20,000 out of order (`bench_store.py`)",
        "{store.merge_20000_per_s:,.0f} records/s",
        "plain file {store.merge_20000_plain_per_s:,.0f}/s",
        "",
    ),
    (
        "start-up with 100,000 records (`bench_store.py`)",
        "{store.startup_100000_s:.2f} s to load",
        "reading the files alone {store.startup_100000_read_s:.2f} s",
        ("< 2 s", lambda r: r["store.startup_100000_s"] < 2),
    ),
    (
        "merge a peer's room log, 500 lines each side, half in common (`bench_merge.py`)",
        "{merge.ours_500_ms:.1f} ms",
        "the prototype's `mergefile` + `sortBydate` {merge.prototype_500_s:.2f} s",
        "",
    ),
    (
        "… 1,000 lines each side",
        "{merge.ours_1000_ms:.1f} ms",
        "prototype {merge.prototype_1000_s:.1f} s",
        "",
    ),
    (
        "… 2,000 lines each side",
        "{merge.ours_2000_ms:.1f} ms",
        "prototype {merge.prototype_2000_s:.1f} s",
        "",
    ),
    ("… 100,000 lines each side", "{merge.ours_100000_ms:,.0f} ms", "(prototype: days)", ""),
    (
        "memory idle (`bench_footprint.py`)",
        "{footprint.idle_mb:.1f} MB",
        "bare import of gevent + bottle + geventwebsocket {footprint.floor_mb:.1f} MB; minimal "
        "Bottle app on pywsgi {footprint.minimal_mb:.1f} MB",
        ("≤ 40 MB", lambda r: r["footprint.idle_mb"] <= 40),
    ),
    (
        "memory, 10,000 records + 500 clients (`bench_footprint.py`)",
        "{footprint.records_10000_clients_500_mb:.1f} MB "
        "({footprint.records_10000_clients_500_mmap_fixed_mb:.1f} MB with "
        "`MALLOC_MMAP_THRESHOLD_=131072`); {footprint.per_client_kb:.0f} KB per client",
        "",
        ("≤ 64 MB", lambda r: r["footprint.records_10000_clients_500_mb"] <= 64),
    ),
    (
        "start to first HTTP 200 (`bench_footprint.py`)",
        "{footprint.first_200_s:.2f} s ({footprint.first_200_records_10000_s:.2f} s with 10,000 "
        "records)",
        "minimal Bottle app {footprint.first_200_minimal_s:.2f} s",
        ("< 1 s", lambda r: r["footprint.first_200_s"] < 1),
    ),
    (
        "catch-up of 100,000 missing messages held by two peers, paced 5 MB/s for the test link "
        "(`bench_catchup.py`, namespaces)",
        "{catchup.ours_loss0_s:.2f} s, {catchup.ours_loss0_wire_ratio:.2f}x the records' bytes on "
        "the wire; at 5% loss {catchup.ours_loss5_s:.2f} s, {catchup.ours_loss5_wire_ratio:.2f}x",
        "the prototype's `ASK-FILE` flood: {catchup.askfile_loss0_s:.2f} s, "
        "{catchup.askfile_loss0_wire_ratio:.2f}x the bytes; at 5% loss "
        "{catchup.askfile_loss5_missing:,.0f} messages never arrive",
        (
            "< 5 s; ≤ 1.3x",
            lambda r: r["catchup.ours_loss0_s"] < 5 and r["catchup.ours_loss0_wire_ratio"] <= 1.3,
        ),
    ),
    (
        "meshes through an MQTT broker, mesh A → Mosquitto → mesh B at 20 msg/s; 10,000 "
        "records after a day offline (`bench_bridge.py`)",
        "p50 {bridge.latency_p50_ms:.1f} ms, p99 {bridge.latency_p99_ms:.1f} ms; "
        "{bridge.bytes_per_record:.0f} bytes per record on the broker link; catch-up "
        "{bridge.catchup_10000_s:.1f} s, {bridge.catchup_bytes_per_record:.0f} bytes per record",
        "",
        (
            "p99 < 250 ms; catch-up < 60 s",
            lambda r: r["bridge.latency_p99_ms"] < 250 and r["bridge.catchup_10000_s"] < 60,
        ),
    ),
    (
        "partition heal, 5 of 100,000 messages differ (`bench_catchup.py`)",
        "{heal.wire_bytes:,.0f} bytes in {heal.s:.2f} s",
        "",
        ("< 10 KB", lambda r: r["heal.wire_bytes"] < 10_000),
    ),
    (
        "mesh at scale, simulated: idle, 200 routers on a unit-disk graph (`bench_scale_sim.py`)",
        "{scale.sim.udg200.idle_per_router_per_min:,.0f} datagrams per router per minute "
        "({scale.sim.udg200.idle_datagrams_per_s:,.0f}/s on the mesh); at 10% loss "
        "{scale.sim.udg200_loss10.idle_per_router_per_min:,.0f}",
        "25 / 50 / 100 routers: {scale.sim.udg25.idle_per_router_per_min:,.0f} / "
        "{scale.sim.udg50.idle_per_router_per_min:,.0f} / "
        "{scale.sim.udg100.idle_per_router_per_min:,.0f} per router per minute",
        (
            "≤ 0.1/s per router",
            lambda r: r["scale.sim.udg200.idle_per_router_per_min"] / 60 <= 0.1,
        ),
    ),
    (
        "… one chat message in a cell of 16 (simulated)",
        "{scale.sim.cell16.tx_per_message:.1f} transmissions; at 10% loss "
        "{scale.sim.cell16_loss10.tx_per_message:.1f}, delivered "
        "{scale.sim.cell16_loss10.delivery_ratio:.0%}",
        "unit-disk 25 / 50 / 100 / 200: {scale.sim.udg25.tx_per_message:.0f} / "
        "{scale.sim.udg50.tx_per_message:.0f} / {scale.sim.udg100.tx_per_message:.0f} / "
        "{scale.sim.udg200.tx_per_message:.0f}",
        (
            "≤ 3 (≤ 4 at 10% loss)",
            lambda r: (
                r["scale.sim.cell16.tx_per_message"] <= 3
                and r["scale.sim.cell16_loss10.tx_per_message"] <= 4
            ),
        ),
    ),
    (
        "… a line of 12, simulated: to the far end; heal after a cut in the middle",
        "p50 {scale.sim.line12.latency_p50_s:.1f} s, p99 {scale.sim.line12.latency_p99_s:.1f} s "
        "(10% loss: p99 {scale.sim.line12_loss10.latency_p99_s:.1f} s); heal "
        "{scale.sim.line12.heal_s:.1f} s",
        "unit-disk 200: p99 {scale.sim.udg200.latency_p99_s:.1f} s, heal "
        "{scale.sim.udg200.heal_s:.1f} s",
        (
            "p99 ≤ 1 s; heal ≤ 5 s",
            lambda r: (
                r["scale.sim.line12.latency_p99_s"] <= 1 and r["scale.sim.line12.heal_s"] <= 5
            ),
        ),
    ),
    (
        "mesh at scale, namespaces: a cell of 16 routers, 10% loss (`bench_scale_netns.py`)",
        "idle {scale.netns.cell16.idle_datagrams_per_s:.1f} datagrams/s; one message "
        "{scale.netns.cell16.tx_per_message:.1f} transmissions",
        "simulated: {scale.sim.cell16_loss10.idle_datagrams_per_s:.1f}/s; "
        "{scale.sim.cell16_loss10.tx_per_message:.1f}",
        (
            "≤ 2/s; ≤ 4",
            lambda r: (
                r["scale.netns.cell16.idle_datagrams_per_s"] <= 2
                and r["scale.netns.cell16.tx_per_message"] <= 4
            ),
        ),
    ),
    (
        "… a line of 12 routers, 10% loss",
        "end to end p50 {scale.netns.line12.latency_p50_s:.1f} s, p99 "
        "{scale.netns.line12.latency_p99_s:.1f} s; heal {scale.netns.line12.heal_s:.1f} s; "
        "busiest router {scale.netns.line12.idle_busiest_router_per_s:.1f} datagrams/s idle",
        "simulated: p99 {scale.sim.line12_loss10.latency_p99_s:.1f} s, heal "
        "{scale.sim.line12_loss10.heal_s:.1f} s",
        (
            "p99 ≤ 1 s; heal ≤ 5 s",
            lambda r: (
                r["scale.netns.line12.latency_p99_s"] <= 1 and r["scale.netns.line12.heal_s"] <= 5
            ),
        ),
    ),
    (
        "… a 5 x 5 grid, 10% loss",
        "idle {scale.netns.grid25.idle_datagrams_per_s:.1f} datagrams/s; one message "
        "{scale.netns.grid25.tx_per_message:.1f} transmissions; end to end p99 "
        "{scale.netns.grid25.latency_p99_s:.1f} s; heal {scale.netns.grid25.heal_s:.1f} s",
        "",
        "",
    ),
    (
        "a 300 KB photo to the one router whose page asks, 5% loss (`bench_blob_fec.py`, "
        "simulated cell)",
        "unicast pull (adopted): {blobfec.r1_loss5_unicast_air_ms:,.0f} ms of air, "
        "{blobfec.r1_loss5_unicast_air_kb:,.0f} KB",
        "multicast + NACK {blobfec.r1_loss5_nack_air_ms:,.0f} ms; multicast FEC 16+4 + NACK "
        "{blobfec.r1_loss5_fec16_4_air_ms:,.0f} ms (basic rate 6 Mb/s, unicast 24 Mb/s)",
        "",
    ),
    (
        "… the same photo to 15 routers at once, 10% loss",
        "unicast pulls {blobfec.r15_loss10_unicast_air_ms:,.0f} ms of air, done in "
        "{blobfec.r15_loss10_unicast_done_ms:,.0f} ms",
        "multicast + NACK {blobfec.r15_loss10_nack_air_ms:,.0f} ms, done "
        "{blobfec.r15_loss10_nack_done_ms:,.0f}; FEC 16+4 + NACK "
        "{blobfec.r15_loss10_fec16_4_air_ms:,.0f} ms, done "
        "{blobfec.r15_loss10_fec16_4_done_ms:,.0f}",
        "",
    ),
    (
        "… over real sockets, 15 routers at once, 10% loss (`bench_blob_fec_netns.py`, "
        "namespaces; Ethernet bytes)",
        "unicast pulls {blobfec.netns.r15_loss10_unicast_kb:,.0f} KB, done in "
        "{blobfec.netns.r15_loss10_unicast_done_ms:,.0f} ms",
        "multicast + NACK {blobfec.netns.r15_loss10_nack_kb:,.0f} KB, done "
        "{blobfec.netns.r15_loss10_nack_done_ms:,.0f}; FEC 32+4 + NACK "
        "{blobfec.netns.r15_loss10_fec32_4_kb:,.0f} KB, done "
        "{blobfec.netns.r15_loss10_fec32_4_done_ms:,.0f}",
        "",
    ),
    (
        "… receivers at once from which multicast (FEC 16+4, 5% loss) takes less air than "
        "pulls (`bench_blob_fec.py`)",
        "{blobfec.crossover_m1_u24} at a 1 Mb/s basic rate (OpenWrt's 2.4 GHz default), "
        "{blobfec.crossover_m6_u24} at 6 Mb/s; unicast at 24 Mb/s",
        "",
        "",
    ),
    (
        "a photo posted on A, opened on C through B (C out of A's reach; "
        "`bench_blob_netns.py`, namespaces, real routers)",
        "thumbnail on C {blobline.loss0.thumbnail_s:.3f} s (with the message), full photo "
        "{blobline.loss0.full_s:.2f} s (C asks B, B fetches from A); at 10% loss "
        "{blobline.loss10.thumbnail_s:.3f} / {blobline.loss10.full_s:.2f} s",
        "",
        "",
    ),
    (
        "… bytes on the mesh, every router's interfaces",
        "the photo {blobline.loss0.photo_bytes_x:.2f}x its size (at 10% loss "
        "{blobline.loss10.photo_bytes_x:.2f}x); its message with the thumbnail "
        "{blobline.loss0.record_bytes:,.0f} B ({blobline.loss10.record_bytes:,.0f} B)",
        "",
        (
            "about once per hop (two): ≤ 2.5x its size",
            lambda r: (
                max(r["blobline.loss0.photo_bytes_x"], r["blobline.loss10.photo_bytes_x"]) <= 2.5
            ),
        ),
    ),
]
BENCH_HEADER = ("what (script)", "ours", "baseline in the same run", "target")

PROFILES = (
    ("full", "full speed (this machine)"),
    ("current", "current router"),
    ("old", "older router"),
)
ROUTER_ROWS = [
    ("start-up to first page, empty", "{router.P.startup_0_s:.2f} s"),
    ("start-up to first page, 10,000 records", "{router.P.startup_10000_s:.2f} s"),
    ("start-up to first page, 100,000 records", "{router.P.startup_100000_s:.2f} s"),
    ("register (page + scrypt + redirect)", "{router.P.register_s:.2f} s"),
    ("login", "{router.P.login_s:.2f} s"),
    (
        "send → ack, 100 pages open: p50 / p99",
        "{router.P.ack_p50_ms:.1f} / {router.P.ack_p99_ms:.1f} ms",
    ),
    (
        "one message to 100 pages (send → last page): p50 / p99",
        "{router.P.fanout_p50_ms:.1f} / {router.P.fanout_p99_ms:.1f} ms",
    ),
    (
        "router CPU time over the probes, per probe (idle work included)",
        "{router.P.cpu_ms_per_message:.2f} ms",
    ),
    ("catch-up of 10,000 missing records", "{router.P.catchup_10000_s:.2f} s"),
    ("peak memory: VmHWM with 10,000 records + 100 pages", "{router.P.peak_mb:.1f} MB"),
    (
        "peak memory: the same router's cgroup (page cache included)",
        "{router.P.cgroup_peak_mb:.1f} MB",
    ),
    (
        "peak memory: VmHWM at start-up with 100,000 records",
        "{router.P.startup_100000_hwm_mb:.1f} MB",
    ),
]


def cell(template: str, results: dict[str, object]) -> str:
    """The template with its figures, or MISSING if any is absent."""
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        value = results.get(m.group(1))
        if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
            missing = True
            return ""
        return format(value, m.group(2) or "")

    text = FIELD.sub(one, template)
    return MISSING if missing else text


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def stamp(results: dict[str, object], what: str) -> str:
    return (
        f"{what}: {results.get('machine', '?')}, Python {results.get('python', '?')}, "
        f"{results.get('date', '?')}.\n"
    )


def target_cell(
    target: str | tuple[str, Callable[[dict[str, Any]], bool]], results: dict[str, Any]
) -> str:
    """A target and, where it has a check, whether this run met it."""
    if isinstance(target, str):
        return target
    text, check = target
    try:
        return f"{text}: {'met' if check(results) else '**missed**'}"
    except (KeyError, TypeError):  # a figure not measured
        return f"{text}: {MISSING}"


def bench_table(results: dict[str, Any]) -> str:
    rows = [
        (what, *(cell(t, results) if t else "" for t in (ours, base)), target_cell(target, results))
        for what, ours, base, target in BENCH_ROWS
    ]
    return (
        stamp(results, "Generated from `tests/bench/results.json` (`make bench`)")
        + "\n"
        + markdown_table(BENCH_HEADER, rows)
    )


def router_table(results: dict[str, object]) -> str:
    settings = []
    for p, name in PROFILES:
        cpu, mem = results.get(f"router.{p}.cpu_percent"), results.get(f"router.{p}.memory_mb")
        settings.append(
            name
            if p == "full"
            else f"{name}: {cpu:g} % of a core, {mem:g} MB"
            if isinstance(cpu, int | float) and isinstance(mem, int | float)
            else name
        )
    rows = [(what, *(router_cell(t, p, results) for p, _ in PROFILES)) for what, t in ROUTER_ROWS]
    return (
        stamp(results, "Generated from `tests/bench/router-results.json` (`make bench-router`)")
        + "\n"
        + markdown_table(("", *settings), rows)
    )


def router_cell(template: str, profile: str, results: dict[str, object]) -> str:
    """A router row's cell; a start-up the kernel killed for memory says so."""
    text = cell(template.replace(".P.", f".{profile}."), results)
    m = re.search(r"startup_(\d+)_", template)
    if text == MISSING and m and results.get(f"router.{profile}.startup_{m.group(1)}_oom_kills"):
        return "killed: out of memory"
    return text


def all_figures(results: dict[str, object]) -> str:
    rows = [
        (f"`{k}`", f"{v:,.4g}" if isinstance(v, float) else f"{v:,}")
        for k, v in results.items()
        if isinstance(v, int | float)
    ]
    return markdown_table(("figure", "value"), rows)


def load(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def replace_section(text: str, marker: str, body: str) -> str:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"README.md needs exactly one {begin} before one {end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body}{end}{tail}"


def main(argv: list[str]) -> int:
    sections = []
    bench, router = load(HERE / "results.json"), load(HERE / "router-results.json")
    if bench is not None:
        (HERE / "results.md").write_text(
            "# Benchmark results\n\n"
            + bench_table(bench)
            + "\nEvery figure:\n\n"
            + all_figures(bench)
        )
        sections.append(("bench", bench_table(bench)))
    if router is not None:
        (HERE / "router-results.md").write_text(
            "# Router-class results\n\n"
            + router_table(router)
            + "\nEvery figure:\n\n"
            + all_figures(router)
        )
        sections.append(("bench-router", router_table(router)))
    if "--readme" in argv:
        text = README.read_text()
        for marker, body in sections:
            text = replace_section(text, marker, body)
        README.write_text(text)
    print(
        "wrote "
        + ", ".join(f"{m} table" for m, _ in sections)
        + (" and README.md" if "--readme" in argv else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
