"""The phone experience in a real browser, at 360x740 and 1280x800: unread
counts on the room list, delivery state, the lost-connection banner,
scroll-back and the captive-portal redirect."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    HISTORY_SIZE,
    PHONE,
    RECONNECT_MS,
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
)
from tests.helpers import Router, loopback_mesh, routers

pytestmark = pytest.mark.browser


def wait_until(pred: Callable[[], object], page: Page, timeout_ms: int = WAIT_MS) -> None:
    """Wait for something the test process sees (frames recorded by events),
    letting the browser's events run meanwhile."""
    for _ in range(timeout_ms // 50):
        if pred():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out")


def record_sent_frames(page: Page) -> list[dict]:
    """Every JSON frame the page sends on its WebSockets, as it sends it."""
    sent: list[dict] = []

    def on_socket(ws):  # type: ignore[no-untyped-def]
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return sent


def expect_unread(page: Page, counts: dict[int, int]) -> None:
    for room, n in counts.items():
        item = page.locator(f".rooms li[data-room='{room}']")
        expect(item).to_have_attribute("data-unread", str(n))
        badge = item.locator(".badge")
        if n:
            expect(badge).to_have_text(f"{n} unread")
        else:
            expect(badge).to_have_count(0)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_unread_counts_across_two_rooms_and_a_reload(
    router: Router, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    tab = logged_in_tab(open_tab, router, "ann", viewport)
    page = tab.page
    bob = router.user("bob")
    post(router, bob, {1: ["one", "two", "three"], 2: ["in two", "x" * 120]})
    page.reload()
    expect_unread(page, {1: 3, 2: 2, 3: 0, 4: 0})
    room2 = page.locator(".rooms li[data-room='2']")
    # The preview: the author and the start of the last message, as text.
    expect(room2.locator(".preview")).to_have_text("bob: " + "x" * 59 + "…")
    expect(page.locator(".rooms li[data-room='3'] .preview")).to_have_text("No messages yet.")
    tab.shot(f"rooms-unread-{viewport['width']}")

    sent = record_sent_frames(page)
    enter_room(page, router, 1)
    expect(messages_with_text(page, "three")).to_have_count(1)
    wait_until(lambda: any(f["type"] == "read" for f in sent), page)
    page.get_by_role("link", name="All rooms").click()
    expect_rooms_page(page, router, "ann")
    expect_unread(page, {1: 0, 2: 2})

    page.reload()  # kept on the server, not in the page
    expect_unread(page, {1: 0, 2: 2})
    post(router, bob, {1: ["four"]})
    page.reload()
    expect_unread(page, {1: 1, 2: 2})
    expect(page.locator(".rooms li[data-room='1'] .preview")).to_have_text("bob: four")
    assert tab.page_errors == []


@pytest.fixture
def mesh_pair(tmp_path: Path) -> Iterator[list[Router]]:
    """Two routers on loopback that form a mesh."""
    extra = [*loopback_mesh(tmp_path)]
    with routers(tmp_path, "pa", "pb", extra=extra) as pair:
        yield pair


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_delivery_state_reaches_seen_by_one_router(
    mesh_pair: list[Router], open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    a, b = mesh_pair
    tab = chat_tab(open_tab, a, "ann", viewport)
    page = tab.page
    box = page.locator("#text")
    box.fill("is anyone on the other router?")
    box.press("Enter")
    # Sending (a pending bubble), then stored here, then seen by router B.
    mine = messages_with_text(page, "is anyone on the other router?")
    expect(mine.locator(".status")).to_have_text("Seen by 1 router", timeout=8000)
    expect(page.locator("#outbox li")).to_have_count(0)
    assert b.status()["rooms"]["1"] == 1
    tab.shot(f"room-seen-{viewport['width']}")
    # A reload shows the same state.
    page.reload()
    expect(
        messages_with_text(page, "is anyone on the other router?").locator(".status")
    ).to_have_text("Seen by 1 router")
    assert tab.page_errors == []


def test_a_message_that_cannot_be_sent_stays_and_is_offered_for_retry(
    router: Router, open_tab: OpenTab
) -> None:
    tab = chat_tab(open_tab, router, "ann", PHONE)
    page = tab.page
    type_and_enter(page, "first")
    expect(messages_with_text(page, "first").locator(".status")).to_have_text("Sent")
    router.stop()
    expect(page.locator("#banner")).to_be_visible()
    box = page.locator("#text")
    box.fill("written while the router was away")
    box.press("Enter")
    # Kept in the input, with a visible Retry.
    expect(box).to_have_value("written while the router was away")
    expect(page.locator("#unsent")).to_be_visible()
    expect(page.locator("#unsent-text")).to_contain_text("Not connected")
    tab.shot("room-unsent-360")
    router.start()
    expect_connected(page, timeout=RECONNECT_MS)
    page.get_by_role("button", name="Retry").click()
    expect(messages_with_text(page, "written while the router was away")).to_have_count(1)
    expect(box).to_have_value("")
    expect(page.locator("#unsent")).to_be_hidden()
    # A message the router refuses (too long here: the page's maxlength is
    # bypassed) comes back into the input with the reason.
    box.evaluate("b => { b.removeAttribute('maxlength'); b.value = 'y'.repeat(2001); }")
    box.press("Enter")
    expect(page.locator("#unsent-text")).to_contain_text("at most 2000 characters")
    expect(box).to_have_value("y" * 2001)
    expect(page.locator("#messages li.message")).to_have_count(2)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_banner_while_the_router_is_away_then_exactly_the_missed_messages(
    router: Router, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    tab = chat_tab(open_tab, router, "ann", viewport)
    page = tab.page
    bob = router.user("bob")
    post(router, bob, {1: ["before 1", "before 2"]})
    expect(page.locator("#messages li.message")).to_have_count(2)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()

    router.stop()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("No connection to the router")
    tab.shot(f"room-offline-{viewport['width']}")
    page.wait_for_timeout(2500)  # the page's back-off grows past a second
    router.start()
    # Posted while the page is still away: these are what it missed.
    post(router, bob, {1: ["missed 1", "missed 2", "missed 3"]})
    expect_connected(page, timeout=RECONNECT_MS)
    expect(banner).to_be_hidden()
    post(router, bob, {1: ["after"]})
    expected = ["before 1", "before 2", "missed 1", "missed 2", "missed 3", "after"]
    expect(page.locator("#messages li.message .text")).to_have_text(expected)
    ids = page.locator("#messages li.message").evaluate_all("lis => lis.map(l => l.dataset.id)")
    assert len(set(ids)) == len(expected)
    # The page asked for exactly what came after the last message it had.
    assert any("?after=" in u for u in tab.urls if u.startswith("ws://")), tab.urls
    assert tab.page_errors == []


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_scrolling_up_loads_older_history(
    long_history: Router, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    tab = chat_tab(open_tab, long_history, "ann", viewport)
    page = tab.page
    items = page.locator("#messages li.message")
    expect(items).to_have_count(100)
    expect(page.locator("#messages li.message:last-child .text")).to_have_text(
        f"old {HISTORY_SIZE - 1:03d}"
    )
    first_id = items.first.get_attribute("data-id")

    page.evaluate("window.scrollTo(0, 0)")  # the top comes into view: older ones load
    expect(items).to_have_count(150)
    # The message that was first is still in view: the page did not jump.
    box = page.locator(f"li[data-id='{first_id}']").bounding_box()
    assert box is not None and 0 <= box["y"] < viewport["height"], box
    page.evaluate("window.scrollTo(0, 0)")
    expect(items).to_have_count(HISTORY_SIZE)
    expect(page.locator("#older")).to_be_hidden()
    expect(page.locator("#start")).to_be_visible()
    texts = page.locator("#messages li.message .text").all_text_contents()
    assert texts == [f"old {i:03d}" for i in range(HISTORY_SIZE)]
    # Day separators (the history spans at least one midnight) and runs of
    # one author drawn as groups.
    assert page.locator("#messages li.day-start").count() >= 2
    wrong = items.evaluate_all("""lis => lis.filter((li, i) => {
        const prev = lis[i - 1];
        const sameRun = Boolean(prev) && prev.msg.author === li.msg.author
            && !li.classList.contains("day-start");
        return li.classList.contains("cont") !== sameRun;
    }).map(li => li.dataset.id)""")
    assert wrong == []
    assert page.locator("#messages li.cont").count() > HISTORY_SIZE // 2
    tab.shot(f"room-scrollback-{viewport['width']}")
    assert tab.page_errors == []


def hide_page(page: Page, hidden: bool) -> None:
    """What switching to another tab and back does to the page."""
    page.evaluate(
        """(h) => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => h});
        document.dispatchEvent(new Event('visibilitychange'));
    }""",
        hidden,
    )


def test_new_messages_marker_mentions_and_the_tab_title(router: Router, open_tab: OpenTab) -> None:
    tab = logged_in_tab(open_tab, router, "ann", PHONE)
    page = tab.page
    bob = router.user("bob")
    post(router, bob, {1: ["hello room", "are you there @Ann?", "mail for @annie"]})
    enter_room(page, router, 1)
    items = page.locator("#messages li.message")
    expect(items).to_have_count(3)
    # Unread on arrival: the marker sits above the first one.
    expect(page.locator("#messages li.first-new .text")).to_have_text("hello room")
    # One author's run is one group: the second and third drop the name.
    expect(page.locator("#messages li.cont")).to_have_count(2)
    # @ann is highlighted (any case); @annie is not ann.
    mention = page.locator("#messages mark.mention")
    expect(mention).to_have_count(1)
    expect(mention).to_have_text("@Ann")
    expect(page.locator("#messages li.mentions-me .text")).to_have_text("are you there @Ann?")
    assert page.locator("#messages li.message time").first.get_attribute("datetime")

    title = page.title()
    hide_page(page, True)
    post(router, bob, {1: ["while you were away", "and another"]})
    expect(items).to_have_count(5)
    expect(page).to_have_title("(2) " + title)
    expect(page.locator("#messages li.first-new .text")).to_have_text("while you were away")
    tab.shot("room-marker-360")
    hide_page(page, False)
    expect(page).to_have_title(title)
    type_and_enter(page, "back now")  # answering clears the marker
    expect(page.locator("#messages li.first-new")).to_have_count(0)
    assert tab.page_errors == []


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_captive_portal_probe_opens_the_login_page(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    with routers(tmp_path, "cp", extra=["--no-mesh", "--captive-portal"]) as (r,):
        tab = open_tab(viewport)
        page = tab.page
        for probe in ("/generate_204", "/hotspot-detect.html", "/connecttest.txt"):
            page.goto(r.base + probe)
            expect(page).to_have_url(r.base + "/login")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        # The page offers itself for the home screen.
        manifest = page.locator("link[rel=manifest]").get_attribute("href")
        assert manifest == "/static/manifest.webmanifest"
        assert page.request.get(r.base + manifest).json()["name"] == "Community Chat"
        expect_clean(tab)


def assert_no_sideways_scroll(page: Page, width: int) -> None:
    page.wait_for_load_state("load")  # the stylesheet is applied
    sizes = page.evaluate("""() => ({
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        widest: Math.max(...[...document.querySelectorAll('body *')]
                            .filter(e => e.getClientRects().length)
                            .map(e => e.getBoundingClientRect().right)),
    })""")
    assert sizes["doc"] <= width and sizes["body"] <= width, sizes
    assert sizes["widest"] <= width + 0.5, sizes


def test_large_text_keeps_to_the_phone_width_and_controls_are_labelled(
    router: Router, open_tab: OpenTab
) -> None:
    bob = router.user("bob")
    post(
        router,
        bob,
        {
            1: [
                "a fairly long message to wrap over several lines at large text",
                "@ann look",
                "supercalifragilistic" * 5,
            ]
        },
    )
    # Text at 200 % (the phone's "largest text" setting) on a 360 px screen.
    tab = logged_in_tab(open_tab, router, "ann_with_a_long_name_here", PHONE)
    page = tab.page
    page.evaluate("document.documentElement.style.fontSize = '200%'")  # CSSOM: CSP allows
    assert_no_sideways_scroll(page, PHONE["width"])
    tab.shot("rooms-360-large-text", full_page=True)
    enter_room(page, router, 1)
    expect(page.locator("#messages li.message")).to_have_count(3)
    page.evaluate("document.documentElement.style.fontSize = '200%'")
    router.stop()  # the banner too
    expect(page.locator("#banner")).to_be_visible()
    page.locator("#text").fill("something to send")
    page.locator("#text").press("Enter")
    expect(page.locator("#unsent")).to_be_visible()
    assert_no_sideways_scroll(page, PHONE["width"])
    tab.shot("room-360-large-text", full_page=True)
    # Every control has a name, and Tab walks them in reading order.
    for role, name in (
        ("link", "All rooms"),
        ("textbox", "Message"),
        ("button", "Send"),
        ("button", "Retry"),
        ("button", "Try now"),
    ):
        expect(page.get_by_role(role, name=name)).to_have_count(1)
    page.locator("a.brand").focus()  # the page's first control
    order = []
    for _ in range(9):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )
    # The banner's button first, then the room, the unsent message's Retry
    # just above the input it refills, the attach button, the input, Send.
    want = ["reconnect", "← Rooms", "retry", "attach-file", "text", "Send"]
    assert [x for x in order if x in want] == want, order
