"""Throttles for logins and registrations: pure counters, time passed in
(the monotonic clock: app/routes_accounts.py).

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

Parallel requests: an attempt is counted *before* its password is hashed
(a login as a failure, a registration as made) and corrected after it
(``attempt`` ... ``succeeded`` / ``refund``): the hash takes a few tenths of
a second on a router and other requests run meanwhile, so counting after it
let 50 parallel guesses all be checked.  Attempts in flight at once are also
bounded per address and per name (``InFlight``): each holds the router's one
scrypt thread for a few tenths of a second, so one phone cannot queue its
whole allowance ahead of everyone else's logins.  Over either bound: 429 with
a wait, and no hash.

Client addresses: a phone talks to the router directly (there is no proxy in
between), so ``REMOTE_ADDR`` is the phone's address and ``X-Forwarded-For`` is
whatever the phone wants it to be: never read.  An IPv6 phone picks new
privacy addresses in its /64 at will, so IPv6 addresses count per /64.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.accounts import name_key

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
# Password checks in flight at once, per phone and per name.  A person
# submits one form at a time; two allows a double tap or two people on one
# phone.  Each check holds the one scrypt thread (app/accounts.py) for about
# 0.4 s on a router, so more from one phone is a script queueing its guesses
# ahead of other people's logins.
LOGINS_IN_FLIGHT_PER_ADDRESS = 2
LOGINS_IN_FLIGHT_PER_NAME = 2
# New accounts being hashed at once: two per phone as for logins; one per
# name, since only one registration of a name can win (the rest would hash
# for nothing).
REGISTRATIONS_IN_FLIGHT_PER_ADDRESS = 2
REGISTRATIONS_IN_FLIGHT_PER_NAME = 1
# The wait told to a request refused only because others are in flight: one
# scrypt hash takes about 0.4 s on a router, so they are done by then.
IN_FLIGHT_RETRY = 1
IPV6_PREFIX = 64  # one phone's SLAAC privacy addresses share their /64
# A name's key as counted: the form caps what arrives (MAX_FORM_BYTES in
# app/site.py), this caps what is kept; twice the longest name.
NAME_KEY_CHARS = 64


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

    def refund(self, key: str, now: float) -> None:
        """Take back one event counted ahead (it turned out not to count)."""
        entry = self._levels.get(key)
        if entry is not None:
            entry.value, entry.at = max(0.0, entry.now(now, self.decay) - 1), now

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


class InFlight:
    """How many attempts per key are running now (between ``enter`` and
    ``leave``).  Memory: one entry per key with an attempt running, so at
    most the number of requests being served."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self.limit = limit
        self._running: Counter[str] = Counter()

    def full(self, key: str) -> bool:
        return self._running[key] >= self.limit

    def enter(self, key: str) -> None:
        self._running[key] += 1

    def leave(self, key: str) -> None:
        self._running[key] -= 1
        if self._running[key] <= 0:
            del self._running[key]

    def __len__(self) -> int:
        return len(self._running)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an attempt may go ahead: ``wait`` seconds, 0 if it may;
    ``busy`` if it must wait only because others are in flight."""

    wait: int
    busy: bool = False


class _Gate:
    """Per address and per name: a count checked and raised before the hash
    (by address, and by name if ``by_name``) and a bound on attempts in flight."""

    def __init__(
        self,
        by_address: Throttle,
        by_name: Throttle | None,
        address_in_flight: int,
        name_in_flight: int,
    ) -> None:
        self.by_address, self.by_name = by_address, by_name
        self.addresses, self.names = InFlight(address_in_flight), InFlight(name_in_flight)

    def wait(self, address: str, name: str, now: float) -> int:
        by_name = self.by_name.wait(_name(name), now) if self.by_name else 0
        return max(self.by_address.wait(address, now), by_name)

    def count(self, address: str, name: str, now: float) -> None:
        self.by_address.add(address, now)
        if self.by_name is not None:
            self.by_name.add(_name(name), now)

    @contextmanager
    def attempt(self, address: str, name: str, now: float) -> Iterator[Verdict]:
        """Count one attempt before it is checked, and hold it in flight for
        the ``with`` block.  Yields a Verdict: go ahead only if ``wait`` is 0
        (then nothing was counted nor is held)."""
        wait = self.wait(address, name, now)
        if wait:
            yield Verdict(wait)
            return
        if self.addresses.full(address) or self.names.full(_name(name)):
            yield Verdict(IN_FLIGHT_RETRY, busy=True)
            return
        self.count(address, name, now)
        self.addresses.enter(address)
        self.names.enter(_name(name))
        try:
            yield Verdict(0)
        finally:
            self.addresses.leave(address)
            self.names.leave(_name(name))


class LoginThrottle(_Gate):
    """Failed logins, counted per client address and per username; an
    attempt counts as failed from before its check until ``succeeded``."""

    def __init__(self) -> None:
        super().__init__(
            Throttle(LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURE_DECAY),
            Throttle(LOGIN_FAILURES_PER_NAME, LOGIN_FAILURE_DECAY),
            LOGINS_IN_FLIGHT_PER_ADDRESS,
            LOGINS_IN_FLIGHT_PER_NAME,
        )

    def succeeded(self, address: str, name: str, now: float) -> None:
        """The password was right.  The name's owner is in: their mistakes
        are forgotten.  The address gets back the one failure counted ahead,
        not the others (logging into one's own account must not clear the
        failures a phone piled up against others)."""
        assert self.by_name is not None
        self.by_name.reset(_name(name))
        self.by_address.refund(address, now)


class RegistrationThrottle(_Gate):
    """New accounts per client address, counted before the hash; a form
    refused after all (a taken name, a bad password) is ``refund``-ed."""

    def __init__(self) -> None:
        super().__init__(
            Throttle(REGISTRATIONS_PER_ADDRESS, REGISTRATION_DECAY),
            None,
            REGISTRATIONS_IN_FLIGHT_PER_ADDRESS,
            REGISTRATIONS_IN_FLIGHT_PER_NAME,
        )

    def refund(self, address: str, now: float) -> None:
        self.by_address.refund(address, now)


def _name(name: str) -> str:
    # Names are unique regardless of case: counted by their key.
    return name_key(name)[:NAME_KEY_CHARS]
