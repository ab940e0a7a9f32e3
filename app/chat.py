"""The chat service: accounts, posting, history and fan-out, without HTTP.

Routes (app/web.py) validate a request and call one method here.  Everything
that changes state makes a record, stamps it with the hybrid clock, appends it
to the store (flushed) and only then tells anyone: the WebSocket ack, the
room's pages and, with the mesh, the other routers (``Mesh.send_record``:
the chat is given its mesh, app/mesh.py).
What the store does not keep is never acknowledged (``not_stored``).

A record from a peer is checked as a page's input is (``check_remote_record``):
exactly the fields the chat writes for its kind, each bounded, a byte limit
per kind, only our own scrypt parameters; what is refused is counted by
reason.  What is already stored never breaks a page: ``message_frame`` shows
any line, with the HLC's time where the sender's cannot be shown.

Unread counts: a page says how far it has shown a room (``mark_read``); the
marker moves forward in memory at once, and a READ record (replicated, so the
count follows the person to any router) is written at most every
``READ_RECORD_INTERVAL`` per user and room.  A person's own messages never
count, nor messages from before their account existed.

Also here: resends (a ``client_id`` already stored for the user and room is
answered with the first ack, app/resend.py), room names (an admin's
MODERATION record, app/moderation.py ``ROOM_NAME``), search and the way to a
result (app/search.py), and the live room list (app/roomlist.py), told of
every change that may move it.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app import direct, reads, search
from app.accounts import (
    USERNAME_RE,
    Account,
    Accounts,
    Login,
    NameTaken,
    WrongPassword,
    check_new_account,
    check_new_password,
    check_username,
    hash_password,
    name_key,
    parse_hash,
)
from app.attachments import (
    BLOB_LINE,
    PUBLIC,
    THUMB_MAX_CHARS,
    AttachmentRefused,
    Attachments,
    check_blob_fields,
    ref_of,
)
from app.config import NODE_NAME_MAX
from app.delivery import DeliveryTracker
from app.hub import Client, Hub
from app.i18n import DEFAULT, Language, languages, message
from app.mesh import Mesh, NoMesh
from app.moderation import RECORD_ACTIONS, ROOM_NAME, Moderation
from app.resend import SentIds
from app.roomlist import RoomListFeed
from node.clock import COUNTER_MASK, MAX_DRIFT_MS, PHYSICAL_MAX, HybridClock, pack, physical_ms
from node.record import Record, RecordKind, parse_id
from node.store import Store, parse_hlc
from node.sync import TokenBucket
from node.wire import dump_json

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2000  # a long paragraph; keeps every message a few datagrams at most
BANNED = "You are banned from this chat."  # a msgid (app/i18n.py)
NAME_TAKEN = (  # a msgid too
    "Someone registered this name first on another router: log in again to choose a new one."
)
HISTORY_LIMIT = 100  # messages a page gets on connect: two phone screens and more
OLDER_LIMIT_MAX = 200  # one scroll-back request
# Per user on this router: a person types far slower; a paste-happy phone or a
# script is slowed to this sustained rate, with a burst for quick replies.
RATE_PER_SECOND = 2.0
RATE_BURST = 10
NAME_TAKEN = "That username is taken; please choose another."
STORE_UNAVAILABLE = "The router cannot store messages right now."
# A message's "time" (the sender's wall clock, shown) and its HLC (which
# sorts) come from one clock reading on an honest router: "time" is never
# ahead of the HLC's physical part, and behind it only when the clock was set
# back (a router booted at 1970 goes on from its last HLC).  A day either way
# is far beyond clocks that merely drift: a time further ahead is refused on
# receipt, and any time that far off is shown as the HLC's.
MAX_TIME_SKEW_MS = 24 * 3600 * 1000
# 9999-12-31T23:59:59.999Z, the last instant a datetime (and so a page) can show.
LATEST_SHOWN_MS = 253_402_300_799_999
# Bytes of a record's body as it travels (compact UTF-8 JSON, node/wire.py),
# per kind: what the longest valid fields take, with room to spare.  Padding
# in a known field is refused here; unknown fields are refused by kind.
MAX_BODY_BYTES = {
    # 2,000 characters of at most 4 UTF-8 bytes (JSON escapes take 2), plus
    # names (32 characters each), a 15-digit time and the keys.
    RecordKind.MESSAGE: MAX_TEXT_CHARS * 4 + 512,
    # A 32-character name, an 86-character hash and an account id (about 30).
    RecordKind.ACCOUNT: 512,
    # A name, a room and a 20-digit HLC.
    RecordKind.READ: 256,
    # Two names, an action and two ids.
    RecordKind.MODERATION: 512,
    # As a room message, with two names instead of one.
    RecordKind.DIRECT: MAX_TEXT_CHARS * 4 + 512,
    # Two names, two identities (about 40 characters each), a setting's name
    # and a 20-digit HLC or two booleans: 215 bytes at most.
    RecordKind.SETTING: 256,
}
ROOM_NAME_MAX = 40  # characters: a room's name fits a phone's header and tab title
ROOM_TOPIC_MAX = 200  # characters: a sentence or two under the name
# A room-name record: the moderation record's fields plus a name and a
# topic of at most 4 UTF-8 bytes (or a 2-byte JSON escape) per character.
MAX_NAME_BODY_BYTES = MAX_BODY_BYTES[RecordKind.MODERATION] + (ROOM_NAME_MAX + ROOM_TOPIC_MAX) * 4
# Settings (a block, the attention switches) per user: each is a record on
# flash and a datagram to every router; a person flips a switch now and then.
SETTINGS_PER_SECOND = 0.2
SETTINGS_BURST = 5
SEARCH_PER_SECOND = 1.0  # searches per user: each reads a room's whole history
SEARCH_BURST = 5  # a few refinements in a row
# The body fields of each kind of ACCOUNT record the chat writes: a
# registration, a password change, a rename after a name conflict.
_ACCOUNT_FIELDS = ({"name", "hash"}, {"name", "hash", "account"}, {"name", "hash", "renamed_from"})
_MESSAGE_FIELDS = {"author", "node", "time", "text"}
# A message with a picture or file (app/attachments.py): a photo has a
# thumbnail, a file none.  Its text (a caption) may be empty.
_BLOB_MESSAGE_FIELDS = (_MESSAGE_FIELDS | {"blob"}, _MESSAGE_FIELDS | {"blob", "thumb"})
# A message's body with its blob (about 250 bytes of JSON) and thumbnail.
MAX_BLOB_MESSAGE_BYTES = MAX_BODY_BYTES[RecordKind.MESSAGE] + THUMB_MAX_CHARS + 512
# The same for a direct message with a picture or file.
MAX_BLOB_DIRECT_BYTES = MAX_BODY_BYTES[RecordKind.DIRECT] + THUMB_MAX_CHARS + 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A user's read marker per room becomes a record (a line on flash, a datagram
# to every router) at most this often; the marker in memory moves at once.
READ_RECORD_INTERVAL = 5.0
UNREAD_MAX = 1000  # the room list counts this far and then shows "999+"
PREVIEW_CHARS = 60  # the room list's preview of a room's last message
# Characters a message may not hold: C0/C1 controls other than tab and newline
# (they confuse terminals reading the logs and can hide text).
_FORBIDDEN = {c for c in range(0x20) if c not in (0x09, 0x0A)} | set(range(0x7F, 0xA0))
_DROP_FORBIDDEN = dict.fromkeys(_FORBIDDEN)  # str.translate's table
# A text ``clean_text`` would change or refuse for its characters: a
# forbidden one ("\r" of "\r\n" included), or a surrogate (no UTF-8 holds
# one: ``is_utf8``).  One search instead of encoding and translating.
_UNCLEAN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class ChatError(ValueError):
    """A request the client must correct; ``code`` goes into the error frame,
    ``status`` is the HTTP status of a form that meets it."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_frame(error: ChatError, lang: Language | None, **extra: str) -> dict[str, Any]:
    """A refusal for the page: its message in the language of the socket's
    upgrade request, English if none (app/i18n.py ``message``: a message a
    person reads is translated; protocol ones have no msgid, stay English)."""
    said = message(lang or languages()[DEFAULT], str(error))
    return {"type": "error", "code": error.code, "message": said, **extra}


