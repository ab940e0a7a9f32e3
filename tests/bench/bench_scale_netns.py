"""The mesh at neighbourhood scale with real routers: every router a
``python -m app`` in its own network namespace (tests/netns/netlab.py), on
three topologies, each with 10 % loss: a dense cell of 16 (one bridge: all
hear all), a line of 12 (one bridge per link: each router hears only its
neighbours, over one ``--mesh-iface`` per link) and a 5 x 5 grid (one bridge
per link, up to four interfaces a router).  Issue #12's figures, printed
beside the "before" ones kept in tests/bench/scale_before.json.

Loss is an nft rule on every router's input only (``numgen random``), so each
receiver loses each datagram on its own, as on a radio with no
acknowledgement, and a datagram crosses a link with 10 % loss, not 19 %.

Per topology, in this order (the routers use their default beacon interval):

- idle: datagrams every router's protocol sent (``/status``
  ``mesh.datagrams.sent``, summed) per second on the whole mesh, and from the
  busiest router.  A datagram sent on several interfaces counts once, as one
  radio transmission would;
- transmissions per message: one chat message posted over a WebSocket at one
  end, followed until every router holds it, plus ``SETTLE``: datagrams sent
  meanwhile, beacons excluded (each router's BEACON datagrams are counted by
  an nft rule on its output by the header's kind byte, divided by its
  interfaces: a beacon goes out on each) and included;
- end-to-end latency: ``LATENCY_MESSAGES`` messages posted at one end at
  ``LATENCY_RATE``, each timed until the WebSocket at the far end shows it;
- heal: the middle is cut (the line's and the grid's middle links set down;
  the cell split in two halves by an nft rule dropping the other half's
  addresses) for ``CUT_SECONDS``, one message is posted at each end, the cut
  closes: the time until every router holds every message (``/status``
  polled every ``POLL`` s, so to within that).

Needs root.  Every namespace, bridge and router goes when the bench ends,
fails or is interrupted (``Lab.close``); a run that died is swept at start.

    .venv/bin/python tests/bench/bench_scale_netns.py [--only cell16,line12,grid25]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import percentile, record_results, table, verdict

from node.wire import HEADER, DatagramKind
from tests.helpers import WsClient
from tests.netns.netlab import Lab, NetnsRouter, load_nft, ns_run, sweep

LOSS_PERCENT = 10
# Routers started at once: each start is a second of CPU; two cores, and the
# start timeout (tests/helpers.py) must hold for each.
START_PARALLEL = 3
# After every router is up: everyone meets some neighbours and fetches the
# users' account records (Trickle answers a new router within a second).
WARMUP = 12.0
ACCOUNTS_TIMEOUT = 60.0
IDLE_SECONDS = 20.0  # Trickle still doubling towards 15 s: an upper bound on idle
MESSAGE_RUNS = 2  # transmissions per message: the mean of this many
MESSAGE_WINDOW = 30.0  # a message held nowhere else by then counts as undelivered
SETTLE = 1.0  # after the last router holds it: the last relays leave
LATENCY_MESSAGES = 10
LATENCY_RATE = 1.0  # per second: a user may post 2/s (app/chat.py)
LATENCY_WAIT = 30.0  # after the last one: stragglers left to repair
CUT_SECONDS = 20.0  # a partition of minutes is the same; the peer timeout is 45 s now
HEAL_WINDOW = 60.0
POLL = 0.5  # /status of every router: 25 of them take a good part of this
PREFIX = "scale.netns."
LOG_TAIL = 1_500  # characters of each router's log shown when the bench fails
# nft's raw payload offset, in bits from the UDP header, of our header's kind byte.
KIND_BITS = (8 + 1) * 8
assert HEADER.format.startswith("!BB")  # version, then kind

# Targets of issue #12.
TARGET_CELL_IDLE = 2.0  # datagrams/s on a cell of 16
TARGET_CELL_MESSAGE_LOSS = 4.0  # transmissions, one message, cell of 16 at 10 % loss
TARGET_LINE_P99 = 1.0  # s, line of 12
TARGET_LINE_HEAL = 5.0  # s, line of 12


@dataclass
class Shape:
    """Who is on which bridge, the two ends, and where the middle is cut."""

    name: str
    bridges: dict[str, list[int]]  # host -> bridges
    first: str
    last: str
    cut_links: list[tuple[str, int]] = field(default_factory=list)  # (host, bridge) set down
    halves: tuple[list[str], list[str]] | None = None  # a cell: split by address


def cell(n: int) -> Shape:
    hosts = {f"r{i}": [0] for i in range(n)}
    names = list(hosts)
    return Shape(f"cell{n}", hosts, names[0], names[-1], halves=(names[: n // 2], names[n // 2 :]))


def line(n: int) -> Shape:
    """Bridge k joins r(k-1) and rk."""
    hosts = {f"r{i}": [b for b in (i, i + 1) if 1 <= b <= n - 1] for i in range(n)}
    mid = n // 2
    cut = [(f"r{mid - 1}", mid), (f"r{mid}", mid)]
    return Shape(f"line{n}", hosts, "r0", f"r{n - 1}", cut_links=cut)


def grid(side: int) -> Shape:
    """Routers row by row; a bridge per link, numbered from 1."""
    hosts: dict[str, list[int]] = {f"r{i}": [] for i in range(side * side)}
    cut = []
    bridge = 0
    for i in range(side * side):
        row, col = divmod(i, side)
        for j in ([i + 1] if col < side - 1 else []) + ([i + side] if row < side - 1 else []):
            bridge += 1
            hosts[f"r{i}"].append(bridge)
            hosts[f"r{j}"].append(bridge)
            if j == i + 1 and col == side // 2 - 1:  # between the middle columns
                cut += [(f"r{i}", bridge), (f"r{j}", bridge)]
    return Shape(f"grid{side * side}", hosts, "r0", f"r{side * side - 1}", cut_links=cut)


SHAPES = (lambda: cell(16), lambda: line(12), lambda: grid(5))


# -- the lab's extras: input loss, beacon counters, a cell's partition -----------------


def add_input_loss(lab: Lab, host: str, percent: int) -> None:
    ns = lab.hosts[host].ns
    load_nft(
        ns,
        "table inet ccs_loss {\n  chain in { type filter hook input priority -300; "
        f'policy accept;\n    iifname "m*" numgen random mod 100 < {percent} drop\n  }}\n}}\n',
    )


def count_beacons(lab: Lab, host: str) -> None:
    """Count BEACON datagrams the host puts on its interfaces (each one once per interface)."""
    load_nft(
        lab.hosts[host].ns,
        "table inet ccs_count {\n  chain out { type filter hook output priority -400; "
        f'policy accept;\n    oifname "m*" meta l4proto udp @th,{KIND_BITS},8 '
        f"{int(DatagramKind.BEACON)} counter\n  }}\n}}\n",
    )


def beacons_out(lab: Lab, host: str) -> int:
    out = ns_run(lab.hosts[host].ns, "nft", "-j", "list", "table", "inet", "ccs_count").stdout
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    return 0


def split_cell(lab: Lab, shape: Shape, cut: bool) -> None:
    """Each half drops what the other half sends (a cell has no middle link)."""
    assert shape.halves is not None
    for mine, theirs in (shape.halves, shape.halves[::-1]):
        addresses = ", ".join(lab.hosts[h].address(0) for h in theirs)
        for h in mine:
            ns = lab.hosts[h].ns
            ns_run(ns, "nft", "delete", "table", "inet", "ccs_cut", check=False)
            if cut:
                load_nft(
                    ns,
                    "table inet ccs_cut {\n  chain in { type filter hook input priority -350; "
                    f"policy accept;\n    ip saddr {{ {addresses} }} drop\n  }}\n}}\n",
                )


def set_cut(lab: Lab, shape: Shape, cut: bool) -> None:
    if shape.halves is not None:
        split_cell(lab, shape, cut)
    for host, bridge in shape.cut_links:
        lab.set_link(host, bridge, not cut)


# -- routers -----------------------------------------------------------------------------


@dataclass
class Mesh:
    lab: Lab
    shape: Shape
    routers: dict[str, NetnsRouter]
    sender: WsClient  # a user's page on the first router
    far: WsClient  # a user's page on the last router
    far_sender: WsClient  # that same user posting from the last router
    posted: int = 0  # messages posted so far (each must reach every router)

    def statuses(self) -> dict[str, dict]:
        return {name: r.status() for name, r in self.routers.items()}

    def sent(self) -> dict[str, int]:
        return {n: s["mesh"]["datagrams"]["sent"] for n, s in self.statuses().items()}

    def sent_and_beacons(self) -> dict[str, tuple[int, float]]:
        """Per router, read back to back (the mesh beacons on meanwhile): its
        datagrams sent, and its beacons (packets on its wires / its interfaces)."""
        out = {}
        for n, r in self.routers.items():
            sent = r.status()["mesh"]["datagrams"]["sent"]
            out[n] = (sent, beacons_out(self.lab, n) / len(self.shape.bridges[n]))
        return out

    def holding_all(self) -> int:
        """Routers that hold every message posted so far."""
        counts = [sum(s["rooms"].values()) for s in self.statuses().values()]
        return sum(1 for c in counts if c >= self.posted)

    def post(self, ws: WsClient, text: str) -> None:
        self.posted += 1
        ws.send({"type": "send", "text": text, "client_id": text})

    def wait_all_hold(self, limit: float) -> float | None:
        """Seconds until every router holds every message (None: not in ``limit``)."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.holding_all() == len(self.routers):
                return time.monotonic() - start
            time.sleep(POLL)
        return None


