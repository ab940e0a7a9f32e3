"""Direct messages, blocks and per-person settings: what the records mean.

How this works: a direct message is a DIRECT record (room 0) with body
``{"from", "to", "from_id", "to_id", "node", "time", "text"}``: the names
as written, and the two people's identities (app/accounts.py
``Accounts.identity``: the id of an account's first registration).  Its
conversation is the pair of identities, sorted (``conversation_key``), so
both people's routers file it in the same place, and a name that two
routers cut off from each other both gave out does not mix two people's
messages: what was written to the displaced one stays hers, under the name
she takes next (node/store.py keeps each conversation as
it keeps a room, node/index.py).  It replicates over the radio mesh like a
room message, expires with the room messages (retention), and is shown only
to its two people: every read path takes the conversation from the
logged-in user and the peer, never from the page (``Chat.direct_*``).
The MQTT bridge never publishes a DIRECT or SETTING record (app/bridge.py).

A direct message may carry a picture or file as a room message does
(``blob`` and, for a picture, ``thumb``: app/attachments.py), its text then
a caption that may be empty.  The blob is served only to the two people
(app/attachments.py ``may_see``) unless a room message names the same bytes.

Private means hidden from other *users*.  Records travel in the clear in
the mesh's datagrams and sit in the logs, and pictures and files in the
blob store and between routers: whoever runs a router or holds the mesh
key can read and see them.  There is no end-to-end encryption: browsers
give no WebCrypto on plain HTTP (not a secure context).

A SETTING record is one person's setting, the latest per key on every
router (node/policy.py ``supersedes_key``, ``rank``); it never expires.  It
belongs to a person, not to a name: it carries the person's identity
(``user_id``) and, for a setting about someone else, theirs (``peer_id``),
next to the names as written, and its key is made of the identities
(``setting_key``).  So when two routers cut off from each other both gave
out a name, the owner of the name does not inherit the displaced person's
blocks, switches and read markers, and the displaced person keeps hers
under the name she takes next (a rename keeps the identity):

- ``block``: ``{"user", "user_id", "setting": "block", "peer", "peer_id",
  "on"}``: while on, ``peer`` cannot send ``user`` a direct message (the
  sender is told);
- ``attention``: ``{"user", "user_id", "setting": "attention", "sound",
  "vibrate"}``: whether the user's pages beep or buzz on a mention or a
  direct message;
- ``dm_read``: ``{"user", "user_id", "setting": "dm_read", "peer",
  "peer_id", "upto"}``: how far ``user`` has read the conversation with
  ``peer`` (an HLC): its unread count follows the person to any router, as
  a room's READ marker does.

The previous release wrote the same records without ``user_id`` and
``peer_id`` (``NAME_SETTING_FIELDS``), keyed by the names.  Those on disk,
and those still coming from a router that runs that release, are kept the
latest per *name* key, as that release keeps them, and count for the person
who holds the name now (app/chat.py ``Chat._setting``): for each person the
later of her identity-keyed record and the name-keyed one of the name she
holds (by ``setting_rank``), so a change made now replaces an old one and a
later one from an old router replaces that.  Why the holder now: an old
record names nobody but a name, and the person who holds it now is also
the first to have registered it before the record was stamped (names go to
the earliest registration); when two routers gave the name out, nothing in
the record says it was the second one's, so it stays with the name, as the
previous release applied it.  Every setting made from this release on
belongs to its person.  A router of the previous release refuses the new
form (``bad_setting`` in its /status): upgrade every router of the mesh.

Names compare by key (app/accounts.py ``name_key``), as everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.accounts import USERNAME_RE, name_key
from node.index import parse_hlc
from node.record import Record, RecordKind, parse_id

DIRECT_FIELDS = {"from", "to", "from_id", "to_id", "node", "time", "text"}
# With a picture (its thumbnail too) or a file.
DIRECT_BLOB_FIELDS = (DIRECT_FIELDS | {"blob"}, DIRECT_FIELDS | {"blob", "thumb"})
BLOCK, ATTENTION, DM_READ = "block", "attention", "dm_read"
# A setting's fields as this release writes them: names and identities.
SETTING_FIELDS = {
    BLOCK: {"user", "user_id", "setting", "peer", "peer_id", "on"},
    ATTENTION: {"user", "user_id", "setting", "sound", "vibrate"},
    DM_READ: {"user", "user_id", "setting", "peer", "peer_id", "upto"},
}
# As the previous release wrote them: names only (still accepted and counted).
NAME_SETTING_FIELDS = {
    BLOCK: {"user", "setting", "peer", "on"},
    ATTENTION: {"user", "setting", "sound", "vibrate"},
    DM_READ: {"user", "setting", "peer", "upto"},
}
# Conversations one person's room list shows at most (newest first): a
# phone screen or three; older ones stay reachable from a name.
CONVERSATIONS_SHOWN = 50


def conversation_key(a: str, b: str) -> tuple[str, str, str]:
    """The conversation of two people (identities): the same whoever writes
    first."""
    return ("dm", *sorted((a, b)))  # type: ignore[return-value]


def _identity(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and parse_id(value) is not None else None


def _name(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and USERNAME_RE.fullmatch(value) else None


def direct_conversation(record: Record) -> tuple[str, str, str] | None:
    """A DIRECT record's conversation; None if it names no two people."""
    sender, to = _name(record.body, "from"), _name(record.body, "to")
    if sender is None or to is None or name_key(sender) == name_key(to):
        return None
    sender_id, to_id = _identity(record.body, "from_id"), _identity(record.body, "to_id")
    if sender_id is None or to_id is None or sender_id == to_id:
        return None
    return conversation_key(sender_id, to_id)


