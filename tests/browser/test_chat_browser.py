"""The pages in a real browser: register, log in, chat between two contexts,
XSS, form errors, reconnecting after a router restart, a phone-width layout,
and the CSP.  Each test starts its own ``python -m app`` (the ``router``
fixture) and opens fresh browser contexts."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    RECONNECT_MS,
    WAIT_MS,
    OpenTab,
    chat_tab,
    enter_room,
    expect_connected,
    expect_rooms_page,
    messages_with_text,
    type_and_enter,
    ui_login,
)
from tests.helpers import PASSWORD, Router

pytestmark = pytest.mark.browser

# -- flows through the UI (the others: tests/browser/conftest.py) -------------


def ui_register(
    page: Page, router: Router, name: str, password: str = PASSWORD, confirm: str | None = None
) -> None:
    page.goto(router.base + "/register")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(password if confirm is None else confirm)
    page.get_by_role("button", name="Create account").click()


# -- tests --------------------------------------------------------------------


def test_register_login_and_chat_between_two_users(router: Router, open_tab: OpenTab) -> None:
    tabs = {}
    for name, viewport in (("alice", PHONE), ("bob", DESKTOP)):
        tab = tabs[name] = open_tab(viewport)
        page = tab.page
        ui_register(page, router, name)
        expect_rooms_page(page, router, name)  # registering logs in
        enter_room(page, router, 1)

    alice, bob = tabs["alice"].page, tabs["bob"].page
    text = "hello from the phone"
    type_and_enter(alice, text)

    for page in (bob, alice):
        li = messages_with_text(page, text)
        expect(li).to_have_count(1, timeout=WAIT_MS)
        expect(li.locator(".author")).to_have_text("alice")
        expect(li.locator(".node")).to_have_text(router.name)
    expect(messages_with_text(alice, text)).to_have_class(re.compile(r"\bmine\b"))
    expect(messages_with_text(bob, text)).not_to_have_class(re.compile(r"\bmine\b"))

    # Frames arrive in order on one socket: once a later message is shown, a
    # duplicate of the first would have been shown too.
    type_and_enter(bob, "and hello from the desk")
    for page in (alice, bob):
        expect(messages_with_text(page, "and hello from the desk")).to_have_count(1)
        expect(page.locator("#messages li.message")).to_have_count(2)
        expect(messages_with_text(page, text)).to_have_count(1)
        assert page.locator("#messages li.message .text").all_text_contents() == [
            text,
            "and hello from the desk",
        ]
    for tab in tabs.values():
        assert tab.page_errors == []


XSS_PAYLOADS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>"]


def test_markup_in_a_message_is_shown_as_text(router: Router, open_tab: OpenTab) -> None:
    sender = chat_tab(open_tab, router, "mallory", DESKTOP)
    reader = chat_tab(open_tab, router, "victim", PHONE)
    for payload in XSS_PAYLOADS:
        type_and_enter(sender.page, payload)
    for tab in (reader, sender):
        items = tab.page.locator("#messages li.message")
        expect(items).to_have_count(len(XSS_PAYLOADS), timeout=WAIT_MS)
        assert items.locator("p.text").all_text_contents() == XSS_PAYLOADS
        # The text is in the DOM as characters, not as elements.
        assert items.locator("p.text").evaluate_all("ps => ps.map(p => p.childElementCount)") == [
            0,
            0,
        ]
        assert tab.page.locator("#messages img, #messages script").count() == 0
        # An onerror fires only after the image fails to load: give it the time.
        tab.page.wait_for_timeout(300)
        assert tab.page.evaluate("typeof window.__xss") == "undefined"


def test_register_form_shows_errors(router: Router, open_tab: OpenTab) -> None:
    router.http().register("taken")
    page = open_tab(PHONE).page
    cases = [
        ("newbie", PASSWORD, PASSWORD + "x", "The passwords do not match."),
        ("TAKEN", PASSWORD, PASSWORD, "That username is taken; please choose another."),
        (
            "bad name!",
            PASSWORD,
            PASSWORD,
            "Username must be 1 to 32 characters: letters, digits, _ . -.",
        ),
        ("newbie", "short", "short", "Password must be 8 to 256 characters."),
    ]
    for name, password, confirm, message in cases:
        ui_register(page, router, name, password, confirm)
        expect(page.get_by_role("alert")).to_have_text(message, timeout=WAIT_MS)
        expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
        expect(page.get_by_label("Username")).to_have_value(name)
        expect(page.locator("p.notice")).to_have_count(0)
    # After all that, the same form (its CSRF token still good) does register.
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect_rooms_page(page, router, "newbie")


def test_wrong_password_is_refused(router: Router, open_tab: OpenTab) -> None:
    router.http().register("carol")
    tab = open_tab(PHONE)
    page = tab.page
    ui_login(page, router, "carol", PASSWORD + "!")
    expect(page.get_by_role("alert")).to_have_text(
        "Username or password is invalid.", timeout=WAIT_MS
    )
    expect(page).to_have_url(router.base + "/login")
    assert not [c for c in tab.context.cookies() if c["name"] == "cc_session"]
    # The right password from the same page still works.
    ui_login(page, router, "carol", navigate=False)
    expect_rooms_page(page, router, "carol")


def test_page_reconnects_after_the_router_restarts(router: Router, open_tab: OpenTab) -> None:
    tab = chat_tab(open_tab, router, "dave", PHONE)
    page = tab.page
    for text in ("before one", "before two"):
        type_and_enter(page, text)
        expect(messages_with_text(page, text)).to_have_count(1, timeout=WAIT_MS)

    router.stop()
    state = page.locator("#state")
    expect(state).to_contain_text("offline", timeout=WAIT_MS)
    expect(state).to_have_class(re.compile(r"\bbad\b"))

    router.start()  # same port, same data folder
    expect_connected(page, timeout=RECONNECT_MS)

    bob = router.user("erin")
    ws = router.ws(bob, room=1)
    try:
        ws.recv_type("history")
        ws.send({"type": "send", "text": "after the restart", "client_id": "c1"})
        ws.recv_type("ack")
    finally:
        ws.close()

    later = messages_with_text(page, "after the restart")
    expect(later).to_have_count(1, timeout=WAIT_MS)
    expect(later.locator(".author")).to_have_text("erin")
    expect(page.locator("#messages li.message")).to_have_count(3)
    assert page.locator("#messages li.message .text").all_text_contents() == [
        "before one",
        "before two",
        "after the restart",
    ]
    ids = page.locator("#messages li.message").evaluate_all("lis => lis.map(l => l.dataset.id)")
    assert len(set(ids)) == 3


def test_long_word_does_not_scroll_sideways_on_a_phone(router: Router, open_tab: OpenTab) -> None:
    tab = chat_tab(open_tab, router, "frank_with_a_rather_long_name_32", PHONE)
    page = tab.page
    for text in (
        "Hi all, is the bakery open today?",
        "Yes, until six.\nBring your own bag.",
        "x" * 300,
    ):
        type_and_enter(page, text)
    expect(page.locator("#messages li.message")).to_have_count(3, timeout=WAIT_MS)
    sizes = page.evaluate("""() => ({
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        inner: window.innerWidth,
        widest: Math.max(...[...document.querySelectorAll('main *')]
                            .map(e => e.getBoundingClientRect().right)),
    })""")
    assert sizes["inner"] == 360
    assert sizes["doc"] <= 360, sizes
    assert sizes["body"] <= 360, sizes
    assert sizes["widest"] <= 360, sizes
    tab.shot("room-360")
    tab.shot("room-360-full", full_page=True)


def test_pages_keep_to_the_csp_and_to_the_router(router: Router, open_tab: OpenTab) -> None:
    router.http().register("grace")
    tab = open_tab(PHONE)
    page = tab.page
    page.goto(router.base + "/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=WAIT_MS)
    tab.shot("login-360")
    assert tab.csp_violations() == []
    ui_login(page, router, "grace", navigate=False)
    expect_rooms_page(page, router, "grace")
    tab.shot("rooms-360")
    assert tab.csp_violations() == []
    enter_room(page, router, 1)
    type_and_enter(page, "checking the rules")
    expect(messages_with_text(page, "checking the rules")).to_have_count(1, timeout=WAIT_MS)
    # The stylesheet was applied (a CSP that blocked it would leave the defaults).
    assert page.locator("header.bar").evaluate("e => getComputedStyle(e).display") == "flex"
    assert tab.csp_violations() == []
    assert tab.page_errors == []
    errors = [text for kind, text in tab.console if kind == "error"]
    assert errors == []

    assert any(u.startswith("ws://127.0.0.1:") for u in tab.urls), tab.urls
    strangers = [
        u
        for u in tab.urls
        if urlsplit(u).hostname != "127.0.0.1" or urlsplit(u).port != router.port
    ]
    assert strangers == []

    # The recorder works: markup the CSP forbids is reported.
    page.evaluate("""() => {
        const s = document.createElement('script');
        s.textContent = 'window.__inline = 1';
        document.body.append(s);
    }""")
    expect(page.locator("body")).to_be_visible()
    page.wait_for_function("window.__cspViolations.length > 0", timeout=WAIT_MS)
    assert page.evaluate("typeof window.__inline") == "undefined"
    assert tab.csp_violations() != []


def test_newest_message_is_not_hidden_behind_the_composer(
    router: Router, open_tab: OpenTab
) -> None:
    poster = router.user("henry")
    ws = router.ws(poster, room=1)
    try:
        ws.recv_type("history")
        for i in range(10):  # the rate limit's burst: no waiting
            ws.send({"type": "send", "text": f"news item {i}\nsecond line", "client_id": f"c{i}"})
            ws.recv_type("ack")
    finally:
        ws.close()
    tab = chat_tab(open_tab, router, "iris", PHONE)
    page = tab.page
    expect(page.locator("#messages li.message")).to_have_count(10, timeout=WAIT_MS)

    def expect_newest_clears_composer() -> None:
        page.wait_for_function(
            """() => {
            const last = document.querySelector('#messages li.message:last-child');
            const composer = document.getElementById('send');
            return last.getBoundingClientRect().bottom <= composer.getBoundingClientRect().top;
        }""",
            timeout=WAIT_MS,
        )

    assert page.evaluate("document.documentElement.scrollHeight > innerHeight")
    # On opening the room (history) and after a message of one's own (live).
    expect_newest_clears_composer()
    type_and_enter(page, "my reply")
    expect(page.locator("#messages li.message:last-child .text")).to_have_text("my reply")
    expect_newest_clears_composer()
    tab.shot("room-360-scrolled")
