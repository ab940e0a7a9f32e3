"""Hybrid logical clock (Kulkarni et al. 2014, "Logical Physical Clocks").

How this works: a timestamp is one 64-bit integer, the top 48 bits wall-clock
milliseconds and the low 16 bits a counter.  ``tick(wall_ms)`` stamps a local
event; ``observe(remote, wall_ms)`` folds in a timestamp seen on a record from a
peer.  The result never goes backwards, even when the wall clock does (routers
often boot at 1970 until NTP answers), and is always greater than every
timestamp observed.  A peer whose clock runs far ahead cannot drag ours with it:
a remote physical part more than ``MAX_DRIFT_MS`` ahead of our wall clock is
clamped and counted.  Callers persist ``last`` (the store keeps it) so the clock
stays monotonic across restarts.

Ordering everywhere is ``(hlc, origin, seq)``: total and deterministic.
"""

from __future__ import annotations

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


class HybridClock:
    """A hybrid logical clock; pure, the caller passes the wall time."""

    def __init__(self, last: int = 0) -> None:
        self.last = last
        self.clamped = 0  # remote timestamps we refused to follow

    def tick(self, wall_ms: int) -> int:
        """A timestamp for a local event, greater than every earlier one."""
        wall_ms = max(0, min(wall_ms, PHYSICAL_MAX))
        if wall_ms > physical_ms(self.last):
            self.last = pack(wall_ms, 0)
        else:
            # The wall clock is behind or equal: keep the physical part and
            # count up (spilling into the physical part after 65,535 events).
            self.last += 1
        return self.last

    def observe(self, remote: int, wall_ms: int) -> int:
        """Fold in a timestamp seen from a peer; returns our new ``last``.

        A remote timestamp whose physical part is more than ``MAX_DRIFT_MS``
        ahead of ``wall_ms`` is clamped to that bound (and counted) so a wrong
        clock on one router cannot move the whole mesh into the future.
        """
        limit = pack(min(wall_ms + MAX_DRIFT_MS, PHYSICAL_MAX), COUNTER_MASK)
        if remote > limit:
            self.clamped += 1
            remote = limit
        self.last = max(self.last, remote)
        return self.last

    def is_too_far_ahead(self, remote: int, wall_ms: int) -> bool:
        """True if a remote timestamp runs further ahead than we accept."""
        return physical_ms(remote) > wall_ms + MAX_DRIFT_MS