def other_identity(key: tuple[str, ...], me: str) -> str:
    """The other person of a conversation ``me`` is in."""
    return key[2] if key[1] == me else key[1]


def person_key(setting: str, user: str, peer: str | None = None) -> tuple[str, ...]:
    """The key of a person's setting (about ``peer``), by identities."""
    return (setting, user) if peer is None else (setting, user, peer)


def name_setting_key(setting: str, user: str, peer: str | None = None) -> tuple[str, ...]:
    """The key the previous release gave a setting: by the names' keys."""
    return (setting, name_key(user)) if peer is None else (setting, name_key(user), name_key(peer))


def is_by_name(record: Record) -> bool:
    """A SETTING record of the previous release: names, no identities."""
    return "user_id" not in record.body


def setting_key(record: Record) -> tuple[str, ...] | None:
    """The key a SETTING record is the latest of; None if malformed.

    ``(setting, user_id[, peer_id])`` for a record of this release, and
    ``(setting, user's name key[, peer's name key])`` for one of the
    previous release (``is_by_name``): an identity holds a colon, a name
    never does, so the two never compare equal.  Keys start with the
    setting's name: never equal to a READ key (name, room).  A function of
    the record alone, so every router keeps the same one in any order."""
    body = record.body
    setting = body.get("setting")
    if setting not in SETTING_FIELDS:
        return None
    if is_by_name(record):
        user, peer, make = _name(body, "user"), _name(body, "peer"), name_setting_key
    else:
        user, peer, make = _identity(body, "user_id"), _identity(body, "peer_id"), person_key
    if user is None:
        return None
    if setting == ATTENTION:
        return make(ATTENTION, user)
    if peer is None:
        return None
    if setting == DM_READ and parse_hlc(body.get("upto")) is None:
        return None
    return make(str(setting), user, peer)


def setting_rank(record: Record) -> tuple[int, int, str, int]:
    """A read marker's furthest ``upto`` wins; otherwise the latest record."""
    upto = parse_hlc(record.body.get("upto")) if record.body.get("setting") == DM_READ else 0
    return (upto or 0, *record.order_key)


def check_direct(record: Record) -> bool:
    """The exact fields ``Chat.send_direct`` writes (the text, time, blob
    and thumbnail are checked by app/chat.py as a room message's are)."""
    fields = set(record.body)
    return (
        record.kind == RecordKind.DIRECT
        and record.room == 0
        and (fields == DIRECT_FIELDS or fields in DIRECT_BLOB_FIELDS)
        and direct_conversation(record) is not None
    )


def audience(record: Record) -> frozenset[str]:
    """Who may read a DIRECT record: its two people's identities (empty,
    nobody, if it names no two people)."""
    key = direct_conversation(record)
    return frozenset() if key is None else frozenset(key[1:])


def _names_its_people(record: Record) -> bool:
    """A SETTING record's fields are those of one form, exactly, and name
    its person and, for a setting about someone else, another person."""
    body = record.body
    setting = body.get("setting")
    if record.room != 0 or setting not in SETTING_FIELDS:
        return False
    if set(body) not in (SETTING_FIELDS[setting], NAME_SETTING_FIELDS[setting]):
        return False
    if setting_key(record) is None or _name(body, "user") is None:
        return False
    if setting == ATTENTION:
        return True
    peer = _name(body, "peer")
    if peer is None or name_key(peer) == name_key(body["user"]):
        return False  # a setting about oneself
    return is_by_name(record) or body["peer_id"] != body["user_id"]


def check_setting(record: Record) -> bool:
    """The exact fields of a SETTING record of either form (this release's,
    or the previous one's: ``NAME_SETTING_FIELDS``), each of its type and
    bounds."""
    if not _names_its_people(record):
        return False
    body = record.body
    if body["setting"] == BLOCK:
        return isinstance(body.get("on"), bool)
    if body["setting"] == ATTENTION:
        return isinstance(body.get("sound"), bool) and isinstance(body.get("vibrate"), bool)
    upto = parse_hlc(body.get("upto"))
    # Nobody reads the future: a marker is written after what it covers.
    return upto is not None and upto <= record.hlc
