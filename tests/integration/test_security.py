"""The web side's security promises (SECURITY.md), each as a test.

Most run through the WSGI app in-process with a fake clock (``Chat(wall=…)``)
and a chosen client address, so throttles are tested to the second and from
several "phones"; a few run against a real router process.  The throttle's
own arithmetic is tested first, as the pure class it is.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from app.chat import RATE_BURST, Chat
from app.sessions import Sessions
from app.throttle import (
    LOGIN_FAILURE_DECAY,
    LOGIN_FAILURES_PER_ADDRESS,
    LOGIN_FAILURES_PER_NAME,
    REGISTRATION_DECAY,
    REGISTRATIONS_PER_ADDRESS,
    Throttle,
    client_key,
)
from app.web import MAX_FORM_BYTES, SECURITY_HEADERS, build_app
from node.store import Store
from node.sync import TokenBucket
from tests.helpers import PASSWORD, HttpSession, Router, WsgiTransport

HEADERS = {k.lower(): v for k, v in SECURITY_HEADERS.items()}

# -- the throttle itself (pure: time is a parameter) ------------------------------------


def test_throttle_allows_the_limit_then_one_per_decay() -> None:
    t = Throttle(limit=3, decay=10.0)
    for _ in range(2):
        t.add("k", 100.0)
        assert t.wait("k", 100.0) == 0
    t.add("k", 100.0)
    assert t.wait("k", 100.0) == 10, "level 3 must drain to 2"
    assert t.wait("k", 104.5) == 6
    assert t.wait("k", 110.0) == 0
    t.add("k", 110.0)  # back to 3
    assert t.wait("k", 110.0) == 10
    assert t.wait("other", 110.0) == 0, "keys are independent"
    assert t.level("k", 200.0) == 0.0, "everything drains"


def test_throttle_waiting_is_not_counted_and_reset_forgets() -> None:
    t = Throttle(limit=2, decay=60.0)
    t.add("k", 0.0)
    t.add("k", 0.0)
    for now in (1.0, 2.0, 30.0):
        assert t.wait("k", now) > 0  # asking does not raise the level
    assert t.wait("k", 60.0) == 0
    t.reset("k")
    assert t.level("k", 60.0) == 0 and len(t) == 0


def test_throttle_survives_a_clock_set_back() -> None:
    t = Throttle(limit=1, decay=10.0)
    t.add("k", 1_000_000.0)
    assert t.wait("k", 500.0) == 10, "a clock set back neither frees nor locks for longer"
    assert t.wait("k", 510.0) == 0


def test_throttle_memory_is_bounded_and_keeps_the_hot_keys() -> None:
    t = Throttle(limit=5, decay=60.0, max_keys=100)
    for _ in range(5):
        t.add("victim", 0.0)
    for i in range(10_000):  # a flood of fresh names, one failure each
        t.add(f"n{i}", 1.0)
    assert len(t) <= 100
    assert t.wait("victim", 1.0) > 0, "the flood did not push out the account under attack"


def test_token_bucket_survives_a_clock_set_back() -> None:
    b = TokenBucket(rate=2.0, burst=10)
    assert b.take(1, 1_000_000.0)
    assert b.take(1, 0.0), "a clock set back by days does not drain the bucket"
    assert sum(b.take(1, 0.0) for _ in range(20)) == 8


@pytest.mark.parametrize(
    ("addr", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ("fe80::1%wlan0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("", "?"),
        (None, "?"),
        ("not an address", "not an address"),
    ],
)
def test_client_key(addr: str | None, key: str) -> None:
    assert client_key(addr) == key


# -- in-process site with a fake clock and chosen client addresses -----------------------


class Clock:
    def __init__(self, t: float = 1_750_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Site:
    def __init__(self, data: Path) -> None:
        self.clock = Clock()
        self.store = Store(data, rooms=4)
        # One fake clock for both: sessions expire by the wall clock,
        # throttles drain by the monotonic one.
        self.chat = Chat(self.store, "router-a", wall=self.clock, monotonic=self.clock)
        self.sessions = Sessions(data)
        self.app = build_app(self.chat, self.sessions)

    def client(self, addr: str = "192.0.2.10") -> HttpSession:
        return HttpSession(WsgiTransport(with_remote_addr(self.app, addr)))


def with_remote_addr(app: Callable[..., Any], addr: str) -> Callable[..., Any]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["REMOTE_ADDR"] = addr
        return app(environ, start_response)

    return wsgi


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.store.close()


def assert_throttled(r: Any, wait: int, message: str) -> None:
    assert r.status == 429, (r.status, r.text[:300])
    assert r.headers["retry-after"] == str(wait)
    assert message.format(wait=wait) in r.text
    assert "cc_session" not in "".join(r.set_cookies)


LOGIN_429 = "Too many failed logins; try again in {wait} seconds."


def test_login_throttled_per_username_from_any_address(site: Site) -> None:
    site.client().register("ann")
    site.client().register("bob")
    for i in range(LOGIN_FAILURES_PER_NAME):
        # Each guess from another phone, under another spelling of the name.
        r = site.client(f"192.0.2.{100 + i}").login("ANN" if i % 2 else "ann", "wrong guess")
        assert r.status == 401
    fresh = site.client("198.51.100.1")
    r = fresh.login("ann")  # even the right password waits: nobody can tell it was right
    assert_throttled(r, int(LOGIN_FAILURE_DECAY), LOGIN_429)
    assert 'value="ann"' in r.text, "the form keeps the name"
    assert site.client("198.51.100.1").login("bob").status == 303, "other names go on"
    site.clock.t += LOGIN_FAILURE_DECAY / 2
    assert_throttled(fresh.login("ann"), int(LOGIN_FAILURE_DECAY / 2), LOGIN_429)
    site.clock.t += LOGIN_FAILURE_DECAY / 2
    assert fresh.login("ann").status == 303, "failures drain over time"


def test_a_success_resets_the_usernames_count(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    for _ in range(3):
        for _ in range(LOGIN_FAILURES_PER_NAME - 1):
            assert c.login("ann", "wrong guess").status == 401
        assert site.client().login("ann").status == 303
    # The address's count is not reset by logging into one's own account.
    failed = 3 * (LOGIN_FAILURES_PER_NAME - 1)
    assert failed < LOGIN_FAILURES_PER_ADDRESS
    for i in range(LOGIN_FAILURES_PER_ADDRESS - failed):
        assert c.login(f"other{i}", "wrong guess").status == 401
    assert c.login("nobody", "whatever1").status == 429


def test_login_throttled_per_address_across_names(site: Site) -> None:
    site.client().register("bob")
    phone = site.client("192.0.2.66")
    for i in range(LOGIN_FAILURES_PER_ADDRESS):
        assert phone.login(f"user{i}", "wrong guess").status == 401
    assert_throttled(phone.login("bob"), int(LOGIN_FAILURE_DECAY), LOGIN_429)
    assert site.client("192.0.2.67").login("bob").status == 303, "another phone is fine"
    site.clock.t += LOGIN_FAILURE_DECAY
    assert phone.login("bob").status == 303


def test_x_forwarded_for_is_not_trusted(site: Site) -> None:
    c = site.client("192.0.2.66")
    for i in range(LOGIN_FAILURES_PER_ADDRESS):
        token = c.csrf("/login")
        r = c.post(
            "/login",
            {"csrf": token, "username": f"user{i}", "password": "x" * 8},
            headers={"X-Forwarded-For": f"10.0.{i}.1", "X-Real-IP": f"10.1.{i}.1"},
        )
        assert r.status == 401
    token = c.csrf("/login")
    r = c.post(
        "/login",
        {"csrf": token, "username": "user99", "password": "x" * 8},
        headers={"X-Forwarded-For": "10.9.9.9"},
    )
    assert r.status == 429


def test_ipv6_privacy_addresses_count_as_one_phone(site: Site) -> None:
    for i in range(LOGIN_FAILURES_PER_ADDRESS):
        r = site.client(f"2001:db8:0:7:{i:x}::1").login(f"user{i}", "wrong guess")
        assert r.status == 401
    assert site.client("2001:db8:0:7:abcd::99").login("other", "x" * 8).status == 429
    assert site.client("2001:db8:0:8::1").login("other", "x" * 8).status == 401


def test_registration_throttled_per_address(site: Site) -> None:
    phone = site.client("192.0.2.80")
    for i in range(REGISTRATIONS_PER_ADDRESS):
        assert phone.register(f"user{i}").status == 303
    r = phone.register("one_more")
    assert_throttled(
        r,
        int(REGISTRATION_DECAY),
        "Too many new accounts from this device; try again in {wait} seconds.",
    )
    assert not site.chat.accounts.exists("one_more")
    # Refused forms (a taken name, a bad password) do not count.
    other = site.client("192.0.2.81")
    for _ in range(REGISTRATIONS_PER_ADDRESS + 2):
        assert other.register("user0").status == 409
    assert other.register("one_more").status == 303
    site.clock.t += REGISTRATION_DECAY
    assert phone.register("later").status == 303
    assert phone.register("later_still").status == 429


def test_password_change_guesses_are_throttled(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    for _ in range(LOGIN_FAILURES_PER_NAME):
        token = c.csrf("/password")
        r = c.post(
            "/password",
            {
                "csrf": token,
                "current": "wrong guess",
                "password": "new password",
                "confirm": "new password",
            },
        )
        assert r.status == 400 and "The current password is not right." in r.text
    token = c.csrf("/password")
    r = c.post(
        "/password",
        {"csrf": token, "current": PASSWORD, "password": "new password", "confirm": "new password"},
    )
    assert_throttled(
        r, int(LOGIN_FAILURE_DECAY), "Too many wrong passwords; try again in {wait} seconds."
    )
    assert site.client("192.0.2.200").login("ann").status == 429, "and so are logins"
    site.clock.t += LOGIN_FAILURE_DECAY
    token = c.csrf("/password")
    r = c.post(
        "/password",
        {"csrf": token, "current": PASSWORD, "password": "new password", "confirm": "new password"},
    )
    assert r.status == 200 and "Password changed" in r.text


# -- forms: CSRF, sizes, encodings -------------------------------------------------------


def test_csrf_on_password_rename_and_across_sessions(site: Site) -> None:
    site.client().register("ann")
    site.client().register("bob")
    ann, bob = site.client(), site.client()
    ann.login("ann")
    bob.login("bob")
    anns_token = ann.csrf("/password")
    form = {"current": PASSWORD, "password": "new password", "confirm": "new password"}
    for token in [None, "", "forged", anns_token]:  # ann's token is no good for bob
        data = dict(form, **({"csrf": token} if token is not None else {}))
        r = bob.post("/password", data)
        assert r.status == 403 and "reload and try again" in r.text
        r = bob.post("/rename", dict(data, username="bobby"))
        assert r.status == 403
    assert site.client().login("bob").status == 303, "bob's password is unchanged"
    assert not site.chat.accounts.exists("bobby")


def test_a_form_without_a_length_or_of_another_type_is_refused(site: Site) -> None:
    c = site.client()
    token = c.csrf("/register")
    body = f"csrf={token}&username=ann&password={PASSWORD}&confirm={PASSWORD}"
    for headers, status in [
        ({"Transfer-Encoding": "chunked"}, 411),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/json"}, 415),
    ]:
        hdrs = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": c.cookie_header(),
            **headers,
        }
        status_got, _, data = c.transport("POST", "/register", hdrs, body.encode())
        assert status_got == status, (headers, data[:200])
    assert not site.chat.accounts.exists("ann")
    ok = {
        "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
        "Cookie": c.cookie_header(),
    }
    assert c.transport("POST", "/register", ok, body.encode())[0] == 303


def test_every_form_field_is_bounded(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    for path, name in [
        ("/login", "username"),
        ("/login", "password"),
        ("/register", "confirm"),
        ("/password", "current"),
        ("/logout", "csrf"),
    ]:
        r = c.post(path, {"csrf": "x", name: "y" * MAX_FORM_BYTES})
        assert r.status == 413, path
    huge_name = "a" * 3000
    r = site.client().login(huge_name, PASSWORD)
    assert r.status == 401


def latin1(text: str) -> str:
    """A path as a WSGI server hands it over: the URL's UTF-8 bytes as latin-1."""
    return text.encode().decode("latin-1")