class StoreFailed(ChatError):
    """The store could not keep a record (a full disk, no descriptors):
    nothing was kept nor sent."""

    # The router is at fault, not the request, and trying again later may work.
    status = 503


def clean_text(text: Any) -> str:
    """Validate a message's text; raises ChatError with the frame's code."""
    if not isinstance(text, str):
        raise ChatError("bad_request", "text must be a string")
    if not is_utf8(text):
        raise ChatError("bad_request", "text must be valid Unicode")
    text = text.replace("\r\n", "\n").translate(_DROP_FORBIDDEN)
    if not text.strip():
        raise ChatError("empty", "A message needs some text.")
    if len(text) > MAX_TEXT_CHARS:
        raise ChatError("too_long", f"A message holds at most {MAX_TEXT_CHARS} characters.")
    return text


def is_clean_text(text: Any) -> bool:
    """True if ``clean_text`` takes ``text`` as it is (the check of a
    record's text from a peer), without building the cleaned copy."""
    return (
        isinstance(text, str)
        and len(text) <= MAX_TEXT_CHARS
        and _UNCLEAN.search(text) is None
        and not text.isspace()
        and text != ""
    )


def clean_label(value: Any, limit: int, what: str) -> str:
    """A room's name or topic: one line, no control characters, at most
    ``limit`` characters; raises ChatError."""
    if not isinstance(value, str) or not is_utf8(value):
        raise ChatError("bad_request", f"The {what} must be text.")
    value = " ".join(value.translate(_DROP_FORBIDDEN).split())
    if len(value) > limit:
        raise ChatError("too_long", f"A room's {what} holds at most {limit} characters.")
    return value


def is_utf8(text: str) -> bool:
    """False for a string with lone surrogates (JSON's "\\ud800"): no UTF-8
    holds them, so they could be neither stored nor sent to a page."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_remote_record(record: Record, rooms: int) -> str | None:
    """Why a record from a peer cannot be stored, or None if it can."""
    if record.kind == RecordKind.MESSAGE:
        reason = _check_message(record, rooms)
    elif record.kind == RecordKind.ACCOUNT:
        reason = _check_account(record)
    elif record.kind == RecordKind.MODERATION:
        reason = _check_moderation(record, rooms)
    elif record.kind == RecordKind.READ:
        reason = _check_read(record, rooms)
    elif record.kind == RecordKind.DIRECT:
        reason = _check_direct(record)
    elif record.kind == RecordKind.SETTING:
        reason = None if direct.check_setting(record) else "bad_setting"
    else:
        return "unknown_kind"
    return reason or _check_size(record)


def _check_size(record: Record) -> str | None:
    """ "too_big" for a body over its kind's ``MAX_BODY_BYTES`` (a room's
    name: ``MAX_NAME_BODY_BYTES``), counted as it travels (``dump_json``).
    A record from the wire says how long its body's JSON is at most
    (``Record.json_size``): within the limit, nothing to encode again."""
    limit = MAX_BODY_BYTES[record.kind]
    if record.kind == RecordKind.MODERATION and record.body.get("action") == ROOM_NAME:
        limit = MAX_NAME_BODY_BYTES
    if record.kind == RecordKind.MESSAGE and "blob" in record.body:
        limit = MAX_BLOB_MESSAGE_BYTES
    if record.kind == RecordKind.DIRECT and "blob" in record.body:
        limit = MAX_BLOB_DIRECT_BYTES
    if 0 < record.json_size <= limit:
        return None
    try:
        size = len(dump_json(record.body))
    except (ValueError, TypeError, RecursionError):
        return "too_big"
    return None if size <= limit else "too_big"


def _check_read(record: Record, rooms: int) -> str | None:
    body = record.body
    user, upto = body.get("user"), reads.read_upto(record)
    well_formed = (
        set(body) == {"user", "room", "upto"}
        and isinstance(user, str)
        and USERNAME_RE.fullmatch(user)
        and 1 <= record.room <= rooms
        and body.get("room") == record.room
        and not isinstance(body.get("room"), bool)
        # Nobody reads the future: a marker is written after what it covers.
        and upto is not None
        and upto <= record.hlc
    )
    return None if well_formed else "bad_read"


def preview(text: str) -> str:
    """A message's text on one line, cut to ``PREVIEW_CHARS``."""
    line = " ".join(text.split())
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1].rstrip() + "…"


def _check_message(record: Record, rooms: int) -> str | None:
    if not 1 <= record.room <= rooms:
        return "no_such_room"
    body = record.body
    author, text = body.get("author"), body.get("text")
    fields, captioned = set(body), True
    if fields in _BLOB_MESSAGE_FIELDS:  # a picture or a file: bounded, the thumbnail re-checked
        if not check_blob_fields(body):
            return "bad_blob"
        fields, captioned = _MESSAGE_FIELDS, text != ""  # a caption is optional
    ok = (
        fields == _MESSAGE_FIELDS
        and isinstance(author, str)
        and USERNAME_RE.fullmatch(author)
        and _is_showable(record, captioned)
    )
    return None if ok else "bad_message"


def _check_direct(record: Record) -> str | None:
    """A direct message as ``Chat.send_direct`` writes it: two names, a
    router's name, a time and a text, each bounded as a room message's;
    with a picture or file, its blob and thumbnail as a room message's (the
    text a caption, which may be empty)."""
    captioned = True
    if "blob" in record.body:
        if not check_blob_fields(record.body):
            return "bad_blob"
        captioned = record.body.get("text") != ""
    ok = direct.check_direct(record) and _is_showable(record, captioned)
    return None if ok else "bad_direct"


