"""What every route shares: pages, sessions and the login guard, forms.

One ``Site`` is made per app (app/web.py ``build_app``) and handed to the
route modules (app/routes_accounts.py, app/routes_rooms.py).  A page that
needs a person logged in calls ``Site.logged_in()``: the session, or a
redirect to the login page.  Forms carry a CSRF token: the session's own
once logged in, a double-submit cookie before.  Redirects carry a relative
``Location`` (``see_other``), never one built from Host or X-Forwarded-Host.

Sessions expire by the wall clock: they are kept in sessions.json across
restarts, and a monotonic clock starts again at every boot.

Pages speak the request's language (app/i18n.py): ``Site.language()``
chooses it from Accept-Language, ``render`` hands the templates ``_``,
``ngettext``, ``lang`` and ``strings_block`` and says ``Content-Language``
and ``Vary: Accept-Language``.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, NoReturn

import bottle

from app.accounts import PASSWORD_MAX, USERNAME_MAX
from app.chat import MAX_TEXT_CHARS, UNREAD_MAX, Chat
from app.i18n import N_, Language, language, password_rule, strings_block, username_rule
from app.retention import DEFAULT_RETENTION
from app.sessions import Session, Sessions
from app.throttle import client_key

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
SESSION_COOKIE = "cc_session"
CSRF_COOKIE = "cc_csrf"
# Ours is 22 characters (16 random bytes); a cookie much longer is not ours.
CSRF_COOKIE_MAX_CHARS = 64
# Form bodies are a name and two passwords; anything larger is not ours.
MAX_FORM_BYTES = 4096
FORM_TYPE = "application/x-www-form-urlencoded"  # what our forms send; nothing else is read
COOKIE_MAX_AGE = 30 * 24 * 3600
# The server's limits as every page gets them: the forms' maxlength, the
# room list's badge ("999+"), so a page never says other than the server.
PAGE_LIMITS = {
    "username_max": USERNAME_MAX,
    "password_max": PASSWORD_MAX,
    "text_max": MAX_TEXT_CHARS,
    "unread_max": UNREAD_MAX,
}


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


def cookie(environ: dict[str, Any], name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except CookieError:  # a mangled header is just "no cookie"
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def field(form: bottle.FormsDict, name: str) -> str:
    return form.getunicode(name) or ""


def seconds(lang: Language, n: int) -> str:
    return lang.ngettext("%(num)d second", "%(num)d seconds", n) % {"num": n}


def duration(seconds_: float, lang: Language) -> str:
    """A retention for people: "24 hours", "7 days", "1 hour", "90 minutes"."""
    units = (
        (86400, lambda n: lang.ngettext("%(num)d day", "%(num)d days", n)),
        (3600, lambda n: lang.ngettext("%(num)d hour", "%(num)d hours", n)),
        (60, lambda n: lang.ngettext("%(num)d minute", "%(num)d minutes", n)),
    )
    for size, words in units:
        if seconds_ >= 2 * size or (seconds_ == size and size != 86400):
            n = round(seconds_ / size)
            return words(n) % {"num": n}
    return seconds(lang, round(seconds_))


class Site:
    def __init__(
        self, chat: Chat, sessions: Sessions, retention: float = DEFAULT_RETENTION
    ) -> None:
        """``retention``: how long messages are kept (``--retention``), said
        on the login page."""
        self.chat, self.sessions, self.retention = chat, sessions, retention
        self._lookup = [str(TEMPLATES)]

    def kept_for(self) -> str:
        return duration(self.retention, self.language())

    def language(self) -> Language:
        """The request's language (Accept-Language), chosen once per request."""
        env = bottle.request.environ
        lang: Language | None = env.get("cc.language")
        if lang is None:
            lang = env["cc.language"] = language(env.get("HTTP_ACCEPT_LANGUAGE"))
        return lang

    def render(self, view: str, /, **kw: Any) -> str:
        lang = self.language()
        bottle.response.set_header("Content-Language", lang.code)
        bottle.response.set_header("Vary", "Accept-Language")
        return bottle.template(
            view,
            template_lookup=self._lookup,
            template_adapter=bottle.SimpleTemplate,
            node_name=self.chat.node_name,
            lang=lang.code,
            _=lang.gettext,
            ngettext=lang.ngettext,
            strings_block=lambda: strings_block(lang),
            username_rule=username_rule(lang),
            password_rule=password_rule(lang),
            **PAGE_LIMITS,
            **kw,
        )

    # -- sessions ----------------------------------------------------------------

    def any_session(self) -> Session | None:
        """The request's session, even one whose name was taken meanwhile."""
        return self.sessions.get(bottle.request.get_cookie(SESSION_COOKIE), self.chat.wall())

    def session(self) -> Session | None:
        """The request's session if its account still owns its name.

        A session whose account was displaced (another router registered the
        name first, see app/accounts.py) is sent to /rename instead.
        """
        s = self.any_session()
        if s is not None and self.chat.moderation.is_banned(s.user):
            return None  # a ban ends every session, on every router
        if s is not None and not self.chat.accounts.is_owner(s.account, s.user):
            see_other("/rename")
        return s

    def logged_in(self) -> Session:
        """The login guard: the request's session, or a redirect to /login."""
        s = self.session()
        if s is None:
            see_other("/login")
        return s

    def start_session(self, name: str, account_id: str) -> None:
        self.sessions.delete(bottle.request.get_cookie(SESSION_COOKIE))
        token = self.sessions.create(name, account_id, self.chat.wall())
        bottle.response.set_cookie(
            SESSION_COOKIE, token, httponly=True, samesite="lax", path="/", max_age=COOKIE_MAX_AGE
        )

    def end_session(self) -> None:
        self.sessions.delete(bottle.request.get_cookie(SESSION_COOKIE))
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")

    # -- forms -------------------------------------------------------------------

    def csrf_token(self) -> str:
        s = self.any_session()
        if s is not None:
            return s.csrf
        token = bottle.request.get_cookie(CSRF_COOKIE)
        if not token or len(token) > CSRF_COOKIE_MAX_CHARS:
            token = secrets.token_urlsafe(16)
            bottle.response.set_cookie(
                CSRF_COOKIE, token, httponly=True, samesite="strict", path="/"
            )
        return token

    def check_form(self) -> bottle.FormsDict:
        """The request's form, if it is one of ours: sized, typed, and with
        the right CSRF token; otherwise a 4xx that says why."""
        request = bottle.request
        # Refused before bottle reads the body: a chunked body has no length
        # to check and bottle would spool all of it to a temporary file.
        if request.chunked or request.content_length < 0:
            bottle.abort(411, N_("A form needs a Content-Length."))
        if request.content_length > MAX_FORM_BYTES:
            bottle.abort(413, N_("The form is too large."))
        if request.content_type.split(";")[0].strip() != FORM_TYPE:
            bottle.abort(415, N_("Forms are sent as application/x-www-form-urlencoded."))
        form = request.forms
        s = self.any_session()
        expected = s.csrf if s else request.get_cookie(CSRF_COOKIE)
        given = form.getunicode("csrf") or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            bottle.abort(
                403, N_("The form expired or came from another site: reload and try again.")
            )
        return form

    def client(self) -> str:
        """The phone's address key (app/throttle.py ``client_key``).

        No proxy stands between a phone and the router, so X-Forwarded-For
        (which bottle's remote_addr reads) is never used."""
        return client_key(bottle.request.environ.get("REMOTE_ADDR"))
