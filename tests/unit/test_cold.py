"""Older messages held as columns (node/cold.py): a store that keeps one or
two messages a room as records answers every question as one that keeps
them all, through appends in any order, catch-up batches, deletes, clears,
retention, the size guard, compaction and restarts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import search
from app.chat import Chat
from app.moderation import ChatPolicy
from node.record import Record, RecordKind
from node.store import Store, encode_line, room_log_name

ORIGINS = ["a" * 16, "b" * 16, "c" * 16]
ROOMS = 2
ANYONE = ChatPolicy(lambda record: True)  # every moderation record acts


def msg(origin: str, seq: int, hlc: int, room: int, text: str) -> Record:
    body = {"author": "ann", "node": "r1", "time": hlc, "text": text}
    return Record(origin, seq, hlc, RecordKind.MESSAGE, room, body)


class Twins:
    """The same operations on a store with columns and one without."""

    def __init__(self, root: Path, hot: int) -> None:
        self.dirs = (root / "cold", root / "all")
        self.hots = (hot, 10**9)
        self.stores = [self._open(i) for i in range(2)]

    def _open(self, i: int) -> Store:
        return Store(self.dirs[i], rooms=ROOMS, policy=ANYONE, hot=self.hots[i])

    def do(self, name: str, *args: object) -> None:
        answers = [getattr(store, name)(*args) for store in self.stores]
        assert answers[0] == answers[1], name

    def restart(self) -> None:
        for store in self.stores:
            store.close()
        self.stores = [self._open(i) for i in range(2)]

    def check(self, rng: random.Random) -> None:
        cold, full = self.stores
        assert len(cold.index) == len(full.index)
        assert sorted(cold.index) == sorted(full.index)
        ids = sorted(full.index)
        for room in range(1, ROOMS + 1):
            assert cold.count(room) == full.count(room)
            assert cold.last_message(room) == full.last_message(room)
            assert cold.last_arrival(room) == full.last_arrival(room)
            assert list(cold.messages(room)) == list(full.messages(room))
            assert sorted(
                [*cold.recent(room), *cold.scan(room)], key=lambda r: r.order_key
            ) == list(full.messages(room))
            for limit in (1, 3, 7, 100):
                assert cold.latest(room, limit) == full.latest(room, limit)
            for rid in rng.sample(ids, min(5, len(ids))):
                for limit in (1, 4, 50):
                    assert cold.before(room, rid, limit) == full.before(room, rid, limit)
                for limit in (1, 2):  # a page asks for fewer than a room remembers
                    assert cold.since(room, rid, limit) == full.since(room, rid, limit)
            for hlc in (0, *rng.sample(range(0, 400), 3)):
                assert list(cold.after(room, hlc)) == list(full.after(room, hlc))
                assert list(cold.newest_first(room, hlc)) == list(full.after(room, hlc))[::-1]
        for origin in ORIGINS:
            assert cold.max_hlc_of(origin) == full.max_hlc_of(origin)
            for seq in range(1, seqs_max(full) + 2):
                assert cold.get(origin, seq) == full.get(origin, seq)
                assert cold.holds(origin, seq) == full.holds(origin, seq)
                assert cold.is_gone(origin, seq) == full.is_gone(origin, seq)
                assert cold.gone_through(origin, seq) == full.gone_through(origin, seq)
        assert cold.cold_misses == 0


STEPS = ("one", "one", "batch", "flood", "late", "delete", "clear", "expire", "trim", "compact")


def seqs_max(store: Store) -> int:
    """The highest seq of any origin the store has seen."""
    return max([store.vector.highest(origin) for origin in ORIGINS])


OPS = st.lists(
    st.sampled_from([*STEPS, "restart"]),
    min_size=5,
    max_size=40,
)


@pytest.fixture(autouse=True)
def few_arrivals(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room remembers 3 to 6 arrivals, not 256 to 512: so a load reads
    most lines of these short logs without their bodies, as it does the
    older lines of a long one."""
    monkeypatch.setattr("node.index.ARRIVALS_KEPT", 3)
    monkeypatch.setattr("node.store.ARRIVALS_KEPT", 3)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**16), hot=st.integers(1, 3))
def test_columns_answer_as_records_do(
    tmp_path_factory: pytest.TempPathFactory, ops: list[str], seed: int, hot: int
) -> None:
    rng = random.Random(seed)
    twins = Twins(tmp_path_factory.mktemp("twins"), hot)
    seqs = dict.fromkeys(ORIGINS, 0)
    hlc = 100
    mod_seq = 0

    def fresh(late: bool = False) -> Record:
        nonlocal hlc
        origin = rng.choice(ORIGINS)
        seqs[origin] += 1
        hlc += rng.randint(1, 5)
        stamp = hlc - rng.randint(20, 80) if late else hlc  # an old record arriving now
        return msg(
            origin,
            seqs[origin],
            max(stamp, 1),
            rng.randint(1, ROOMS),
            rng.choice(["hi", "Straße", "ok"]),
        )

    for op in ops:
        if op == "one":
            twins.do("append", fresh())
        elif op == "late":
            twins.do("append", fresh(late=True))
        elif op in ("batch", "flood"):  # a catch-up burst; a flood makes logs long
            size = rng.randint(2, 12) if op == "batch" else rng.randint(20, 40)
            batch = [fresh(late=rng.random() < 0.5) for _ in range(size)]
            rng.shuffle(batch)
            twins.do("append_many", batch)
        elif op in ("delete", "clear"):
            ids = sorted(twins.stores[1].index)
            if not ids:
                continue
            mod_seq += 1
            hlc += 1
            target = rng.choice(ids)
            body = {"by": "boss", "action": op, "target": f"{target[0]}:{target[1]}"}
            stamp = hlc - rng.randint(10, 60) if op == "clear" else hlc
            twins.do(
                "append",
                Record(
                    "d" * 16, mod_seq, stamp, RecordKind.MODERATION, rng.randint(1, ROOMS), body
                ),
            )
        elif op == "expire":
            twins.do("expire", hlc - rng.randint(30, 120))
        elif op == "trim":
            twins.do("trim", rng.randint(1, ROOMS), rng.randint(1, 8))
        elif op == "compact":
            twins.do("compact")
        else:
            twins.restart()
        twins.check(rng)
    twins.restart()
    twins.check(rng)
    for store in twins.stores:
        store.close()


