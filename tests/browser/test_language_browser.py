"""The pages in the browser's language: a German browser (Playwright's
``locale``, which sets Accept-Language and navigator.language) gets the
login, register and error pages in German at 360 px, within the CSP; an
English one gets English.  At 360 and 1280 px a German browser also gets
the room list, a room (its states, "seen by", search, a refusal on its
socket) and a direct conversation in German, with none of the English
they replaced left on the page."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from app.i18n import languages
from tests import catalogues
from tests.browser.conftest import (
    PHONE,
    VIEWPORTS,
    WAIT_MS,
    OpenTab,
    Tab,
    expect_clean,
    expect_rooms_page,
    messages_with_text,
    no_sideways_scroll,
)
from tests.helpers import PASSWORD, HttpSession, Router, loopback_mesh, routers, wait_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshot of the login page in the second language; kept
# fresh when the browser tests run with CC_SHOTS set (like the others).
SCREENSHOT = ROOT / "docs" / "screenshots" / "login-de-360.png"
# ...and of the chat's own pages in German (README, "Screenshots").
README_SHOTS = {"rooms-de-360", "room-de-360", "dm-de-1280"}


def test_pages_in_german_for_a_german_browser(router: Router, open_tab: OpenTab) -> None:
    router.http().register("taken")
    tab = open_tab(PHONE, locale="de-DE")
    page = tab.page
    page.goto(router.base + "/login")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page).to_have_title("Anmelden · Community Chat")
    expect(page.get_by_role("heading", name="Anmelden")).to_be_visible()
    expect(page.locator(".intro")).to_contain_text("Er braucht kein Internet")
    expect(page.locator(".intro")).to_contain_text("24 Stunden lang aufbewahrt")
    expect(page.locator("#online-now")).to_have_text("0 Personen gerade online.")
    expect(page.get_by_label("Benutzername")).to_be_visible()
    expect(page.get_by_label("Passwort")).to_be_visible()
    expect(page.get_by_role("link", name="Konto anlegen")).to_be_visible()
    # The page's strings for its scripts: data the CSP lets be, read as JSON.
    strings = page.evaluate("JSON.parse(document.getElementById('strings').textContent)")
    assert isinstance(strings, dict)
    no_sideways_scroll(page)
    expect_clean(tab)
    if os.environ.get("CC_SHOTS") or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
    tab.shot("login-de-360")

    # A wrong password, said in German.
    page.get_by_label("Benutzername").fill("taken")
    page.get_by_label("Passwort").fill(PASSWORD + "!")
    page.get_by_role("button", name="Anmelden").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Benutzername oder Passwort ist falsch.", timeout=WAIT_MS
    )

    # Register: the rules and the refusals in German, then it works.
    page.get_by_role("link", name="Konto anlegen").click()
    expect(page.get_by_role("heading", name="Konto anlegen")).to_be_visible()
    expect(page.locator("#name-rule")).to_have_text("1 bis 32 Zeichen: Buchstaben, Ziffern, _ . -")
    expect(page.locator("#pw-rule")).to_have_text("8 bis 256 Zeichen")
    cases = [
        ("neu", PASSWORD, PASSWORD + "x", "Die Passwörter stimmen nicht überein."),
        (
            "TAKEN",
            PASSWORD,
            PASSWORD,
            "Dieser Benutzername ist vergeben; bitte wähle einen anderen.",
        ),
        ("neu", "kurz", "kurz", "Das Passwort muss 8 bis 256 Zeichen lang sein."),
    ]
    for name, password, confirm, said in cases:
        page.get_by_label("Benutzername").fill(name)
        page.get_by_label("Passwort", exact=True).fill(password)
        page.get_by_label("Passwort wiederholen").fill(confirm)
        page.get_by_role("button", name="Konto erstellen").click()
        expect(page.get_by_role("alert")).to_have_text(said, timeout=WAIT_MS)
        no_sideways_scroll(page)
    tab.shot("register-de-360")
    page.get_by_label("Benutzername").fill("neu")
    page.get_by_label("Passwort", exact=True).fill(PASSWORD)
    page.get_by_label("Passwort wiederholen").fill(PASSWORD)
    page.get_by_role("button", name="Konto erstellen").click()
    expect(page).to_have_url(router.base + "/", timeout=WAIT_MS)

    # An address that is not there: the error page in German.
    page.goto(router.base + "/nirgends")
    expect(page.get_by_role("heading", name="404 Nicht gefunden")).to_be_visible()
    expect(page.locator("p.error")).to_have_text("Unter dieser Adresse gibt es nichts.")
    expect(page.get_by_role("link", name="Zurück zu den Räumen")).to_be_visible()
    no_sideways_scroll(page)
    expect_clean(tab)


def test_pages_in_english_for_an_english_browser(router: Router, open_tab: OpenTab) -> None:
    tab = open_tab(PHONE, locale="en-GB")
    page = tab.page
    page.goto(router.base + "/login")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator(".intro")).to_contain_text("kept for 24 hours")
    strings = page.evaluate("JSON.parse(document.getElementById('strings').textContent)")
    assert strings == {}  # English: the scripts' own msgids
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Username").fill("ann")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect_rooms_page(page, router, "ann")
    page.goto(router.base + "/nowhere")
    expect(page.get_by_role("heading", name="404 Not Found")).to_be_visible()
    expect_clean(tab)


def test_a_german_browser_keeps_its_language_across_pages(
    router: Router, open_tab: OpenTab
) -> None:
    """navigator.language and the header agree: what the scripts will read."""
    tab = open_tab(PHONE, locale="de-AT")
    page = tab.page
    page.goto(router.base + "/register")
    assert page.evaluate("navigator.language").startswith("de")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page).to_have_title("Registrieren · Community Chat")
    assert json.loads(page.locator("#strings").text_content() or "null") is not None
    expect_clean(tab)


# -- the chat's pages in German ------------------------------------------------------------

# Where the strings of the room list, a room and a conversation come from.
CHAT_SOURCES = {
    "rooms": ("templates/rooms.tpl", "static/rooms.js"),
    "room": ("templates/room.tpl", "templates/dm.tpl", "static/chat.js"),
}
_PLACEHOLDER = re.compile(r"%\([a-z]+\)[sd]|\{[a-z]+\}")


@cache
def english_words(page: str) -> tuple[str, ...]:
    """The English of every msgid of a page's sources, as the pieces around
    its placeholders, that its German translation does not also say
    ("Online:", "Live."); a piece needs three letters to count."""
    de = languages()["de"]
    pieces: set[str] = set()
    for path, _line, msgid in catalogues.sources():
        if path not in CHAT_SOURCES[page]:
            continue
        if isinstance(msgid, tuple):
            german = " ".join(de.ngettext(msgid[0], msgid[1], n) for n in (1, 2))
            english = list(msgid)
        else:
            german, english = de.gettext(msgid), [msgid]
        for text in english:
            for between in _PLACEHOLDER.split(text):
                piece = between.strip(" .,:;?“”")
                if sum(ch.isalpha() for ch in piece) >= 3 and piece not in german:
                    pieces.add(piece)
    return tuple(sorted(pieces))


def english_left(page: Page, which: str) -> list[str]:
    """The English pieces of ``which`` page's strings that the visible page says."""
    text = page.evaluate("document.body.innerText")
    return [w for w in english_words(which) if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text)]


