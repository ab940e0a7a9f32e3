"""Issue 16, direct messages and attention, in a real browser at 360x740 and
1280x800: a direct message between people on routers A and C, started from
a name in a room, seen by both and refused to a third person over HTTP and
WebSocket; a block refuses the sender, who is told; the attention setting
is kept on the routers (the same on C as set on A); the unread count goes
into the title and onto the icon."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    VIEWPORTS,
    WAIT_MS,
    OpenTab,
    enter_room,
    expect_clean,
    expect_connected,
    logged_in_tab,
    messages_with_text,
    type_and_enter,
    ui_login,
    vp_name,
)
from tests.helpers import Router, loopback_mesh, routers, wait_for

pytestmark = pytest.mark.browser

# What a third person's page gets when it asks for someone else's direct
# message on a socket of its own: the first error frame, as text.
ASK_OVER_WS = """async ([path, frame]) => {
  const ws = new WebSocket("ws://" + location.host + path);
  return await new Promise((resolve) => {
    const done = (v) => { ws.close(); resolve(v); };
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.type === "history") ws.send(JSON.stringify(frame));
      if (f.type === "error" || f.type === "results") done(f);
    };
    ws.onclose = () => resolve({type: "closed"});
    setTimeout(() => done({type: "timeout"}), 4000);
  });
}"""


def in_step(a: Router, c: Router) -> None:
    wait_for(lambda: a.status()["vector"] == c.status()["vector"], what="A and C hold the same")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_direct_message_between_two_routers_and_no_one_else(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    with routers(tmp_path, "ra", "rc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann = logged_in_tab(open_tab, a, "ann", viewport)
        bob = logged_in_tab(open_tab, c, "bob", viewport)
        in_step(a, c)
        # Ann says hello in room 1 on A; Bob, on C, opens a conversation from her name.
        enter_room(ann.page, a, 1)
        type_and_enter(ann.page, "hello room")
        enter_room(bob.page, c, 1)
        expect(messages_with_text(bob.page, "hello room")).to_have_count(1, timeout=3 * WAIT_MS)
        ann.page.goto(a.base + "/")  # Ann waits on the room list
        bob.page.locator("#messages a.author", has_text="ann").first.click()
        expect(bob.page).to_have_url(c.base + "/dm/ann")
        expect_connected(bob.page)
        privacy = bob.page.locator("#privacy")
        expect(privacy).to_contain_text("hidden from other users")
        expect(privacy).to_contain_text("not from whoever runs a router or holds the mesh key")
        type_and_enter(bob.page, "psst, ann: lunch?")
        expect(messages_with_text(bob.page, "psst, ann: lunch?")).to_have_count(1)
        bob.shot(f"dm-{vp_name(viewport)}")

        # Ann's room list on A shows it live: unread, preview, title and icon.
        item = ann.page.locator("#direct li[data-peer='bob']")
        expect(item.locator(".badge")).to_contain_text("1", timeout=3 * WAIT_MS)
        expect(item.locator(".preview")).to_contain_text("psst, ann: lunch?")
        expect(ann.page).to_have_title(re.compile(r"^\(1\) "))
        expect(ann.page.locator("html")).to_have_attribute("data-badge", "1")
        icon = ann.page.locator("link[rel='icon']")
        wait_for(
            lambda: (icon.get_attribute("href") or "").startswith("data:image/png"),
            what="the icon with its badge",
        )
        ann.shot(f"dm-list-{vp_name(viewport)}")
        item.get_by_role("link", name="bob").click()
        expect_connected(ann.page)
        expect(messages_with_text(ann.page, "psst, ann: lunch?")).to_have_count(1)
        dm_id = messages_with_text(ann.page, "psst, ann: lunch?").get_attribute("data-id")
        assert dm_id
        type_and_enter(ann.page, "yes, at one")
        expect(messages_with_text(bob.page, "yes, at one")).to_have_count(1, timeout=3 * WAIT_MS)
        ann.shot(f"dm-reply-{vp_name(viewport)}")

        # Carol, a third person on A: refused over HTTP and over WebSocket.
        carol = logged_in_tab(open_tab, a, "carol", viewport)
        response = carol.page.goto(a.base + f"/message/{dm_id}")
        assert response is not None and response.status == 404
        response = ann.page.request.get(a.base + f"/message/{dm_id}", max_redirects=0)
        assert response.status == 303, "its own people are led to it"
        carol.page.goto(a.base + "/")
        refused = carol.page.evaluate(ASK_OVER_WS, ["/ws/dm/bob", {"type": "around", "id": dm_id}])
        assert refused["type"] == "error" and refused["code"] == "not_found", refused
        refused = carol.page.evaluate(ASK_OVER_WS, ["/ws/1", {"type": "around", "id": dm_id}])
        assert refused["type"] == "error" and refused["code"] == "not_found", refused
        found = carol.page.evaluate(ASK_OVER_WS, ["/ws/dm/ann", {"type": "search", "q": "lunch"}])
        assert found == {"type": "results", "q": "lunch", "results": []}
        carol.page.goto(a.base + "/dm/bob")
        expect_connected(carol.page)
        expect(carol.page.locator("#messages li.message")).to_have_count(0)
        assert "lunch" not in carol.page.content()
        for tab in (ann, bob, carol):
            expect_clean(tab)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_block_refuses_the_sender_on_another_router(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    with routers(tmp_path, "ra", "rc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann = logged_in_tab(open_tab, a, "ann", viewport)
        bob = logged_in_tab(open_tab, c, "bob", viewport)
        in_step(a, c)
        bob.page.goto(c.base + "/dm/ann")
        expect_connected(bob.page)
        bob.page.once("dialog", lambda d: d.accept())
        bob.page.get_by_role("button", name="Block").click()
        expect(bob.page.get_by_role("button", name="Unblock")).to_be_visible()
        expect(bob.page.locator("#blocked-note")).to_contain_text("You blocked ann")
        bob.shot(f"dm-blocked-{vp_name(viewport)}")
        in_step(a, c)
        ann.page.goto(a.base + "/dm/bob")
        expect_connected(ann.page)
        expect(ann.page.locator("#blocked-note")).to_contain_text(
            "bob does not take direct messages from you"
        )
        ann.page.locator("#text").fill("let me in")
        ann.page.locator("#text").press("Enter")  # refused: it comes back into the box
        expect(ann.page.locator("#unsent-text")).to_contain_text(
            "Not sent: bob does not take direct messages from you"
        )
        expect(ann.page.locator("#text")).to_have_value("let me in")
        ann.shot(f"dm-refused-{vp_name(viewport)}")
        # Unblocked on C: Ann's retry on A goes through.
        bob.page.get_by_role("button", name="Unblock").click()
        expect(bob.page.get_by_role("button", name="Block")).to_be_visible()
        in_step(a, c)
        ann.page.get_by_role("button", name="Retry").click()
        expect(messages_with_text(bob.page, "let me in")).to_have_count(1, timeout=3 * WAIT_MS)
        for tab in (ann, bob):
            expect_clean(tab)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_attention_setting_is_kept_on_every_router(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    with routers(tmp_path, "ra", "rc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann = logged_in_tab(open_tab, a, "ann", viewport)
        page = ann.page
        expect(page.get_by_text("Live.")).to_be_visible()
        sound, vibrate = page.get_by_label("Play a sound"), page.get_by_label("Vibrate")
        expect(sound).not_to_be_checked()
        sound.check()
        vibrate.check()
        ann.shot(f"attention-{vp_name(viewport)}", full_page=True)
        wait_for(
            lambda: 'data-sound="1" data-vibrate="1"' in page.request.get(a.base + "/").text(),
            what="the setting stored on A",
        )
        in_step(a, c)
        # The same person on router C, in a fresh browser: the same setting.
        there = open_tab(viewport)
        ui_login(there.page, c, "ann")
        expect(there.page.get_by_label("Play a sound")).to_be_checked()
        expect(there.page.get_by_label("Vibrate")).to_be_checked()
        # And on a room page of C, a mention of ann makes the page alert.
        enter_room(there.page, c, 1)
        bob_http = a.user("bob")
        ws = a.ws(bob_http, 1)
        ws.recv_type("history")
        ws.send({"type": "send", "text": "@ann look", "client_id": "m1"})
        ws.recv_type("ack")
        ws.close()
        expect(messages_with_text(there.page, "@ann look")).to_have_count(1, timeout=3 * WAIT_MS)
        expect(there.page.locator("html")).to_have_attribute("data-alerted", "1")
        there.page.goto(c.base + "/")
        there.page.get_by_label("Play a sound").uncheck()
        in_step(a, c)
        page.reload()
        expect(page.get_by_label("Play a sound")).not_to_be_checked()
        expect(page.get_by_label("Vibrate")).to_be_checked()
        for tab in (ann, there):
            expect_clean(tab)
