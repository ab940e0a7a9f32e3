"""HTTP routes and the WebSocket endpoint.

Routes stay short: validate, call one ``Chat`` method, render.  Every response
carries the security headers (a Content-Security-Policy that forbids inline
script and anything from outside the router).  Forms carry a CSRF token: the
session's own once logged in, a double-submit cookie before.

A WebSocket upgrade is checked *before* the handshake (``ChatHandler``):
gevent-websocket answers 101 before calling the app, so a refused upgrade
(no session, or an ``Origin`` that is not this host: cross-site WebSocket
hijacking) is routed to the plain WSGI app instead, which answers 403.

Failed logins are throttled per client address and per username, and new
accounts per client address (app/throttle.py): HTTP 429 with the wait.  An
attempt is counted before its password is hashed and corrected after, and
attempts in flight are bounded, so parallel requests cannot slip past.  Every
size a client chooses is bounded before it is read: the headers (431, and a
deadline: ``ChatHandler``), the form body, the query string's message id,
each WebSocket frame, the frames per second.  Redirects carry a relative
``Location`` (``see_other``), never one built from Host or X-Forwarded-Host.
"""

from __future__ import annotations

import hmac
import http.client
import io
import json
import logging
import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import bottle
import gevent
from gevent import pywsgi
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.handler import WebSocketHandler

from app.accounts import AccountError, WrongPassword
from app.chat import Chat, ChatError, TokenBucket, is_utf8, message_frame
from app.config import HEADER_TIMEOUT, IDLE_TIMEOUT
from app.hub import BoundedWebSocket, Client, FrameFlood
from app.moderation import ACTIONS
from app.sessions import Session, Sessions
from app.throttle import LoginThrottle, RegistrationThrottle, Verdict, client_key
from node.record import parse_id
from node.store import parse_hlc

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
SESSION_COOKIE = "cc_session"
CSRF_COOKIE = "cc_csrf"
# Form bodies are a name and two passwords; anything larger is not ours.
MAX_FORM_BYTES = 4096
FORM_TYPE = "application/x-www-form-urlencoded"  # what our forms send; nothing else is read
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
COOKIE_MAX_AGE = 30 * 24 * 3600
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
WS_PATH_PREFIX = "/ws/"
# What phones fetch to learn whether the Wi-Fi reaches the internet: Android
# (/generate_204, /gen_204), Apple (/hotspot-detect.html,
# /library/test/success.html) and Windows (/connecttest.txt, /ncsi.txt).
# With --captive-portal they get a redirect to the chat instead of the answer
# they expect, so the phone opens its sign-in window on our login page.
CAPTIVE_PROBES = (
    "/generate_204",
    "/gen_204",
    "/hotspot-detect.html",
    "/library/test/success.html",
    "/connecttest.txt",
    "/ncsi.txt",
)
MANIFEST_TYPE = "application/manifest+json"
# A form whose record the store could not write (a full disk, no descriptors):
# the router is at fault, not the form, and trying again later may work.
STORE_FAILED_STATUS = 503
# All header lines of one request together.  A browser's request with our
# cookies is under 2 KiB; 16 KiB leaves room for long user agents and
# Accept-Language lists, and is all a request can hold before it is read in
# full: a request over it is answered 431 and its connection closed.
MAX_HEADER_BYTES = 16 * 1024


