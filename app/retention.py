"""How long history is kept: the horizon before which messages are gone.

Two rules, the later horizon wins (and a third, the size guard
``--max-history``, keeps at most N messages per room, oldest out first, with
a horizon per room that follows the same rules):

- ``--retention`` (default 24 h, the prototype's day): a message older than
  that is dropped.
- ``--purge-at HH:MM`` (optional): every day at that local time everything
  older is wiped, as the prototype did, but on the clock rather than 24 h
  after each process's start.

Both are computed from the hybrid clock (the newest of our wall clock and
every timestamp we stored or heard, never far ahead of us), so a router that
boots at 1970 does not resurrect history and one router's restart time does
not matter.  Every router with the same settings computes the same horizon;
records before it are dropped, refused on receipt and in catch-up.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

DEFAULT_RETENTION = 24 * 3600.0  # seconds: the prototype's day
MIN_RETENTION = 10.0  # seconds; shorter would purge messages in flight
# Messages kept per room at most (the size guard, ``--max-history``): a busy
# neighbourhood room writes a few thousand a day; 5,000 per room take about
# 6 MB of a router's RAM (1.2 KB each in memory, bench_footprint.py).
DEFAULT_MAX_HISTORY = 5_000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d`` (or plain seconds) to seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h or 7d")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < MIN_RETENTION:
        raise ValueError(f"retention must be at least {MIN_RETENTION:.0f} s")
    return seconds


def parse_clock_time(text: str) -> time:
    try:
        return datetime.strptime(text.strip(), "%H:%M").time()
    except ValueError:
        raise ValueError(f"{text!r} is not a time like 04:30") from None


def horizon_ms(now_ms: int, retention_s: float, purge_at: time | None = None) -> int:
    """Wall-clock milliseconds before which messages are gone.

    ``now_ms`` is the physical part of the hybrid clock; local time for
    ``purge_at`` is this machine's time zone.
    """
    horizon = now_ms - int(retention_s * 1000)
    if purge_at is not None:
        now = datetime.fromtimestamp(now_ms / 1000).astimezone()
        last = now.replace(hour=purge_at.hour, minute=purge_at.minute, second=0, microsecond=0)
        if last > now:
            last -= timedelta(days=1)
        horizon = max(horizon, int(last.timestamp() * 1000))
    return horizon
