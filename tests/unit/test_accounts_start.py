"""What app/accounts.py costs a router at start, and what a login for a
name that does not exist costs: the same scrypt as a wrong password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import accounts
from app.accounts import Accounts

ROOT = Path(__file__).resolve().parents[2]


def test_importing_accounts_hashes_nothing() -> None:
    """A scrypt at import took 16 MiB and a second of an older router's CPU
    before the first page; the stand-in hash for unknown names needs none."""
    code = (
        "import hashlib\n"
        "def refuse(*a, **k): raise SystemExit('scrypt at import')\n"
        "hashlib.scrypt = refuse\n"
        "import app.accounts\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr or done.stdout


def test_an_unknown_name_is_checked_with_a_real_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shortcut for a name nobody has: one scrypt with our parameters, as
    for a wrong password, and no password opens it."""
    calls: list[tuple[int, int, int]] = []
    real = accounts._scrypt

    def counting(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
        calls.append((n, r, p))
        return real(password, salt, n, r, p, dklen)

    monkeypatch.setattr(accounts, "_scrypt", counting)
    assert Accounts().authenticate("nobody", "correct horse") is None
    assert calls == [(accounts.SCRYPT_N, accounts.SCRYPT_R, accounts.SCRYPT_P)]
    assert accounts.parse_hash(accounts._DUMMY_HASH) is not None