@pytest.mark.parametrize(
    "path",
    [
        "/room/\xb2",
        latin1("/room/\u00b2"),
        "/room/" + "9" * 5000,
        latin1("/room/\u0663"),
        latin1("/ws/\u00b2"),
        "/room/ 1",
    ],
)
def test_odd_room_numbers_are_not_found(site: Site, path: str) -> None:
    site.client().register("ann")
    c = site.client()
    c.login("ann")
    assert c.get(path).status == 404


# -- cookies and headers -----------------------------------------------------------------


def test_cookie_flags(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    csrf_cookie = next(v for v in c.get("/login").set_cookies if v.startswith("cc_csrf="))
    assert "HttpOnly" in csrf_cookie and "samesite=strict" in csrf_cookie.lower()
    assert "Path=/" in csrf_cookie
    r = c.login("ann")
    session_cookie = next(v for v in r.set_cookies if v.startswith("cc_session="))
    assert "HttpOnly" in session_cookie and "samesite=lax" in session_cookie.lower()
    assert "Path=/" in session_cookie and "Max-Age=2592000" in session_cookie
    token = re.search(r"cc_session=([^;]+)", session_cookie)[1]
    assert len(token) >= 43, "256 random bits, URL-safe base64"
    r = c.post("/logout", {"csrf": c.csrf("/")})
    gone = next(v for v in r.set_cookies if v.startswith("cc_session="))
    assert "Max-Age=0" in gone or "expires=" in gone.lower()


def test_security_headers_on_every_response(site: Site) -> None:
    site.client().register("ann")
    c = site.client()
    responses = {
        "login": c.get("/login"),
        "register": c.get("/register"),
        "status": c.get("/status"),
        "static": c.get("/static/chat.js"),
        "redirect": c.get("/"),
        "404": c.get("/nowhere"),
        "403": c.post("/login", {"csrf": "forged"}),
        "413": c.post("/login", {"csrf": "x", "p": "y" * MAX_FORM_BYTES}),
        "ws-400": c.get("/ws/1"),
    }
    for _ in range(LOGIN_FAILURES_PER_NAME):
        c.login("ann", "wrong guess")
    responses["429"] = c.login("ann")
    responses["login-post"] = site.client("192.0.2.99").login("ann", "wrong guess")
    c2 = site.client("192.0.2.98")
    site.clock.t += LOGIN_FAILURE_DECAY
    c2.login("ann")
    responses.update(rooms=c2.get("/"), room=c2.get("/room/1"), password=c2.get("/password"))
    assert responses["429"].status == 429 and responses["rooms"].status == 200
    for what, r in responses.items():
        for name, value in HEADERS.items():
            assert r.headers.get(name) == value, (what, name, r.headers)
    csp = HEADERS["content-security-policy"]
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]:
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert HEADERS["x-content-type-options"] == "nosniff"
    assert HEADERS["referrer-policy"] == "no-referrer"
    assert HEADERS["x-frame-options"] == "DENY"