def start_routers(
    lab: Lab, tmp: Path, names: list[str], pool: ThreadPoolExecutor
) -> dict[str, NetnsRouter]:
    """Start the routers a few at a time, from ``pool``'s threads.  A router
    dies with the thread that started it (``setpriv --pdeathsig``): the pool
    must outlive the lab."""
    key = tmp / "mesh.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    extra = ["--mesh-key-file", str(key), "--log-level", "warning"]
    started = pool.map(lambda n: lab.start_router(n, tmp / n / "data", extra), names)
    return dict(zip(names, started, strict=True))


def build(lab: Lab, shape: Shape, tmp: Path, pool: ThreadPoolExecutor) -> Mesh:
    for host, bridges in shape.bridges.items():
        lab.add_host(host, bridges)
        add_input_loss(lab, host, LOSS_PERCENT)
        count_beacons(lab, host)
    routers = start_routers(lab, tmp, list(shape.bridges), pool)
    first, last = routers[shape.first], routers[shape.last]
    alice, bob = first.user("alice"), last.user("bob")
    sender, far, far_sender = first.ws(alice), last.ws(bob), last.ws(bob)
    for w in (sender, far, far_sender):
        w.recv_type("history")
    mesh = Mesh(lab, shape, routers, sender, far, far_sender)
    deadline = time.monotonic() + ACCOUNTS_TIMEOUT
    while time.monotonic() < deadline:
        if all(s["accounts"] >= 2 for s in mesh.statuses().values()):
            break
        time.sleep(POLL)
    time.sleep(WARMUP)
    return mesh


