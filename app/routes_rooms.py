"""The room list, the room page and its WebSocket.

A WebSocket upgrade is decided *before* the handshake: gevent-websocket
answers 101 before calling the app, so the server (app/server.py) is given
``upgrade_check`` and its handler (app/web.py ``ChatHandler``) routes a
refused upgrade (no session, or an ``Origin`` that is not this host:
cross-site WebSocket hijacking) to the plain WSGI app, which answers 403.

A socket's frames are bounded: a size per frame (app/hub.py), a rate per
socket (``FRAMES_PER_SECOND``, on the monotonic clock), and ids and client
ids of bounded length.  The first frame a page gets is ``hello``: who it is
(and the user's name key, so the page tells "mine" and mentions as the
server does), the page size of the history and the rule for a name.

The rooms page has its own socket, ``/ws/rooms`` (same Origin and session
checks): it sends only ``attention`` settings and gets ``rooms`` frames,
coalesced (app/roomlist.py).

Direct messages (app/direct.py): ``/dm/<peer>`` is the page of the
logged-in user's conversation with ``peer`` and ``/ws/dm/<peer>`` its
socket.  The conversation is always the logged-in user's and the peer's:
no address names anyone else's, and an id of someone else's direct
message is unknown on every socket (``not_found``); ``/message/<id>``
leads to a message's place, and answers 404 to anyone but its two people.

A ``send`` whose ``client_id`` this user already stored is answered with
the first ack (app/resend.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import bottle
import gevent
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError

from app.accounts import USERNAME_RE, name_key
from app.chat import (
    HISTORY_LIMIT,
    ROOM_NAME_MAX,
    ROOM_TOPIC_MAX,
    Chat,
    ChatError,
    error_frame,
    is_utf8,
    message_frame,
)
from app.direct import other_identity
from app.hub import BoundedWebSocket, Client, FrameFlood, serve_page
from app.i18n import Language
from app.moderation import ACTIONS
from app.sessions import Session, Sessions
from app.site import SESSION_COOKIE, Site, cookie
from node.record import Record, RecordKind, parse_id
from node.store import parse_hlc
from node.sync import TokenBucket

log = logging.getLogger(__name__)

WS_PATH_PREFIX = "/ws/"
ROOM_LIST_WS = WS_PATH_PREFIX + "rooms"
# A message id "<16 hex digits>:<seq up to 2^32-1>": 27 characters.
MAX_ID_CHARS = 16 + 1 + 10
CLIENT_ID_MAX = 64  # the page's own id for a message it sends, echoed in the ack
# Frames per page: the page sends one per message typed, scroll-back asked or
# room read (the message rate limit, 2/s, applies on top); the browser itself
# sends no pings, only a close at the end.  Every frame counts: control
# frames, continuations, empty ones.  A socket that sends more is not a page:
# it is closed (1008) rather than served ahead of everyone else.
FRAMES_PER_SECOND = 20.0
FRAME_BURST = 60
OLDER_DEFAULT = 50  # messages a scroll-back frame without a limit gets


class RoomRoutes:
    def __init__(self, site: Site) -> None:
        self.site, self.chat = site, site.chat

    def install(self, app: bottle.Bottle) -> None:
        app.get("/", callback=self.index)
        app.get("/room/<n>", callback=self.room)
        app.get(ROOM_LIST_WS, callback=self.room_list_socket)  # a static route: matched first
        app.get(WS_PATH_PREFIX + "<n>", callback=self.websocket)
        app.get("/dm", callback=self.direct_to)
        app.get("/dm/<peer>", callback=self.direct_page)
        app.get(WS_PATH_PREFIX + "dm/<peer>", callback=self.direct_socket)
        app.get("/message/<mid>", callback=self.message_link)

    def require_room(self, n: str) -> int:
        # isascii: "²".isdigit() is true, and int("²") raises.
        if not (n.isascii() and n.isdigit() and len(n) <= 3) or not 1 <= int(n) <= self.chat.rooms:
            bottle.abort(404, "There is no such room.")
        return int(n)

    def index(self) -> str:
        s = self.site.logged_in()
        rooms = self.chat.room_list(s.user)
        return self.site.render(
            "rooms",
            user=s.user,
            rooms=rooms,
            direct=self.chat.conversations(s.user),
            attention=self.chat.attention(s.user),
            csrf=s.csrf,
        )

    def direct_to(self) -> None:
        """The rooms page's "Write to" form: to that person's conversation."""
        self.site.logged_in()
        to = bottle.request.query.getunicode("to") or ""
        if not USERNAME_RE.fullmatch(to.strip()):
            bottle.abort(404, "There is no such person to write to.")
        bottle.redirect(f"/dm/{to.strip()}", 303)

    def direct_page(self, peer: str) -> str:
        s = self.site.logged_in()
        try:
            name = self.chat.direct_peer(s.user, peer)
        except ChatError:
            bottle.abort(404, "There is no such person to write to.")
        return self.site.render(
            "dm",
            user=s.user,
            peer=name,
            csrf=s.csrf,
            blocked=self.chat.is_blocked(name, by=s.user),
            attention=self.chat.attention(s.user),
            # Pictures and files, for these two only (app/attachments.py); 0: none here.
            max_upload=self.chat.blobs.max_upload if self.chat.blobs else 0,
        )

    def direct_socket(self, peer: str) -> str:
        upgraded = self._upgraded()
        if upgraded is None:
            return ""
        ws, s = upgraded
        lang = self.site.language()  # the upgrade request's Accept-Language
        try:
            name = self.chat.direct_peer(s.user, peer)
        except ChatError as e:  # the socket is open already: say why, and close
            client = Client(ws, s.user, 0, lang)
            client.send(error_frame(e, lang))
            client.close(1008)
            client.flush()
            return ""
        after = bottle.request.query.get("after")
        serve_direct_socket(self.chat, ws, s.user, name, after, lang, s.account)
        return ""

    def message_link(self, mid: str) -> None:
        """A message's place: its room, or one's own conversation; 404 for
        an id that is not held, or someone else's direct message."""
        s = self.site.logged_in()
        rid = parse_message_id(mid)
        record = self.chat.store.get(*rid) if rid else None
        if record is not None and record.kind == RecordKind.MESSAGE:
            bottle.redirect(f"/room/{record.room}#m={record.id}", 303)
        if record is not None and record.kind == RecordKind.DIRECT and rid is not None:
            me, key = self.chat.accounts.person(s.user), self.chat.store.conversation_of(*rid)
            if me is not None and isinstance(key, tuple) and me in key[1:]:
                other = self.chat.accounts.current_name(other_identity(key, me))
                if other:
                    bottle.redirect(f"/dm/{other}#m={record.id}", 303)
        bottle.abort(404, "There is no such message.")

    def room(self, n: str) -> str:
        room = self.require_room(n)
        s = self.site.logged_in()
        name, topic = self.chat.moderation.room_name(room)
        return self.site.render(
            "room",
            user=s.user,
            room=room,
            rooms=self.chat.rooms,
            csrf=s.csrf,
            room_name=name,
            topic=topic,
            room_name_max=ROOM_NAME_MAX,
            room_topic_max=ROOM_TOPIC_MAX,
            # Pictures and files (static/attach.js); 0: this router takes none.
            max_upload=self.chat.blobs.max_upload if self.chat.blobs else 0,
        )

    def _upgraded(self) -> tuple[BoundedWebSocket, Session] | None:
        """The request's WebSocket and its session; a 4xx for a plain request,
        None (closed) if the session ended between the check and the upgrade."""
        env = bottle.request.environ
        ws = env.get("wsgi.websocket")
        if ws is None:
            if env.get("cc.upgrade_refused"):
                bottle.abort(403, "Log in first, from this router's own page.")
            bottle.abort(400, "This address takes WebSocket connections only.")
        s = self.site.session()
        if s is None:
            ws.close(1008)
            return None
        return ws, s

    def websocket(self, n: str) -> str:
        room = self.require_room(n)
        upgraded = self._upgraded()
        if upgraded is not None:
            ws, s = upgraded
            after, lang = bottle.request.query.get("after"), self.site.language()
            serve_socket(self.chat, ws, s.user, room, after, lang, s.account)
        return ""

    def room_list_socket(self) -> str:
        upgraded = self._upgraded()
        if upgraded is not None:
            ws, s = upgraded
            serve_room_list(self.chat, ws, s.user, self.site.language(), s.account)
        return ""


