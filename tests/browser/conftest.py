"""Fixtures for the browser tests: one headless Chromium (Debian's, driven by
Playwright's sync API) per session, fresh contexts per test.

Every tab records what the page printed to the console, its uncaught errors,
every request and WebSocket it opened, and every ``securitypolicyviolation``
event, so tests can assert that a page broke no rule of the CSP and talked to
nobody but the router.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import require

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