# -- measuring -------------------------------------------------------------------------


def measure_idle(mesh: Mesh) -> dict[str, float]:
    before = mesh.sent()
    t0 = time.monotonic()
    time.sleep(IDLE_SECONDS)
    after = mesh.sent()
    seconds = time.monotonic() - t0
    sent = [after[n] - before[n] for n in before]
    return {
        "idle_datagrams_per_s": sum(sent) / seconds,
        "idle_per_router_per_min": sum(sent) / seconds / len(sent) * 60,
        "idle_busiest_router_per_s": max(sent) / seconds,
    }


def one_message(mesh: Mesh, text: str) -> tuple[float, float, bool]:
    """(transmissions without beacons, with beacons, reached every router)."""
    before = mesh.sent_and_beacons()
    mesh.post(mesh.sender, text)
    held = mesh.wait_all_hold(MESSAGE_WINDOW) is not None
    time.sleep(SETTLE)
    after = mesh.sent_and_beacons()
    everything = sum(after[n][0] - before[n][0] for n in before)
    beacons = sum(after[n][1] - before[n][1] for n in before)
    return everything - beacons, everything, held


def measure_messages(mesh: Mesh) -> dict[str, float]:
    runs = [one_message(mesh, f"count {k}") for k in range(MESSAGE_RUNS)]
    return {
        "tx_per_message": sum(r[0] for r in runs) / len(runs),
        "tx_per_message_with_beacons": sum(r[1] for r in runs) / len(runs),
        "delivered_everywhere": sum(r[2] for r in runs) / len(runs),
    }