def _plain_response(status: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; "
        f"charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


HEADERS_TOO_LARGE = _plain_response(
    "431 Request Header Fields Too Large",
    f"The request's headers are over {MAX_HEADER_BYTES} bytes: clear this site's cookies.",
)
HEADERS_TOO_SLOW = _plain_response("408 Request Timeout", "The request's headers came too slowly.")


class HeadersTooLarge(ValueError):
    """A request whose header lines are over ``MAX_HEADER_BYTES`` (or 100 lines)."""


class HeadersTooSlow(TimeoutError):
    """The request line and headers did not arrive within the header timeout.

    A TimeoutError (an OSError): while the request line is read, gevent
    closes the connection quietly, as for any socket error."""


def read_headers(rfile: BinaryIO, *_: Any) -> pywsgi.OldMessage:
    """A request's header block, read to at most ``MAX_HEADER_BYTES`` (gevent's
    own reader takes 100 lines of 64 KiB each and holds them all)."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = rfile.readline(MAX_HEADER_BYTES - size + 1)
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"headers over {MAX_HEADER_BYTES} bytes")
        if line in (b"\r\n", b"\n", b""):
            break
        lines.append(line)
    try:
        return http.client.parse_headers(
            io.BytesIO(b"".join(lines) + b"\r\n"), _class=pywsgi.OldMessage
        )
    except http.client.HTTPException as e:  # over 100 header lines
        raise HeadersTooLarge(str(e)) from None


def redirect_to(location: str, status: int = 303) -> NoReturn:
    """Redirect with ``Location`` exactly as given.

    bottle.redirect builds an absolute URL from the request's Host or
    X-Forwarded-Host, both the client's to choose; ours are paths on this
    router (``see_other``), or a captive-portal probe's URL naming this
    router's own address.  The response's cookies go with it.
    """
    res = bottle.response.copy(cls=bottle.HTTPResponse)
    res.status = status
    res.body = ""
    res.set_header("Location", location)
    raise res


def see_other(path: str) -> NoReturn:
    """303 to a path on this router: a relative ``Location``."""
    redirect_to(path, 303)


def _cookie(environ: dict[str, Any], name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except CookieError:  # a mangled header is just "no cookie"
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def origin_matches_host(environ: dict[str, Any]) -> bool:
    """True if the Origin header names this very host (and port)."""
    origin, host = environ.get("HTTP_ORIGIN"), environ.get("HTTP_HOST")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class ChatHandler(WebSocketHandler):
    """Upgrades only WebSockets the app allows; the rest get plain HTTP.

    Bounds what a connection costs before it is a request: an idle
    keep-alive connection is closed after the idle timeout; once a request's
    first byte is in, its line and headers must arrive within the header
    timeout (408, or a quiet close mid request line) and hold at most
    ``MAX_HEADER_BYTES`` (431).  An upgraded WebSocket has no timeout: it
    lives as long as its page.
    """

    MessageClass = staticmethod(read_headers)
    _deadline: gevent.Timeout | None = None

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self._stop_deadline()

    def read_requestline(self) -> str:
        self.socket.settimeout(getattr(self.server, "idle_timeout", IDLE_TIMEOUT))
        if not self.rfile.peek(1):  # the keep-alive wait; socket.timeout: closed
            return ""
        self._deadline = gevent.Timeout.start_new(
            getattr(self.server, "header_timeout", HEADER_TIMEOUT), HeadersTooSlow
        )
        return super().read_requestline()

    def read_request(self, raw_requestline: str) -> bool:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_deadline()  # the app's own time is not the headers'

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        # Counted by the server (app/server.py ChatServer.refused); the
        # access log has the line.
        if isinstance(ex, HeadersTooLarge):
            self._count("headers_too_large")
            return "431", HEADERS_TOO_LARGE
        if isinstance(ex, HeadersTooSlow):
            self._count("headers_too_slow")
            return "408", HEADERS_TOO_SLOW
        return super()._handle_client_error(ex)

    def _count(self, reason: str) -> None:
        refused = getattr(self.server, "refused", None)
        if refused is not None:
            refused[reason] += 1

    def run_application(self) -> None:  # type: ignore[override]
        env = self.environ
        if env.get("PATH_INFO", "").startswith(WS_PATH_PREFIX):
            allow = getattr(self.server, "allow_upgrade", None)
            if allow is None or not allow(env):
                env["cc.upgrade_refused"] = True
                return super(WebSocketHandler, self).run_application()
        super().run_application()

    def get_environ(self) -> dict[str, Any]:  # type: ignore[override]
        env = super().get_environ()
        # The address the phone reached us at (after any DNAT): where a
        # captive-portal probe, sent to another host name, is redirected.
        try:
            host, port = self.socket.getsockname()[:2]
        except (OSError, AttributeError, TypeError, ValueError):
            return env
        env["cc.local_address"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return env

    def run_websocket(self) -> None:  # type: ignore[override]
        # One writer per socket and a bounded frame size (app/hub.py).
        self.websocket.__class__ = BoundedWebSocket
        self.socket.settimeout(None)  # a page's socket may be quiet for hours
        super().run_websocket()


def parse_message_id(text: Any) -> tuple[str, int] | None:
    """A message id from a page; None for anything else, never an exception."""
    if not isinstance(text, str) or len(text) > MAX_ID_CHARS or not text.isascii():
        return None  # node.record.parse_id would meet int("²") or 5,000 digits
    return parse_id(text)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def build_app(
    chat: Chat,
    sessions: Sessions,
    *,
    captive_portal: bool = False,
    http_refused: Mapping[str, int] | None = None,
) -> bottle.Bottle:
    app = bottle.Bottle()
    logins = LoginThrottle()
    registrations = RegistrationThrottle()
    views = bottle.SimpleTemplate
    lookup = [str(TEMPLATES)]

    def render(view: str, /, **kw: Any) -> str:
        return bottle.template(
            view, template_lookup=lookup, template_adapter=views, node_name=chat.node_name, **kw
        )

    def any_session() -> Session | None:
        """The request's session, even one whose name was taken meanwhile."""
        return sessions.get(bottle.request.get_cookie(SESSION_COOKIE), chat.wall())

    def session() -> Session | None:
        """The request's session if its account still owns its name.

        A session whose account was displaced (another router registered the
        name first, see app/accounts.py) is sent to /rename instead.
        """
        s = any_session()
        if s is not None and chat.moderation.is_banned(s.user):
            return None  # a ban ends every session, on every router
        if s is not None and not chat.accounts.is_owner(s.account, s.user):
            see_other("/rename")
        return s

    def start_session(name: str, account_id: str) -> None:
        sessions.delete(bottle.request.get_cookie(SESSION_COOKIE))
        token = sessions.create(name, account_id, chat.wall())
        bottle.response.set_cookie(
            SESSION_COOKIE, token, httponly=True, samesite="lax", path="/", max_age=COOKIE_MAX_AGE
        )

    def csrf_token() -> str:
        s = any_session()
        if s is not None:
            return s.csrf
        token = bottle.request.get_cookie(CSRF_COOKIE)
        if not token or len(token) > 64:
            token = secrets.token_urlsafe(16)
            bottle.response.set_cookie(
                CSRF_COOKIE, token, httponly=True, samesite="strict", path="/"
            )
        return token

    def client() -> str:
        # The phone's own address: no proxy stands between it and the router,
        # so X-Forwarded-For (which bottle's remote_addr reads) is never used.
        return client_key(bottle.request.environ.get("REMOTE_ADDR"))

    def too_many(view: str, reason: str, verdict: Verdict, **kw: Any) -> str:
        bottle.response.status = 429
        bottle.response.set_header("Retry-After", str(verdict.wait))
        why = "Too many attempts at once" if verdict.busy else reason
        return render(view, error=f"{why}; try again in {plural(verdict.wait, 'second')}.", **kw)

    def check_form() -> bottle.FormsDict:
        request = bottle.request
        # Refused before bottle reads the body: a chunked body has no length
        # to check and bottle would spool all of it to a temporary file.
        if request.chunked or request.content_length < 0:
            bottle.abort(411, "A form needs a Content-Length.")
        if request.content_length > MAX_FORM_BYTES:
            bottle.abort(413, "The form is too large.")
        if request.content_type.split(";")[0].strip() != FORM_TYPE:
            bottle.abort(415, "Forms are sent as " + FORM_TYPE + ".")
        form = bottle.request.forms
        s = any_session()
        expected = s.csrf if s else bottle.request.get_cookie(CSRF_COOKIE)
        given = form.getunicode("csrf") or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            bottle.abort(403, "The form expired or came from another site: reload and try again.")
        return form

    def field(form: bottle.FormsDict, name: str) -> str:
        return form.getunicode(name) or ""

    def require_room(n: str) -> int:
        # isascii: "²".isdigit() is true, and int("²") raises.
        if not (n.isascii() and n.isdigit() and len(n) <= 3) or not 1 <= int(n) <= chat.rooms:
            bottle.abort(404, "There is no such room.")
        return int(n)

    @app.hook("after_request")
    def security_headers() -> None:
        for k, v in SECURITY_HEADERS.items():
            bottle.response.set_header(k, v)

    @app.get("/")
    def index() -> str:
        s = session()
        if s is None:
            see_other("/login")
        return render("rooms", user=s.user, rooms=chat.room_list(s.user), csrf=s.csrf)

    @app.get("/register")
    def register_form() -> str:
        return render("register", error=None, name="", csrf=csrf_token())

    @app.post("/register")
    def register() -> str:
        form = check_form()
        name = field(form, "username").strip()
        address, now = client(), chat.wall()
        with registrations.attempt(address, name, now) as verdict:  # counted before the hash
            if verdict.wait:
                return too_many(
                    "register",
                    "Too many new accounts from this device",
                    verdict,
                    name=name,
                    csrf=csrf_token(),
                )
            try:
                chat.register(name, field(form, "password"), field(form, "confirm"))
            except AccountError as e:
                registrations.refund(address, now)
                bottle.response.status = 409 if "taken" in str(e) else 400
                return render("register", error=str(e), name=name, csrf=csrf_token())
            except ChatError as e:  # the store cannot write: nothing was kept
                registrations.refund(address, now)
                bottle.response.status = STORE_FAILED_STATUS
                return render("register", error=str(e), name=name, csrf=csrf_token())
        return render(
            "login",
            error=None,
            notice="Account created: you can log in now.",
            name=name,
            csrf=csrf_token(),
        )

    @app.get("/login")
    def login_form() -> str:
        if session() is not None:
            see_other("/")
        return render("login", error=None, notice=None, name="", csrf=csrf_token())

    @app.post("/login")
    def login() -> str:
        form = check_form()
        name = field(form, "username").strip()
        address, now = client(), chat.wall()
        with logins.attempt(address, name, now) as verdict:  # a failure until it succeeds
            if verdict.wait:
                return too_many(
                    "login",
                    "Too many failed logins",
                    verdict,
                    notice=None,
                    name=name,
                    csrf=csrf_token(),
                )
            login = chat.login(name, field(form, "password"))
        if login is None:
            bottle.response.status = 401
            return render(
                "login",
                error="Username or password is invalid.",
                notice=None,
                name=name,
                csrf=csrf_token(),
            )
        logins.succeeded(address, name, now)
        if chat.moderation.is_banned(login.account.name):
            bottle.response.status = 403
            return render(
                "login",
                error="This account is banned from the chat.",
                notice=None,
                name=name,
                csrf=csrf_token(),
            )
        start_session(login.account.name, login.account.id)
        see_other("/rename" if login.displaced else "/")
        return ""

    @app.get("/rename")
    def rename_form() -> str:
        s = any_session()
        if s is None or chat.accounts.is_owner(s.account, s.user):
            see_other("/")
        return render("rename", error=None, old=s.user, name="", csrf=s.csrf)

    @app.post("/rename")
    def rename() -> str:
        form = check_form()
        s = any_session()
        account = chat.accounts.by_id(s.account) if s else None
        if s is None or account is None or chat.accounts.is_owner(s.account, s.user):
            see_other("/")
        name = field(form, "username").strip()
        try:
            renamed = chat.rename(account, name)
        except AccountError as e:
            bottle.response.status = 409 if "taken" in str(e) else 400
            return render("rename", error=str(e), old=s.user, name=name, csrf=s.csrf)
        except ChatError as e:  # the store cannot write: nothing was kept
            bottle.response.status = STORE_FAILED_STATUS
            return render("rename", error=str(e), old=s.user, name=name, csrf=s.csrf)
        start_session(renamed.name, renamed.id)
        see_other("/")
        return ""

    @app.get("/password")
    def password_form() -> str:
        s = session()
        if s is None:
            see_other("/login")
        return render("password", error=None, notice=None, csrf=s.csrf)

    @app.post("/password")
    def change_password() -> str:
        form = check_form()
        s = session()
        if s is None:
            see_other("/login")
        address, now = client(), chat.wall()
        # Counted like a login, before the hash: a stolen session must not
        # become a password guesser.
        with logins.attempt(address, s.user, now) as verdict:
            if verdict.wait:
                return too_many(
                    "password", "Too many wrong passwords", verdict, notice=None, csrf=s.csrf
                )
            try:
                chat.change_password(
                    s.account,
                    s.user,
                    field(form, "current"),
                    field(form, "password"),
                    field(form, "confirm"),
                )
            except WrongPassword as e:
                bottle.response.status = 400
                return render("password", error=str(e), notice=None, csrf=s.csrf)
            except AccountError as e:  # the current password was right, the new one is not
                logins.succeeded(address, s.user, now)
                bottle.response.status = 400
                return render("password", error=str(e), notice=None, csrf=s.csrf)
            except ChatError as e:  # the store cannot write: the old password stays
                logins.succeeded(address, s.user, now)
                bottle.response.status = STORE_FAILED_STATUS
                return render("password", error=str(e), notice=None, csrf=s.csrf)
        logins.succeeded(address, s.user, now)
        return render(
            "password", error=None, notice="Password changed on every router.", csrf=s.csrf
        )

    @app.post("/logout")
    def logout() -> None:
        check_form()
        sessions.delete(bottle.request.get_cookie(SESSION_COOKIE))
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")
        see_other("/login")

    @app.get("/room/<n>")
    def room(n: str) -> str:
        room_n = require_room(n)
        s = session()
        if s is None:
            see_other("/login")
        return render("room", user=s.user, room=room_n, rooms=chat.rooms, csrf=s.csrf)

    @app.get("/status")
    def status() -> dict[str, Any]:
        # Connections closed unread and requests refused for their headers.
        return {**chat.status(), "http": {"refused": dict(http_refused or {})}}

    @app.get("/static/<path:path>")
    def static(path: str) -> bottle.HTTPResponse:
        if path.endswith(".webmanifest"):  # not in every mimetypes table
            return bottle.static_file(path, root=str(STATIC), mimetype=MANIFEST_TYPE)
        return bottle.static_file(path, root=str(STATIC))

    def captive_probe() -> None:
        env = bottle.request.environ
        here = env.get("cc.local_address") or env.get("HTTP_HOST", "")
        redirect_to(f"http://{here}/login", 302)

    if captive_portal:  # otherwise these are unknown paths: 404
        for probe in CAPTIVE_PROBES:
            app.route(probe, ["GET", "HEAD"], captive_probe)

    @app.get("/ws/<n>")
    def websocket(n: str) -> str:
        room_n = require_room(n)
        env = bottle.request.environ
        ws = env.get("wsgi.websocket")
        if ws is None:
            if env.get("cc.upgrade_refused"):
                bottle.abort(403, "Log in first, from this router's own page.")
            bottle.abort(400, "This address takes WebSocket connections only.")
        s = session()
        if s is None:  # the session ended between the check and the upgrade
            ws.close(1008)
            return ""
        serve_socket(chat, ws, s.user, room_n, bottle.request.query.get("after"))
        return ""

    @app.error(400)
    @app.error(403)
    @app.error(404)
    @app.error(405)
    @app.error(411)
    @app.error(413)
    @app.error(415)
    def error_page(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "text/html; charset=utf-8"
        return render("error", status=err.status_line, message=err.body)

    def allow_upgrade(environ: dict[str, Any]) -> bool:
        if not origin_matches_host(environ):
            return False
        s = sessions.get(_cookie(environ, SESSION_COOKIE), chat.wall())
        return (
            s is not None
            and chat.accounts.is_owner(s.account, s.user)
            and not chat.moderation.is_banned(s.user)
        )

    app.config["cc.allow_upgrade"] = allow_upgrade
    return app


def serve_socket(chat: Chat, ws: BoundedWebSocket, user: str, room: int, after: str | None) -> None:
    """One page's WebSocket: hello, history, then frames until it closes."""
    client = Client(ws, user, room)
    client.send(
        {
            "type": "hello",
            "user": user,
            "room": room,
            "node": chat.node_name,
            "node_id": chat.node_id,
            "admin": chat.moderation.is_admin(user),
            "read": str(max(chat.joined(user), chat.read_marker(user, room))),
        }
    )
    records, reset = chat.history(room, parse_message_id(after))
    # No greenlet switch from here to join(): nothing can slip between the
    # history and the live frames.
    client.send(
        {
            "type": "history",
            "messages": [message_frame(r) for r in records],
            "last": chat.store.last_arrival(room),
            "reset": reset,
        }
    )
    chat.delivery.replay(client)
    if not chat.hub.join(client):  # a change is broadcast to the room, this client too
        client.send({"type": "presence", "users": chat.presence(room)})
    frames = TokenBucket(FRAMES_PER_SECOND, FRAME_BURST, chat.wall())

    def take_frame() -> bool:
        return frames.take(chat.wall())

    try:
        while not client.closed:
            try:
                text = ws.read_message(take_frame)  # yields after every frame
            except FrameFlood:
                log.info("closing %s's socket in room %d: frame flood", user, room)
                client.close(1008)
                break
            except FrameTooLargeException:  # or TooManyFragments
                client.close(1009)
                break
            except UnicodeError:
                client.close(1007)
                break
            except ProtocolError:
                client.close(1002)
                break
            except (WebSocketError, OSError):
                break
            if text is None:  # the page closed the socket
                break
            handle_frame(chat, client, text)
            gevent.sleep(0)  # a page with frames queued up takes turns with the others
    finally:
        chat.hub.leave(client)
        client.flush()


def handle_frame(chat: Chat, client: Client, text: str | bytes) -> None:
    """One frame from a page; problems go back as error frames."""
    frame: Any = None
    try:
        if not isinstance(text, str):
            raise ChatError("bad_request", "frames are JSON text, not binary")
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested deep
            raise ChatError("bad_request", "frames are JSON objects") from None
        if not isinstance(frame, dict):
            raise ChatError("bad_request", "frames are JSON objects")
        kind = frame.get("type")
        if kind == "send":
            receive_send(chat, client, frame)
        elif kind == "older":
            receive_older(chat, client, frame)
        elif kind == "read":
            receive_read(chat, client, frame)
        elif kind in ACTIONS:  # the server checks the rights, whatever the page shows
            chat.moderate(client.user, client.room, kind, frame.get("id", frame.get("user")))
        else:
            raise ChatError("bad_request", f"unknown frame type {str(kind)[:32]!r}")
    except ChatError as e:
        client.send({"type": "error", "code": e.code, "message": str(e), **_echo_client_id(frame)})


def _valid_client_id(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= CLIENT_ID_MAX and is_utf8(value)


def _echo_client_id(frame: Any) -> dict[str, str]:
    if isinstance(frame, dict) and _valid_client_id(frame.get("client_id")):
        return {"client_id": frame["client_id"]}
    return {}


def receive_send(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    client_id = frame.get("client_id")
    if not _valid_client_id(client_id):
        raise ChatError(
            "bad_request", f"client_id must be a string of 1 to {CLIENT_ID_MAX} characters"
        )
    # The ack goes first into this client's outbox, so the page learns the id
    # before (or with) the message's own fan-out frame.
    chat.post(
        client.user,
        client.room,
        frame.get("text"),
        on_stored=lambda r: client.send({"type": "ack", "client_id": client_id, "id": r.id}),
    )


def receive_older(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    before, limit = frame.get("before"), frame.get("limit", 50)
    rid = parse_message_id(before)
    if rid is None or not isinstance(limit, int) or isinstance(limit, bool):
        raise ChatError("bad_request", "older needs before=<id> and an integer limit")
    records = chat.older(client.room, rid, limit)
    client.send(
        {"type": "older", "before": before, "messages": [message_frame(r) for r in records]}
    )


def receive_read(chat: Chat, client: Client, frame: dict[str, Any]) -> None:
    upto = parse_hlc(frame.get("upto"))
    if upto is None:
        raise ChatError("bad_request", "read needs upto=<hlc>, a decimal string")
    chat.mark_read(client.user, client.room, upto)
