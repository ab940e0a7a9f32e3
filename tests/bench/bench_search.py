"""Search benchmark: one search over a room of 5,000 messages (the size
guard's default, app/retention.py), the router's own code (app/search.py)
on a store loaded as a router loads it.

Two cases: a word in no message (the whole history is read: the worst
case) and a common word (stops at the first RESULTS_MAX results).  Figures
are CPU time per search at full speed; on a router-class CPU budget
(docs/ROUTER-BUDGET.md: the 5 % and 20 % cgroup profiles of
tests/bench/router_lab.py) a search takes that CPU time divided by the
share, which this prints beside it.  Target: a worst-case search under
0.5 s of wall time on the 20 % profile (a person waits for it once).
Run: make bench, or .venv/bin/python tests/bench/bench_search.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from common import median_of, record_results, table, verdict

from app.chat import message_frame
from app.search import search
from node.record import Record, RecordKind
from node.store import Store

MESSAGES = 5_000  # per room, the size guard's default
ROOMS = 4
REPEATS = 7
SHARES = (0.05, 0.20)  # the router lab's CPU profiles
TARGET_S = 0.5  # wall time of a worst-case search on the 20 % profile
WORDS = [
    "the",
    "a",
    "kettle",
    "garden",
    "bus",
    "water",
    "bread",
    "school",
    "market",
    "bike",
    "dog",
    "rain",
    "tomorrow",
    "meet",
]


def fill(store: Store, rng: random.Random) -> None:
    origin = "0" * 15 + "1"
    records = []
    for i in range(MESSAGES * ROOMS):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
        body = {"author": f"user{i % 50}", "node": "alpha", "time": i, "text": text}
        records.append(
            Record(origin, i + 1, (i + 1) << 16, RecordKind.MESSAGE, 1 + i % ROOMS, body)
        )
    store.append_many(records)


def cpu_per_search(store: Store, query: str) -> float:
    def once() -> float:
        start = time.process_time()
        found = search(store, 1, query)
        [message_frame(r) for r, _, _ in found]
        return time.process_time() - start

    return median_of(REPEATS, once)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d), ROOMS)
        fill(store, random.Random(1))
        assert store.count(1) == MESSAGES
        worst = cpu_per_search(store, "nowhere in any message")
        common = cpu_per_search(store, "KETTLE")
        store.close()
    rows = [
        (name, f"{s * 1000:.1f} ms", *(f"{s / share * 1000:.0f} ms" for share in SHARES))
        for name, s in (("no match (whole room)", worst), ("common word", common))
    ]
    table(
        f"search, {MESSAGES:,} messages in the room (CPU per search)",
        rows,
        ("query", "full speed", "5 % router", "20 % router"),
    )
    verdict(
        "worst case on a 20 % router", worst / SHARES[1] < TARGET_S, f"{worst / SHARES[1]:.3f} s"
    )
    record_results(
        {
            "search_worst_cpu_ms": worst * 1000,
            "search_common_cpu_ms": common * 1000,
            "search_worst_router5_ms": worst / SHARES[0] * 1000,
            "search_worst_router20_ms": worst / SHARES[1] * 1000,
        }
    )


if __name__ == "__main__":
    main()
