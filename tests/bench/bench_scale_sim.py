"""The mesh at neighbourhood scale, simulated (tests/bench/scale_sim.py): the
real protocol objects on a simulated clock, on random unit-disk graphs of 25,
50, 100 and 200 routers, a line of 12, a 5 x 5 grid and a dense cell of
16, with 0 % and 10 % loss per link.  Issue #12 measures the protocol before and after with it.

Per topology and loss, one run, in this order:

- warm-up (``WARMUP``): routers start together and meet their neighbours;
- idle (no chat) for ``idle`` simulated seconds: datagrams of every kind
  (beacons and their relays, catch-up) on the whole mesh per second, per
  router per minute, from the busiest router, and what a router hears (its
  own and its neighbours' transmissions: the air it shares) per second;
- ``messages`` chat messages, one at a time, each posted at a router at the
  edge of the mesh (largest eccentricity) and followed until every router
  holds it or ``MESSAGE_WINDOW`` passed: transmissions by any router in that
  time, beacons excluded and included; the share of (router, message) pairs
  delivered; the time until the farthest router (in hops) holds it;
- a partition: the mesh is cut in two at the median x (a line in its middle)
  for ``CUT_SECONDS`` (longer than the peer timeout), ``POSTS_PER_SIDE``
  messages are posted on each side, then the cut heals: the time until every
  router holds every record.

And a router joining an idle cell of 16 that holds ``JOIN_HISTORY`` messages:
the seconds until it holds them all (``scale.sim.join16[_loss10].join_s``).

Figures go to results.json as ``scale.sim.<topology>[_loss10].<figure>``
and a plot to docs/scale.svg: this run ("after", by default) beside the
figures of the protocol before issue #12, kept in tests/bench/scale_before.json
(with the namespace lab's; that code is gone, so they are not re-measured).

    .venv/bin/python tests/bench/bench_scale_sim.py [--only udg25,cell16,grid25]
    .venv/bin/python tests/bench/bench_scale_sim.py --plot-only   (from results.json)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from html import escape
from pathlib import Path

from common import RESULTS, ROOT, percentile, record_results, table, verdict
from scale_sim import ScaleSim, Topology, cell, grid, line, unit_disk

SEED = 1
LOSSES = (0.0, 0.1)
# Two beacon intervals and a bit: every router has heard its neighbours' first
# beacons and the start-up burst is over.
WARMUP = 12.0
# A message not held everywhere after this long counts as undelivered there.
# Before issue #12 a record past the hop limit, or past a lost relay in a
# line, waited for beacons, an interval per hop: half a minute now and then.
MESSAGE_WINDOW = 60.0
# Quiet after each message, so the next one's count starts clean.
MESSAGE_GAP = 2.0
# Long enough for every Trickle to grow back towards its longest interval
# (shorter than today's 45 s peer timeout: each side still knows the other).
CUT_SECONDS = 20.0
POSTS_PER_SIDE = 2
CUT_SETTLE = 3.0  # each side's posts spread on their side before the heal
HEAL_WINDOW = 60.0  # a heal not done by then is reported as not done
# A router joining an idle cell of 16: the history it must fetch (a few
# batches: the figure is the wait before catch-up starts, not its transfer),
# and the quiet before it joins (four beacon intervals: Trickle at its longest).
JOIN_CELL = 16
JOIN_HISTORY = 200
JOIN_IDLE = 60.0
# (topology, idle seconds, messages).  The protocol before issue #12 relayed
# every beacon, N^2 per interval, and 200 routers cost a wall second per
# simulated second, hence the short windows for large meshes (the figures are
# rates and per-message means).  The cell, the line and the grid get 30
# messages so that p99 means something, the random graphs 20 / 20 / 10 / 5
# (with 5, p99 was the first message's alone; the whole bench takes ~15 s).
TOPOLOGIES = (
    (lambda: cell(16), 60.0, 30),
    (lambda: line(12), 60.0, 30),
    (lambda: grid(5), 60.0, 30),
    (lambda: unit_disk(25, SEED), 60.0, 20),
    (lambda: unit_disk(50, SEED), 60.0, 20),
    (lambda: unit_disk(100, SEED), 20.0, 10),
    (lambda: unit_disk(200, SEED), 15.0, 5),
)
DOCS = ROOT / "docs"
PREFIX = "scale.sim."

# Targets of issue #12.
TARGET_CELL_MESSAGE = 3.0  # transmissions for one message in a cell of 16
TARGET_CELL_MESSAGE_LOSS = 4.0  # ... at 10 % loss
TARGET_UDG200_IDLE_PER_S = 0.1  # datagrams per router per second, 200 routers


def key(topology: Topology, loss: float) -> str:
    return f"{PREFIX}{topology.name}" + (f"_loss{round(loss * 100)}" if loss else "")


# -- measuring -------------------------------------------------------------------------


def measure_idle(sim: ScaleSim, seconds: float) -> dict[str, float]:
    before = sim.sent_each()
    sim.run_for(seconds)
    sent = [b - a for a, b in zip(before, sim.sent_each(), strict=True)]
    heard = [sent[i] + sum(sent[j] for j in sim.hears[i]) for i in range(len(sent))]
    n = len(sent)
    return {
        "idle_datagrams_per_s": sum(sent) / seconds,
        "idle_per_router_per_min": sum(sent) / seconds / n * 60,
        "idle_busiest_router_per_s": max(sent) / seconds,
        "idle_heard_per_router_per_s": sum(heard) / n / seconds,
    }


def edge_routers(topology: Topology) -> list[int]:
    """Routers whose farthest router is as far as any (a line's two ends)."""
    eccentricity = [max(topology.hops_from(i)) for i in range(topology.n)]
    return [i for i, e in enumerate(eccentricity) if e == max(eccentricity)]


def one_message(sim: ScaleSim, src: int, text: str) -> dict[str, float]:
    n = sim.topology.n
    hops = sim.topology.hops_from(src)
    farthest = [i for i, h in enumerate(hops) if h == max(hops)]
    quiet, everything, start = sim.sent_total(beacons=False), sim.sent_total(), sim.now
    rid = sim.post(src, text)
    sim.run_for(MESSAGE_WINDOW, until=lambda: sim.holders(rid) == n)
    held = sim.held_at[rid]
    reached = [held[i] - start for i in farthest if i in held]
    latency = max(reached) if len(reached) == len(farthest) else math.inf
    delivered = sim.holders(rid) / n
    # Counted after the gap: relays held back (suppression) and the beacons a
    # repair set off still belong to this message.
    sim.run_for(MESSAGE_GAP)
    return {
        "tx": sim.sent_total(beacons=False) - quiet,
        "tx_all": sim.sent_total() - everything,
        "delivered": delivered,
        "latency": latency,
    }


def measure_messages(sim: ScaleSim, count: int, rng: random.Random) -> dict[str, float]:
    edges = edge_routers(sim.topology)
    runs = [one_message(sim, rng.choice(edges), f"message {k}") for k in range(count)]
    latencies = [r["latency"] for r in runs]
    return {
        "tx_per_message": sum(r["tx"] for r in runs) / count,
        "tx_per_message_with_beacons": sum(r["tx_all"] for r in runs) / count,
        "delivery_ratio": sum(r["delivered"] for r in runs) / count,
        # Not reached in the window: the window, a lower bound (delivery_ratio says so).
        "latency_p50_s": min(percentile(latencies, 50), MESSAGE_WINDOW),
        "latency_p99_s": min(percentile(latencies, 99), MESSAGE_WINDOW),
    }


def measure_heal(sim: ScaleSim, rng: random.Random) -> dict[str, float]:
    left, right = sim.topology.halves()
    sim.cut(left)
    sim.run_for(CUT_SECONDS)
    for side in (sorted(left), sorted(right)):
        for k in range(POSTS_PER_SIDE):
            sim.post(rng.choice(side), f"cut {k}")
    sim.run_for(CUT_SETTLE)
    healed_at = sim.now
    sim.heal()
    sim.run_for(HEAL_WINDOW, until=lambda: sim.missing == 0)
    return {"heal_s": sim.now - healed_at, "healed": int(sim.missing == 0)}


def measure_join(n: int, loss: float) -> dict[str, float]:
    """A router joins an idle cell of ``n`` that holds ``JOIN_HISTORY``
    messages: seconds until it holds them all (it boots, beacons at once;
    the others hear a new router, an inconsistency, and answer within
    Trickle's shortest interval).  Router ``n`` stands apart until then."""
    sim = ScaleSim(cell(n + 1), loss=loss, seed=SEED)
    sim.cut({n})
    sim.run_until(WARMUP)
    for k in range(JOIN_HISTORY):
        sim.post(k % n, f"history {k}")
        sim.run_for(0.1)
    sim.run_for(JOIN_IDLE)  # every Trickle at its longest: an idle mesh
    sim.reboot(n)
    sim.heal()
    start = sim.now
    sim.run_for(HEAL_WINDOW, until=lambda: sim.missing == 0)
    return {"join_s": sim.now - start, "joined": int(sim.missing == 0)}


def measure(topology: Topology, loss: float, idle: float, messages: int) -> dict[str, float]:
    rng = random.Random(f"{topology.name}-{loss}")
    sim = ScaleSim(topology, loss=loss, seed=SEED)
    sim.run_until(WARMUP)
    figures = measure_idle(sim, idle)
    figures |= measure_messages(sim, messages, rng)
    figures |= measure_heal(sim, rng)
    return figures


# -- the plot: hand-written SVG ----------------------------------------------------------

WIDTH, HEIGHT = 960, 400
PANEL_W, PANEL_H = 250, 250
MARGIN_L, MARGIN_T = 60, 90
GAP = 70
X_MAX = 210  # routers
COLOURS = {"before": "#c0392b", "after": "#1f6fb2"}
UDG_SIZES = (25, 50, 100, 200)
PANELS = (  # figure, title, target line (value, where it applies)
    ("idle_datagrams_per_s", "idle: datagrams/s on the whole mesh", (2.0, "cell16 target")),
    ("idle_per_router_per_min", "idle: datagrams per router per minute", (6.0, "200 target")),
    ("tx_per_message", "transmissions per chat message", (3.0, "cell16 target")),
)


def series_from(results: dict[str, float]) -> dict[str, float]:
    """``scale.sim.*`` figures of a results object, without the prefix."""
    return {k.removeprefix(PREFIX): v for k, v in results.items() if k.startswith(PREFIX)}


def el(name: str, text: str = "", **attrs: object) -> str:
    """One SVG element; ``stroke_width`` is written ``stroke-width``."""
    names = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f"<{name} {names}>{escape(text)}</{name}>" if text else f"<{name} {names}/>"


def log_y(value: float, lo: float, hi: float) -> float:
    frac = (math.log10(max(value, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return round(MARGIN_T + PANEL_H * (1 - frac), 1)


def left(k: int) -> int:
    return MARGIN_L + k * (PANEL_W + GAP)


def panel_x(k: int, routers: float) -> float:
    return round(left(k) + PANEL_W * routers / X_MAX, 1)


def axes(k: int, title: str, lo: float, hi: float) -> list[str]:
    x0, bottom = left(k), MARGIN_T + PANEL_H
    out = [
        el("rect", x=x0, y=MARGIN_T, width=PANEL_W, height=PANEL_H, fill="none", stroke="#444"),
        el("text", title, x=x0, y=MARGIN_T - 12, font_size=13),
        el(
            "text", "routers", x=x0 + PANEL_W / 2, y=bottom + 32, font_size=11, text_anchor="middle"
        ),
    ]
    for p in range(round(math.log10(lo)), round(math.log10(hi)) + 1):
        y = log_y(10.0**p, lo, hi)
        out.append(el("line", x1=x0, x2=x0 + PANEL_W, y1=y, y2=y, stroke="#ddd"))
        out.append(el("text", f"{10.0**p:g}", x=x0 - 6, y=y + 4, font_size=11, text_anchor="end"))
    for n in UDG_SIZES:
        x = panel_x(k, n)
        out.append(el("text", str(n), x=x, y=bottom + 16, font_size=11, text_anchor="middle"))
    return out


def plot_series(
    k: int, figure: str, label: str, data: dict[str, float], lo: float, hi: float
) -> list[str]:
    """Unit-disk graphs as a line, the cell of 16 as a square; 10 % loss dashed / hollow."""
    colour, out = COLOURS.get(label, "#555"), []
    for loss, dash in (("", "none"), ("_loss10", "5,4")):
        names = [(n, f"udg{n}{loss}.{figure}") for n in UDG_SIZES]
        points = [(panel_x(k, n), log_y(data[name], lo, hi)) for n, name in names if name in data]
        if points:
            path = " ".join(f"{x},{y}" for x, y in points)
            out.append(
                el(
                    "polyline",
                    points=path,
                    fill="none",
                    stroke=colour,
                    stroke_width=2,
                    stroke_dasharray=dash,
                )
            )
            out += [el("circle", cx=x, cy=y, r=3, fill=colour) for x, y in points]
        if (name := f"cell16{loss}.{figure}") in data:
            x, y = panel_x(k, 16), log_y(data[name], lo, hi)
            fill = "white" if loss else colour
            out.append(el("rect", x=x - 4, y=y - 4, width=8, height=8, fill=fill, stroke=colour))
            if not loss:
                out.append(el("text", "cell 16", x=x + 7, y=y + 14, font_size=10, fill=colour))
    return out


def target_line(k: int, value: float, note: str, lo: float, hi: float) -> list[str]:
    y, x0 = log_y(value, lo, hi), left(k)
    return [
        el("line", x1=x0, x2=x0 + PANEL_W, y1=y, y2=y, stroke="#2a2", stroke_dasharray="2,3"),
        el(
            "text",
            f"{note} {value:g}",
            x=x0 + PANEL_W - 4,
            y=y - 4,
            font_size=10,
            fill="#2a2",
            text_anchor="end",
        ),
    ]


def bounds(values: list[float]) -> tuple[float, float]:
    """Powers of ten around ``values`` (a log axis)."""
    positive = [v for v in values if v > 0] or [1.0]
    low, high = math.log10(min(positive)), math.log10(max(positive))
    return 10.0 ** math.floor(low), 10.0 ** max(math.ceil(high), math.floor(low) + 1)


def legend(labels: list[str]) -> list[str]:
    out = [
        el(
            "text",
            "Community Chat mesh, simulated (tests/bench/bench_scale_sim.py)",
            x=MARGIN_L,
            y=22,
            font_size=14,
        ),
        el(
            "text",
            "line: unit-disk graphs of 25-200 routers; square: a cell of 16; "
            "solid: 0 % loss, dashed / hollow: 10 % loss",
            x=MARGIN_L,
            y=40,
            font_size=12,
        ),
    ]
    for i, label in enumerate(labels):
        x, colour = MARGIN_L + 110 * i, COLOURS.get(label, "#555")
        out.append(el("line", x1=x, x2=x + 24, y1=56, y2=56, stroke=colour, stroke_width=2))
        out.append(el("text", label, x=x + 30, y=60, font_size=12))
    return out


def svg(all_series: dict[str, dict[str, float]], current: dict[str, float]) -> str:
    body = [el("rect", width=WIDTH, height=HEIGHT, fill="white"), *legend(list(all_series))]
    for k, (figure, title, (target, note)) in enumerate(PANELS):
        values = [v for d in all_series.values() for n, v in d.items() if n.endswith(f".{figure}")]
        lo, hi = bounds([*values, target])
        body += axes(k, title, lo, hi) + target_line(k, target, note, lo, hi)
        for label, data in all_series.items():
            body += plot_series(k, figure, label, data, lo, hi)
    head = (
        el(
            "svg",
            xmlns="http://www.w3.org/2000/svg",
            width=WIDTH,
            height=HEIGHT,
            viewBox=f"0 0 {WIDTH} {HEIGHT}",
            font_family="sans-serif",
        )[:-2]
        + ">"
    )
    # The figures themselves, so a later run can draw this one as its "before".
    metadata = f"<metadata>{json.dumps(current, sort_keys=True)}</metadata>"
    return "\n".join([head, metadata, *body, "</svg>"]) + "\n"


# The protocol's figures before issue #12, measured by this bench on the
# code of that time (which is gone): the plot's "before" series.
BEFORE = Path(__file__).with_name("scale_before.json")


def before_series() -> dict[str, float]:
    try:
        return series_from(json.loads(BEFORE.read_text()))
    except (OSError, ValueError):
        return {}


def write_plot(label: str, figures: dict[str, float]) -> Path:
    """docs/scale.svg: this run's figures beside the stored "before" ones."""
    series = {}
    if label != "before" and (before := before_series()):
        series["before"] = before
    series[label] = figures
    path = DOCS / "scale.svg"
    path.write_text(svg(series, figures))
    return path


# -- the run ---------------------------------------------------------------------------


def report(figures: dict[str, float]) -> None:
    rows = []
    for name in dict.fromkeys(k.rsplit(".", 1)[0] for k in figures):
        f = {k.rsplit(".", 1)[1]: v for k, v in figures.items() if k.startswith(name + ".")}
        rows.append(
            (
                name,
                f"{f['idle_datagrams_per_s']:.1f}",
                f"{f['idle_per_router_per_min']:.0f}",
                f"{f['idle_heard_per_router_per_s']:.0f}",
                f"{f['tx_per_message']:.1f} / {f['tx_per_message_with_beacons']:.0f}",
                f"{f['delivery_ratio']:.3f}",
                f"{f['latency_p50_s']:.2f} / {f['latency_p99_s']:.2f}",
                f"{f['heal_s']:.1f}" + ("" if f["healed"] else " (not healed)"),
                f"{f['wall_s']:.0f}",
            )
        )
    table(
        "mesh at scale, simulated (idle: datagrams; message: transmissions without / with beacons)",
        rows,
        (
            "",
            "idle/s",
            "/router/min",
            "heard/router/s",
            "tx per message",
            "delivered",
            "farthest p50/p99 s",
            "heal s",
            "wall s",
        ),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="this run's series name in the plot")
    parser.add_argument("--only", default="", help="comma-separated topology names (a quick look)")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plot from the results file"
    )
    args = parser.parse_args(argv)
    if args.plot_only:
        print(write_plot(args.label, series_from(json.loads(RESULTS.read_text()))))
        return 0
    only = set(filter(None, args.only.split(",")))
    started = time.monotonic()
    figures: dict[str, float] = {}
    for make, idle, messages in TOPOLOGIES:
        topology = make()
        if only and topology.name not in only:
            continue
        for loss in LOSSES:
            t0 = time.monotonic()
            found = measure(topology, loss, idle, messages)
            found["wall_s"] = time.monotonic() - t0
            figures |= {f"{key(topology, loss)}.{k}": v for k, v in found.items()}
            print(f"  {key(topology, loss)}: {found['wall_s']:.0f} s", flush=True)
    if not only or f"join{JOIN_CELL}" in only:
        for loss in LOSSES:
            found = measure_join(JOIN_CELL, loss)
            name = f"{PREFIX}join{JOIN_CELL}" + (f"_loss{round(loss * 100)}" if loss else "")
            figures |= {f"{name}.{k}": v for k, v in found.items()}
            print(f"  {name}: {found['join_s']:.2f} s to hold {JOIN_HISTORY} messages", flush=True)
    figures[f"{PREFIX}wall_s"] = time.monotonic() - started
    report({k: v for k, v in figures.items() if k != f"{PREFIX}wall_s" and ".join" not in k})
    record_results(figures)
    path = write_plot(args.label, series_from(figures))
    print(f"  plot: {path.relative_to(ROOT)}; bench took {figures[f'{PREFIX}wall_s']:.0f} s")
    verdicts(figures)
    return 0


def verdicts(figures: dict[str, float]) -> None:
    cell_tx = figures.get(f"{PREFIX}cell16.tx_per_message")
    cell_loss = figures.get(f"{PREFIX}cell16_loss10.tx_per_message")
    idle200 = figures.get(f"{PREFIX}udg200.idle_per_router_per_min")
    if cell_tx is not None and cell_loss is not None:
        verdict(
            "one message in a cell of 16 <= 3 (<= 4 at 10 % loss)",
            cell_tx <= TARGET_CELL_MESSAGE and cell_loss <= TARGET_CELL_MESSAGE_LOSS,
            f"{cell_tx:.1f} / {cell_loss:.1f}",
        )
    if idle200 is not None:
        verdict(
            "200 routers idle <= 0.1 datagram/s per router",
            idle200 / 60 <= TARGET_UDG200_IDLE_PER_S,
            f"{idle200 / 60:.2f}/s",
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
