"""A name two routers gave out while cut off from each other, in a real
browser: the person whose registration came second has room 1 open on her
router when the cut heals; her page is told at once and takes her to the
form that asks for a new name (app/site.py sends a displaced session there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, OpenTab, chat_tab, expect_clean
from tests.helpers import loopback_mesh, routers

pytestmark = pytest.mark.browser

HEAL_MS = 20_000  # two routers on loopback agree in about a second; CI is shared


def own_mesh(tmp_path: Path, name: str) -> list[str]:
    folder = tmp_path / name
    folder.mkdir()
    return loopback_mesh(folder)


def test_a_displaced_persons_open_room_goes_to_the_rename_form(
    open_tab: OpenTab, tmp_path: Path
) -> None:
    mesh_a, mesh_b = own_mesh(tmp_path, "ka"), own_mesh(tmp_path, "kb")
    with routers(tmp_path, "nb", extra=mesh_b) as (b,):
        assert b.http().register("ann").status == 303  # B gives the name out first
        with routers(tmp_path, "na", extra=mesh_a) as (a,):
            tab = chat_tab(open_tab, a, "ann", PHONE)  # then A, to someone else
            b.stop()
            b.extra = mesh_a  # the cut heals: B joins A's mesh
            b.start()
            expect(tab.page).to_have_url(a.base + "/rename", timeout=HEAL_MS)
            expect(tab.page.locator("main")).to_contain_text("ann", timeout=HEAL_MS)
            expect_clean(tab)