def listen(w: WsClient, arrivals: dict[str, float], stop: threading.Event) -> None:
    w.conn.settimeout(0.5)
    while not stop.is_set():
        try:
            frame = json.loads(w.conn.recv())
        except Exception:  # a timeout: look at the stop flag again
            continue
        if frame.get("type") == "message":
            arrivals.setdefault(frame["text"], time.monotonic())


def measure_latency(mesh: Mesh) -> dict[str, float]:
    arrivals: dict[str, float] = {}
    stop = threading.Event()
    thread = threading.Thread(target=listen, args=(mesh.far, arrivals, stop), daemon=True)
    thread.start()
    sent: dict[str, float] = {}
    try:
        start = time.monotonic()
        for i in range(LATENCY_MESSAGES):
            time.sleep(max(0.0, start + i / LATENCY_RATE - time.monotonic()))
            text = f"latency {i}"
            sent[text] = time.monotonic()
            mesh.post(mesh.sender, text)
        deadline = time.monotonic() + LATENCY_WAIT
        while time.monotonic() < deadline and not all(t in arrivals for t in sent):
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    late = [arrivals[t] - s if t in arrivals else LATENCY_WAIT for t, s in sent.items()]
    return {
        "latency_p50_s": percentile(late, 50),
        "latency_p99_s": percentile(late, 99),
        "latency_undelivered": sum(1 for t in sent if t not in arrivals),
    }


def measure_heal(mesh: Mesh) -> dict[str, float]:
    mesh.wait_all_hold(MESSAGE_WINDOW)  # the latency run's stragglers first
    set_cut(mesh.lab, mesh.shape, True)
    try:
        time.sleep(CUT_SECONDS)
        mesh.post(mesh.sender, "cut near")
        mesh.post(mesh.far_sender, "cut far")
        time.sleep(2 * POLL)
    finally:
        set_cut(mesh.lab, mesh.shape, False)
    seconds = mesh.wait_all_hold(HEAL_WINDOW)
    return {
        "heal_s": HEAL_WINDOW if seconds is None else seconds,
        "healed": int(seconds is not None),
    }


def measure(shape: Shape, tmp: Path) -> dict[str, float]:
    with ThreadPoolExecutor(START_PARALLEL) as pool, Lab() as lab:
        t0 = time.monotonic()
        try:
            mesh = build(lab, shape, tmp, pool)
            figures = {"start_s": time.monotonic() - t0}
            figures |= measure_idle(mesh)
            figures |= measure_messages(mesh)
            figures |= measure_latency(mesh)
            figures |= measure_heal(mesh)
        except Exception:
            for r in lab.routers:  # the logs go with the temporary folder: show them now
                print(f"--- {r.name}:\n{r.log()[-LOG_TAIL:]}", file=sys.stderr)
            raise
        figures["wall_s"] = time.monotonic() - t0
        return figures


