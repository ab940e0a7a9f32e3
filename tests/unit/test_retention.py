from __future__ import annotations

from datetime import datetime, time

import pytest

from app.retention import horizon_ms, parse_clock_time, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("20", 20),
        ("1.5h", 5400),
        (" 24H ", 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5", "-1h", "10 s", "1w", "abc", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|at least"):
        parse_duration(text)


def test_clock_time() -> None:
    assert parse_clock_time("04:30") == time(4, 30)
    for bad in ["4", "25:00", "04:60", "noon"]:
        with pytest.raises(ValueError, match="time like"):
            parse_clock_time(bad)


def test_horizon_from_retention() -> None:
    assert horizon_ms(1_000_000, 20) == 980_000


def test_purge_at_wipes_everything_before_the_last_daily_moment() -> None:
    now = datetime(2026, 11, 25, 10, 0).astimezone()
    now_ms = int(now.timestamp() * 1000)
    at_four = int(now.replace(hour=4, minute=0).timestamp() * 1000)
    assert horizon_ms(now_ms, 24 * 3600, time(4, 0)) == at_four
    # Before today's moment: yesterday's counts; retention wins when later.
    yesterday_eleven = int(now.replace(hour=11).timestamp() * 1000) - 86_400_000
    assert horizon_ms(now_ms, 24 * 3600, time(11, 0)) == yesterday_eleven
    assert horizon_ms(now_ms, 60, time(4, 0)) == now_ms - 60_000