def shot(tab: Tab, name: str) -> None:
    """A screenshot for CC_SHOTS, and the README's own kept fresh in docs/."""
    tab.shot(name)
    path = ROOT / "docs" / "screenshots" / f"{name}.png"
    if name in README_SHOTS and (os.environ.get("CC_SHOTS") or not path.exists()):
        tab.page.screenshot(path=str(path))


def login_in_german(page: Page, router: Router, name: str) -> None:
    page.goto(router.base + "/login")
    page.get_by_label("Benutzername").fill(name)
    page.get_by_label("Passwort").fill(PASSWORD)
    page.get_by_role("button", name="Anmelden").click()
    expect(page).to_have_url(router.base + "/", timeout=WAIT_MS)


def send_over_ws(router: Router, session: HttpSession, path: str, text: str) -> None:
    """One message on a socket of ``path`` (a room's number or "dm/<name>"), acknowledged."""
    ws = router.ws(session, path)  # type: ignore[arg-type]
    try:
        ws.recv_type("history")
        ws.send({"type": "send", "text": text, "client_id": "c-" + path})
        ws.recv_until(lambda f: f.get("type") == "ack")
    finally:
        ws.close()


# A refusal on the room's socket, asked by the page itself: the upgrade
# request carries the browser's Accept-Language.
REFUSED_OVER_WS = """async (path) => {
  const ws = new WebSocket("ws://" + location.host + path);
  return await new Promise((resolve) => {
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.type === "history") ws.send(JSON.stringify({type: "send", text: " ", client_id: "x"}));
      if (f.type === "error") { ws.close(); resolve(f); }
    };
    setTimeout(() => resolve({type: "timeout"}), 4000);
  });
}"""


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_room_list_room_and_conversation_in_german(
    tmp_path: Path, open_tab: OpenTab, viewport: dict[str, int]
) -> None:
    w = viewport["width"]
    with routers(tmp_path, "ra", "rc", extra=loopback_mesh(tmp_path)) as (a, c):
        assert a.http().register("ann").status == 303
        bob = c.user("bob")
        wait_for(lambda: a.status()["vector"] == c.status()["vector"], what="ann on C")
        send_over_ws(c, bob, "1", "Wer kommt morgen zum Treffen im Garten?")
        send_over_ws(c, bob, "dm/ann", "Hast du morgen Zeit?")
        wait_for(lambda: a.status()["vector"] == c.status()["vector"], what="bob's on A")

        tab = open_tab(viewport, locale="de-DE")
        page = tab.page
        login_in_german(page, a, "ann")

        # The room list, redrawn by its socket: counts, previews, plurals.
        expect(page.locator("#live")).to_have_text("Live.", timeout=WAIT_MS)
        expect(page).to_have_title("(2) Räume · Community Chat")
        expect(page.get_by_role("heading", name="Räume")).to_be_visible()
        expect(page.locator("main")).to_contain_text("Angemeldet als ann")
        room1 = page.locator(".rooms li[data-room='1']")
        expect(room1.get_by_role("link")).to_have_text("Raum 1")
        expect(room1.locator(".badge")).to_have_text("1 ungelesen")
        expect(room1.locator(".meta")).to_have_text("0 online")
        expect(page.locator(".rooms li[data-room='2'] .preview")).to_have_text(
            "Noch keine Nachrichten."
        )
        expect(page.locator("#direct li[data-peer='bob'] .badge")).to_have_text("1 ungelesen")
        expect(page.get_by_role("heading", name="Direktnachrichten")).to_be_visible()
        expect(page.get_by_label("Einen Ton spielen")).to_be_visible()
        expect(page.get_by_role("button", name="Abmelden")).to_be_visible()
        assert english_left(page, "rooms") == []
        no_sideways_scroll(page, w)
        shot(tab, f"rooms-de-{w}")

        # A room: its state, a message of mine seen by router C, search.
        room1.get_by_role("link").click()
        expect(page.locator("#state")).to_have_text("verbunden", timeout=WAIT_MS)
        expect(page).to_have_title("Raum 1 · Community Chat")
        theirs = messages_with_text(page, "Wer kommt morgen zum Treffen im Garten?")
        expect(theirs).to_have_attribute("data-day", "Heute")
        expect(theirs.locator("a.author")).to_have_attribute("title", "An bob schreiben")
        expect(page.locator("#text")).to_have_attribute("placeholder", "Nachricht an Raum 1")
        page.locator("#text").fill("Ich komme um sieben.")
        page.get_by_role("button", name="Senden").click()
        mine = messages_with_text(page, "Ich komme um sieben.")
        expect(mine.locator(".status")).to_have_text("Von 1 Router gesehen", timeout=8000)
        page.get_by_role("button", name="Suchen", exact=True).first.click()
        search = page.get_by_role("searchbox", name="In diesem Raum suchen")
        search.fill("Gartenzwerg")
        search.press("Enter")
        expect(page.locator("#search-note")).to_have_text("Nichts gefunden für „Gartenzwerg“.")
        search.fill("morgen")
        search.press("Enter")
        expect(page.locator("#search-note")).to_have_text("1 Nachricht gefunden, neueste zuerst.")
        expect(page.locator("#results li")).to_have_count(1)
        # A longer word than the English must not break over two lines ("Such-en").
        lines = page.locator("#search button[type=submit]").evaluate(
            "b => { const r = document.createRange(); r.selectNodeContents(b);"
            " return r.getClientRects().length; }"
        )
        assert lines == 1, f"the search button's word takes {lines} lines at {w} px"
        expect(page.locator("summary")).to_have_text("Online: 1")
        assert english_left(page, "room") == []
        no_sideways_scroll(page, w)
        shot(tab, f"room-de-{w}")
        # A refusal on this room's socket comes in German (the upgrade's Accept-Language).
        refused: dict[str, Any] = page.evaluate(REFUSED_OVER_WS, "/ws/1")
        assert refused["message"] == "Eine Nachricht braucht etwas Text.", refused

        # A direct conversation: the privacy note, a reply, blocking.
        page.goto(a.base + "/dm/bob")
        expect(page.locator("#state")).to_have_text("verbunden", timeout=WAIT_MS)
        expect(page.locator("#privacy")).to_contain_text(
            "Privat heißt hier: verborgen vor anderen Benutzern"
        )
        expect(page.locator("#privacy strong")).to_have_text(
            "Privat heißt hier: verborgen vor anderen Benutzern"
        )
        expect(messages_with_text(page, "Hast du morgen Zeit?")).to_have_count(1)
        expect(page.locator("#text")).to_have_attribute("placeholder", "Nachricht an bob")
        page.locator("#text").fill("Ja, ab sechs.")
        page.locator("#text").press("Enter")
        reply = messages_with_text(page, "Ja, ab sechs.")
        expect(reply.locator(".status")).to_have_text(
            re.compile(r"^(Gesendet|Von 1 Router gesehen)$"), timeout=WAIT_MS
        )
        assert english_left(page, "room") == []
        no_sideways_scroll(page, w)
        shot(tab, f"dm-de-{w}")
        asked: list[str] = []

        def answer(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", answer)
        page.get_by_role("button", name="Blockieren").click()
        expect(page.get_by_role("button", name="Blockierung aufheben")).to_be_visible()
        assert asked == [
            "bob blockieren? Dann kann bob dir auf keinem Router mehr Direktnachrichten schicken."
        ]
        expect(page.locator("#blocked-note")).to_have_text(
            "Du hast bob blockiert. Hebe die Blockierung auf, um zu schreiben."
        )
        assert english_left(page, "room") == []
        expect_clean(tab)
