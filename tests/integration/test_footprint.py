"""What a real router process keeps in memory (issue "Router budget").

Resident memory (VmRSS) of a ``python -m app`` process on loopback, read
from /proc: after logins (scrypt's 16 MiB buffer must be given back) and
with pages open.  Bounds are set well away from both the fixed and the
broken figure, so a noisy machine cannot flip them.
"""

from __future__ import annotations

import platform

import pytest

from app.accounts import SCRYPT_N, SCRYPT_R
from tests.helpers import Router, rss_bytes

# scrypt's working buffer: 128 * r * N bytes (16 MiB at our parameters).
SCRYPT_BUFFER = 128 * SCRYPT_R * SCRYPT_N
LOGINS = 3  # the first hash is mapped and unmapped even by a broken malloc

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the kept buffer is glibc's behaviour"
)


def test_scrypt_buffer_is_given_back_after_logins(router: Router) -> None:
    s = router.http()
    for path in ("/login", "/register"):  # templates compiled before the first figure
        assert s.get(path).status == 200
    before = rss_bytes(router)
    router.user("alice")  # register and log in: two hashes
    for _ in range(LOGINS - 2):
        assert router.http().login("alice").status == 303
    grown = rss_bytes(router) - before
    assert grown < SCRYPT_BUFFER // 2, f"{grown / 2**20:.1f} MiB kept after {LOGINS} logins"
