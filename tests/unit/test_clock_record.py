from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.clock import MAX_DRIFT_MS, HybridClock, counter, pack, physical_ms
from node.record import SeqSet, VersionVector, parse_id


def test_tick_follows_wall_clock_and_never_goes_back() -> None:
    c = HybridClock()
    a = c.tick(1000)
    assert (physical_ms(a), counter(a)) == (1000, 0)
    b = c.tick(1000)
    assert b == pack(1000, 1)
    d = c.tick(400)  # the wall clock jumped back (NTP, no RTC)
    assert d == pack(1000, 2) and d > b
    assert c.tick(2000) == pack(2000, 0)


def test_restart_from_persisted_last_is_monotonic() -> None:
    c = HybridClock()
    last = c.tick(5000)
    c2 = HybridClock(last)
    assert c2.tick(10) > last  # rebooted at 1970


def test_observe_moves_past_remote_but_clamps_far_future() -> None:
    c = HybridClock()
    c.observe(pack(3000, 7), wall_ms=2000)
    assert c.tick(2000) == pack(3000, 8)
    future = pack(2000 + MAX_DRIFT_MS + 10_000, 0)
    c.observe(future, wall_ms=2000)
    assert c.clamped == 1
    assert physical_ms(c.last) == 2000 + MAX_DRIFT_MS


def test_seqset_contiguous_extra_and_missing() -> None:
    s = SeqSet()
    assert s.add(1) and s.add(2) and not s.add(2)
    assert s.add(5) and s.add(7)
    assert s.contiguous == 2 and s.extra.ranges == [(5, 5), (7, 7)]
    assert list(s.missing(9)) == [(3, 4), (6, 6), (8, 9)]
    s.add(3)
    s.add(4)
    assert s.contiguous == 5 and s.extra.ranges == [(7, 7)]
    s.add_range(1, 10)
    assert s.contiguous == 10 and not s.extra and 9 in s


def test_version_vector() -> None:
    v = VersionVector()
    assert v.missing("a" * 16, 3) == [(1, 3)]
    v.add("a" * 16, 1)
    v.add("a" * 16, 3)
    assert ("a" * 16, 3) in v and ("a" * 16, 2) not in v
    assert v.as_dict() == {"a" * 16: 1}
    assert v.highest("a" * 16) == 3


def test_parse_id() -> None:
    assert parse_id("0123456789abcdef:12") == ("0123456789abcdef", 12)
    for bad in [
        "",
        ":",
        "0123456789abcdef",
        "0123456789abcdef:0",
        "0123456789ABCDEF:1",
        "0123456789abcdef:-1",
        "0123456789abcdef:1x",
        "g123456789abcdef:1",
        "0123456789abcdef:99999999999",
    ]:
        assert parse_id(bad) is None, bad


def test_seqset_add_range_at_the_bottom_is_o1_and_absorbs_extras() -> None:
    s = SeqSet()
    assert s.add_range(1, 4_000_000_000) == 4_000_000_000  # no per-seq work
    assert s.contiguous == 4_000_000_000 and not s.extra
    s = SeqSet()
    s.add(1)
    for seq in (5, 9, 10, 12):
        s.add(seq)
    assert s.add_range(2, 8) == 6  # 2..8 less the 5 we had
    assert s.contiguous == 10 and s.extra.ranges == [(12, 12)]
    assert s.add_range(3, 10) == 0 and s.add_range(7, 5) == 0
    assert s.add_range(11, 11) == 1 and s.contiguous == 12 and not s.extra


