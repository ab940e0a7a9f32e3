"""Moderation: who may act, and who is banned.

Admins are the usernames given with ``--admin`` (repeatable; names match
without regard to case, like logins).  An admin may delete a message, clear a
room, ban and unban a user.  Each action is a MODERATION record, replicated
like a message and applied by every router whatever the arrival order:

- delete / clear: the store takes the messages out and refuses them if they
  arrive later (node/store.py);
- ban / unban: the latest action on a name, by ``(hlc, origin, seq)``, wins on
  every router.  A banned user cannot post or log in anywhere.

The rights are checked by the router where the admin acts; the others apply
what the mesh (authenticated by the mesh key) brings.  Moderation records are
small and never expire, so a purge cannot bring a deleted message back.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.accounts import name_key
from node.record import Record, RecordKind

ACTIONS = ("delete", "clear", "ban", "unban")


class Moderation:
    def __init__(self, admins: Iterable[str] = ()) -> None:
        self.admins = {name_key(a) for a in admins}
        self._bans: dict[str, Record] = {}  # name key -> latest ban/unban

    def is_admin(self, name: str) -> bool:
        return name_key(name) in self.admins

    def add(self, record: Record) -> None:
        """Fold in a MODERATION record (local or from a peer), in any order."""
        if record.kind != RecordKind.MODERATION:
            raise ValueError("not a moderation record")
        user = record.body.get("user")
        if record.body.get("action") in ("ban", "unban") and isinstance(user, str):
            key = name_key(user)
            latest = self._bans.get(key)
            if latest is None or latest.order_key < record.order_key:
                self._bans[key] = record

    def is_banned(self, name: str) -> bool:
        latest = self._bans.get(name_key(name))
        return latest is not None and latest.body.get("action") == "ban"

    def banned(self) -> list[str]:
        return sorted(r.body["user"] for r in self._bans.values() if r.body["action"] == "ban")