def test_older_messages_are_columns_and_their_lines(tmp_path: Path) -> None:
    """What the columns are for: a room of 500 messages holds at most twice
    ``hot`` as records, and reads the others back from its log."""
    store = Store(tmp_path, rooms=1, hot=10)
    store.append_many([msg(ORIGINS[0], seq, 100 + seq, 1, f"m{seq}") for seq in range(1, 501)])
    assert len(store.held.records) <= 20
    assert store.count(1) == 500
    assert [r.body["text"] for r in store.latest(1, 30)] == [f"m{n}" for n in range(471, 501)]
    assert store.get(ORIGINS[0], 3) is not None and store.get(ORIGINS[0], 3).body["text"] == "m3"
    store.close()
    again = Store(tmp_path, rooms=1, hot=10)
    assert len(again.held.records) <= 20 and again.count(1) == 500
    assert [r.seq for r in again.before(1, (ORIGINS[0], 40), 5)] == [35, 36, 37, 38, 39]


def test_a_line_that_no_longer_holds_its_record_is_counted_not_shown(tmp_path: Path) -> None:
    """The log changed under the router (a person edited it): the record
    read back is not the one the columns name, so it is left out."""
    store = Store(tmp_path, rooms=1, hot=2)
    store.append_many([msg(ORIGINS[0], seq, 100 + seq, 1, "x" * 10) for seq in range(1, 11)])
    path = tmp_path / room_log_name(1)
    data = path.read_bytes()
    path.write_bytes(
        data.replace(
            b'"id":"' + ORIGINS[0].encode() + b':2"', b'"id":"' + ORIGINS[0].encode() + b':9"', 1
        )
    )
    assert store.get(ORIGINS[0], 2) is None
    assert store.cold_misses == 1
    assert [r.seq for r in store.latest(1, 10)] == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    store.close()


@pytest.mark.parametrize("query", ["STRASSE", "straße", "hi", "o", 'say "hi', "nothing"])
def test_search_finds_older_messages_in_the_log(tmp_path: Path, query: str) -> None:
    """app/search.py reads the columns' messages from the log in one pass:
    the same results, in the same order, as when every message is a record."""
    texts = ["Straße 5", "hi there", 'they say "hi"', "ok", "STRASSE!", "bonjour"]
    found = []
    for hot, name in ((2, "cold"), (10**9, "all")):
        store = Store(tmp_path / name, rooms=1, hot=hot)
        store.append_many(
            [msg(ORIGINS[seq % 3], seq, 100 + seq, 1, texts[seq % 6]) for seq in range(1, 120)]
        )
        found.append([(r.id, cut, at) for r, cut, at in search.search(store, 1, query, 25)])
        store.close()
    assert found[0] == found[1]
    assert query == "nothing" or found[0]


def test_a_message_in_another_rooms_log_is_skipped(tmp_path: Path) -> None:
    """Its line is where the columns would read it back from: a message
    copied by hand into another room's log is not held (and counted)."""
    store = Store(tmp_path, rooms=2, hot=2)
    store.append_many([msg(ORIGINS[0], seq, 100 + seq, 1, "x") for seq in range(1, 8)])
    store.close()
    stray = encode_line(msg(ORIGINS[1], 1, 50, 1, "stray"))
    with open(tmp_path / room_log_name(2), "ab") as f:
        f.write(stray)
    again = Store(tmp_path, rooms=2, hot=2)
    assert again.skipped_lines == 1
    assert again.get(ORIGINS[1], 1) is None and again.count(1) == 7
    assert [r.seq for r in again.latest(1, 3)] == [5, 6, 7]
    again.close()


def test_status_says_how_messages_are_held(tmp_path: Path) -> None:
    """/status tells an operator how many messages are records and how
    many columns, and whether a column's line failed to give one back."""
    store = Store(tmp_path, rooms=1, hot=3)
    store.append_many([msg(ORIGINS[0], seq, 100 + seq, 1, "x") for seq in range(1, 21)])
    held = Chat(store, "here").status()["store"]
    assert held["as_records"] + held["as_columns"] == 20
    assert held["as_columns"] >= 14 and held["column_misses"] == 0
    store.close()


def test_a_scan_for_a_needle_as_it_is_finds_the_lines_holding_it(tmp_path: Path) -> None:
    """``scan(..., folded=False)`` (the start-up's walk over pictures) finds
    by the file's bytes exactly the older messages whose line holds the
    needle as it is; the casefolded scan (search's) finds more."""
    store = Store(tmp_path, rooms=1, hot=2)
    texts = ["Straße 5", "STRASSE", "x", "an der Straße"]
    store.append_many([msg(ORIGINS[0], seq, 100 + seq, 1, texts[seq % 4]) for seq in range(1, 40)])
    older = list(store.scan(1))
    exact = [r.seq for r in older if "Straße" in encode_line(r).decode()]
    assert [r.seq for r in store.scan(1, "Straße", folded=False)] == exact
    assert len(exact) < len([r.seq for r in store.scan(1, "strasse")])
    assert [r.seq for r in store.scan(1, "nowhere", folded=False)] == []
    store.close()