def origin_matches_host(environ: dict[str, Any]) -> bool:
    """True if the Origin header names this very host (and port)."""
    origin, host = environ.get("HTTP_ORIGIN"), environ.get("HTTP_HOST")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def upgrade_check(chat: Chat, sessions: Sessions) -> Callable[[dict[str, Any]], bool]:
    """Whether a request may become a WebSocket: from this router's own
    page, by a session whose account owns its name and is not banned."""

    def allow_upgrade(environ: dict[str, Any]) -> bool:
        if not origin_matches_host(environ):
            return False
        s = sessions.get(cookie(environ, SESSION_COOKIE), chat.wall())
        return (
            s is not None
            and chat.accounts.is_owner(s.account, s.user)
            and not chat.moderation.is_banned(s.user)
        )

    return allow_upgrade


def parse_message_id(text: Any) -> tuple[str, int] | None:
    """A message id from a page; None for anything else, never an exception."""
    if not isinstance(text, str) or len(text) > MAX_ID_CHARS or not text.isascii():
        return None  # node.record.parse_id would meet int("²") or 5,000 digits
    return parse_id(text)


def hello(chat: Chat, user: str, room: int) -> dict[str, Any]:
    """The first frame a page gets."""
    return {
        "type": "hello",
        "user": user,
        "key": name_key(user),  # the page compares names by this, as the server does
        "name_rule": USERNAME_RE.pattern,  # what a name (and a mention's) may be
        "history_page": HISTORY_LIMIT,  # fewer in a reset history: it is all there is
        "room": room,
        "node": chat.node_name,
        "node_id": chat.node_id,
        "admin": chat.moderation.is_admin(user),
        "read": str(max(chat.joined(user), chat.read_marker(user, room))),
        "attention": chat.attention(user),
    }


