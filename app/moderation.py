"""Moderation: who may act, and who is banned.

An admin may delete a message, clear a room, ban and unban a user.  Each
action is a MODERATION record, replicated like a message: ``by`` (the admin's
name, shown on pages) and ``account`` (the id of the admin's ACCOUNT
registration record, which is what the rights belong to).

Who is an admin: the operator binds the rights to an account, on every
router, with ``--admin NAME=ACCOUNT_ID`` (repeatable).  Names are first come,
first served (app/accounts.py), so a name alone proves nothing: a router cut
off from the one where the real admin registered would otherwise hand the
rights to whoever registers the name there first.  The binding is the
operator's, so it is the same on every router whatever each has heard:

- the operator registers the admin's name on any router, reads the id from
  that router's log ("admin NAME is account ID ...") and gives
  ``--admin NAME=ID`` to every router (UCI ``list admin 'NAME=ID'``);
- ``--admin NAME`` without an id is still accepted (old configs keep
  starting) but grants nothing: the router logs the id to bind once it knows
  the name's owner;
- a bound name is reserved on every router: registering it, or renaming to
  it, from a page is refused even where the admin's account has not arrived;
- a page may act only while its user's name is owned by a bound account
  (``is_admin``); a displaced admin who renames gets a new account id, which
  the operator binds anew.

Every router gives a moderation record effect only if ``authorizes`` holds:
its ``account`` is bound to its ``by`` name here.  That one rule applies where
the record is made (``Chat.moderate``), on receipt from a peer (refused and
counted as "not_admin" in /status, never stored) and when the logs are loaded
at start (the store is made with ``ChatPolicy(authorizes)`` and holds such a
record without applying it; bans here ignore it).  So a squatter's action, from a page, from
a peer or left on disk by an older version, takes nothing out and bans nobody
on any router that runs with the binding; messages an older version took out
for it come back at the next start (their lines are still in the room log, or
catch-up fetches them from a router that never took them out).  A record
without ``account`` (written before the binding existed) has no effect
either: such bans must be made again.

Bans: the latest authorized ban or unban of a name, by ``(hlc, origin, seq)``,
wins on every router; a banned user cannot post or log in anywhere.
Deletes and clears: ``ChatPolicy`` tells the store what they remove (a
delete its target, a clear its room's messages stamped before it); the store
makes those messages gone and refuses them if they arrive later
(node/store.py, node/policy.py).  Room names: the latest authorized ``name`` record of a room
(``ROOM_NAME``) gives its name and topic on every router; ``--rooms`` still
says how many rooms there are.  Moderation records are small and never expire,
so a purge cannot bring a deleted message back.  A holder of the mesh key can
still forge a record from a bound account: the mesh key is trusted to send
records (DESIGN.md), phones are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from app.accounts import USERNAME_RE, Account, Accounts, name_key
from app.direct import direct_conversation, setting_key, setting_rank
from app.reads import marker_key, marker_rank
from node.record import Record, RecordKind, parse_id

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)

ACTIONS = ("delete", "clear", "ban", "unban")
# A room's name and topic, set by an admin: a MODERATION record in its room
# with ``name`` and ``topic``; the latest authorized one by (hlc, origin,
# seq) wins, as bans do.  node/ holds it like any moderation record.
ROOM_NAME = "name"
RECORD_ACTIONS = (*ACTIONS, ROOM_NAME)  # every action a moderation record may carry


def parse_admin(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=ACCOUNT_ID`` to ``(name, id or None)``; ValueError
    with a message for the operator if it is neither."""
    name, sep, account = text.strip().partition("=")
    if not USERNAME_RE.fullmatch(name):
        raise ValueError(f"admin {name!r} is not a username")
    if not sep:
        return name, None
    if parse_id(account) is None:
        raise ValueError(
            f"admin {name}: {account!r} is not an account id (16 hex digits, a colon, a number)"
        )
    return name, account


class ChatPolicy:
    """What chat records do to each other, for the store (node/policy.py):
    an authorized delete removes its target, an authorized clear cuts its
    room at its HLC, a read marker is the latest of its user and room
    (app/reads.py), a setting the latest of its key and a direct message
    belongs to the conversation of its two people (app/direct.py).
    ``authorizes`` is the admin binding (``Moderation.authorizes``): given
    when the store is made, so loading applies the same rule."""

    def __init__(self, authorizes: Callable[[Record], bool]) -> None:
        self.authorizes = authorizes

    def removes(self, record: Record) -> tuple[tuple[str, int], ...]:
        target = record.body.get("target")
        if record.body.get("action") != "delete" or not isinstance(target, str):
            return ()
        rid = parse_id(target)  # a line on disk may name anything
        return (rid,) if rid is not None and self.authorizes(record) else ()

    def cuts(self, record: Record) -> int | None:
        if record.body.get("action") == "clear" and self.authorizes(record):
            return record.hlc
        return None

    @staticmethod
    def supersedes_key(record: Record) -> Hashable | None:
        if record.kind == RecordKind.SETTING:
            return setting_key(record)  # (setting, identity or name key, ...): never a READ key
        return marker_key(record)

    @staticmethod
    def rank(record: Record) -> tuple[int, int, str, int]:
        if record.kind == RecordKind.SETTING:
            return setting_rank(record)
        return marker_rank(record)

    @staticmethod
    def conversation(record: Record) -> Hashable | None:
        return direct_conversation(record)  # app/direct.py


