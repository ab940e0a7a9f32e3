"""Accounts, forms, sessions and pages, through the WSGI app in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.accounts import PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX, verify_password
from app.chat import MAX_TEXT_CHARS, UNREAD_MAX, Chat
from app.moderation import ChatPolicy, Moderation
from app.sessions import Sessions
from app.web import build_app
from node.record import Record, RecordKind
from node.store import ACCOUNTS_LOG, Store
from tests.helpers import PASSWORD, HttpSession, WsgiTransport


class Site:
    def __init__(self, data: Path) -> None:
        self.data = data
        # As app/server.py makes the store: the chat's policy (blocks, moderation).
        self.store = Store(data, rooms=4, policy=ChatPolicy(Moderation().authorizes))
        self.chat = Chat(self.store, "router-a")
        self.sessions = Sessions(data)
        self.app = build_app(self.chat, self.sessions)

    def client(self) -> HttpSession:
        return HttpSession(WsgiTransport(self.app))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.store.close()


def test_logged_out_root_redirects_to_login(site: Site) -> None:
    r = site.client().get("/")
    assert r.status == 303 and r.headers["location"].endswith("/login")
    r = site.client().get("/room/1")
    assert r.status == 303 and r.headers["location"].endswith("/login")


def test_register_then_login_then_rooms(site: Site) -> None:
    c = site.client()
    r = c.register("Ann_1.x-y")
    assert r.status == 303 and r.headers["location"] == "/"  # registering logs in
    assert c.get("/").status == 200
    c = site.client()
    r = c.login("Ann_1.x-y")
    assert r.status == 303 and r.headers["location"].endswith("/")
    page = c.get("/")
    assert page.status == 200
    for n in range(1, 5):
        assert f'href="/room/{n}"' in page.text
    assert 'href="/room/5"' not in page.text
    assert c.get("/room/4").status == 200


@pytest.mark.parametrize(
    ("name", "password", "confirm", "status", "message"),
    [
        ("bob", PASSWORD, PASSWORD + "x", 400, "The passwords do not match."),
        ("", PASSWORD, PASSWORD, 400, "Username must be 1 to 32 characters"),
        ("b" * (USERNAME_MAX + 1), PASSWORD, PASSWORD, 400, "Username must be"),
        ("bad name", PASSWORD, PASSWORD, 400, "letters, digits, _ . -"),
        ("<script>", PASSWORD, PASSWORD, 400, "Username must be"),
        (
            "bob",
            "x" * (PASSWORD_MIN - 1),
            "x" * (PASSWORD_MIN - 1),
            400,
            f"Password must be {PASSWORD_MIN} to",
        ),
        ("ann", PASSWORD, PASSWORD, 409, "That username is taken"),
        ("ANN", PASSWORD, PASSWORD, 409, "That username is taken"),
    ],
)
def test_register_errors(
    site: Site, name: str, password: str, confirm: str, status: int, message: str
) -> None:
    site.client().register("ann")
    c = site.client()
    token = c.csrf("/register")
    r = c.post(
        "/register", {"csrf": token, "username": name, "password": password, "confirm": confirm}
    )
    assert r.status == status
    assert message in r.text
    assert "<script>" not in r.text.split("<main>")[1], "the form echoes input escaped"


def test_password_stored_only_as_scrypt_hash(site: Site) -> None:
    site.client().register("ann", "hunter2hunter2")
    raw = (site.data / ACCOUNTS_LOG).read_text()
    assert "hunter2" not in raw
    body = json.loads(raw.splitlines()[0])["body"]
    assert body["hash"].startswith("scrypt$16384$8$1$")
    assert verify_password("hunter2hunter2", body["hash"])
    assert not verify_password("hunter2hunter3", body["hash"])


def test_login_failures_share_one_message(site: Site) -> None:
    site.client().register("ann")
    for name, pw in [("ann", "wrong password"), ("nobody", PASSWORD), ("", "")]:
        c = site.client()
        r = c.login(name, pw)
        assert r.status == 401
        assert "Username or password is invalid." in r.text
        assert "cc_session" not in c.cookies


def test_login_is_case_insensitive_and_shows_registered_name(site: Site) -> None:
    site.client().register("Ann")
    c = site.client()
    assert c.login("ann").status == 303
    assert "<strong>Ann</strong>" in c.get("/").text


def test_csrf_required_on_every_post(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.get("/login")  # gets a CSRF cookie, but the form below carries no token
    for path, form in [
        ("/register", {"username": "x", "password": PASSWORD, "confirm": PASSWORD}),
        ("/login", {"username": "ann", "password": PASSWORD}),
        ("/login", {"username": "ann", "password": PASSWORD, "csrf": "forged"}),
    ]:
        r = c.post(path, form)
        assert r.status == 403 and "reload and try again" in r.text
    assert not site.chat.accounts.exists("x")
    c.login("ann")
    r = c.post("/logout", {})
    assert r.status == 403
    assert c.get("/").status == 200, "still logged in"


def test_logout_ends_the_session_server_side(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    old_cookie = c.cookies["cc_session"]
    token = c.csrf("/")
    r = c.post("/logout", {"csrf": token})
    assert r.status == 303 and r.headers["location"].endswith("/login")
    replay = site.client()
    replay.cookies["cc_session"] = old_cookie
    assert replay.get("/").status == 303, "a logged-out token is dead"


def test_session_cookie_flags_and_survives_restart(site: Site, tmp_path: Path) -> None:
    site.client().register("ann")
    c = site.client()
    r = c.login("ann")
    cookie = next(v for v in r.set_cookies if v.startswith("cc_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    token = c.cookies["cc_session"]
    assert token not in (tmp_path / "sessions.json").read_text(), "only a hash is kept"
    restarted = Site(tmp_path)
    c2 = restarted.client()
    c2.cookies["cc_session"] = token
    assert c2.get("/").status == 200


def test_login_issues_a_fresh_session_id(site: Site) -> None:
    """Session fixation: a token planted before login is never the one used."""
    site.client().register("ann")
    c = site.client()
    c.cookies["cc_session"] = "planted-by-an-attacker"
    c.login("ann")
    assert c.cookies["cc_session"] != "planted-by-an-attacker"
    first = c.cookies["cc_session"]
    second = site.client()
    second.login("ann")
    assert second.cookies["cc_session"] != first, "every login gets its own token"


@pytest.mark.parametrize(
    "path", ["/room/0", "/room/5", "/room/abc", "/room/-1", "/room/1.0", "/nowhere", "/ws/9"]
)
def test_not_found_pages(site: Site, path: str) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    r = c.get(path)
    assert r.status == 404
    assert "<!doctype html>" in r.text and "Not Found" in r.text


def test_security_headers_on_every_page(site: Site) -> None:
    c = site.client()
    for r in [c.get("/login"), c.get("/register"), c.get("/room/abc"), c.get("/static/chat.js")]:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_pages_load_nothing_from_outside(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    for path in ["/login", "/register", "/", "/room/1"]:
        text = c.get(path).text
        assert (
            "http://" not in text
            and "https://" not in text
            and "//" not in text.replace("<!doctype", "")
        ), path
        assert "<script>" not in text, "no inline script"


def test_websocket_path_without_upgrade_is_refused(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    assert c.get("/ws/1").status == 400


def test_oversized_form_is_refused(site: Site) -> None:
    c = site.client()
    token = c.csrf("/register")
    r = c.post(
        "/register", {"csrf": token, "username": "x" * 5000, "password": "p", "confirm": "p"}
    )
    assert r.status == 413


def test_pages_take_their_limits_from_the_server(site: Site) -> None:
    """The forms' maxlength and the room list's badge are the server's limits."""
    c = site.client()
    page = c.get("/register").text
    assert f'maxlength="{USERNAME_MAX}"' in page and f'maxlength="{PASSWORD_MAX}"' in page
    c.register("ann")
    c.login("ann")
    # Messages from a peer, after ann's account: all unread, over the cap.
    joined = site.chat.joined("ann")
    body = {"author": "bob", "node": "there", "time": 1, "text": "hi"}
    site.chat.receive_records(
        [
            Record("0123456789abcdef", n, joined + n, RecordKind.MESSAGE, 1, body)
            for n in range(1, UNREAD_MAX + 1)
        ]
    )
    rooms = c.get("/").text
    assert f">{UNREAD_MAX - 1}+<" in rooms, "the badge stops at the server's cap"
    assert f'maxlength="{MAX_TEXT_CHARS}"' in c.get("/room/1").text
