"""The web layer: the HTTP server's handler and the app's assembly.

Routes live in app/routes_accounts.py (register, log in, rename, password)
and app/routes_rooms.py (the room list, the room page, its WebSocket); what
they share (pages, sessions and the login guard, forms) in app/site.py.
Routes stay short: validate, call one ``Chat`` method, render.  Every
response carries the security headers (a Content-Security-Policy that
forbids inline script and anything from outside the router).

Every size a client chooses is bounded before it is read: the headers (431,
and a deadline: ``ChatHandler``), the form body, the query string's message
id, each WebSocket frame, the frames per second.  A WebSocket upgrade is
decided before the handshake, by the check the server is given
(app/routes_rooms.py ``upgrade_check``).
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

import bottle
import gevent
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from app.attachments import Attachments
from app.chat import Chat
from app.config import HEADER_TIMEOUT, IDLE_TIMEOUT
from app.hub import FRAME_TIMEOUT, BoundedWebSocket, Page
from app.i18n import message, status_line
from app.retention import DEFAULT_RETENTION
from app.routes_accounts import AccountRoutes
from app.routes_blobs import BODY_UNREAD_KEY, OWN_HEADERS_KEY, BlobRoutes
from app.routes_rooms import (
    CLIENT_ID_MAX,
    FRAME_BURST,
    FRAMES_PER_SECOND,
    WS_PATH_PREFIX,
    RoomRoutes,
)
from app.sessions import Sessions
from app.site import MAX_FORM_BYTES, ROOT, Site, redirect_to

if TYPE_CHECKING:
    from app.server import ChatServer

# Tests and the docs name these limits here, where the web's limits are listed.
__all__ = [
    "CAPTIVE_PROBES",
    "CLIENT_ID_MAX",
    "FRAMES_PER_SECOND",
    "FRAME_BURST",
    "MAX_FORM_BYTES",
    "MAX_HEADER_BYTES",
    "SECURITY_HEADERS",
    "ChatHandler",
    "build_app",
]

STATIC = ROOT / "static"
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
# All header lines of one request together.  A browser's request with our
# cookies is under 2 KiB; 16 KiB leaves room for long user agents and
# Accept-Language lists, and is all a request can hold before it is read in
# full: a request over it is answered 431 and its connection closed.
MAX_HEADER_BYTES = 16 * 1024
# A connection's read buffer (gevent's default is 8 KiB).  A browser's request
# line and headers with our cookies are under 2 KiB, so one recv still reads a
# request; a longer read (a form, an upload) goes straight into its result.
# An open page gives it up after the handshake (app/hub.py ``Page``).
READ_BUFFER_BYTES = 2 * 1024


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


NO_HEADERS = pywsgi.OldMessage()  # what an upgraded socket keeps of its request's headers


def _no_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    """The start_response of an upgraded socket's route: the 101 is out."""
    return []


