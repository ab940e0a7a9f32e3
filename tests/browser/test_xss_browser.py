"""A corpus of XSS payloads, in messages, in the register form's username and
in room URLs: each is shown as text, and no script runs (a dialog handler and
a window flag would both notice)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, WAIT_MS, OpenTab, chat_tab, type_and_enter
from tests.helpers import Router

pytestmark = pytest.mark.browser

# Each one, if it ran, sets window.__pwned or opens a dialog.
CORPUS = [
    "<script>window.__pwned=1</script>",
    "<img src=x onerror=window.__pwned=2>",
    "<svg onload=window.__pwned=3>",
    "<svg><script>alert(4)</script></svg>",
    '"><script>alert(5)</script>',
    "'><img src=x onerror=alert(6)>",
    '<iframe src="javascript:alert(7)"></iframe>',
    '<a href="javascript:alert(8)">click</a>',
    "<body onload=alert(9)>",
    "<details open ontoggle=alert(10)>",
    '<math><mi xlink:href="javascript:alert(11)">x</mi></math>',
    "javascript:alert(12)",
    "{{7*7}} ${alert(13)} <%= 7*7 %>",
    "</textarea><script>alert(14)</script>",
    "<style>*{display:none}</style>",
    "&lt;script&gt;alert(15)&lt;/script&gt;",
]


def watch(page: Page) -> list[str]:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def test_message_corpus_is_text(router: Router, open_tab: OpenTab) -> None:
    sender = chat_tab(open_tab, router, "mallory", DESKTOP)
    reader = chat_tab(open_tab, router, "victim", PHONE)
    seen = [watch(tab.page) for tab in (sender, reader)]
    for i, payload in enumerate(CORPUS):
        type_and_enter(sender.page, payload)
        if i % 8 == 7:  # stay inside the per-user burst
            sender.page.wait_for_timeout(4000)
    for tab, dialogs in ((sender, seen[0]), (reader, seen[1])):
        texts = tab.page.locator("#messages li.message p.text")
        expect(texts).to_have_count(len(CORPUS), timeout=3 * WAIT_MS)
        assert texts.all_text_contents() == CORPUS
        assert set(texts.evaluate_all("ps => ps.map(p => p.childElementCount)")) == {0}
        tab.page.wait_for_timeout(300)  # an onerror fires once the image fails
        assert tab.page.evaluate("typeof window.__pwned") == "undefined"
        assert dialogs == []
        expect(tab.page.locator("body")).to_be_visible()  # the <style> did not apply


def test_username_and_room_url_payloads_are_text(router: Router, open_tab: OpenTab) -> None:
    tab = open_tab(PHONE)
    dialogs = watch(tab.page)
    for payload in CORPUS[:6]:
        tab.page.goto(router.base + "/register")
        tab.page.get_by_label("Username").fill(payload[:32])
        tab.page.get_by_label("Password", exact=True).fill("long enough pw")
        tab.page.get_by_label("Password again").fill("long enough pw")
        tab.page.get_by_role("button", name="Create account").click()
        expect(tab.page.locator(".error")).to_contain_text("Username must be", timeout=WAIT_MS)
        # The form keeps what was typed, as a value, not as markup.
        assert tab.page.get_by_label("Username").input_value() == payload[:32]
    router.http().register("ann")
    for payload in CORPUS:
        tab.page.goto(router.base + "/room/" + quote(payload, safe=""))
        expect(tab.page.locator("h1")).to_contain_text("Not Found", timeout=WAIT_MS)
    tab.page.wait_for_timeout(300)
    assert tab.page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