def test_seqset_above_a_hole_keeps_ranges_not_seqs() -> None:
    s = SeqSet()
    s.add(1)
    assert s.add_range(3, 5) == 3
    assert s.contiguous == 1 and s.extra.ranges == [(3, 5)]
    assert s.add_range(4, 6) == 1 and s.extra.ranges == [(3, 6)]
    assert list(s.missing(8)) == [(2, 2), (7, 8)]
    assert s.add_range(10, 4_000_000_000) == 4_000_000_000 - 9, "no per-seq work"
    assert s.highest() == 4_000_000_000
    for seq in range(100_000, 100_100):  # already inside a range
        assert not s.add(seq)
    s.add(2)
    assert s.contiguous == 6
    assert s.add_range(7, 9) == 3
    assert s.contiguous == 4_000_000_000 and not s.extra


def test_seqset_many_holes_missing_is_linear_in_ranges() -> None:
    s = SeqSet()
    for seq in range(2, 200_001, 2):
        s.add(seq)
    assert len(s.extra) == 100_000
    holes = list(s.missing(200_001))
    assert len(holes) == 100_001 and holes[:2] == [(1, 1), (3, 3)]
    s.add_range(1, 150_000)
    assert s.contiguous == 150_000 and s.extra.ranges[0] == (150_002, 150_002)


def test_version_vector_add_range() -> None:
    v = VersionVector()
    o = "a" * 16
    assert v.add_range(o, 2, 100) == 99
    assert v.contiguous(o) == 0 and (o, 2) in v and (o, 1) not in v
    assert v.missing(o, 150) == [(1, 1), (101, 150)]
    v.add(o, 1)
    assert v.contiguous(o) == 100
    assert v.add_range(o, 101, 150) == 50 and v.as_dict() == {o: 150}


def test_range_set_merges_and_finds_runs() -> None:
    from node.record import RangeSet

    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    r.add(21, 25)  # touches 10..20
    assert r.ranges == [(10, 25), (30, 40)]
    r.add(26, 29)  # bridges both
    assert r.ranges == [(10, 40)]
    r.add(1, 1)
    r.add(50, 60)
    r.add(5, 55)
    assert r.ranges == [(1, 1), (5, 60)]
    assert r.run_end(7) == 60 and r.run_end(1) == 1 and r.run_end(2) == 0 and 61 not in r
    with pytest.raises(ValueError, match="empty range"):
        r.add(3, 2)


def test_parse_id_refuses_non_ascii_digits_and_huge_numbers() -> None:
    assert parse_id("0123456789abcdef:\u00b2") is None
    assert parse_id("0123456789abcdef:" + "9" * 5000) is None
    assert parse_id("0123456789abcdef:\u0661") is None  # Arabic-Indic one


def test_the_wall_clock_is_a_collaborator() -> None:
    wall = [1000]
    c = HybridClock(wall_ms=lambda: wall[0])
    assert c.tick() == pack(1000, 0)
    wall[0] = 400  # stepped back (NTP, no RTC)
    assert c.tick() == pack(1000, 1)
    c.observe(pack(wall[0] + MAX_DRIFT_MS + 1, 0))  # ahead of the wall clock it reads
    assert c.clamped == 1 and physical_ms(c.last) == wall[0] + MAX_DRIFT_MS


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 6)),
        max_size=60,
    )
)
def test_seq_set_holds_what_a_plain_set_holds(ops: list[tuple[bool, int, int]]) -> None:
    """Single adds (in order above a hole, as a catch-up window brings
    them, or anywhere) and ranges, against a set of ints."""
    s, model = SeqSet(), set()
    for single, seq, span in ops:
        if single:
            for n in range(seq, seq + span + 1):  # a run: the in-order case
                assert s.add(n) is (n not in model)
                model.add(n)
        else:
            new = s.add_range(seq, seq + span)
            assert new == len(set(range(seq, seq + span + 1)) - model)
            model |= set(range(seq, seq + span + 1))
        assert [n for n in range(1, 80) if n in s] == sorted(n for n in model if n < 80)
        contiguous = 0
        while contiguous + 1 in model:
            contiguous += 1
        assert s.contiguous == contiguous
        lacking = [n for n in range(1, 80) if n not in model]
        assert [n for a, b in s.missing(79) for n in range(a, b + 1)] == lacking
