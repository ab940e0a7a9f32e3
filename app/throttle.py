"""Throttles for logins and registrations: pure counters, time passed in.

How this works: each key (a client address, a username) has a level that
every counted event raises by one and that drains by one every ``decay``
seconds (a leaky bucket).  At ``limit`` the key must wait until the level has
drained below it again; waiting is not counted, so a person who keeps trying
is let in as soon as the wait is over, and a guesser gets one more try per
``decay`` seconds, never a burst.  A key whose level has drained to zero is
forgotten.

Memory is bounded: at most ``max_keys`` keys.  When the table is full the key
with the lowest level goes, so a flood of fresh keys (one failed login for
each of thousands of names) cannot push out the counter of the account under
attack.

Client addresses: a phone talks to the router directly (there is no proxy in
between), so ``REMOTE_ADDR`` is the phone's address and ``X-Forwarded-For`` is
whatever the phone wants it to be: never read.  An IPv6 phone picks new
privacy addresses in its /64 at will, so IPv6 addresses count per /64.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

# Logins: a person who mistypes gets this many tries in a row per name ...
LOGIN_FAILURES_PER_NAME = 5
# ... and per phone (several people may share one phone, or mistype names).
LOGIN_FAILURES_PER_ADDRESS = 20
# After the limit, one more try per this many seconds: a guesser gets 1,440
# tries a day per name, a person waits a minute at most.
LOGIN_FAILURE_DECAY = 60.0
# Registrations per phone: a family or a class signing up on one phone, then
# one more every REGISTRATION_DECAY seconds (10 an hour): squatting every name
# in the neighbourhood, or filling accounts.log (copied to every router), is slow.
REGISTRATIONS_PER_ADDRESS = 10
REGISTRATION_DECAY = 360.0
# Keys per throttle: far more phones than one router serves; about 150 bytes
# each, so a full table is about 1.5 MB.
MAX_KEYS = 10_000
IPV6_PREFIX = 64  # one phone's SLAAC privacy addresses share their /64


def client_key(remote_addr: str | None) -> str:
    """The key a client address counts under: IPv4 as is, IPv6 per /64."""
    try:
        ip = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return remote_addr or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Level:
    value: float
    at: float

    def now(self, now: float, decay: float) -> float:
        self.at = min(self.at, now)  # a clock set back: drain from here on
        return max(0.0, self.value - (now - self.at) / decay)


class Throttle:
    """Counts events per key; ``wait`` says how long a key must hold off."""

    def __init__(self, limit: int, decay: float, max_keys: int = MAX_KEYS) -> None:
        if limit < 1 or decay <= 0 or max_keys < 1:
            raise ValueError("limit, decay and max_keys must be positive")
        self.limit, self.decay, self.max_keys = limit, decay, max_keys
        self._levels: dict[str, _Level] = {}

    def level(self, key: str, now: float) -> float:
        entry = self._levels.get(key)
        return entry.now(now, self.decay) if entry else 0.0

    def wait(self, key: str, now: float) -> int:
        """Whole seconds until ``key`` may try again; 0: now."""
        over = self.level(key, now) - (self.limit - 1)
        return math.ceil(over * self.decay) if over > 0 else 0

    def add(self, key: str, now: float) -> None:
        """Count one event for ``key``."""
        entry = self._levels.get(key)
        if entry is None:
            self._make_room(now)
            self._levels[key] = _Level(1.0, now)
            return
        entry.value, entry.at = entry.now(now, self.decay) + 1, now

    def reset(self, key: str) -> None:
        self._levels.pop(key, None)

    def _make_room(self, now: float) -> None:
        if len(self._levels) < self.max_keys:
            return
        levels = {k: e.now(now, self.decay) for k, e in self._levels.items()}
        for k in [k for k, v in levels.items() if v == 0]:
            del self._levels[k]
        if len(self._levels) >= self.max_keys:
            del self._levels[min(self._levels, key=levels.__getitem__)]

    def __len__(self) -> int:
        return len(self._levels)


class LoginThrottle:
    """Failed logins, counted per client address and per username."""

    def __init__(self) -> None:
        self.by_address = Throttle(LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURE_DECAY)
        self.by_name = Throttle(LOGIN_FAILURES_PER_NAME, LOGIN_FAILURE_DECAY)

    def wait(self, address: str, name: str, now: float) -> int:
        return max(self.by_address.wait(address, now), self.by_name.wait(_name(name), now))

    def failed(self, address: str, name: str, now: float) -> None:
        self.by_address.add(address, now)
        self.by_name.add(_name(name), now)

    def succeeded(self, name: str) -> None:
        """The name's owner is in: their mistakes are forgotten.  The
        address's are not (logging into one's own account must not clear
        the failures a phone piled up against others)."""
        self.by_name.reset(_name(name))


def _name(name: str) -> str:
    # Names are unique regardless of case (app/accounts.py name_key); the
    # form caps what arrives (web.MAX_FORM_BYTES), this caps what is kept.
    return name.casefold()[:64]
