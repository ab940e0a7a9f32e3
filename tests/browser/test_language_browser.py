"""The pages in the browser's language: a German browser (Playwright's
``locale``, which sets Accept-Language and navigator.language) gets the
login, register and error pages in German at 360 px, within the CSP; an
English one gets English."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, WAIT_MS, Tab
from tests.browser.test_chat_browser import OpenTab, expect_rooms_page
from tests.helpers import PASSWORD, Router

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshot of the login page in the second language; kept
# fresh when the browser tests run with CC_SHOTS set (like the others).
SCREENSHOT = ROOT / "docs" / "screenshots" / "login-de-360.png"


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide"


def clean(tab: Tab) -> None:
    assert not tab.csp_violations(), tab.csp_violations()
    assert not tab.page_errors, tab.page_errors


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
    clean(tab)
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
    clean(tab)


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
    clean(tab)


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
    clean(tab)
