"""Hybrid logical clock (Kulkarni et al. 2014, "Logical Physical Clocks").

How this works: a timestamp is one 64-bit integer, the top 48 bits wall-clock
milliseconds and the low 16 bits a counter.  ``tick(wall_ms)`` stamps a local
event; ``observe(remote, wall_ms)`` folds in a timestamp seen on a record from a
peer.  The result never goes backwards, even when the wall clock does (routers
often boot at 1970 until NTP answers), and is always greater than every
timestamp observed.  A peer whose clock runs far ahead cannot drag ours with it:
a remote physical part more than ``MAX_DRIFT_MS`` ahead of our wall clock is
clamped and counted.  Callers persist ``last`` (the store keeps it) so the clock
stays monotonic across restarts.  The wall clock is a collaborator
(``wall_ms``, passed in; tests pass a fake): a caller may pass ``wall_ms`` to
each call instead.  It is the only use of the wall clock in node/: every timer,
rate and duration there runs on the monotonic ``now`` the transport passes.

Ordering everywhere is ``(hlc, origin, seq)``: total and deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

COUNTER_BITS = 16
# 16 bits: 65,536 events within one millisecond before the counter spills into
# the physical part, far more than a router can stamp.
COUNTER_MASK = (1 << COUNTER_BITS) - 1
PHYSICAL_MAX = (1 << 48) - 1
# A peer's clock may run this far ahead of ours before we stop following it:
# one minute covers NTP-less routers that drift for days (seconds) while keeping
# a router set to next year from pushing every timestamp into the future.
MAX_DRIFT_MS = 60_000


def pack(physical_ms: int, counter: int) -> int:
    """Join a physical millisecond value and a counter into one timestamp."""
    return (physical_ms << COUNTER_BITS) | counter


def physical_ms(hlc: int) -> int:
    """The wall-clock milliseconds part of a timestamp."""
    return hlc >> COUNTER_BITS


def counter(hlc: int) -> int:
    return hlc & COUNTER_MASK


def wall_clock_ms() -> int:
    """The system's wall clock in milliseconds: ``HybridClock``'s default source."""
    return int(time.time() * 1000)


class HybridClock:
    """A hybrid logical clock; the wall time comes from ``wall_ms``, or is
    passed to each call."""

    def __init__(self, last: int = 0, wall_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.last = last
        self.wall_ms = wall_ms
        self.clamped = 0  # remote timestamps we refused to follow

    def tick(self, wall_ms: int | None = None) -> int:
        """A timestamp for a local event, greater than every earlier one."""
        wall_ms = self.wall_ms() if wall_ms is None else wall_ms
        wall_ms = max(0, min(wall_ms, PHYSICAL_MAX))
        if wall_ms > physical_ms(self.last):
            self.last = pack(wall_ms, 0)
        else:
            # The wall clock is behind or equal: keep the physical part and
            # count up (spilling into the physical part after 65,535 events).
            self.last += 1
        return self.last

    def observe(self, remote: int, wall_ms: int | None = None) -> int:
        """Fold in a timestamp seen from a peer; returns our new ``last``.

        A remote timestamp whose physical part is more than ``MAX_DRIFT_MS``
        ahead of the wall clock is clamped to that bound (and counted) so a
        wrong clock on one router cannot move the whole mesh into the future.
        """
        wall_ms = self.wall_ms() if wall_ms is None else wall_ms
        limit = pack(min(wall_ms + MAX_DRIFT_MS, PHYSICAL_MAX), COUNTER_MASK)
        if remote > limit:
            self.clamped += 1
            remote = limit
        self.last = max(self.last, remote)
        return self.last