def serve_socket(
    chat: Chat,
    ws: BoundedWebSocket,
    user: str,
    room: int,
    after: str | None,
    lang: Language | None = None,
    account: str | None = None,
) -> None:
    """One page's WebSocket (opened by ``account``'s session): hello,
    history, then frames until it closes; error frames in ``lang``
    (default English)."""
    client = Client(ws, user, room, lang, account)
    client.send(hello(chat, user, room))
    records, reset = chat.history(room, parse_message_id(after))
    # No greenlet switch from here to join(): nothing can slip between the
    # history and the live frames.
    send_history(chat, client, records, reset)
    chat.delivery.replay(client)
    if any(chat.moderation.room_name(room)):  # renamed since the page was served, perhaps
        client.send(chat.room_name_frame(room))
    if not chat.hub.join(client):  # a change is broadcast to the room, this client too
        client.send({"type": "presence", "users": chat.presence(room)})
    read_frames(chat, client, ws, partial(handle_frame, lang=lang), partial(chat.hub.leave, client))


# What ends a socket's reading, and the close code each gets.
_CLOSE_CODES: tuple[tuple[type[BaseException], int | None], ...] = (
    (FrameFlood, 1008),
    (FrameTooLargeException, 1009),  # or TooManyFragments
    (UnicodeError, 1007),
    (ProtocolError, 1002),
    (WebSocketError, None),  # gone: nothing to say
    (OSError, None),
)
_CLOSE_ERRORS = tuple(kind for kind, _ in _CLOSE_CODES)


def send_history(
    chat: Chat, client: Client, records: list[Record], reset: bool, key: Hashable | None = None
) -> None:
    """A ``history`` frame of ``records``, with the last arrival in the
    client's room or, given its ``key``, in a conversation."""
    client.send(
        {
            "type": "history",
            "messages": [message_frame(r) for r in records],
            "last": chat.store.last_arrival(client.room if key is None else key),
            "reset": reset,
        }
    )


def serve_room_list(
    chat: Chat,
    ws: BoundedWebSocket,
    user: str,
    lang: Language | None = None,
    account: str | None = None,
) -> None:
    """The rooms page's WebSocket: ``rooms`` frames until it closes."""
    client = Client(ws, user, 0, lang, account)
    if not chat.room_lists.join(client):
        client.flush()
        return
    read_frames(
        chat, client, ws, partial(_listen_only, lang=lang), partial(chat.room_lists.leave, client)
    )