class ChatHandler(WebSocketHandler):
    """Upgrades only WebSockets the app allows; the rest get plain HTTP.

    Bounds what a connection costs before it is a request: an idle
    keep-alive connection is closed after the idle timeout; once a request's
    first byte is in, its line and headers must arrive within the header
    timeout (408, or a quiet close mid request line) and hold at most
    ``MAX_HEADER_BYTES`` (431).  An upgraded WebSocket has no timeout while
    idle: it lives as long as its page; a message it has begun must be in
    within the server's ``frame_timeout`` (app/hub.py ``Page``, counted in
    ``refused["frame_too_slow"]``).  Once its route has set the page up, the
    page's socket is handed over (app/hub.py ``Page``) and this handler, its
    greenlet and the request's objects end (``run_websocket``).
    """

    MessageClass = staticmethod(read_headers)
    server: ChatServer  # which decides upgrades (``allow_upgrade``), given when made
    # Our own per-connection state in slots: pywsgi's attribute dict is
    # full, and one more name in it doubled it, 1.5 KB a connection.
    __slots__ = ("_deadline", "cc_page")

    def __init__(self, sock: Any, address: Any, server: Any) -> None:
        super().__init__(sock, address, server, rfile=sock.makefile("rb", READ_BUFFER_BYTES))
        self._deadline: gevent.Timeout | None = None
        self.cc_page: Page | None = None  # the upgraded socket's, once it is one

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

    def run_application(self) -> None:
        env = self.environ
        upgrade = env.get("PATH_INFO", "").startswith(WS_PATH_PREFIX)
        if upgrade and not self.server.allow_upgrade(env):
            env["cc.upgrade_refused"] = True
            return super(WebSocketHandler, self).run_application()
        try:
            super().run_application()
        finally:
            if env.get(BODY_UNREAD_KEY) or self.code in (411, 413):
                self._leave_body_unread()
        return None

    def _leave_body_unread(self) -> None:
        """A request refused for its body's size (an upload over the limit,
        a form too large): pywsgi would read the whole body to reach the
        next request.  Close the connection instead, the body unread."""
        self.close_connection = True  # type: ignore[misc]  # pywsgi's, in its __dict__
        body = self.wsgi_input
        if body is not None:
            body.content_length = body.position
            body.chunked_input = False

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        # The address the phone reached us at (after any DNAT): where a
        # captive-portal probe, sent to another host name, is redirected.
        try:
            host, port = self.socket.getsockname()[:2]
        except (OSError, AttributeError, TypeError, ValueError):
            return env
        env["cc.local_address"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return env

    def run_websocket(self) -> None:
        """The app's route for the socket, then, unless the page parked
        (app/hub.py ``Page``: it owns the socket from then on, and this
        greenlet and everything of the request ends), the usual end.

        gevent-websocket's own ``run_websocket`` closes the socket when the
        route returns, and registers every socket in ``server.clients``,
        which nothing here reads."""
        ws = self.websocket
        ws.__class__ = BoundedWebSocket  # one writer, bounded frames (app/hub.py)
        self.headers = NO_HEADERS  # type: ignore[misc]  # parsed and read: not kept
        page = self.cc_page = Page(
            self.socket,
            ws,
            self._take_read_ahead(),
            frame_timeout=getattr(self.server, "frame_timeout", FRAME_TIMEOUT),
            counts=getattr(self.server, "refused", None),
        )
        try:
            list(self.application(self.environ, _no_response))
        finally:
            if page.taken:  # pywsgi's handle() must not close it
                self.__dict__["socket"] = None
            elif not ws.closed:
                ws.close()

    def _take_read_ahead(self) -> bytes:
        """What the request's buffered reader holds past the handshake (a
        page may send its first frame before it reads the 101), and no more:
        from here on the page reads the socket itself (app/hub.py ``Page``).
        A WebSocket upgrade has no body: nothing after the headers is one."""
        body = self.wsgi_input
        if body is not None:  # pywsgi would read a declared body at the end
            body.content_length = body.position
            body.chunked_input = False
        self.socket.settimeout(0.0)  # the buffer's bytes, or what is there: no wait
        try:
            return self.rfile.read1(READ_BUFFER_BYTES) or b""
        except OSError:
            return b""
        finally:
            self.socket.settimeout(None)  # a page's socket may be quiet for hours


def build_app(
    chat: Chat,
    sessions: Sessions,
    *,
    captive_portal: bool = False,
    http_refused: Mapping[str, int] | None = None,
    retention: float = DEFAULT_RETENTION,
    blobs: Attachments | None = None,
) -> bottle.Bottle:
    app = bottle.Bottle()
    site = Site(chat, sessions, retention)
    app.add_hook("after_request", _security_headers)
    AccountRoutes(site).install(app)
    RoomRoutes(site).install(app)
    if blobs is not None:  # pictures and files (app/routes_blobs.py)
        BlobRoutes(site, blobs).install(app)

    def status() -> dict[str, Any]:
        # Connections closed unread and requests refused for their headers.
        found = {**chat.status(), "http": {"refused": dict(http_refused or {})}}
        if blobs is not None:  # count, bytes, fetched, evicted...
            found["blobs"] = blobs.status()
        return found

    def error_page(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "text/html; charset=utf-8"
        lang = site.language()
        return site.render(
            "error", status=status_line(lang, err.status_line), message=message(lang, err.body)
        )

    app.get("/status", callback=status)
    app.get("/static/<path:path>", callback=_static)
    if captive_portal:  # otherwise these are unknown paths: 404
        for probe in CAPTIVE_PROBES:
            app.route(probe, ["GET", "HEAD"], _captive_probe)
    for code in ERROR_PAGES:
        app.error(code)(error_page)
    return app


# The client errors the routes raise (bottle.abort), shown as our own page.
ERROR_PAGES = (400, 403, 404, 405, 411, 413, 415)


def _security_headers() -> None:
    # A blob's own CSP (a sandbox, stricter) and Cache-Control (immutable:
    # phones keep pictures) stay: app/routes_blobs.py names them.
    own = bottle.request.environ.get(OWN_HEADERS_KEY, ())
    for k, v in SECURITY_HEADERS.items():
        if k not in own:
            bottle.response.set_header(k, v)


def _static(path: str) -> bottle.HTTPResponse:
    if path.endswith(".webmanifest"):  # not in every mimetypes table
        return bottle.static_file(path, root=str(STATIC), mimetype=MANIFEST_TYPE)
    return bottle.static_file(path, root=str(STATIC))


def _captive_probe() -> None:
    env = bottle.request.environ
    here = env.get("cc.local_address") or env.get("HTTP_HOST", "")
    redirect_to(f"http://{here}/login", 302)
