"""Pictures and files: a page uploads one, and gets one.

``POST /room/<n>/upload?name=<file name>`` (and ``POST /dm/<peer>/upload``
on a direct conversation's page): the body is the file's bytes
(no multipart: the page sends the re-encoded photo or the file as it is,
with a progress bar).  Behind the login and the session's CSRF token (in
``X-CSRF-Token``: the body is not a form).  Refused *before a byte of the
body is read*, and then the connection is closed without reading it: no
``Content-Length`` (or a chunked body) 411, over ``--max-upload`` 413, over
what the account may still upload today 429 (counted per account, not per
address: app/attachments.py).  The body streams into the blob store
(node/blobs.py: 64 KiB at a time, hashed as it goes, renamed into place
once whole) and the answer is what the router found the bytes to be:
``{sha, size, kind, w, h, name}`` (kind and dimensions from the bytes only,
app/images.py).  The page then sends its message over the room's socket
naming the blob, with the thumbnail it made (app/chat.py).

``GET /blob/<sha>``: behind the login, and only for a person who may have
that blob (app/attachments.py ``may_see``: a room message names it, or a
direct message of theirs, or they uploaded it here within the hour).
Anyone else gets the same 404 as for a blob nobody holds, before anything
is fetched: a hash guessed or overheard does not tell that a picture
exists.  A blob this router lacks but a held message names is fetched from
a peer first (app/blobfetch.py); then it streams with the headers of
app/images.py ``serve_headers``: inline only for an image whose bytes say
so and whose dimensions are bounded, else ``attachment`` and
``application/octet-stream``, ``nosniff``, a sandboxing CSP, cached as
immutable (app/web.py keeps these two headers of the route), except a blob
that only direct messages name: ``no-store``, as every page, so a phone
shared by two people does not keep one person's picture for the other.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import bottle

from app.attachments import Attachments
from app.blobfetch import install_mesh_blob_route
from app.chat import ChatError
from app.i18n import N_, message
from app.images import clean_name, serve_headers, sniff_file
from app.sessions import Session
from node.blobs import CHUNK, BlobError, BlobMissing, is_sha256_hex

CSRF_HEADER = "X-CSRF-Token"
# The route's own headers that the app's security headers must not replace
# (app/web.py ``_security_headers``).
OWN_HEADERS_KEY = "cc.own_headers"
# Set when a request is answered without reading its body: the server must
# then close the connection, not read (drain) the body (app/web.py ChatHandler).
BODY_UNREAD_KEY = "cc.body_unread"
Refusal = tuple[int, str, dict[str, int]]  # status, why (a msgid), more for the page
NO_LONGER_HELD = N_("This file is no longer held here.")
# A blob only direct messages name is not kept by the browser (see above).
PRIVATE_CACHE = "no-store"


class BlobRoutes:
    def __init__(self, site: Any, blobs: Attachments) -> None:
        self.site, self.blobs = site, blobs

    def install(self, app: bottle.Bottle) -> None:
        app.post("/room/<n>/upload", callback=self.upload)
        app.post("/dm/<peer>/upload", callback=self.upload_direct)
        app.get("/blob/<sha>", callback=self.download)
        install_mesh_blob_route(app, self.blobs.server)

    # -- upload ---------------------------------------------------------------------------

    def _refuse(self, status: int, text: str, **extra: Any) -> str:
        """An answer before the body is read: the connection closes unread."""
        bottle.request.environ[BODY_UNREAD_KEY] = True
        bottle.response.set_header("Connection", "close")
        return self._json(status, {"error": message(self.site.language(), text), **extra})

    def _json(self, status: int, obj: dict[str, Any]) -> str:
        bottle.response.status = status
        bottle.response.content_type = "application/json"
        return json.dumps(obj)

    def upload(self, n: str) -> str:
        """An upload from a room's page."""
        return self._upload(lambda s: self._check(n, s))

    def upload_direct(self, peer: str) -> str:
        """An upload from a conversation's page: the same, to a person who
        exists (the blob is anyone's to name until a message names it, and
        then served as that message says: app/attachments.py)."""
        return self._upload(lambda s: self._check_direct(peer, s))

    def _upload(self, check: Callable[[Session | None], Refusal | None]) -> str:
        request = bottle.request
        # Whatever answers before the body is read (a redirect to /rename
        # too) closes the connection rather than reading the body.
        request.environ[BODY_UNREAD_KEY] = True
        s = self.site.session()
        refused = check(s)
        if refused is not None or s is None:
            status, text, extra = refused or (403, "", {})
            return self._refuse(status, text, **extra)
        size = request.content_length
        charged = self.blobs.charge(s.account, size)
        request.environ[BODY_UNREAD_KEY] = False
        try:
            sha = self._store(request.environ["wsgi.input"], size)
        except BaseException:
            self.blobs.refund(s.account, charged)
            raise
        if sha is None:  # cut short: what is left of the body is not waited for
            self.blobs.refund(s.account, charged)
            request.environ[BODY_UNREAD_KEY] = True
            return self._json(400, {"error": "the upload was cut short"})
        self.blobs.uploaded(sha, self.site.chat.accounts.identity(s.account))
        found = sniff_file(self.blobs.store.path(sha))
        name = clean_name(request.query.getunicode("name") or "", found.kind)
        return self._json(
            200,
            {
                "sha": sha,
                "size": size,
                "kind": found.kind.value,
                "w": found.width if found.inline else 0,
                "h": found.height if found.inline else 0,
                "name": name,
            },
        )

    def _check(self, n: str, s: Session | None) -> Refusal | None:
        """Why an upload is refused from its headers alone, or None."""
        if not (n.isascii() and n.isdigit() and len(n) <= 3) or not (
            1 <= int(n) <= self.site.chat.rooms
        ):
            return 404, N_("There is no such room."), {}
        refused = self._check_session(s)
        if refused is not None or s is None:
            return refused
        return self._check_size(s)

    def _check_direct(self, peer: str, s: Session | None) -> Refusal | None:
        refused = self._check_session(s)
        if refused is not None or s is None:
            return refused
        try:
            self.site.chat.direct_peer(s.user, peer)
        except ChatError:
            return 404, N_("There is no such person to write to."), {}
        return self._check_size(s)

    def _check_session(self, s: Session | None) -> Refusal | None:
        if s is None:
            return 403, N_("Log in first, from this router's own page."), {}
        given = bottle.request.get_header(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), s.csrf.encode()):
            return 403, N_("The form expired or came from another site: reload and try again."), {}
        return None

    def _check_size(self, s: Session) -> Refusal | None:
        request = bottle.request
        size = request.content_length
        if request.chunked or size < 0:
            return 411, N_("An upload needs a Content-Length."), {}
        if size > self.blobs.max_upload:
            return 413, N_("The file is too large."), {"max_upload": self.blobs.max_upload}
        left = self.blobs.left_today(s.account)
        if size > left:
            why = N_("You have uploaded all you may today: try again tomorrow.")
            return 429, why, {"left": left}
        return (400, N_("The file is empty."), {}) if size == 0 else None

    def _store(self, body: Any, size: int) -> str | None:
        """The body into the store, a piece at a time; its name, or None if
        it ended short (the phone went away)."""
        with self.blobs.store.writer(None, size, source="stored") as w:
            while w.written < size:
                try:
                    chunk = body.read(min(CHUNK, size - w.written))
                except (OSError, ValueError):  # a timeout, a reset
                    return None
                if not chunk:
                    return None
                w.write(chunk)
            try:
                return w.commit()
            except BlobError:
                return None

    # -- download -------------------------------------------------------------------------

    def download(self, sha: str) -> Any:
        s = self.site.logged_in()
        if not is_sha256_hex(sha):
            bottle.abort(404, NO_LONGER_HELD)
        person = self.site.chat.accounts.identity(s.account)
        # Before anything is fetched or opened: someone else's is "not held".
        if not self.blobs.may_see(sha, person):
            bottle.abort(404, NO_LONGER_HELD)
        if not self.blobs.fetch(sha):
            bottle.abort(404, NO_LONGER_HELD)
        try:
            found = sniff_file(self.blobs.store.path(sha))
            reader = self.blobs.store.open(sha)
        except (BlobMissing, BlobError, OSError):  # evicted or deleted meanwhile
            bottle.abort(404, NO_LONGER_HELD)
        name = self.blobs.name_for(sha, person)  # never another conversation's name for it
        private = self.blobs.is_private(sha)
        for key, value in serve_headers(found, name, reader.size):
            private_cache = key == "Cache-Control" and private
            bottle.response.set_header(key, PRIVATE_CACHE if private_cache else value)
        bottle.request.environ[OWN_HEADERS_KEY] = ("Content-Security-Policy", "Cache-Control")
        return reader
