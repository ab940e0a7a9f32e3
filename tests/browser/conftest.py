"""Fixtures for the browser tests: one headless Chromium (Debian's, driven by
Playwright's sync API) per session, fresh contexts per test.

Every tab records what the page printed to the console, its uncaught errors,
every request and WebSocket it opened, and every ``securitypolicyviolation``
event, so tests can assert that a page broke no rule of the CSP and talked to
nobody but the router.

Also here, for every browser test: the flows through the pages that many
tests go through (log in, enter a room, send), messages posted behind the
page's back, and a router with a long history (``long_history``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from node.clock import pack
from node.record import Record, RecordKind
from node.store import Store
from tests.conftest import require
from tests.helpers import PASSWORD, HttpSession, Router, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Upper bound for one action or assertion on a page served from loopback.
WAIT_MS = 5000
# Chromium itself takes a second or two to start on a shared CI machine.
LAUNCH_TIMEOUT_MS = 30_000
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
VIEWPORTS = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]
# The page retries with back-off 0.5, 1, 2, 4 s (±25 %): a router that is back
# within a second or two is reconnected to within this.
RECONNECT_MS = 12_000
# Set CC_SHOTS=/some/dir to keep screenshots of the pages the tests visit.
SHOTS_DIR = os.environ.get("CC_SHOTS")

# Runs in every page before its own scripts; init scripts are not subject to
# the page's CSP, so this listener sees every violation the page causes.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class Tab:
    """A page in its own browser context, with what it did recorded."""

    context: BrowserContext
    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        """Violations from the console and from the page's own events."""
        seen = [
            text
            for _kind, text in self.console
            if "Content Security Policy" in text or "Content-Security-Policy" in text
        ]
        events = self.page.evaluate("window.__cspViolations || []")
        return seen + list(events)

    def shot(self, name: str, *, full_page: bool = False) -> None:
        if SHOTS_DIR:
            Path(SHOTS_DIR).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS_DIR) / f"{name}.png"), full_page=full_page)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """``open_tab(viewport)`` opens a page in a fresh context (own cookies)."""
    contexts: list[BrowserContext] = []

    def make(viewport: dict[str, int] | None = None, **context_options: Any) -> Tab:
        ctx = browser.new_context(viewport=viewport or PHONE, **context_options)
        contexts.append(ctx)
        ctx.set_default_timeout(WAIT_MS)
        ctx.set_default_navigation_timeout(WAIT_MS)
        ctx.add_init_script(RECORD_CSP_VIOLATIONS)
        page = ctx.new_page()
        tab = Tab(ctx, page)
        page.on("console", lambda m: tab.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: tab.page_errors.append(str(e)))
        page.on("request", lambda r: tab.urls.append(r.url))
        page.on("websocket", lambda ws: tab.urls.append(ws.url))
        return tab

    yield make
    for ctx in contexts:
        ctx.close()


OpenTab = Callable[..., Tab]


def vp_name(viewport: dict[str, int]) -> str:
    """A viewport in a screenshot's name: its width."""
    return str(viewport["width"])


def expect_clean(tab: Tab) -> None:
    """The page broke no rule of the CSP and raised no error."""
    assert tab.csp_violations() == [], tab.csp_violations()
    assert tab.page_errors == [], tab.page_errors


def no_sideways_scroll(page: Page, width: int = PHONE["width"]) -> None:
    """The page is no wider than the screen (a phone's by default)."""
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll}px wide"


# -- flows through the UI -----------------------------------------------------


def ui_login(
    page: Page, router: Router, name: str, password: str = PASSWORD, *, navigate: bool = True
) -> None:
    if navigate:
        page.goto(router.base + "/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def expect_rooms_page(page: Page, router: Router, name: str) -> None:
    expect(page).to_have_url(router.base + "/", timeout=WAIT_MS)
    expect(page.get_by_role("heading", name="Rooms")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("main")).to_contain_text(f"Logged in as {name}", timeout=WAIT_MS)


def enter_room(page: Page, router: Router, room: int = 1) -> None:
    page.get_by_role("link", name=f"Room {room}", exact=True).click()
    expect(page).to_have_url(f"{router.base}/room/{room}", timeout=WAIT_MS)
    expect_connected(page)


def expect_connected(page: Page, timeout: int = WAIT_MS) -> None:
    state = page.locator("#state")
    expect(state).to_have_text("connected", timeout=timeout)
    expect(state).to_have_class(re.compile(r"\bok\b"), timeout=timeout)


def logged_in_tab(open_tab: OpenTab, router: Router, name: str, viewport: dict[str, int]) -> Tab:
    """A tab of a new user on the room list: registered over HTTP, logged in by the form."""
    r = router.http().register(name)
    assert r.status == 303, r.text
    tab = open_tab(viewport)
    ui_login(tab.page, router, name)
    expect_rooms_page(tab.page, router, name)
    return tab


def chat_tab(
    open_tab: OpenTab, router: Router, name: str, viewport: dict[str, int] | None = None
) -> Tab:
    """A tab of a new user, in room 1 (``logged_in_tab``, then the room)."""
    tab = logged_in_tab(open_tab, router, name, viewport or PHONE)
    enter_room(tab.page, router)
    return tab


def type_and_enter(page: Page, text: str) -> None:
    box = page.locator("#text")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("", timeout=WAIT_MS)


def messages_with_text(page: Page, text: str) -> Locator:
    return page.locator("#messages li.message").filter(
        has=page.locator("p.text").filter(has_text=re.compile("^" + re.escape(text) + "$"))
    )


# -- behind the page's back ---------------------------------------------------


def post(router: Router, session: HttpSession, texts: dict[int, list[str]]) -> None:
    """Post ``texts[room]`` in each room over a WebSocket, each acknowledged."""
    for room, items in texts.items():
        ws = router.ws(session, room)
        try:
            ws.recv_type("history")
            for text in items:
                # Each message its own client id: a repeated one is a resend (app/resend.py).
                cid = f"c{time.monotonic_ns()}"
                ws.send({"type": "send", "text": text, "client_id": cid})
                ws.recv_until(lambda f, cid=cid: f.get("type") == "ack" and f["client_id"] == cid)
        finally:
            ws.close()


HISTORY_SIZE = 160  # more than the first page (100) and one scroll-back page (50)
OLD_ORIGIN = "0123456789abcdef"


@pytest.fixture
def long_history(tmp_path: Path) -> Iterator[Router]:
    """A router whose room 1 already holds ``HISTORY_SIZE`` messages, one per
    15 minutes (so they span two days or more), by bob and cat in runs."""
    data = tmp_path / "hist" / "data"
    store = Store(data, 4)
    now_ms = int(time.time() * 1000)
    for i in range(HISTORY_SIZE):
        at = now_ms - (HISTORY_SIZE - i) * 15 * 60_000
        author = "bob" if (i // 3) % 2 == 0 else "cat"
        store.append(
            Record(
                OLD_ORIGIN,
                i + 1,
                pack(at, 0),
                RecordKind.MESSAGE,
                1,
                {"author": author, "node": "elsewhere", "time": at, "text": f"old {i:03d}"},
            )
        )
    store.close()
    r = Router(data, free_port(), "hist", ["--no-mesh", "--retention", "7d"])
    try:
        yield r.start()
    finally:
        r.stop()
