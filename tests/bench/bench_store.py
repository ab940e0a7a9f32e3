"""Store benchmark: appends (flushed), batch merge and start-up time, each
against writing the same lines to a plain file, in the same run; and the
bytes each loaded record holds (tracemalloc: Python's own allocations, so
a process's RSS is about a third more).

Targets (issue "Benchmarks"): at least a third of the plain-file rate;
start-up with 100,000 records under 2 s.  Run: make bench, or
.venv/bin/python tests/bench/bench_store.py
"""

from __future__ import annotations

import json
import random
import tempfile
import tracemalloc
from pathlib import Path

from common import median_of, record_results, table, timed, verdict

from node.record import Record, RecordKind
from node.store import Store, encode_line, room_log_name

APPENDS = 5_000  # flushed appends per run
BATCH = 20_000  # records merged in one catch-up batch
STARTUP_RECORDS = 100_000
REPEATS = 3
ORIGINS = [f"{n:016x}" for n in range(1, 6)]


def make_records(n: int, rooms: int = 4, seed: int = 1) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        origin = ORIGINS[i % len(ORIGINS)]
        text = "".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(10, 120)))
        # seqs count up per origin, as a router numbers its own records
        out.append(
            Record(
                origin,
                (i - 1) // len(ORIGINS) + 1,
                (1_700_000_000_000 + i) << 16,
                RecordKind.MESSAGE,
                1 + i % rooms,
                {
                    "author": f"user{i % 50}",
                    "node": "router-a",
                    "time": 1_700_000_000_000 + i,
                    "text": text,
                },
            )
        )
    return out


def plain_appends(records: list[Record], path: Path) -> None:
    """The baseline: the same JSON line per record, written and flushed."""
    with open(path, "ab") as f:
        for r in records:
            f.write(
                json.dumps(
                    {"id": r.id, "hlc": r.hlc, "kind": "message", "room": r.room, "body": r.body},
                    ensure_ascii=False,
                    separators=(",", ":"),
                ).encode()
                + b"\n"
            )
            f.flush()


def raw_appends(lines: list[bytes], path: Path) -> None:
    """The limit: ready-made lines, written and flushed."""
    with open(path, "ab") as f:
        for line in lines:
            f.write(line)
            f.flush()


def store_appends(records: list[Record], path: Path) -> None:
    s = Store(path, rooms=4)
    for r in records:
        s.append(r)
    s.close()


def run_appends() -> tuple[float, float, float]:
    records = make_records(APPENDS)
    lines = [encode_line(r) for r in records]

    def raw() -> float:
        with tempfile.TemporaryDirectory() as d:
            return timed(lambda: raw_appends(lines, Path(d) / "raw.log"))

    def plain() -> float:
        with tempfile.TemporaryDirectory() as d:
            return timed(lambda: plain_appends(records, Path(d) / "plain.log"))

    def ours() -> float:
        with tempfile.TemporaryDirectory() as d:
            return timed(lambda: store_appends(records, Path(d)))

    return (
        APPENDS / median_of(REPEATS, raw),
        APPENDS / median_of(REPEATS, plain),
        APPENDS / median_of(REPEATS, ours),
    )


def run_merge() -> tuple[float, float]:
    base = make_records(BATCH, seed=2)
    batch = make_records(BATCH, seed=3)
    batch = [Record("f" * 16, r.seq, r.hlc - 5, r.kind, r.room, r.body) for r in batch]
    random.Random(4).shuffle(batch)

    def plain() -> float:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "plain.log"

            def write() -> None:
                lines = b"".join(
                    json.dumps(
                        {
                            "id": r.id,
                            "hlc": r.hlc,
                            "kind": "message",
                            "room": r.room,
                            "body": r.body,
                        },
                        ensure_ascii=False,
                        separators=(",", ":"),
                    ).encode()
                    + b"\n"
                    for r in batch
                )
                with open(path, "ab") as f:
                    f.write(lines)
                    f.flush()

            return timed(write)

    def ours() -> float:
        with tempfile.TemporaryDirectory() as d:
            s = Store(Path(d), rooms=4)
            s.append_many(base)

            def merge() -> None:
                s.append_many(batch)
                for room in range(1, 5):
                    s.latest(room, 1)  # forces the sorted view

            t = timed(merge)
            s.close()
            return t

    return BATCH / median_of(REPEATS, plain), BATCH / median_of(REPEATS, ours)


def run_startup() -> tuple[float, float, float]:
    records = make_records(STARTUP_RECORDS, seed=5)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        by_room: dict[int, list[bytes]] = {}
        for r in records:
            by_room.setdefault(r.room, []).append(encode_line(r))
        for room, lines in by_room.items():
            (folder / room_log_name(room)).write_bytes(b"".join(lines))

        def read_plain() -> float:
            return timed(lambda: [p.read_bytes().splitlines() for p in folder.glob("*.log")])

        def load() -> float:
            return timed(lambda: Store(folder, rooms=4))

        def held_bytes() -> float:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                store = Store(folder, rooms=4)
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert len(store.index) == STARTUP_RECORDS
            return held / STARTUP_RECORDS

        return median_of(REPEATS, read_plain), median_of(REPEATS, load), held_bytes()


def main() -> None:
    raw_rate, plain_rate, store_rate = run_appends()
    plain_merge, store_merge = run_merge()
    plain_start, store_start, held = run_startup()
    print(
        f"(plain file: the same JSON lines made and written; raw: ready-made lines, "
        f"{raw_rate:,.0f}/s flushed one by one)"
    )
    table(
        f"store: records per second (median of {REPEATS} runs)",
        [
            (
                "flushed appends, one by one",
                f"{plain_rate:,.0f}",
                f"{store_rate:,.0f}",
                f"{store_rate / plain_rate:.2f}",
            ),
            (
                f"batch of {BATCH:,} merged out of order",
                f"{plain_merge:,.0f}",
                f"{store_merge:,.0f}",
                f"{store_merge / plain_merge:.2f}",
            ),
        ],
        ("", "plain file", "store", "ratio"),
    )
    table(
        f"start-up with {STARTUP_RECORDS:,} records (seconds, median)",
        [
            (
                "read the logs / load the store",
                f"{plain_start:.3f}",
                f"{store_start:.3f}",
                f"{store_start / plain_start:.1f}x",
            ),
        ],
        ("", "plain read", "store", "ratio"),
    )
    print(f"held in memory once loaded: {held:,.0f} bytes a record (tracemalloc)")
    record_results(
        {
            "store.append_per_s": store_rate,
            "store.append_plain_per_s": plain_rate,
            "store.append_raw_per_s": raw_rate,
            f"store.merge_{BATCH}_per_s": store_merge,
            f"store.merge_{BATCH}_plain_per_s": plain_merge,
            f"store.startup_{STARTUP_RECORDS}_s": store_start,
            f"store.startup_{STARTUP_RECORDS}_read_s": plain_start,
            "store.held_bytes_per_record": held,
        }
    )
    verdict(
        "appends >= 1/3 of plain", store_rate >= plain_rate / 3, f"{store_rate / plain_rate:.2f}"
    )
    verdict("start-up < 2 s", store_start < 2.0, f"{store_start:.2f} s")


if __name__ == "__main__":
    main()
