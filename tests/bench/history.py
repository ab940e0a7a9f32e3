"""A synthetic chat history written straight into a data folder, for the
benches that start a router on it (footprint, router lab)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from node.record import Record, RecordKind
from node.store import Store

ROOMS = 4
ORIGINS = [f"{k:016x}" for k in range(1, 6)]  # five routers that are not running
# What the catch-up and FEC benches' messages are made of: short everyday words.
WORDS = (
    "hello",
    "anyone",
    "bread",
    "water",
    "tonight",
    "meeting",
    "at",
    "the",
    "square",
    "ok",
    "thanks",
    "see",
    "you",
    "bus",
    "late",
    "power",
    "back",
)


def write_history(data_dir: Path, n: int, seed: int = 1, rooms: int = ROOMS) -> None:
    """``n`` recent messages (inside any retention window) from five routers
    (seqs 1, 2, 3 ... per origin, no holes) and fifty users, spread over the
    rooms."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000) - n
    records = []
    for i in range(1, n + 1):
        text = "".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(10, 120)))
        records.append(
            Record(
                ORIGINS[i % 5],
                (i - 1) // 5 + 1,
                (now_ms + i) << 16,
                RecordKind.MESSAGE,
                1 + i % rooms,
                {
                    "author": f"user{i % 50}",
                    "node": f"router-{i % 5}",
                    "time": now_ms + i,
                    "text": text,
                },
            )
        )
    store = Store(data_dir, rooms=rooms)
    try:
        store.append_many(records)
    finally:
        store.close()