# -- against a real router ---------------------------------------------------------------


def test_logged_out_cookie_opens_no_page_and_no_socket(router: Router) -> None:
    ann = router.user("ann")
    w = router.ws(ann)
    assert w.recv()["type"] == "hello"
    w.close()
    old = dict(ann.cookies)
    assert ann.post("/logout", {"csrf": ann.csrf("/")}).status == 303
    replay = router.http()
    replay.cookies.update(old)
    assert replay.get("/").status == 303
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        router.ws(replay)
    assert e.value.status_code == 403


@pytest.mark.parametrize(
    "origin",
    ["", "null", "http://evil.example", "file://", "http://127.0.0.1.evil.example", "ws://{host}"],
)
def test_websocket_origin_must_be_this_host(router: Router, origin: str) -> None:
    ann = router.user("ann")
    host = f"127.0.0.1:{router.port}"
    headers = [f"Cookie: {ann.cookie_header()}"]
    url = f"ws://{host}/ws/1"
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        if origin:
            websocket.create_connection(
                url, timeout=5, origin=origin.format(host=host), header=headers
            )
        else:
            websocket.create_connection(url, timeout=5, suppress_origin=True, header=headers)
    assert e.value.status_code == 403


def test_a_huge_chunked_form_is_refused_unread(router: Router) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        chunk = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"
        try:
            for _ in range(4):
                s.sendall(chunk)
        except OSError:
            pass
        reply = s.recv(200)
    assert reply.startswith(b"HTTP/1.1 411"), reply
    assert router.status()["accounts"] == 0


def test_rate_limited_messages_are_not_stored(router: Router) -> None:
    a = router.ws(router.user("ann"))
    for i in range(RATE_BURST * 2):
        a.send({"type": "send", "text": f"m{i}", "client_id": f"c{i}"})
    for _ in range(RATE_BURST * 2):
        a.recv_until(lambda f: f["type"] in ("ack", "error"))
    codes = [f.get("code") for f in a.frames if f["type"] == "error"]
    assert codes == ["rate_limited"] * RATE_BURST
    assert router.status()["rooms"]["1"] == RATE_BURST
    a.close()


def test_query_string_ids_are_bounded(router: Router) -> None:
    ann = router.user("ann")
    for query in [
        "?after=0123456789abcdef:%B2",
        "?after=0123456789abcdef:" + "9" * 5000,
        "?after=" + "a" * 6000,
        "?after=%00%FF",
    ]:
        w = router.ws(ann, query=query)
        assert w.recv()["type"] == "hello"
        assert w.recv()["reset"] is True
        w.close()
    assert "Traceback" not in router.log()