# The figures of the protocol before issue #12 (that code is gone): each row
# of this run is shown beside them, "before -> after".
BEFORE = Path(__file__).with_name("scale_before.json")


def before_figures() -> dict[str, float]:
    try:
        return dict(json.loads(BEFORE.read_text()))
    except (OSError, ValueError):
        return {}


def report(figures: dict[str, float]) -> None:
    before, rows = before_figures(), []
    for name in dict.fromkeys(k.rsplit(".", 1)[0] for k in figures):
        f = {k.rsplit(".", 1)[1]: v for k, v in figures.items() if k.startswith(name + ".")}
        b = {k.rsplit(".", 1)[1]: v for k, v in before.items() if k.startswith(name + ".")}

        def was(figure: str, fmt: str, b: dict[str, float] = b) -> str:
            return f"{b[figure]:{fmt}} -> " if figure in b else ""

        rows.append(
            (
                name,
                was("idle_datagrams_per_s", ".1f") + f"{f['idle_datagrams_per_s']:.1f}",
                f"{f['idle_busiest_router_per_s']:.2f}",
                was("tx_per_message", ".1f")
                + f"{f['tx_per_message']:.1f} / {f['tx_per_message_with_beacons']:.0f}",
                was("latency_p99_s", ".2f")
                + f"{f['latency_p50_s']:.2f} / {f['latency_p99_s']:.2f}",
                was("heal_s", ".1f")
                + f"{f['heal_s']:.1f}"
                + ("" if f["healed"] else " (not healed)"),
                f"{f['wall_s']:.0f}",
            )
        )
    table(
        f"mesh at scale, namespaces, {LOSS_PERCENT} % loss, before -> after "
        "(message: without / with beacons; end to end: before's p99 -> p50 / p99)",
        rows,
        ("", "idle/s", "busiest/s", "tx per message", "end to end s", "heal s", "wall s"),
    )


def verdicts(figures: dict[str, float]) -> None:
    cell_idle = figures.get(f"{PREFIX}cell16.idle_datagrams_per_s")
    cell_tx = figures.get(f"{PREFIX}cell16.tx_per_message")
    p99 = figures.get(f"{PREFIX}line12.latency_p99_s")
    heal = figures.get(f"{PREFIX}line12.heal_s")
    if cell_idle is not None and cell_tx is not None:
        verdict(
            "cell of 16 idle <= 2 datagrams/s", cell_idle <= TARGET_CELL_IDLE, f"{cell_idle:.1f}"
        )
        verdict(
            "one message, cell of 16, 10 % loss <= 4",
            cell_tx <= TARGET_CELL_MESSAGE_LOSS,
            f"{cell_tx:.1f}",
        )
    if p99 is not None and heal is not None:
        verdict("line of 12 p99 <= 1 s", p99 <= TARGET_LINE_P99, f"{p99:.2f} s")
        verdict("line of 12 heals <= 5 s", heal <= TARGET_LINE_HEAL, f"{heal:.1f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated shapes: cell16,line12,grid25")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_scale_netns needs root (network namespaces)")
        return 1
    only = set(filter(None, args.only.split(",")))
    sweep()
    started = time.monotonic()
    figures: dict[str, float] = {}
    for make in SHAPES:
        shape = make()
        if only and shape.name not in only:
            continue
        with tempfile.TemporaryDirectory() as d:
            found = measure(shape, Path(d))
        figures |= {f"{PREFIX}{shape.name}.{k}": v for k, v in found.items()}
        print(f"  {shape.name}: {found['wall_s']:.0f} s", flush=True)
        record_results({f"{PREFIX}{shape.name}.{k}": v for k, v in found.items()})
    report(figures)
    print(f"  bench took {time.monotonic() - started:.0f} s")
    verdicts(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