class Moderation:
    """The admin binding (from ``--admin``) and the bans, from MODERATION
    records in any order.  ``accounts`` says who owns which name now."""

    def __init__(self, admins: Iterable[str] = (), accounts: Accounts | None = None) -> None:
        parsed = [parse_admin(a) for a in admins]
        # (name key, account id): the bindings; names given without an id.
        self.bound = {(name_key(n), a) for n, a in parsed if a is not None}
        self.unbound = {name_key(n): n for n, a in parsed if a is None}
        self.accounts = accounts if accounts is not None else Accounts()
        self._bans: dict[str, Record] = {}  # name key -> latest ban/unban
        self._names: dict[int, Record] = {}  # room -> latest name record

    def may_act(self, name: str, account_id: str) -> bool:
        """True if the operator bound admin rights for ``name`` to ``account_id``."""
        return (name_key(name), account_id) in self.bound

    def is_admin(self, name: str) -> bool:
        """True if ``name`` is owned here, now, by an account bound as admin."""
        owner = self.accounts.owner(name)
        return owner is not None and self.may_act(name, owner.id)

    def reserved(self, name: str) -> bool:
        """A bound admin name: nobody else may register it, even where the
        admin's account has not arrived yet."""
        return any(key == name_key(name) for key, _ in self.bound)

    def authorizes(self, record: Record) -> bool:
        """True if a moderation record's author account is bound to its name."""
        by, account = record.body.get("by"), record.body.get("account")
        return isinstance(by, str) and isinstance(account, str) and self.may_act(by, account)

    def refusal(self, record: Record) -> str | None:
        """Why a well-formed record from a peer is refused here, or None."""
        if record.kind == RecordKind.MODERATION and not self.authorizes(record):
            return "not_admin"
        return None

    def add(self, record: Record) -> None:
        """Fold in a MODERATION record (local or from a peer), in any order;
        one that ``authorizes`` refuses bans nobody."""
        if record.kind != RecordKind.MODERATION:
            raise ValueError("not a moderation record")
        user = record.body.get("user")
        if not self.authorizes(record):
            return
        action = record.body.get("action")
        if action in ("ban", "unban") and isinstance(user, str):
            _keep_latest(self._bans, name_key(user), record)
        elif action == ROOM_NAME:
            _keep_latest(self._names, record.room, record)

    def room_name(self, room: int) -> tuple[str, str]:
        """A room's name and topic ("" for none: the page says "Room N")."""
        record = self._names.get(room)
        if record is None:
            return "", ""
        name, topic = record.body.get("name"), record.body.get("topic")
        return (name if isinstance(name, str) else ""), (topic if isinstance(topic, str) else "")

    def is_banned(self, name: str) -> bool:
        latest = self._bans.get(name_key(name))
        return latest is not None and latest.body.get("action") == "ban"

    def banned(self) -> list[str]:
        return sorted(r.body["user"] for r in self._bans.values() if r.body["action"] == "ban")

    # -- telling the operator --------------------------------------------------

    def log_bindings(self) -> None:
        """At start: say which admin names grant nothing yet, and how to bind."""
        for name in sorted(self.unbound.values()):
            self.note_account(self.accounts.owner(name), name)
        for key, account_id in sorted(self.bound):
            account = self.accounts.by_id(account_id)
            if account is not None and name_key(account.name) != key:
                log.warning(
                    "--admin %s=%s: that account is named %s; no rights until the binding names it",
                    key,
                    account_id,
                    account.name,
                )

    def note_account(self, account: Account | None, name: str | None = None) -> None:
        """Log the binding to give an unbound admin name's account (called
        when such an account is registered here, and at start)."""
        name = account.name if account is not None else name
        if name is None or name_key(name) not in self.unbound or self.reserved(name):
            return
        if account is None:
            log.warning(
                "--admin %s has no account id, so it grants nothing: register %s, "
                "then bind it on every router with --admin %s=ACCOUNT_ID",
                name,
                name,
                name,
            )
        else:
            log.warning(
                "admin %s is account %s: give every router --admin %s=%s (UCI: list "
                "admin '%s=%s') to grant it the rights",
                account.name,
                account.id,
                account.name,
                account.id,
                account.name,
                account.id,
            )


def _keep_latest(latest: dict[K, Record], key: K, record: Record) -> None:
    """``latest[key]`` becomes ``record`` if it is later by (hlc, origin, seq)."""
    current = latest.get(key)
    if current is None or current.order_key < record.order_key:
        latest[key] = record