def _listen_only(
    chat: Chat, client: Client, text: str | bytes | bytearray, lang: Language | None = None
) -> None:
    """The rooms page's socket takes one kind of frame: ``attention``."""
    try:
        frame = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        frame = None
    if isinstance(frame, dict) and frame.get("type") == "attention":
        try:
            receive_attention(chat, client, frame)
            client.send(chat.attention_frame(client.user))  # the list's socket is no hub page
        except ChatError as e:
            client.send(error_frame(e, lang))
        return
    client.send({"type": "error", "code": "bad_request", "message": "This socket only listens."})


def read_frames(
    chat: Chat,
    client: Client,
    ws: BoundedWebSocket,
    handle: Callable[[Chat, Client, str | bytes | bytearray], None] | None = None,
    on_end: Callable[[], None] | None = None,
) -> None:
    """Frames until the page closes the socket or breaks a bound; each
    goes to ``handle`` (default ``handle_frame``); then ``on_end()``, and the
    client's outbox is flushed.

    Returns at the end, or as soon as the page is idle: an idle page is
    parked, and its next frames are read and handled in a greenlet started
    when they arrive (app/hub.py ``Page``)."""
    handle = handle_frame if handle is None else handle
    frames = TokenBucket(FRAMES_PER_SECOND, FRAME_BURST)

    def take_frame() -> bool:
        return frames.take(1, chat.monotonic())

    def step() -> bool:
        """One message read and answered; False: the socket ends."""
        if client.closed:
            return False
        try:
            text = ws.read_message(take_frame)  # yields after every frame
        except _CLOSE_ERRORS as e:
            _close_for(client, e)
            return False
        if text is None:  # the page closed the socket
            return False
        handle(chat, client, text)
        gevent.sleep(0)  # a page with frames queued up takes turns with the others
        return not client.closed

    def end() -> None:
        try:
            if on_end is not None:
                on_end()
        finally:
            client.flush()

    serve_page(ws, step, end)


def _close_for(client: Client, error: BaseException) -> None:
    code = next(code for kind, code in _CLOSE_CODES if isinstance(error, kind))
    if isinstance(error, FrameFlood):
        log.info("closing %s's socket in room %d: frame flood", client.user, client.room)
    if code is not None:
        client.close(code)


def parse_frame(text: str | bytes | bytearray) -> dict[str, Any]:
    """A page's frame as a JSON object; ChatError ``bad_request`` otherwise."""
    if not isinstance(text, str):
        raise ChatError("bad_request", "frames are JSON text, not binary")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested deep
        raise ChatError("bad_request", "frames are JSON objects") from None
    if not isinstance(frame, dict):
        raise ChatError("bad_request", "frames are JSON objects")
    return frame


def handle_frame(
    chat: Chat, client: Client, text: str | bytes | bytearray, lang: Language | None = None
) -> None:
    """One frame from a page; problems go back as error frames (in ``lang``)."""
    frame: Any = None
    try:
        frame = parse_frame(text)
        kind = frame.get("type")
        if kind == "send":
            receive_send(chat, client, frame)
        elif kind == "older":
            receive_older(chat, client, frame)
        elif kind == "read":
            receive_read(chat, client, frame)
        elif isinstance(kind, str) and kind in _RECEIVERS:  # a list is no key
            _RECEIVERS[kind](chat, client, frame)
        elif kind in ACTIONS:  # the server checks the rights, whatever the page shows
            chat.moderate(client.user, client.room, kind, frame.get("id", frame.get("user")))
        else:
            raise ChatError("bad_request", f"unknown frame type {str(kind)[:32]!r}")
    except ChatError as e:
        client.send(error_frame(e, lang, **_echo_client_id(frame)))


def _valid_client_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 1 <= len(value) <= CLIENT_ID_MAX and is_utf8(value)


def _echo_client_id(frame: Any) -> dict[str, str]:
    if isinstance(frame, dict) and _valid_client_id(frame.get("client_id")):
        return {"client_id": frame["client_id"]}
    return {}


def _client_id(frame: dict[str, Any]) -> str:
    """A ``send`` frame's ``client_id``; ChatError ``bad_request`` if it is none."""
    client_id = frame.get("client_id")
    if not _valid_client_id(client_id):
        raise ChatError(
            "bad_request", f"client_id must be a string of 1 to {CLIENT_ID_MAX} characters"
        )
    return client_id