def _is_showable(record: Record, captioned: bool) -> bool:
    """The router's name, time and text of a room or direct message, as a
    page shows them: the name bounded, the time showable and not ahead of
    the record's own HLC (see ``MAX_TIME_SKEW_MS``), the text clean but
    for a picture's or file's empty caption (``captioned`` False)."""
    node, when, text = (record.body.get(k) for k in ("node", "time", "text"))
    return (
        isinstance(node, str)
        and 0 < len(node) <= NODE_NAME_MAX
        and isinstance(when, int)
        and not isinstance(when, bool)
        and 0 <= when <= min(LATEST_SHOWN_MS, physical_ms(record.hlc) + MAX_TIME_SKEW_MS)
        and isinstance(text, str)
        and (not captioned or is_clean_text(text))
    )


# The exact fields of a moderation record per action, as ``Chat.moderate``
# writes them: anything else is not ours.
_MODERATION_FIELDS = {
    "delete": {"action", "by", "account", "target"},
    "clear": {"action", "by", "account"},
    "ban": {"action", "by", "account", "user"},
    "unban": {"action", "by", "account", "user"},
    ROOM_NAME: {"action", "by", "account", "name", "topic"},
}


def _check_moderation(record: Record, rooms: int) -> str | None:
    """Whether a moderation record is well formed; whether its author may
    act is ``Moderation.refusal``'s (it needs this router's admin binding)."""
    body, action = record.body, record.body.get("action")
    by, account = body.get("by"), body.get("account")
    if (
        action not in RECORD_ACTIONS
        or set(body) != _MODERATION_FIELDS[action]
        or not (isinstance(by, str) and USERNAME_RE.fullmatch(by))
        or not (isinstance(account, str) and parse_id(account))
    ):
        return "bad_moderation"
    if action in ("ban", "unban"):
        user = body.get("user")
        ok = record.room == 0 and isinstance(user, str) and bool(USERNAME_RE.fullmatch(user))
    elif action == "delete":
        target = body.get("target")
        ok = 1 <= record.room <= rooms and isinstance(target, str) and bool(parse_id(target))
    elif action == ROOM_NAME:
        ok = 1 <= record.room <= rooms and _is_label(body.get("name"), ROOM_NAME_MAX)
        ok = ok and _is_label(body.get("topic"), ROOM_TOPIC_MAX)
    else:
        ok = 1 <= record.room <= rooms
    return None if ok else "bad_moderation"


def _is_label(value: Any, limit: int) -> bool:
    """True for a name or topic exactly as ``clean_label`` leaves it."""
    try:
        return clean_label(value, limit, "name") == value
    except ChatError:
        return False


def _check_account(record: Record) -> str | None:
    body = record.body
    name = body.get("name")
    links = [body[k] for k in ("account", "renamed_from") if k in body]
    well_formed = (
        set(body) in _ACCOUNT_FIELDS
        and isinstance(name, str)
        and USERNAME_RE.fullmatch(name)
        # Our own scrypt parameters only: a login never runs a stranger's cost.
        and parse_hash(body.get("hash")) is not None
        and record.room == 0
        and all(isinstance(x, str) and parse_id(x) for x in links)
    )
    return None if well_formed else "bad_account"


