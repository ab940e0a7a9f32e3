"""Account pages: register, log in, rename, change the password, log out.

Failed logins are throttled per client address and per username, and new
accounts per client address (app/throttle.py, on the monotonic clock): HTTP
429 with the wait.  An attempt is counted before its password is hashed and
corrected after, and attempts in flight are bounded, so parallel requests
cannot slip past.  A refused form says why with the status its error
carries (``AccountError.status``, ``ChatError.status``), in the page's
language (app/i18n.py ``message``: the English text is the msgid).
"""

from __future__ import annotations

from typing import Any

import bottle

from app.accounts import AccountError, WrongPassword
from app.chat import ChatError
from app.i18n import message
from app.sessions import Session
from app.site import Site, field, seconds, see_other
from app.throttle import LoginThrottle, RegistrationThrottle, Verdict


class AccountRoutes:
    def __init__(self, site: Site) -> None:
        self.site, self.chat = site, site.chat
        self.logins = LoginThrottle()
        self.registrations = RegistrationThrottle()

    def install(self, app: bottle.Bottle) -> None:
        app.get("/register", callback=self.register_form)
        app.post("/register", callback=self.register)
        app.get("/login", callback=self.login_form)
        app.post("/login", callback=self.login)
        app.get("/rename", callback=self.rename_form)
        app.post("/rename", callback=self.rename)
        app.get("/password", callback=self.password_form)
        app.post("/password", callback=self.change_password)
        app.post("/logout", callback=self.logout)

    def _refused(self, view: str, error: AccountError | ChatError, **kw: Any) -> str:
        bottle.response.status = error.status
        return self.site.render(view, error=message(self.site.language(), str(error)), **kw)

    def _login_page(self, **kw: Any) -> str:
        """The login page, with what this is for a first visit."""
        return self.site.render(
            "login", online=self.chat.online(), kept_for=self.site.kept_for(), **kw
        )

    def _too_many(self, view: str, reason: str, verdict: Verdict, **kw: Any) -> str:
        bottle.response.status = 429
        bottle.response.set_header("Retry-After", str(verdict.wait))
        _ = self.site.language().gettext
        why = _("Too many attempts at once") if verdict.busy else reason
        wait = seconds(self.site.language(), verdict.wait)
        error = _("%(why)s; try again in %(wait)s.") % {"why": why, "wait": wait}
        return self.site.render(view, error=error, **kw)

    # -- register --------------------------------------------------------------------

    def register_form(self) -> str:
        return self.site.render("register", error=None, name="", csrf=self.site.csrf_token())

    def register(self) -> str:
        site = self.site
        form = site.check_form()
        name = field(form, "username").strip()
        address, now = site.client(), self.chat.monotonic()
        with self.registrations.attempt(address, name, now) as verdict:  # before the hash
            if verdict.wait:
                why = site.language().gettext("Too many new accounts from this device")
                return self._too_many("register", why, verdict, name=name, csrf=site.csrf_token())
            try:
                account = self.chat.register(name, field(form, "password"), field(form, "confirm"))
            except (AccountError, ChatError) as e:  # a rule, a taken name, or the store
                self.registrations.refund(address, now)
                return self._refused("register", e, name=name, csrf=site.csrf_token())
        site.start_session(account.name, account.id)  # registering logs in
        see_other("/")

    # -- log in and out ------------------------------------------------------------------

    def login_form(self) -> str:
        if self.site.session() is not None:
            see_other("/")
        csrf = self.site.csrf_token()
        return self._login_page(error=None, notice=None, name="", csrf=csrf)

    def login(self) -> str:
        site = self.site
        form = site.check_form()
        name = field(form, "username").strip()
        page: dict[str, Any] = {"notice": None, "name": name}
        address, now = site.client(), self.chat.monotonic()
        with self.logins.attempt(address, name, now) as verdict:  # a failure until it succeeds
            if verdict.wait:
                why = site.language().gettext("Too many failed logins")
                page.update(online=self.chat.online(), kept_for=site.kept_for())
                return self._too_many("login", why, verdict, csrf=site.csrf_token(), **page)
            login = self.chat.login(name, field(form, "password"))
        _ = site.language().gettext
        if login is None:
            bottle.response.status = 401
            error = _("Username or password is invalid.")
            return self._login_page(error=error, csrf=site.csrf_token(), **page)
        self.logins.succeeded(address, name, now)
        if self.chat.moderation.is_banned(login.account.name):
            bottle.response.status = 403
            error = _("This account is banned from the chat.")
            return self._login_page(error=error, csrf=site.csrf_token(), **page)
        site.start_session(login.account.name, login.account.id)
        see_other("/rename" if login.displaced else "/")

    def logout(self) -> None:
        self.site.check_form()
        self.site.end_session()
        see_other("/login")

    # -- rename (a name another router registered first) ---------------------------------

    def _displaced(self) -> Session:
        """The request's session if its account lost its name; else to /."""
        s = self.site.any_session()
        if s is None or self.chat.accounts.is_owner(s.account, s.user):
            see_other("/")
        return s

    def rename_form(self) -> str:
        s = self._displaced()
        return self.site.render("rename", error=None, old=s.user, name="", csrf=s.csrf)

    def rename(self) -> str:
        form = self.site.check_form()
        s = self._displaced()
        account = self.chat.accounts.by_id(s.account)
        if account is None:
            see_other("/")
        name = field(form, "username").strip()
        try:
            renamed = self.chat.rename(account, name)
        except (AccountError, ChatError) as e:  # a rule, a taken name, or the store
            return self._refused("rename", e, old=s.user, name=name, csrf=s.csrf)
        self.site.start_session(renamed.name, renamed.id)
        see_other("/")

    # -- password ------------------------------------------------------------------------

    def password_form(self) -> str:
        s = self.site.logged_in()
        return self.site.render("password", error=None, notice=None, csrf=s.csrf)

    def change_password(self) -> str:
        form = self.site.check_form()
        s = self.site.logged_in()
        address, now = self.site.client(), self.chat.monotonic()
        # Counted like a login, before the hash: a stolen session must not
        # become a password guesser.
        with self.logins.attempt(address, s.user, now) as verdict:
            if verdict.wait:
                why = self.site.language().gettext("Too many wrong passwords")
                return self._too_many("password", why, verdict, notice=None, csrf=s.csrf)
            try:
                self.chat.change_password(
                    s.account,
                    s.user,
                    field(form, "current"),
                    field(form, "password"),
                    field(form, "confirm"),
                )
            except WrongPassword as e:
                return self._refused("password", e, notice=None, csrf=s.csrf)
            except (AccountError, ChatError) as e:  # the current password was right
                self.logins.succeeded(address, s.user, now)
                return self._refused("password", e, notice=None, csrf=s.csrf)
        self.logins.succeeded(address, s.user, now)
        notice = self.site.language().gettext("Password changed on every router.")
        return self.site.render("password", error=None, notice=notice, csrf=s.csrf)