def _ack(client: Client, client_id: str, mid: str) -> None:
    client.send({"type": "ack", "client_id": client_id, "id": mid})


def receive_send(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    client_id = _client_id(frame)
    first = chat.first_ack(client.user, client.room, client_id)
    if first is not None:  # a resend after a lost ack: stored already
        _ack(client, client_id, first)
        return
    # The ack goes first into this client's outbox, so the page learns the id
    # before (or with) the message's own fan-out frame.
    chat.post(
        client.user,
        client.room,
        frame.get("text"),
        on_stored=lambda r: _ack(client, client_id, r.id),
        client_id=client_id,
        blob=frame.get("blob"),  # a picture or file uploaded first (app/routes_blobs.py)
        thumb=frame.get("thumb"),
    )


def _id_and_limit(frame: dict[str, Any], kind: str, key: str) -> tuple[tuple[str, int], int]:
    """The message id under ``key`` of an ``older`` or ``newer`` frame, and
    its ``limit`` (``OLDER_DEFAULT`` if none); ChatError ``bad_request`` otherwise."""
    rid, limit = parse_message_id(frame.get(key)), frame.get("limit", OLDER_DEFAULT)
    if rid is None or not isinstance(limit, int) or isinstance(limit, bool):
        raise ChatError("bad_request", f"{kind} needs {key}=<id> and an integer limit")
    return rid, limit


def _send_older(client: Client, before: str, records: list[Record]) -> None:
    messages = [message_frame(r) for r in records]
    client.send({"type": "older", "before": before, "messages": messages})


def _upto(frame: dict[str, Any]) -> int:
    """A ``read`` frame's ``upto``; ChatError ``bad_request`` if it is no HLC."""
    upto = parse_hlc(frame.get("upto"))
    if upto is None:
        raise ChatError("bad_request", "read needs upto=<hlc>, a decimal string")
    return upto


def receive_older(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    rid, limit = _id_and_limit(frame, "older", "before")
    _send_older(client, frame["before"], chat.older(client.room, rid, limit))


def receive_read(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    chat.mark_read(client.user, client.room, _upto(frame))


def where(chat: Chat, client: Client) -> Hashable:
    """What a socket's page shows: its room, or its person's conversation
    with the other (found from the two names, never from the page)."""
    if client.peer is None:
        return client.room
    return chat.conversation(client.user, client.peer)


def receive_search(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    query = frame.get("q")
    results = chat.search(client.user, where(chat, client), query)
    client.send({"type": "results", "q": query, "results": results})


def receive_around(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    rid = parse_message_id(frame.get("id"))
    if rid is None:
        raise ChatError("bad_request", "around needs id=<message id>")
    records, more = chat.around(where(chat, client), rid)
    client.send(
        {
            "type": "around",
            "id": frame["id"],
            "messages": [message_frame(r) for r in records],
            "more": more,
        }
    )


def receive_newer(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    rid, limit = _id_and_limit(frame, "newer", "after")
    records, more = chat.newer(where(chat, client), rid, limit)
    client.send(
        {
            "type": "newer",
            "after": frame["after"],
            "messages": [message_frame(r) for r in records],
            "more": more,
        }
    )


def receive_latest(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    send_history(chat, client, chat.store.latest(client.room, HISTORY_LIMIT), reset=True)


def receive_name_room(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    chat.name_room(client.user, client.room, frame.get("name"), frame.get("topic", ""))


# Frames beyond sending, reading and moderating: what each is answered with.
_RECEIVERS: dict[str, Callable[[Chat, Client, dict[str, Any]], None]] = {
    "search": receive_search,  # -> results
    "around": receive_around,  # -> around: the page jumps to a message
    "newer": receive_newer,  # -> newer: onwards from there to the latest
    "latest": receive_latest,  # -> history (reset): back from there to the latest
    "name_room": receive_name_room,  # -> room_name, to every page of the room
    "attention": lambda chat, client, frame: receive_attention(chat, client, frame),  # noqa: PLW0108
}


def receive_attention(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    chat.set_attention(client.user, frame.get("sound"), frame.get("vibrate"))


# -- direct messages (app/direct.py) ------------------------------------------------


def direct_hello(chat: Chat, user: str, peer: str) -> dict[str, Any]:
    """The first frame a conversation's page gets."""
    return {
        "type": "hello",
        "user": user,
        "key": name_key(user),
        "peer": peer,
        "name_rule": USERNAME_RE.pattern,
        "admin": False,  # nobody moderates a direct conversation
        "history_page": HISTORY_LIMIT,
        "node": chat.node_name,
        "node_id": chat.node_id,
        "read": str(max(chat.joined(user), chat.direct_read_marker(user, peer))),
        "blocked": chat.is_blocked(peer, by=user),  # I block them
        "blocks_me": chat.is_blocked(user, by=peer),
        "attention": chat.attention(user),
    }


def serve_direct_socket(
    chat: Chat,
    ws: BoundedWebSocket,
    user: str,
    peer: str,
    after: str | None,
    lang: Language | None = None,
    account: str | None = None,
) -> None:
    """A conversation's WebSocket: hello, history, then frames until it closes."""
    client = Client(ws, user, 0, lang, account)
    client.peer = peer
    key = chat.conversation(user, peer)
    client.send(direct_hello(chat, user, peer))
    records, reset = chat.direct_history(user, peer, parse_message_id(after))
    send_history(chat, client, records, reset, key)
    chat.hub.join_topic(key, client)  # no switch since the history: nothing slips between
    read_frames(
        chat,
        client,
        ws,
        partial(handle_direct_frame, lang=lang),
        partial(chat.hub.leave_topic, key, client),
    )


def handle_direct_frame(
    chat: Chat, client: Client, text: str | bytes | bytearray, lang: Language | None = None
) -> None:
    """One frame from a conversation's page; problems go back as error frames (in ``lang``)."""
    frame: Any = None
    try:
        frame = parse_frame(text)
        kind = frame.get("type")
        receiver = _DIRECT_RECEIVERS.get(kind) if isinstance(kind, str) else None
        if receiver is None:
            raise ChatError("bad_request", f"unknown frame type {str(kind)[:32]!r}")
        receiver(chat, client, frame)
    except ChatError as e:
        client.send(error_frame(e, lang, **_echo_client_id(frame)))


def _peer(client: Client) -> str:
    peer = client.peer
    if peer is None:  # our own misuse: only a conversation's socket gets here
        raise RuntimeError("not a conversation's socket")
    return peer


def receive_direct_send(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    client_id = _client_id(frame)
    peer = _peer(client)
    first = chat.first_direct_ack(client.user, peer, client_id)
    if first is not None:  # a resend after a lost ack: stored already
        _ack(client, client_id, first)
        return
    chat.send_direct(
        client.user,
        peer,
        frame.get("text"),
        on_stored=lambda r: _ack(client, client_id, r.id),
        client_id=client_id,
        blob=frame.get("blob"),  # uploaded first (POST /dm/<peer>/upload): for these two only
        thumb=frame.get("thumb"),
    )


def receive_direct_older(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    rid, limit = _id_and_limit(frame, "older", "before")
    _send_older(client, frame["before"], chat.direct_older(client.user, _peer(client), rid, limit))


def receive_direct_read(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    upto = _upto(frame)
    chat.mark_direct_read(client.user, _peer(client), upto)


def receive_direct_latest(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    key = chat.conversation(client.user, _peer(client))
    send_history(chat, client, chat.store.latest(key, HISTORY_LIMIT), reset=True, key=key)


def receive_block(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    peer = _peer(client)
    chat.set_block(client.user, peer, frame.get("on"))
    client.send({"type": "blocked", "peer": peer, "on": chat.is_blocked(peer, by=client.user)})


# What a conversation's page may send, and what each is answered with.
_DIRECT_RECEIVERS: dict[str, Callable[[Chat, Client, dict[str, Any]], None]] = {
    "send": receive_direct_send,  # -> ack, then message to both people's pages
    "older": receive_direct_older,  # -> older
    "read": receive_direct_read,  # -> nothing; the room list's counts move
    "search": receive_search,  # -> results (in this conversation: ``where``)
    "around": receive_around,  # -> around
    "block": receive_block,  # -> blocked
    "attention": receive_attention,  # -> attention, to every page of the person
    "newer": receive_newer,  # -> newer
    "latest": receive_direct_latest,  # -> history (reset)
}
