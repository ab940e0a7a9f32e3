"""Moderation in a real browser: an admin deletes a message and another
browser sees it vanish; a non-admin sees no controls and is refused anyway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    OpenTab,
    Tab,
    chat_tab,
    enter_room,
    expect_rooms_page,
    messages_with_text,
    type_and_enter,
    ui_login,
)
from tests.helpers import Router, routers
from tests.integration.test_moderation import bind_admin

pytestmark = pytest.mark.browser


@pytest.fixture
def admin_router(tmp_path: Path) -> Iterator[Router]:
    with routers(tmp_path, "modb", extra=["--no-mesh"]) as (r,):
        bind_admin(r, "boss")  # registered, then bound: app/moderation.py
        yield r


def boss_tab(open_tab: OpenTab, router: Router) -> Tab:
    """The admin's tab: the account exists already (bound by the operator)."""
    tab = open_tab(DESKTOP)
    ui_login(tab.page, router, "boss")
    expect_rooms_page(tab.page, router, "boss")
    enter_room(tab.page, router)
    return tab


def test_admin_deletes_and_another_browser_sees_it_vanish(
    admin_router: Router, open_tab: OpenTab
) -> None:
    ann = chat_tab(open_tab, admin_router, "ann", PHONE)
    boss = boss_tab(open_tab, admin_router)
    type_and_enter(ann.page, "please delete me")
    type_and_enter(ann.page, "keep me")
    target = messages_with_text(boss.page, "please delete me")
    expect(target).to_have_count(1, timeout=WAIT_MS)
    expect(messages_with_text(boss.page, "keep me")).to_have_count(1, timeout=WAIT_MS)
    expect(boss.page.locator("#clear")).to_be_visible()
    target.get_by_role("button", name="Delete").click()
    # Gone from the other browser, with a note instead.
    expect(messages_with_text(ann.page, "please delete me")).to_have_count(0, timeout=WAIT_MS)
    expect(ann.page.locator(".message.removed .note")).to_have_text(
        "Message deleted by boss.", timeout=WAIT_MS
    )
    expect(messages_with_text(ann.page, "keep me")).to_have_count(1)
    # ...and for a page opened afterwards.
    late = chat_tab(open_tab, admin_router, "cat", PHONE)
    expect(messages_with_text(late.page, "keep me")).to_have_count(1, timeout=WAIT_MS)
    expect(messages_with_text(late.page, "please delete me")).to_have_count(0)


def test_non_admin_sees_no_controls_and_is_refused_anyway(
    admin_router: Router, open_tab: OpenTab
) -> None:
    ann = chat_tab(open_tab, admin_router, "ann", PHONE)
    type_and_enter(ann.page, "mine")
    expect(messages_with_text(ann.page, "mine")).to_have_count(1, timeout=WAIT_MS)
    expect(ann.page.locator(".admin-tools")).to_have_count(0)
    expect(ann.page.locator("#clear")).to_be_hidden()
    mid = ann.page.locator(".message").first.get_attribute("data-id")
    # A page that sends the action anyway (a tampered page) gets an error frame.
    reply = ann.page.evaluate(
        """(id) => new Promise((resolve) => {
        const ws = new WebSocket(`ws://${location.host}/ws/1`);
        ws.onmessage = (ev) => {
            const f = JSON.parse(ev.data);
            if (f.type === "presence") ws.send(JSON.stringify({type: "delete", id: id}));
            if (f.type === "error") { resolve(JSON.stringify(f)); ws.close(); }
        };
        setTimeout(() => resolve("timeout"), 4000);
    })""",
        mid,
    )
    assert json.loads(reply)["code"] == "forbidden"
    expect(messages_with_text(ann.page, "mine")).to_have_count(1)
    assert admin_router.status()["rooms"]["1"] == 1