def iso_utc(ms: int) -> str:
    """Milliseconds since 1970 as ISO 8601 UTC, exact (integer arithmetic),
    clamped to what a datetime can show: never raises."""
    ms = min(max(ms, 0), LATEST_SHOWN_MS)
    return (
        (_EPOCH + timedelta(milliseconds=ms))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def shown_time_ms(record: Record) -> int:
    """The time a page shows for a message: the sender's, unless it is not
    a number within ``MAX_TIME_SKEW_MS`` of the HLC's (a stored line from
    before the checks, a clock at 1970); then the HLC's."""
    when, stamped = record.body.get("time"), min(physical_ms(record.hlc), LATEST_SHOWN_MS)
    if (
        isinstance(when, int)
        and not isinstance(when, bool)
        and abs(when - stamped) <= MAX_TIME_SKEW_MS
    ):
        return when
    return stamped


def _text_field(body: Mapping[str, Any], key: str) -> str:
    """A body's string field, "" if a stored line has anything else there."""
    value = body.get(key)
    return value if isinstance(value, str) else ""


def closing_notice(code: str, english: str) -> Callable[[Client], dict[str, Any]]:
    """What a page is told as the router closes its socket (a ban, a name
    taken): an error frame in the language the socket was opened in."""
    return lambda client: error_frame(ChatError(code, english), client.lang)


def parse_hlc_or_zero(value: Any) -> int:
    """An HLC from a stored body, 0 if it holds anything else."""
    return parse_hlc(value) or 0


def clock_start(store: Store, wall_ms: int) -> int:
    """Where the clock starts: after every record of ours (time never goes
    back across a restart, even to a wall clock at 1970), and after peers'
    only as far as the running clock follows a peer (``MAX_DRIFT_MS``):
    a record from a router far ahead must not move this router's clock, and
    its retention horizon, a year on at the next start."""
    ahead = pack(min(wall_ms + MAX_DRIFT_MS, PHYSICAL_MAX), COUNTER_MASK)
    ours = store.max_hlc_of(store.node_id)
    return max(ours, min(store.max_hlc, ahead))


def make_clock(store: Store, wall: Callable[[], float] = time.time) -> HybridClock:
    """The hybrid clock of a chat (and its mesh), started by ``clock_start``."""
    return HybridClock(clock_start(store, int(wall() * 1000)))


def message_frame(record: Record) -> dict[str, Any]:
    """A stored message for a page; whatever the line holds, never raises."""
    body = record.body
    frame = {
        "type": "message",
        "id": record.id,
        "room": record.room,
        "author": _text_field(body, "author"),
        "node": _text_field(body, "node"),
        "time": iso_utc(shown_time_ms(record)),
        "hlc": str(record.hlc),  # 64 bits: more than a JavaScript number holds
        "text": _text_field(body, "text"),
    }
    if record.kind == RecordKind.DIRECT:  # a direct message: "from" is its author
        frame["author"], frame["to"] = _text_field(body, "from"), _text_field(body, "to")
    ref = ref_of(body) if record.kind in (RecordKind.MESSAGE, RecordKind.DIRECT) else None
    if ref is not None:  # a picture or a file: the page shows the thumbnail, links the blob
        frame["blob"] = ref.as_body()
        thumb = body.get("thumb")
        if isinstance(thumb, str) and len(thumb) <= THUMB_MAX_CHARS:
            frame["thumb"] = thumb
    return frame


class Chat:
    def __init__(
        self,
        store: Store,
        node_name: str,
        *,
        mesh: Mesh | None = None,
        clock: HybridClock | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        admins: Iterable[str] = (),
        blobs: Attachments | None = None,
    ) -> None:
        """``mesh``: the other routers (app/mesh.py), none by default.
        ``blobs``: pictures and files (app/attachments.py); None: messages
        are text only.
        ``clock``: the hybrid clock, shared with the mesh's protocol.  The
        wall clock stamps records (the HLC) and the time people see; every
        rate, interval and duration runs on ``monotonic``, which the router
        setting its clock (NTP after a boot at its build date) never moves."""
        self.store = store
        self.node_name = node_name
        self.wall, self.monotonic = wall, monotonic
        self.mesh: Mesh = NoMesh() if mesh is None else mesh
        self.clock = make_clock(store, wall) if clock is None else clock
        store.limit_clears(self.clock.last)  # what we stamp from now on is after any clear
        self.accounts = Accounts()
        for record in store.accounts:
            self.accounts.add(record)
        # The store must be made with ``ChatPolicy(Moderation(admins).authorizes)``
        # (app/server.py), so that deletes and clears follow the same binding.
        self.moderation = Moderation(admins, self.accounts)
        for record in store.moderation:
            self.moderation.add(record)
        self.moderation.log_bindings()
        self.hub = Hub(store.rooms, on_presence=self.local_presence_changed)
        self.room_lists = RoomListFeed(
            self.room_list, self.conversations
        )  # the rooms pages (app/roomlist.py)
        self.sent_ids = SentIds()  # client ids already stored: resends (app/resend.py)
        self._searches: dict[str, TokenBucket] = {}
        self._settings: dict[str, TokenBucket] = {}  # per identity: blocks, attention
        self.delivery = DeliveryTracker(self.hub, self.mesh.peer_vectors, monotonic)
        self.refused: Counter[str] = Counter()  # records from peers we would not store
        self._buckets: dict[str, TokenBucket] = {}
        # Read markers held back by the rate limit: (name key, room) ->
        # (user, upto); for conversations (identity, peer's identity) ->
        # (user, peer, upto), the names as the person wrote them.
        self._reads: reads.Throttle[tuple[str, int], tuple[str, int]] = reads.Throttle(
            self._write_read, READ_RECORD_INTERVAL, monotonic
        )
        self._dm_reads: reads.Throttle[tuple[str, str], tuple[str, str, int]] = reads.Throttle(
            self._write_direct_read, READ_RECORD_INTERVAL, monotonic
        )
        # Name key -> keys of the conversations that person is in: the room
        # list looks at a person's own, not at every conversation held.
        self._conversations_of: dict[str, set[Hashable]] = {}
        for key in store.conversations():
            self._note_conversation(key)
        self.blobs = blobs
        if blobs is not None:  # which held messages name which blob, and for whom
            for room in range(1, store.rooms + 1):
                for record in store.recent(room):
                    self._note_blob(record)
                for record in store.scan(room, BLOB_LINE, folded=False):  # the older ones
                    self._note_blob(record)
            for key in store.conversations():
                for record in store.messages(key):
                    self._note_blob(record)

    @property
    def node_id(self) -> str:
        return self.store.node_id

    @property
    def rooms(self) -> int:
        return self.store.rooms

    # -- records -------------------------------------------------------------

    def _make_record(self, kind: RecordKind, room: int, body: dict[str, Any]) -> Record:
        hlc = self.clock.tick(int(self.wall() * 1000))
        record = Record(self.node_id, self.store.next_seq(), hlc, kind, room, body)
        try:
            stored = self.store.append(record)
        except OSError as e:  # a log that cannot be opened (EMFILE) or written: nothing held
            log.error("cannot store a %s record in room %d: %s", kind.name.lower(), room, e)
            raise StoreFailed("unavailable", STORE_UNAVAILABLE) from e
        if not stored:  # never told to anyone, never sent: not stored
            raise StoreFailed("not_stored", "This router could not store that; it was not sent.")
        self.mesh.send_record(record)
        return record

    def receive_records(self, records: list[Record]) -> list[Record]:
        """Records from peers: check, store (one write per log) and show them.

        Returns the new ones.  A record we would refuse from a page is refused
        from a peer too, and counted by reason in ``refused``: a peer with
        other settings or a bug must not put anything in our logs.  A room
        that gets more than a page's history at once (a catch-up burst) gets
        one fresh ``history`` frame instead of a flood of ``message`` frames.
        """
        accepted = []
        for record in records:
            reason = check_remote_record(record, self.rooms) or self.moderation.refusal(record)
            if reason is None:
                accepted.append(record)
            else:
                self.refused[reason] += 1
        self._limit_clears(accepted)
        new = self.store.append_many(accepted)
        by_room: dict[int, list[Record]] = {}
        for record in new:
            if record.kind == RecordKind.MESSAGE:
                by_room.setdefault(record.room, []).append(record)
                self._note_blob(record)
            else:
                self._show_received(record)
        if new:
            self.room_lists.changed()
        for room, fresh in by_room.items():
            if not self.hub.rooms.get(room):
                continue  # nobody's page is open there: no frames to build (catch-up)
            if len(fresh) > HISTORY_LIMIT:
                latest = self.store.latest(room, HISTORY_LIMIT)
                self.hub.broadcast(
                    room,
                    {
                        "type": "history",
                        "messages": [message_frame(r) for r in latest],
                        "last": self.store.last_arrival(room),
                        "reset": True,
                    },
                )
            else:
                for record in fresh:
                    self.hub.broadcast(room, message_frame(record))
        return new

    def _displaced(self, client: Client) -> bool:
        """Was ``client`` opened by an account that no longer owns its name?"""
        return client.account is not None and not self.accounts.is_owner(
            client.account, client.user
        )

    def _show_received(self, record: Record) -> None:
        """Apply a new record from a peer that is not a room message."""
        if record.kind == RecordKind.ACCOUNT:
            self.accounts.add(record)
            name = record.body.get("name")
            if isinstance(name, str):  # a claim that came first elsewhere displaces one here
                self.hub.disconnect_user(
                    name, name_key, closing_notice("name_taken", NAME_TAKEN), self._displaced
                )
        elif record.kind == RecordKind.DIRECT:
            self._note_blob(record)  # before any page is told of it
            self._show_direct(record)
        elif record.kind == RecordKind.SETTING:
            self._show_setting(record)
        elif record.kind == RecordKind.MODERATION:
            self._show_moderation(record)

    def _limit_clears(self, records: list[Record]) -> None:
        """Clears among ``records`` cut no later than our clock, moved only as
        far as it follows a peer (node/clock.py ``MAX_DRIFT_MS``).  What we
        stamp next is after the cut: a clear from a router whose clock runs
        far ahead must not make every post here one the store refuses."""
        clears = [
            r.hlc
            for r in records
            if r.kind == RecordKind.MODERATION and r.body.get("action") == "clear"
        ]
        if clears:
            wall_ms = int(self.wall() * 1000)
            ahead = pack(min(wall_ms + MAX_DRIFT_MS, PHYSICAL_MAX), COUNTER_MASK)
            # Pre-clamped, so a clamp the mesh's clock already counted is not counted twice.
            self.store.limit_clears(self.clock.observe(min(max(clears), ahead), wall_ms))

    # -- accounts ------------------------------------------------------------

    def register(self, name: str, password: str, confirm: str) -> Account:
        check_new_account(name, password, confirm)
        if self.accounts.exists(name) or self.moderation.reserved(name):  # before the hash
            raise NameTaken(NAME_TAKEN)
        return self._claim_name(name, hash_password(password))

    def _claim_name(self, name: str, hashed: str, **extra: str) -> Account:
        # A bound admin name is taken even where its account has not arrived.
        if self.accounts.exists(name) or self.moderation.reserved(name):
            raise NameTaken(NAME_TAKEN)
        record = self._make_record(RecordKind.ACCOUNT, 0, {"name": name, "hash": hashed, **extra})
        self.accounts.add(record)
        account = Account(record.id, name, hashed)
        self.moderation.note_account(account)
        return account

    def login(self, name: str, password: str) -> Login | None:
        return self.accounts.authenticate(name, password)

    def rename(self, account: Account, new_name: str) -> Account:
        """A displaced account takes a new name; the password stays."""
        check_username(new_name)
        return self._claim_name(new_name, account.password_hash, renamed_from=account.id)

    def change_password(
        self, account_id: str, name: str, current: str, new: str, confirm: str
    ) -> None:
        login = self.accounts.authenticate(name, current)
        if login is None or login.account.id != account_id:
            raise WrongPassword("The current password is not right.")
        check_new_password(new, confirm)
        record = self._make_record(
            RecordKind.ACCOUNT, 0, {"name": name, "hash": hash_password(new), "account": account_id}
        )
        self.accounts.add(record)

    # -- messages ------------------------------------------------------------

    def first_ack(self, user: str, room: int, client_id: str) -> str | None:
        """The id of the message ``user`` already stored in ``room`` with
        ``client_id`` (a resend after a lost ack), if this router remembers it."""
        return self.sent_ids.first((name_key(user), room), client_id, self.monotonic())

    def post(
        self,
        user: str,
        room: int,
        text: Any,
        on_stored: Callable[[Record], None] | None = None,
        client_id: str | None = None,
        blob: Any = None,
        thumb: Any = None,
    ) -> Record:
        """Store and fan out a message; raises ChatError.

        ``on_stored`` runs after the record is flushed to the log and before
        the room's fan-out (the sender's ack goes ahead of the message).
        ``client_id``: the page's own id, remembered for ``first_ack``.
        ``blob``: ``{sha, name}`` of a picture or file uploaded here
        (app/routes_blobs.py), with ``thumb`` its thumbnail (base64); the
        text is then a caption and may be empty.
        """
        text, extra = self._text_and_attachment(user, text, blob, thumb)
        if self.moderation.is_banned(user):
            raise ChatError("banned", BANNED)
        self._take_send_token(user)
        shown = int(self.wall() * 1000)  # the sender's time, as people read it
        record = self._make_record(
            RecordKind.MESSAGE,
            room,
            {"author": user, "node": self.node_name, "time": shown, "text": text, **extra},
        )
        self._note_blob(record)
        if client_id is not None:
            self.sent_ids.remember((name_key(user), room), client_id, record.id, self.monotonic())
        if on_stored is not None:
            on_stored(record)
        self.hub.broadcast(room, message_frame(record))
        self.delivery.track(record)
        self.room_lists.changed()
        return record

    def _text_and_attachment(
        self, user: str, text: Any, blob: Any, thumb: Any
    ) -> tuple[str, dict[str, Any]]:
        """A message's text, cleaned, and its ``blob`` and ``thumb`` fields
        (none without a ``blob``; with one, the text is a caption and may be
        empty); raises ChatError."""
        if blob is None:
            return clean_text(text), {}
        extra = self._attachment(user, blob, thumb)
        return ("" if text in (None, "") else clean_text(text)), extra

    def _attachment(self, user: str, blob: Any, thumb: Any) -> dict[str, Any]:
        """A message's ``blob`` (and ``thumb``) fields, of a blob ``user``
        uploaded or may see (app/attachments.py ``attach``); raises ChatError."""
        if self.blobs is None:
            raise ChatError("bad_request", "This router takes no pictures or files.")
        try:
            ref, thumb = self.blobs.attach(blob, thumb, self.accounts.person(user))
        except AttachmentRefused as e:
            raise ChatError("bad_blob", str(e)) from None
        return {"blob": ref.as_body()} | ({"thumb": thumb} if thumb else {})

    def _note_blob(self, record: Record) -> None:
        """A message held here that names a blob: remembered with who may
        read it, anyone for a room's, the two people for a direct message
        (app/attachments.py)."""
        if self.blobs is None:
            return
        if record.kind == RecordKind.MESSAGE:
            audience = PUBLIC
        elif record.kind == RecordKind.DIRECT:
            audience = direct.audience(record)
        else:
            return
        ref = ref_of(record.body)
        if ref is not None:
            self.blobs.name(ref, (record.origin, record.seq), audience)

    def forget_gone_blobs(self) -> int:
        """Messages went (a delete, a clear, retention): the blobs no held
        message names are deleted from this router's disk.  Returns how many."""
        if self.blobs is None:
            return 0
        gone = self.blobs.forget_gone(self.store.holds)
        if gone:
            log.info("%d pictures and files deleted with their messages", gone)
        return gone

    def _take_send_token(self, user: str) -> None:
        """One message's worth of ``user``'s rate (rooms and direct alike)."""
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(RATE_PER_SECOND, RATE_BURST)
        if not bucket.take(1, self.monotonic()):
            raise ChatError("rate_limited", "Too many messages; wait a moment.")

    # -- search and the way to a result --------------------------------------------

    def search(self, user: str, room: Hashable, query: Any) -> list[dict[str, Any]]:
        """The newest messages of ``room`` holding ``query`` (app/search.py);
        raises ChatError for a query that is not one, or too many searches."""
        if not isinstance(query, str) or not is_utf8(query) or not query.strip():
            raise ChatError("bad_request", "A search needs some text.")
        if len(query) > search.QUERY_MAX_CHARS:
            raise ChatError("too_long", f"Search for at most {search.QUERY_MAX_CHARS} characters.")
        bucket = self._searches.get(name_key(user))
        if bucket is None:
            bucket = self._searches[name_key(user)] = TokenBucket(SEARCH_PER_SECOND, SEARCH_BURST)
        if not bucket.take(1, self.monotonic()):
            raise ChatError("rate_limited", "Too many searches; wait a moment.")
        return search.frames(search.search(self.store, room, query.strip()), message_frame)

    def around(self, room: Hashable, rid: tuple[str, int]) -> tuple[list[Record], bool]:
        """A message with its neighbours, and whether newer ones follow."""
        found = search.around(self.store, room, rid)
        if found is None:
            raise ChatError("not_found", "That message is no longer in this room.")
        return found

    def newer(self, room: Hashable, rid: tuple[str, int], limit: int) -> tuple[list[Record], bool]:
        """Messages after ``rid`` (towards the latest), and whether more follow."""
        found = search.after(self.store, room, rid, min(max(limit, 1), search.NEWER_MAX))
        if found is None:
            raise ChatError("bad_request", "unknown message id")
        return found

    # -- moderation ------------------------------------------------------------

    def moderate(self, admin: str, room: int, action: Any, target: Any = None) -> Record:
        """An admin's action from a page in ``room``; raises ChatError.

        The rights are those of the account that owns the name ``admin`` now
        (the page's socket was opened by that account: app/web.py), and only
        if the operator bound them to it (app/moderation.py).
        """
        owner = self.accounts.owner(admin)
        if owner is None or not self.moderation.may_act(owner.name, owner.id):
            raise ChatError("forbidden", "Only an admin may do that.")
        body: dict[str, Any] = {"action": action, "by": owner.name, "account": owner.id}
        if action == "delete":
            rid = parse_id(target) if isinstance(target, str) else None
            record = self.store.get(*rid) if rid else None
            if record is None or record.kind != RecordKind.MESSAGE or record.room != room:
                raise ChatError("bad_request", "There is no such message in this room.")
            body["target"] = record.id
        elif action in ("ban", "unban"):
            owner = self.accounts.owner(target) if isinstance(target, str) else None
            if owner is None:
                raise ChatError("bad_request", "There is no such user.")
            body["user"] = owner.name
            room = 0
        elif action != "clear":
            raise ChatError("bad_request", "unknown moderation action")
        record = self._make_record(RecordKind.MODERATION, room, body)
        self._show_moderation(record)
        return record

    def name_room(self, admin: str, room: int, name: Any, topic: Any) -> Record:
        """An admin names ``room`` (and gives it a topic); raises ChatError.
        Rights as for ``moderate``: the name's owner, bound as admin."""
        owner = self.accounts.owner(admin)
        if owner is None or not self.moderation.may_act(owner.name, owner.id):
            raise ChatError("forbidden", "Only an admin may do that.")
        body = {
            "action": ROOM_NAME,
            "by": owner.name,
            "account": owner.id,
            "name": clean_label(name, ROOM_NAME_MAX, "name"),
            "topic": clean_label(topic, ROOM_TOPIC_MAX, "topic"),
        }
        record = self._make_record(RecordKind.MODERATION, room, body)
        self._show_moderation(record)
        return record

    def room_name_frame(self, room: int) -> dict[str, Any]:
        """A room's name and topic as its pages get them."""
        name, topic = self.moderation.room_name(room)
        return {"type": "room_name", "room": room, "name": name, "topic": topic}

    def _show_moderation(self, record: Record) -> None:
        """Apply a moderation record's effects beyond the store: bans, pages.
        Only for a record whose author is a bound admin (``receive_records``
        refuses the others; this holds whoever calls)."""
        if not self.moderation.authorizes(record):
            return
        self.moderation.add(record)
        self.room_lists.changed()
        body, room = record.body, record.room
        if body["action"] in ("delete", "clear"):  # their blobs vanish too
            self.forget_gone_blobs()
        if body["action"] == ROOM_NAME:
            self.hub.broadcast(room, self.room_name_frame(room))
        elif body["action"] == "delete":
            self.hub.broadcast(room, {"type": "deleted", "id": body["target"], "by": body["by"]})
        elif body["action"] == "clear":
            # The store's cut, which a clear from a clock far ahead does not pass.
            horizon = self.store.room_horizon.get(room, record.hlc)
            self.hub.broadcast(
                room, {"type": "cleared", "before_hlc": str(horizon), "by": body["by"]}
            )
        elif self.moderation.is_banned(body["user"]):
            for n in range(1, self.rooms + 1):
                self.hub.broadcast(n, {"type": "banned", "user": body["user"], "by": body["by"]})
            self.hub.disconnect_user(body["user"], name_key, closing_notice("banned", BANNED))

    def history(
        self,
        room: int,
        after: tuple[str, int] | None = None,
    ) -> tuple[list[Record], bool]:
        """What a page gets on connect, and whether it must start afresh.

        With ``after`` (the last id the page had): exactly the records this
        router stored since, if it still knows that id and they are few;
        otherwise the latest ``HISTORY_LIMIT`` and ``reset=True``.
        """
        if after is not None:
            missed = self.store.since(room, after, HISTORY_LIMIT)
            if missed is not None:
                return missed, False
        return self.store.latest(room, HISTORY_LIMIT), True

    def older(self, room: int, before: tuple[str, int], limit: int) -> list[Record]:
        records = self.store.before(room, before, min(max(limit, 1), OLDER_LIMIT_MAX))
        if records is None:
            raise ChatError("bad_request", "unknown message id")
        return records

    # -- read markers and the room list -----------------------------------------

    def read_marker(self, user: str, room: int) -> int:
        """How far ``user`` has read ``room``: the newer of the stored
        marker (from any router) and one not yet written here."""
        pending = self._reads.pending.get((name_key(user), room))
        return max(reads.read_marker(self.store, user, room), pending[1] if pending else 0)

    def mark_read(self, user: str, room: int, upto: int) -> bool:
        """A page showed ``room`` up to the HLC ``upto``; True if the marker moved."""
        last = self.store.last_message(room)
        if last is None:
            return False
        upto = min(upto, last.hlc)  # not past what exists: a page cannot read ahead
        if upto <= self.read_marker(user, room):
            return False
        self._reads.mark((name_key(user), room), (user, upto))
        self.room_lists.changed()
        return True

    def write_read(self, key: tuple[str, int]) -> Record | None:
        """Write the pending read marker of ``key`` as a READ record."""
        return self._reads.write(key)

    def _write_read(self, key: tuple[str, int], pending: tuple[str, int]) -> Record | None:
        user, upto = pending
        room = key[1]
        if upto <= reads.read_marker(self.store, user, room):  # another router's was newer
            return None
        return self._make_record(RecordKind.READ, room, {"user": user, "room": room, "upto": upto})

    def flush_reads(self) -> None:
        """Write every pending read marker now, rooms' and conversations'
        (at shutdown)."""
        self._reads.flush()
        self._dm_reads.flush()

    def joined(self, user: str) -> int:
        """The HLC of the user's account: nothing before it is unread."""
        account = self.accounts.owner(user)
        rid = parse_id(account.id) if account else None
        record = self.store.get(*rid) if rid else None
        return record.hlc if record else 0

    def room_list(self, user: str) -> list[dict[str, Any]]:
        """Per room: unread messages, the last message's preview, users online."""
        since = max(self.joined(user), 0)
        rooms = []
        for n in range(1, self.rooms + 1):
            last = self.store.last_message(n)
            since_n = max(since, self.read_marker(user, n))
            unread = reads.unread(self.store, n, user, since_n, UNREAD_MAX)
            name, topic = self.moderation.room_name(n)
            rooms.append(
                {
                    "n": n,
                    "name": name,
                    "topic": topic,
                    "unread": unread,
                    "online": len(self.presence(n)),
                    "last": None
                    if last is None
                    else {
                        "author": _text_field(last.body, "author"),
                        "text": preview(_text_field(last.body, "text")),
                        "time": iso_utc(shown_time_ms(last)),
                    },
                }
            )
        return rooms

    # -- direct messages (app/direct.py) ------------------------------------------

    def direct_peer(self, user: str, peer: Any) -> str:
        """The name of the account ``user`` may write to as ``peer``;
        raises ChatError ``not_found`` for no such person (or oneself)."""
        owner = self.accounts.owner(peer) if isinstance(peer, str) else None
        if owner is None or name_key(owner.name) == name_key(user):
            raise ChatError("not_found", "There is no such person to write to.")
        return owner.name

    def conversation(self, user: str, peer: str) -> tuple[str, str, str]:
        """The conversation of two people named by their names now (the
        store files it by their identities, app/direct.py); ChatError
        ``not_found`` if either name has no account."""
        me, other = self.accounts.person(user), self.accounts.person(peer)
        if me is None or other is None or me == other:
            raise ChatError("not_found", "There is no such person to write to.")
        return direct.conversation_key(me, other)

    def is_blocked(self, sender: str, by: str) -> bool:
        """True if ``by`` blocks direct messages from ``sender`` (the people
        who hold those names now)."""
        by_id, sender_id = self.accounts.person(by), self.accounts.person(sender)
        return by_id is not None and sender_id is not None and self.blocks(by_id, sender_id)

    def blocks(self, by: str, sender: str) -> bool:
        """True if person ``by`` blocks direct messages from person
        ``sender`` (identities: the latest block of the two, from any router)."""
        record = self._setting(direct.BLOCK, by, sender)
        return record is not None and record.body.get("on") is True

    def _person(self, name: str) -> str:
        """The identity of the person who holds ``name``; ChatError
        ``not_found`` if nobody does here (never for a page's own user: her
        session's account is held here)."""
        person = self.accounts.person(name)
        if person is None:
            raise ChatError("not_found", "There is no such person to write to.")
        return person

    def _setting(self, setting: str, person: str, peer: str | None = None) -> Record | None:
        """A person's setting (about ``peer``), by identities: the later (by
        ``direct.setting_rank``) of the record keyed by the identities and
        the one the previous release keyed by the names they hold now
        (app/direct.py says why the holder now)."""
        people = (person,) if peer is None else (person, peer)
        record = self.store.latest_of(direct.person_key(setting, *people))
        names = self._held_names(people)
        old = self.store.latest_of(direct.name_setting_key(setting, *names)) if names else None
        if old is not None and (
            record is None or direct.setting_rank(old) > direct.setting_rank(record)
        ):
            return old
        return record

    def _held_names(self, people: tuple[str, ...]) -> list[str] | None:
        """The names these people hold now; None if one of them holds none
        (her registration has not arrived, or she is displaced and has not
        taken another name yet)."""
        names = []
        for person in people:
            name = self.accounts.current_name(person)
            if name is None or self.accounts.person(name) != person:
                return None
            names.append(name)
        return names

    def send_direct(
        self,
        user: str,
        peer: str,
        text: Any,
        on_stored: Callable[[Record], None] | None = None,
        client_id: str | None = None,
        blob: Any = None,
        thumb: Any = None,
    ) -> Record:
        """Store and show a direct message from ``user`` to ``peer``; raises
        ChatError (``blocked`` if either blocks the other).  ``blob`` and
        ``thumb`` as for ``post``: a picture or file, served to these two
        people only (app/attachments.py)."""
        text, extra = self._text_and_attachment(user, text, blob, thumb)
        peer = self.direct_peer(user, peer)
        if self.moderation.is_banned(user):
            raise ChatError("banned", BANNED)
        key = self.conversation(user, peer)
        me, other = self._person(user), self._person(peer)
        if self.blocks(other, me):
            raise ChatError("blocked", f"{peer} does not take direct messages from you.")
        if self.blocks(me, other):
            raise ChatError("blocked", f"You blocked {peer}; unblock them to write.")
        self._take_send_token(user)
        shown = int(self.wall() * 1000)
        body = {
            "from": user,
            "to": peer,
            "from_id": me,
            "to_id": other,
            "node": self.node_name,
            "time": shown,
            "text": text,
            **extra,
        }
        record = self._make_record(RecordKind.DIRECT, 0, body)
        self._note_blob(record)  # before the ack: the page may ask for it at once
        if client_id is not None:
            self.sent_ids.remember((name_key(user), key), client_id, record.id, self.monotonic())
        if on_stored is not None:
            on_stored(record)
        self._show_direct(record)
        return record

    def first_direct_ack(self, user: str, peer: str, client_id: str) -> str | None:
        """``first_ack`` for a direct conversation."""
        key = (name_key(user), self.conversation(user, peer))
        return self.sent_ids.first(key, client_id, self.monotonic())

    def _note_conversation(self, key: Hashable) -> None:
        if isinstance(key, tuple) and len(key) == 3:
            for person in key[1:]:
                self._conversations_of.setdefault(person, set()).add(key)

    def _show_direct(self, record: Record) -> None:
        """A direct message stored (here or from a peer): to the pages of
        its conversation, a notice to the recipient's other pages (for the
        sound, the count), and the room lists."""
        key = direct.direct_conversation(record)
        if key is None:
            return
        self._note_conversation(key)
        self.hub.broadcast_topic(key, message_frame(record))
        # The names they go by now (a displaced person may have taken another).
        to_id, from_id = _text_field(record.body, "to_id"), _text_field(record.body, "from_id")
        to = self.accounts.current_name(to_id) or _text_field(record.body, "to")
        sender = self.accounts.current_name(from_id) or _text_field(record.body, "from")
        if not self.blocks(to_id, from_id):
            notice = {"type": "direct", "from": sender, "id": record.id}
            self.hub.send_user(to, notice, name_key, skip_topic=key)
        self.room_lists.changed()

    def _show_setting(self, record: Record) -> None:
        """A setting stored: the person's pages follow it (those of the name
        she goes by now)."""
        if record.body.get("setting") == direct.ATTENTION:
            user = _text_field(record.body, "user")
            person = self.accounts.person(user) if direct.is_by_name(record) else None
            person = person or _text_field(record.body, "user_id")
            name = self.accounts.current_name(person) or user
            frame = {"type": "attention", **self._attention(person)}
            self.hub.send_user(name, frame, name_key)
        self.room_lists.changed()

    def direct_history(
        self, user: str, peer: str, after: tuple[str, int] | None = None
    ) -> tuple[list[Record], bool]:
        """``history`` for the conversation of ``user`` and ``peer``."""
        key = self.conversation(user, peer)
        if after is not None:
            missed = self.store.since(key, after, HISTORY_LIMIT)
            if missed is not None:
                return missed, False
        return self.store.latest(key, HISTORY_LIMIT), True

    def direct_older(
        self, user: str, peer: str, before: tuple[str, int], limit: int
    ) -> list[Record]:
        """Scroll-back in one's own conversation; an id of any other is unknown."""
        key = self.conversation(user, peer)
        records = self.store.before(key, before, min(max(limit, 1), OLDER_LIMIT_MAX))
        if records is None:
            raise ChatError("bad_request", "unknown message id")
        return records

    def direct_search(self, user: str, peer: str, query: Any) -> list[dict[str, Any]]:
        """``search`` in one's own conversation with ``peer``."""
        return self.search(user, self.conversation(user, peer), query)

    def direct_around(
        self, user: str, peer: str, rid: tuple[str, int]
    ) -> tuple[list[Record], bool]:
        return self.around(self.conversation(user, peer), rid)

    def set_block(self, user: str, peer: Any, on: Any) -> Record:
        """``user`` blocks (or unblocks) direct messages from ``peer``."""
        if not isinstance(on, bool):
            raise ChatError("bad_request", "block needs on=true or on=false")
        peer = self.direct_peer(user, peer)
        me, other = self._person(user), self._person(peer)
        body = {
            "user": user,
            "user_id": me,
            "setting": direct.BLOCK,
            "peer": peer,
            "peer_id": other,
            "on": on,
        }
        return self._make_setting(body, me, other)

    def _make_setting(self, body: dict[str, Any], person: str, peer: str | None = None) -> Record:
        """A person's setting, stamped after the one it replaces (from a
        router whose clock ran ahead, perhaps, or written by the previous
        release): the latest wins, and what the person just chose must be
        the latest."""
        bucket = self._settings.get(person)
        if bucket is None:
            bucket = self._settings[person] = TokenBucket(SETTINGS_PER_SECOND, SETTINGS_BURST)
        if not bucket.take(1, self.monotonic()):
            raise ChatError("rate_limited", "Too many changes; wait a moment.")
        current = self._setting(body["setting"], person, peer)
        if current is not None:
            self.clock.observe(current.hlc, int(self.wall() * 1000))
        record = self._make_record(RecordKind.SETTING, 0, body)
        self._show_setting(record)
        return record

    def attention(self, user: str) -> dict[str, bool]:
        """Whether ``user``'s pages beep and buzz (off until they say so)."""
        return self._attention(self.accounts.person(user) or "")

    def _attention(self, person: str) -> dict[str, bool]:
        """``attention`` of a person (an identity; "" for nobody known here)."""
        record = self._setting(direct.ATTENTION, person) if person else None
        body: Mapping[str, Any] = record.body if record is not None else {}
        return {"sound": body.get("sound") is True, "vibrate": body.get("vibrate") is True}

    def attention_frame(self, user: str) -> dict[str, Any]:
        return {"type": "attention", **self.attention(user)}

    def set_attention(self, user: str, sound: Any, vibrate: Any) -> Record:
        """Remember on every router whether ``user``'s pages beep and buzz."""
        if not isinstance(sound, bool) or not isinstance(vibrate, bool):
            raise ChatError("bad_request", "attention needs sound and vibrate, true or false")
        me = self._person(user)
        body = {
            "user": user,
            "user_id": me,
            "setting": direct.ATTENTION,
            "sound": sound,
            "vibrate": vibrate,
        }
        return self._make_setting(body, me)

    def direct_read_marker(self, user: str, peer: str) -> int:
        me, other = self.accounts.person(user), self.accounts.person(peer)
        return self._direct_read(me, other) if me is not None and other is not None else 0

    def _direct_read(self, person: str, peer: str) -> int:
        """How far ``person`` has read her conversation with ``peer``
        (identities): her latest marker, or the one not yet written."""
        pending = self._dm_reads.pending.get((person, peer))
        record = self._setting(direct.DM_READ, person, peer)
        stored = parse_hlc_or_zero(record.body.get("upto")) if record is not None else 0
        return max(stored, pending[2] if pending else 0)

    def mark_direct_read(self, user: str, peer: str, upto: int) -> bool:
        """As ``mark_read``, for a conversation: a SETTING record at most
        every ``READ_RECORD_INTERVAL``."""
        conversation = self.conversation(user, peer)
        last = self.store.last_message(conversation)
        if last is None:
            return False
        upto = min(upto, last.hlc)
        key = (self._person(user), self._person(peer))
        if upto <= self._direct_read(*key):
            return False
        self._dm_reads.mark(key, (user, peer, upto))
        self.room_lists.changed()
        return True

    def _write_direct_read(
        self, key: tuple[str, str], pending: tuple[str, str, int]
    ) -> Record | None:
        """Write a conversation's read marker (``key``: two identities)."""
        user, peer, upto = pending
        if upto <= self._direct_read(*key):
            return None
        body = {
            "user": user,
            "user_id": key[0],
            "setting": direct.DM_READ,
            "peer": peer,
            "peer_id": key[1],
            "upto": upto,
        }
        return self._make_record(RecordKind.SETTING, 0, body)

    def conversations(self, user: str) -> list[dict[str, Any]]:
        """``user``'s direct conversations, newest first: the other person,
        unread messages, the last message's preview."""
        since = max(self.joined(user), 0)
        me = self.accounts.person(user)
        if me is None:
            return []
        shown = []
        mine = self._conversations_of.get(me, set())
        for key in list(mine):
            last = self.store.last_message(key)
            if last is None or not isinstance(key, tuple):  # expired: forgotten until new
                mine.discard(key)
                continue
            other = direct.other_identity(key, me)
            peer = self.accounts.current_name(other) or _text_field(
                last.body, "to" if last.body.get("from_id") == me else "from"
            )
            mark = max(since, self._direct_read(me, other))
            unread = 0
            for record in self.store.after(key, mark):
                if record.body.get("from_id") != me:
                    unread += 1
                    if unread >= UNREAD_MAX:
                        break
            shown.append((last.order_key, peer, other, unread, last))
        shown.sort(key=lambda t: t[0], reverse=True)
        return [
            {
                "peer": peer,
                "unread": unread,
                "blocked": self.blocks(me, other),
                "last": {
                    "author": _text_field(last.body, "from"),
                    "text": preview(_text_field(last.body, "text")),
                    "time": iso_utc(shown_time_ms(last)),
                },
            }
            for _, peer, other, unread, last in shown[: direct.CONVERSATIONS_SHOWN]
        ]

    # -- presence ------------------------------------------------------------

    def presence(self, room: int) -> list[dict[str, str]]:
        """Who is online in a room: here and, with the mesh, on other routers."""
        users = [(u, self.node_name) for u in self.hub.users(room)]
        users += self.mesh.presence(room)
        return [{"user": u, "node": n} for u, n in sorted(set(users))]

    def presence_changed(self, room: int) -> None:
        """Tell a room's pages who is online (here or on other routers)."""
        self.hub.broadcast(room, {"type": "presence", "users": self.presence(room)})
        self.room_lists.changed()

    def online(self) -> int:
        """How many people are online in any room, here or on other routers."""
        users = {name_key(u["user"]) for n in range(1, self.rooms + 1) for u in self.presence(n)}
        return len(users)

    def local_presence_changed(self, room: int) -> None:
        self.presence_changed(room)
        self.mesh.set_presence({n: self.hub.users(n) for n in range(1, self.rooms + 1)})

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_name": self.node_name,
            "rooms": {str(n): self.store.count(n) for n in range(1, self.rooms + 1)},
            "accounts": len(self.accounts),
            "clients": self.hub.clients(),
            "vector": self.store.vector.as_dict(),
            "hlc": self.clock.last,
            "store": {
                "skipped_lines": self.store.skipped_lines,
                "torn_bytes": self.store.torn_bytes,
                # messages held as records, and as columns read from the logs (node/cold.py)
                "as_records": len(self.store.held.records),
                "as_columns": self.store.held.in_columns(),
                "column_misses": self.store.cold_misses,
                "gone": self.store.gone_counts(),  # since start, by reason (node/horizons.py)
                "refused": dict(self.refused),
            },
            "mesh": self.mesh.status(),
        }
