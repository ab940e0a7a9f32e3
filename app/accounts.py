"""Accounts: the rules for names and passwords, scrypt hashing, and the
registry of who owns which name.

Registering makes an ACCOUNT record (name + salted scrypt hash) that is stored
in ``accounts.log`` and, with the mesh, replicated like a message.  Names are
unique without regard to case ("Alice" and "alice" are one name, so nobody can
pose as somebody else by changing a letter's case).  If two routers that could
not hear each other accepted the same name, the record with the earlier
``(hlc, origin, seq)`` owns it everywhere; the later one is kept, marked as
displaced, so its owner can be told and pick another name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from node.record import Record, RecordKind

USERNAME_MAX = 32  # fits a phone screen's author line
USERNAME_RE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{USERNAME_MAX}}}")
USERNAME_RULE = f"1 to {USERNAME_MAX} characters: letters, digits, _ . -"
# NIST SP 800-63B asks for at least 8; longer is allowed, not required.
PASSWORD_MIN = 8
# Bounds the work one login does (scrypt reads the whole password).
PASSWORD_MAX = 256
PASSWORD_RULE = f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"

# scrypt cost: N=2^14, r=8, p=1 takes 16 MiB and about 40 ms here, a few
# tenths of a second on a router's CPU: slow for a guesser, bearable for a
# login.  The parameters are stored with each hash, so they can be raised.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
HASH_BYTES = 32


class AccountError(ValueError):
    """A registration or login the user must correct; ``str()`` says how."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True),
                                n=int(n), r=int(r), p=int(p), maxmem=SCRYPT_MAXMEM,
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash to check against when the name is unknown, so that a login for a
# name that does not exist takes as long as one with a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def name_key(name: str) -> str:
    return name.casefold()


def check_new_account(name: str, password: str, confirm: str) -> None:
    """Raise AccountError with a message for a person if the form breaks a rule."""
    if not USERNAME_RE.fullmatch(name):
        raise AccountError(f"Username must be {USERNAME_RULE}.")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError(f"Password must be {PASSWORD_RULE}.")
    if password != confirm:
        raise AccountError("The passwords do not match.")


@dataclass(frozen=True, slots=True)
class Account:
    id: str  # the id of the ACCOUNT record that created it
    name: str
    password_hash: str


class Accounts:
    """Who owns which name, built from ACCOUNT records in any order."""

    def __init__(self) -> None:
        self._claims: dict[str, list[Record]] = {}  # name key -> claims, owner first

    def add(self, record: Record) -> None:
        """Fold in an ACCOUNT record (local or from a peer)."""
        if record.kind != RecordKind.ACCOUNT:
            raise ValueError("not an account record")
        name = record.body.get("name")
        if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
            return
        claims = self._claims.setdefault(name_key(name), [])
        claims.append(record)
        claims.sort(key=lambda r: r.order_key)

    def owner(self, name: str) -> Account | None:
        claims = self._claims.get(name_key(name))
        if not claims:
            return None
        first = claims[0]
        return Account(first.id, first.body["name"], first.body["hash"])

    def exists(self, name: str) -> bool:
        return name_key(name) in self._claims

    def authenticate(self, name: str, password: str) -> Account | None:
        """The account if name and password match; None otherwise."""
        account = self.owner(name)
        if account is None:
            verify_password(password, _DUMMY_HASH)
            return None
        return account if verify_password(password, account.password_hash) else None

    def __len__(self) -> int:
        return len(self._claims)
