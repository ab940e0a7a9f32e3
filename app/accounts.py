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

from gevent.threadpool import ThreadPool

from node.record import Record, RecordKind

USERNAME_MAX = 32  # fits a phone screen's author line
USERNAME_RE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{USERNAME_MAX}}}")
USERNAME_RULE = f"1 to {USERNAME_MAX} characters: letters, digits, _ . -"
# NIST SP 800-63B asks for at least 8; longer is allowed, not required.
PASSWORD_MIN = 8
MAX_RENAMES = 64  # links followed from an account to its person (a forged loop ends)
# Bounds the work one login does (scrypt reads the whole password).
PASSWORD_MAX = 256
PASSWORD_RULE = f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"

# scrypt cost: N=2^14, r=8, p=1 takes 16 MiB and 36 ms on a 2020s x86-64
# core (measured, SECURITY.md), about 0.4 s on a router CPU ten times slower:
# slow for a guesser, bearable for a login.  The parameters are written in
# each hash, but only these are accepted (``parse_hash``): raising them means
# accepting the old and the new set, never whatever a record names.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
HASH_BYTES = 32
_HASH_PREFIX = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
# "scrypt$N$r$p$salt$hash" with base64 fields: the one length our hashes have.
HASH_CHARS = len(_HASH_PREFIX) + 4 * -(-SALT_BYTES // 3) + 1 + 4 * -(-HASH_BYTES // 3)


class AccountError(ValueError):
    """A registration or login the user must correct; ``str()`` says how,
    ``status`` is the HTTP status of the form that met it."""

    status = 400  # the form breaks a rule: the person corrects it


class NameTaken(AccountError):
    """The name is someone else's (without regard to case), or an admin's
    bound name whose account has not arrived yet."""

    status = 409  # a conflict with what exists: another name will do


class WrongPassword(AccountError):
    """The current password given to change a password is not right; counted
    like a failed login (app/throttle.py), since it is one."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_kdf_pool: ThreadPool | None = None


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """scrypt in one worker thread: it releases the GIL, so the router keeps
    serving everyone else for the few tenths of a second a hash takes on its
    CPU; one thread, so logins queue rather than each taking 16 MiB at once."""
    global _kdf_pool  # noqa: PLW0603 - made on first use, in the process that uses it
    if _kdf_pool is None:
        _kdf_pool = ThreadPool(1)
    return _kdf_pool.apply(
        hashlib.scrypt,
        (password,),
        {"salt": salt, "n": n, "r": r, "p": p, "maxmem": SCRYPT_MAXMEM, "dklen": dklen},
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def parse_hash(stored: object) -> tuple[bytes, bytes] | None:
    """``(salt, digest)`` of a hash in exactly our format and parameters
    (``hash_password``); None for anything else.

    Only our own parameters, never the ones a record names: a stored hash
    with p=150 would make every login for that name hold the one hashing
    thread 150 times as long, and a large N would take its memory.  Raising
    the cost means accepting a second exact set here.
    """
    if not (
        isinstance(stored, str) and len(stored) == HASH_CHARS and stored.startswith(_HASH_PREFIX)
    ):
        return None
    salt_b64, _, digest_b64 = stored[len(_HASH_PREFIX) :].partition("$")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        digest = base64.b64decode(digest_b64, validate=True)
    except ValueError:  # not base64 (binascii.Error), or not ASCII
        return None
    # One spelling only: the exact base64 of the exact lengths.
    if (
        len(salt) != SALT_BYTES
        or len(digest) != HASH_BYTES
        or _b64(salt) != salt_b64
        or _b64(digest) != digest_b64
    ):
        return None
    return salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; a hash not in our exact
    format and parameters fails at once, unhashed (``parse_hash``)."""
    parsed = parse_hash(stored)
    if parsed is None:
        return False
    salt, expected = parsed
    try:
        secret = password.encode()
    except UnicodeEncodeError:  # a lone surrogate: no password of ours holds one
        return False
    actual = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return hmac.compare_digest(actual, expected)


# A hash to check against when the name is unknown, so that a login for a
# name that does not exist takes as long as one with a wrong password: a
# random salt and a random digest in our format, which no password gives
# (a digest hashed from a random password cost a scrypt, 16 MiB and a
# second of an older router's CPU, at every start).
_DUMMY_HASH = (
    f"{_HASH_PREFIX}{_b64(secrets.token_bytes(SALT_BYTES))}${_b64(secrets.token_bytes(HASH_BYTES))}"
)


def name_key(name: str) -> str:
    return name.casefold()


def check_new_account(name: str, password: str, confirm: str) -> None:
    """Raise AccountError with a message for a person if the form breaks a rule."""
    check_username(name)
    check_new_password(password, confirm)


def check_username(name: str) -> None:
    if not USERNAME_RE.fullmatch(name):
        raise AccountError(f"Username must be {USERNAME_RULE}.")


def check_new_password(password: str, confirm: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError(f"Password must be {PASSWORD_RULE}.")
    if password != confirm:
        raise AccountError("The passwords do not match.")


@dataclass(frozen=True, slots=True)
class Account:
    id: str  # the id of the ACCOUNT record that created it
    name: str
    password_hash: str  # the latest, after any password change


@dataclass(frozen=True, slots=True)
class Login:
    """A successful password check: ``displaced`` if another router's earlier
    registration owns the name, so the person must pick a new one."""

    account: Account
    displaced: bool


class Accounts:
    """Who owns which name, built from ACCOUNT records in any order.

    Two kinds of ACCOUNT record: a registration (``name``, ``hash``) and a
    password change (``name``, ``hash``, ``account``: the registration's id).
    For each name the registration with the lowest ``(hlc, origin, seq)``
    owns it; later ones are displaced.  An account's password is that of its
    latest change, in the same order, so every router agrees.
    """

    def __init__(self) -> None:
        self._claims: dict[str, list[Record]] = {}  # name key -> registrations, owner first
        self._changes: dict[str, Record] = {}  # registration id -> latest password change
        self._registrations: dict[str, Record] = {}  # id -> registration
        # Renames (a displaced account took a new name): each links a new
        # registration to the one it renamed, so a person keeps one identity.
        self._renamed_from: dict[str, str] = {}  # new id -> renamed id
        self._renamed_to: dict[str, Record] = {}  # renamed id -> its latest rename

    def add(self, record: Record) -> None:
        """Fold in an ACCOUNT record (local or from a peer), in any order."""
        if record.kind != RecordKind.ACCOUNT:
            raise ValueError("not an account record")
        name, target = record.body.get("name"), record.body.get("account")
        if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
            return
        if isinstance(target, str):
            latest = self._changes.get(target)
            if latest is None or latest.order_key < record.order_key:
                self._changes[target] = record
            return
        self._registrations[record.id] = record
        renamed = record.body.get("renamed_from")
        if isinstance(renamed, str) and renamed != record.id:
            self._renamed_from[record.id] = renamed
            latest = self._renamed_to.get(renamed)
            if latest is None or latest.order_key < record.order_key:
                self._renamed_to[renamed] = record
        claims = self._claims.setdefault(name_key(name), [])
        claims.append(record)
        claims.sort(key=lambda r: r.order_key)

    def _account(self, registration: Record) -> Account:
        change = self._changes.get(registration.id)
        hashed = (change or registration).body["hash"]
        return Account(registration.id, registration.body["name"], hashed)

    def owner(self, name: str) -> Account | None:
        claims = self._claims.get(name_key(name))
        return self._account(claims[0]) if claims else None

    def by_id(self, account_id: str) -> Account | None:
        registration = self._registrations.get(account_id)
        return self._account(registration) if registration else None

    def identity(self, account_id: str) -> str:
        """The person behind an account: the id of the first registration
        of its line of renames (a displaced account that took a new name is
        still the same person, with the same direct messages)."""
        seen = {account_id}
        while (earlier := self._renamed_from.get(account_id)) is not None and earlier not in seen:
            if len(seen) >= MAX_RENAMES:
                break
            seen.add(earlier)
            account_id = earlier
        return account_id

    def person(self, name: str) -> str | None:
        """The identity of the account that owns ``name``; None if nobody does."""
        owner = self.owner(name)
        return self.identity(owner.id) if owner is not None else None

    def current_name(self, identity: str) -> str | None:
        """The name a person goes by now: the last of their renames (None if
        their registration has not arrived)."""
        record, seen = self._registrations.get(identity), {identity}
        while record is not None and (later := self._renamed_to.get(record.id)) is not None:
            if later.id in seen or len(seen) >= MAX_RENAMES:
                break
            seen.add(later.id)
            record = later
        return str(record.body["name"]) if record is not None else None

    def is_owner(self, account_id: str, name: str) -> bool:
        claims = self._claims.get(name_key(name))
        return claims is not None and bool(claims) and claims[0].id == account_id

    def exists(self, name: str) -> bool:
        return name_key(name) in self._claims

    def authenticate(self, name: str, password: str) -> Login | None:
        """Check a password against the name's owner, then its displaced
        claims (an account registered on a router cut off from the one that
        registered the name first).  None if nothing matches."""
        claims = self._claims.get(name_key(name))
        if not claims:
            verify_password(password, _DUMMY_HASH)
            return None
        for n, claim in enumerate(claims):
            account = self._account(claim)
            if verify_password(password, account.password_hash):
                return Login(account, displaced=n > 0)
        return None

    def __len__(self) -> int:
        return len(self._claims)
