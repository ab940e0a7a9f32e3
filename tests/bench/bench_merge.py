"""Merge benchmark: the prototype's ``mergefile`` + ``sortBydate`` (the
baseline) against ours, merging a peer's history into a room's.

The prototype (a Python 2 terminal chat) kept each room as a text log, one
message a line, ``date|user|message``.  On ASK-FILE it received a peer's whole
log and merged it into its own: ``mergefile`` appended every line of the
peer's file that its own file did not hold (a scan of its own lines for each
one), then ``sortBydate`` sorted the file by the date at the start of each
line, parsing the dates again in every comparison of a pairwise exchange sort.
Its source is not public; this is a plain re-implementation from that
description ("the merge was O(n^2) by wall-clock time"; "2,000 lines take over
a minute"), working on real files as it did.

Ours (node/store.py): the store holds our side; the peer's records arrive as a
catch-up would hand them over, ``append_many`` keeps the new ones (the index
of ids makes a duplicate cost one lookup) and the room's sorted view is built
again (one sort of the whole room).

Both merge the same messages: each side holds ``n`` lines, half of them in
common, so the merged room has 1.5 ``n``.  Sizes 500 / 1,000 / 2,000 for both,
100,000 for ours alone (the prototype would take days).

    .venv/bin/python tests/bench/bench_merge.py
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from common import record_results, table, timed

from node.record import Record, RecordKind
from node.store import Store

SIZES = (500, 1_000, 2_000)  # lines on each side: the sizes
OURS_ALONE = 100_000  # ours only: the prototype's merge would take days
REPEATS = 3  # ours, median; the prototype runs once per size (2,000 lines: a minute)
ROOM = 1
OURS_ORIGIN, PEER_ORIGIN = "a1" * 8, "b2" * 8
STEP_MS = 7_000  # messages seven seconds apart: the prototype's dates have 1 s resolution
PROTOTYPE_DATE = "%d/%m/%Y %H:%M:%S"  # what a Python 2 chat printed with strftime


def messages(n: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Our side and the peer's: ``n`` each, the peer also holds our first n/2."""
    rng = random.Random(seed)
    words = ("hello", "anyone", "bread", "water", "tonight", "at", "the", "square", "ok")
    base_ms = 1_700_000_000_000
    ours, theirs = [], []
    for i in range(n):
        for origin, side in ((OURS_ORIGIN, ours), (PEER_ORIGIN, theirs)):
            ms = base_ms + (2 * i + (origin == PEER_ORIGIN)) * STEP_MS
            text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
            side.append(
                Record(
                    origin,
                    i + 1,
                    ms << 16,
                    RecordKind.MESSAGE,
                    ROOM,
                    {"author": f"user{i % 40}", "node": origin[:4], "time": ms, "text": text},
                )
            )
    return ours, ours[: n // 2] + theirs[n // 2 :]


def prototype_line(r: Record) -> str:
    date = time.strftime(PROTOTYPE_DATE, time.gmtime(r.body["time"] / 1000))
    return f"{date}|{r.body['author']}|{r.body['text']}\n"


def line_date(line: str) -> time.struct_time:
    return time.strptime(line.split("|", 1)[0], PROTOTYPE_DATE)


def mergefile(own: Path, peer: Path) -> None:
    """The peer's lines that ours lacks, appended; then the file sorted."""
    with open(own) as f:
        lines = f.readlines()
    with open(peer) as f:
        for line in f:
            if line not in lines:  # a scan of every line we hold
                lines.append(line)
    with open(own, "w") as f:
        f.writelines(lines)
    sortBydate(own)


def sortBydate(path: Path) -> None:  # the prototype's name
    """A pairwise exchange sort, the dates parsed in each comparison."""
    with open(path) as f:
        lines = f.readlines()
    n = len(lines)
    for i in range(n):
        for j in range(n - 1 - i):
            if line_date(lines[j]) > line_date(lines[j + 1]):
                lines[j], lines[j + 1] = lines[j + 1], lines[j]
    with open(path, "w") as f:
        f.writelines(lines)


def run_prototype(n: int, seed: int) -> tuple[float, int]:
    ours, theirs = messages(n, seed)
    with tempfile.TemporaryDirectory() as d:
        own, peer = Path(d) / "log1.txt", Path(d) / "peer-log1.txt"
        own.write_text("".join(prototype_line(r) for r in ours))
        peer.write_text("".join(prototype_line(r) for r in theirs))
        seconds = timed(lambda: mergefile(own, peer))
        return seconds, len(own.read_text().splitlines())


def run_ours(n: int, seed: int) -> tuple[float, int]:
    ours, theirs = messages(n, seed)
    times, held = [], 0
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as d:
            store = Store(Path(d), rooms=1)
            try:
                store.append_many(ours)
                store.latest(ROOM, 1)  # our side sorted before the merge, as at run time

                def merge(store: Store = store) -> None:
                    store.append_many(theirs)
                    store.latest(ROOM, 1)  # forces the sorted view

                times.append(timed(merge))
                held = store.count(ROOM)
            finally:
                store.close()
    return statistics.median(times), held


def main() -> None:
    rows, figures = [], {}
    for n in SIZES:
        proto, proto_lines = run_prototype(n, seed=n)
        ours, ours_held = run_ours(n, seed=n)
        assert proto_lines == ours_held == n + n // 2, (proto_lines, ours_held)
        rows.append(
            (
                f"{n:,}",
                f"{ours_held:,}",
                f"{proto:.3f}",
                f"{ours * 1000:.2f}",
                f"{proto / ours:,.0f}x",
            )
        )
        figures[f"merge.prototype_{n}_s"] = proto
        figures[f"merge.ours_{n}_ms"] = ours * 1000
        print(f"  {n:,} lines: prototype {proto:.2f} s, ours {ours * 1000:.2f} ms", flush=True)
    big, big_held = run_ours(OURS_ALONE, seed=OURS_ALONE)
    rows.append((f"{OURS_ALONE:,}", f"{big_held:,}", "(days)", f"{big * 1000:.0f}", ""))
    figures[f"merge.ours_{OURS_ALONE}_ms"] = big * 1000
    table(
        f"merge of a peer's room log: n lines each side, half in common "
        f"(ours: median of {REPEATS}; prototype: one run)",
        rows,
        ("n", "merged", "prototype s", "ours ms", "prototype/ours"),
    )
    record_results(figures)


if __name__ == "__main__":
    main()
