"""Issue 16, first part, in a real browser at 360x740 and 1280x800: a room
named by an admin on router A shows on router C; the room list updates
live; search finds a message and jumps to it; a resend after a dropped ack
stores one message; day labels roll over at midnight."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import WebSocketRoute, expect

from tests.browser.conftest import (
    HISTORY_SIZE,
    VIEWPORTS,
    WAIT_MS,
    OpenTab,
    chat_tab,
    enter_room,
    expect_clean,
    expect_connected,
    expect_rooms_page,
    logged_in_tab,
    messages_with_text,
    post,
    type_and_enter,
    ui_login,
    vp_name,
)
from tests.helpers import Router, loopback_mesh, routers, wait_for
from tests.integration.test_moderation import bind_admin

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_room_named_on_a_shows_on_c(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    with routers(tmp_path, "ra", "rc", extra=loopback_mesh(tmp_path)) as (a, c):
        bind_admin(a, "boss", c)
        boss = open_tab(viewport)
        ui_login(boss.page, a, "boss")
        expect_rooms_page(boss.page, a, "boss")
        cat = logged_in_tab(open_tab, c, "cat", viewport)
        enter_room(boss.page, a, 1)
        page = boss.page
        page.get_by_role("button", name="Name room").click()
        page.get_by_label("Room name").fill("Garden club")
        page.get_by_label("Topic").fill("Seeds, tools and the Saturday plot")
        boss.shot(f"name-room-{vp_name(viewport)}")
        page.get_by_role("button", name="Save on every router").click()
        expect(page.locator("#room-name")).to_have_text("Garden club")
        expect(page).to_have_title("Garden club · Community Chat")
        # On C: the room list shows it without a reload, then the room itself.
        expect(cat.page.get_by_role("link", name="Garden club")).to_be_visible(timeout=3 * WAIT_MS)
        expect(cat.page.locator(".rooms li[data-room='1'] .topic")).to_have_text(
            "Seeds, tools and the Saturday plot"
        )
        cat.shot(f"rooms-named-{vp_name(viewport)}")
        cat.page.get_by_role("link", name="Garden club").click()
        expect_connected(cat.page)
        expect(cat.page).to_have_title("Garden club · Community Chat")
        expect(cat.page.locator("#topic")).to_have_text("Seeds, tools and the Saturday plot")
        # Not an admin: no button, and the server refuses the frame anyway.
        expect(cat.page.get_by_role("button", name="Name room")).to_be_hidden()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_room_list_updates_live(
    router: Router, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    tab = logged_in_tab(open_tab, router, "ann", viewport)
    page = tab.page
    expect(page.locator("#live")).to_have_text("Live.")
    post(router, router.user("bob"), {2: ["first", "the kettle is on"]})
    item = page.locator(".rooms li[data-room='2']")
    expect(item).to_have_attribute("data-unread", "2")
    expect(item.locator(".badge")).to_have_text("2 unread")
    expect(item.locator(".preview")).to_have_text("bob: the kettle is on")
    tab.shot(f"rooms-live-{vp_name(viewport)}")
    expect_clean(tab)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_search_finds_a_message_and_jumps_to_it(
    long_history: Router,
    open_tab: OpenTab,
    viewport: dict[str, int],
) -> None:
    tab = chat_tab(open_tab, long_history, "ann", viewport)
    page = tab.page
    expect(page.locator("#messages li.message")).to_have_count(100)
    expect(messages_with_text(page, "old 007")).to_have_count(0)  # not loaded yet
    page.get_by_role("button", name="Search").first.click()
    page.get_by_placeholder("Search this room").fill("OLD 007")
    page.get_by_placeholder("Search this room").press("Enter")
    result = page.locator("#results li a")
    expect(result).to_have_count(1)
    expect(result.locator("mark")).to_have_text("old 007")
    page.locator("#search").scroll_into_view_if_needed()  # the history may scroll on meanwhile
    tab.shot(f"search-{vp_name(viewport)}")
    result.click()
    target = messages_with_text(page, "old 007")
    expect(target).to_have_count(1)
    expect(target).to_have_class(re.compile(r"\btarget\b"))
    expect(target).to_be_in_viewport()
    expect(page.get_by_role("button", name="Load newer messages")).to_be_visible()
    tab.shot(f"search-jump-{vp_name(viewport)}")
    page.get_by_role("link", name="Back to the latest messages").click()
    expect(page.locator("#messages li.message:last-child .text")).to_have_text(
        f"old {HISTORY_SIZE - 1:03d}"
    )
    expect_clean(tab)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_resend_after_a_dropped_ack_stores_one_message(
    router: Router, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    tab = chat_tab(open_tab, router, "ann", viewport)
    page = tab.page
    dropped: list[str] = []

    def lose_the_first_ack(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if not dropped and '"type":"ack"' in str(message):
                dropped.append(str(message))
                ws.close()  # the ack never reaches the page
                return
            ws.send(message)

        ws.on_message(server.send)
        server.on_message(from_server)

    page.route_web_socket(re.compile(r"/ws/1"), lose_the_first_ack)
    page.reload()
    expect_connected(page)
    box = page.locator("#text")
    box.fill("said once")
    box.press("Enter")
    expect(page.locator("#unsent")).to_be_visible()
    expect(box).to_have_value("said once")
    wait_for(lambda: router.status()["rooms"]["1"] == 1, what="stored before the ack was lost")
    expect_connected(page)
    page.get_by_role("button", name="Retry").click()
    expect(box).to_have_value("")
    expect(page.locator("#outbox li")).to_have_count(0)
    expect(messages_with_text(page, "said once")).to_have_count(1)
    type_and_enter(page, "and then this")
    expect(messages_with_text(page, "and then this")).to_have_count(1)
    assert router.status()["rooms"]["1"] == 2, "the retry was answered, not stored again"
    assert len(dropped) == 1


def test_day_labels_roll_over_at_midnight(router: Router, open_tab: OpenTab) -> None:
    bob = router.user("bob")
    post(router, bob, {1: ["before midnight"]})
    tab = open_tab()
    tab.page.clock.install()
    ui_login(tab.page, router, "bob")
    expect_rooms_page(tab.page, router, "bob")
    enter_room(tab.page, router, 1)
    first = tab.page.locator("#messages li.message").first
    expect(first).to_have_attribute("data-day", "Today")
    to_midnight = tab.page.evaluate(
        "(() => { const n = new Date(); return new Date(n.getFullYear(), n.getMonth(),"
        " n.getDate() + 1) - n; })()"
    )
    tab.page.clock.fast_forward(int(to_midnight) + 2000)
    expect(first).to_have_attribute("data-day", "Yesterday")
