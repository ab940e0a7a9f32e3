"""Pictures and files in a real browser at phone width (issue 15, "Must show"):
a photo attached on router A (re-encoded in the page, its location data
gone, a progress bar while it goes up) shows with its thumbnail on a second
browser on router B, which opens it full size (B fetches it from A then); a
PDF downloads under its name; an SVG with a script and an HTML file named
.jpg are never rendered, not in the timeline and not opened directly; a
photo in a direct message, attached on A, opens full size for the other
person on B and for nobody else.

Screenshots go to docs/screenshots/photo-*.png when CC_SHOTS is set to
docs/screenshots (tests/browser/conftest.py ``Tab.shot``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    PHONE,
    WAIT_MS,
    OpenTab,
    Tab,
    chat_tab,
    expect_clean,
    expect_connected,
    expect_rooms_page,
    logged_in_tab,
    no_sideways_scroll,
    ui_login,
)
from tests.helpers import Router, running, wait_for
from tests.integration.test_blobs_chat import blob_file, two_routers
from tests.unit.test_images import HTML, PDF, SVG_WITH_SCRIPT

pytestmark = pytest.mark.browser

GPS_MARK = b"GPSLatitude 52.5200 N 13.4050 E"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[Router]]:
    with running(two_routers(tmp_path)) as made:
        yield made


def camera_photo(page: Page, tmp_path: Path) -> Path:
    """A 3,000 x 2,000 JPEG as a camera makes it (drawn and encoded by
    Chromium), with an Exif segment naming a place, written to a file."""
    data = page.evaluate(
        """async () => {
          const c = document.createElement("canvas");
          c.width = 3000; c.height = 2000;
          const g = c.getContext("2d");
          const img = g.createImageData(3000, 2000);
          let seed = 7;
          for (let p = 0; p < img.data.length; p += 4) {
            seed = (seed * 1103515245 + 12345) & 0x7fffffff;
            const x = (p / 4) % 3000, y = Math.floor(p / 12000), n = (seed >> 16) & 15;
            img.data[p] = (x / 12 + n) & 255;
            img.data[p + 1] = (y / 8 + n) & 255;
            img.data[p + 2] = ((x + y) / 20 + n) & 255;
            img.data[p + 3] = 255;
          }
          g.putImageData(img, 0, 0);
          const b = await new Promise((r) => c.toBlob(r, "image/jpeg", 0.95));
          const bytes = new Uint8Array(await b.arrayBuffer());
          let s = ""; for (const x of bytes) s += String.fromCharCode(x);
          return btoa(s);
        }"""
    )
    jpeg = base64.b64decode(data)
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + GPS_MARK
    exif = b"\xff\xe1" + len(payload + b"xx").to_bytes(2, "big") + payload
    path = tmp_path / "IMG_2041.jpg"
    path.write_bytes(jpeg[:2] + exif + jpeg[2:])
    return path


def slow_uploads(tab: Tab, bytes_per_s: int) -> None:
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_s,
        },
    )


def attach(page: Page, path: Path) -> None:
    page.locator("#attach-file").set_input_files(str(path))


def viewer_size(page: Page) -> list[int]:
    """The natural size of the picture the viewer shows, once it has loaded."""
    page.wait_for_function(
        "() => { const i = document.querySelector('#viewer img');"
        " return i && i.naturalWidth > 0; }",
        timeout=WAIT_MS,
    )
    return page.evaluate(  # type: ignore[no-any-return]
        "() => { const i = document.querySelector('#viewer img');"
        " return [i.naturalWidth, i.naturalHeight]; }"
    )


def test_a_photo_on_a_shows_and_opens_full_size_on_b(
    pair: list[Router], open_tab: OpenTab, tmp_path: Path
) -> None:
    a, b = pair
    ann = chat_tab(open_tab, a, "ann", PHONE)
    bob = chat_tab(open_tab, b, "bob", PHONE)
    photo = camera_photo(ann.page, tmp_path)
    assert GPS_MARK in photo.read_bytes() and photo.stat().st_size > 600_000
    slow_uploads(ann, 150_000)  # a weak Wi-Fi link: the progress bar is seen
    page = ann.page
    attach(page, photo)
    pending = page.locator("#outbox li.blob-pending")
    expect(pending.locator("progress.upload-progress")).to_be_visible()
    expect(pending.locator(".upload-note")).to_contain_text("removed its location")
    page.wait_for_function(
        "() => { const p = document.querySelector('#outbox progress');"
        " return p && p.value > 0 && p.value < 100; }",
        timeout=WAIT_MS,
    )
    ann.shot("photo-uploading-360")
    mine = page.locator("#messages li.message.mine").filter(has=page.locator("img.blob-thumb"))
    expect(mine).to_have_count(1, timeout=30_000)
    expect(mine.locator(".status")).to_have_text("Seen by 1 router", timeout=10_000)
    expect(page.locator("#outbox li")).to_have_count(0)
    # What went up: a JPEG at most 1,600 px a side, without the camera's data.
    found = a.status()["blobs"]
    assert found["count"] == 1 and found["stored"] == 1
    (stored,) = (a.data_dir / "blobs").glob("??/*")
    data = stored.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and GPS_MARK not in data and b"Exif" not in data
    assert len(data) < photo.stat().st_size / 2
    sha = stored.name
    assert hashlib.sha256(data).hexdigest() == sha
    # On B: the thumbnail came with the message; the photo is not there yet.
    other = bob.page.locator("#messages li.message").filter(has=bob.page.locator("img.blob-thumb"))
    expect(other).to_have_count(1, timeout=10_000)
    thumb_src = other.locator("img.blob-thumb").get_attribute("src") or ""
    assert thumb_src.startswith("data:image/jpeg;base64,")
    assert len(base64.b64decode(thumb_src.split(",", 1)[1])) <= 6 * 1024
    assert not blob_file(b, sha).exists()
    bob.shot("photo-thumbnail-360")
    other.locator("button.blob-open").click()
    full = bob.page.locator("#viewer img.viewer-img")
    expect(full).to_be_visible()
    size = viewer_size(bob.page)
    assert size == [1600, 1067], size  # 3,000 x 2,000 made 1,600 px on its longest side
    assert blob_file(b, sha).read_bytes() == data  # fetched from A when the page asked
    assert b.status()["blobs"]["fetched"] == 1
    bob.shot("photo-full-size-360")
    # Nothing sideways at 360 px, nothing against the CSP, no script error.
    for tab in (ann, bob):
        no_sideways_scroll(tab.page)
        expect_clean(tab)


def test_a_pdf_downloads_under_its_name(
    pair: list[Router], open_tab: OpenTab, tmp_path: Path
) -> None:
    a, b = pair
    ann = chat_tab(open_tab, a, "ann", PHONE)
    bob = chat_tab(open_tab, b, "bob", PHONE)
    pdf = tmp_path / "street party.pdf"
    pdf.write_bytes(PDF)
    attach(ann.page, pdf)
    link = bob.page.locator("#messages a.blob-file")
    expect(link).to_have_count(1, timeout=15_000)
    expect(link.locator(".blob-name")).to_have_text("street party.pdf")
    expect(link.locator(".blob-size")).to_have_text(f"{len(PDF)} bytes")
    bob.shot("photo-file-link-360")
    with bob.page.expect_download() as dl:
        link.click()
    download = dl.value
    assert download.suggested_filename == "street party.pdf"
    assert Path(download.path()).read_bytes() == PDF
    assert bob.page_errors == []


@pytest.mark.parametrize(
    ("name", "data"),
    [("drawing.svg", SVG_WITH_SCRIPT), ("holiday.jpg", HTML)],
    ids=["svg-with-script", "html-named-jpg"],
)
def test_svg_and_html_are_never_rendered(
    pair: list[Router], open_tab: OpenTab, tmp_path: Path, name: str, data: bytes
) -> None:
    a, b = pair
    ann = chat_tab(open_tab, a, "ann", PHONE)
    bob = chat_tab(open_tab, b, "bob", PHONE)
    dialogs: list[str] = []
    for tab in (ann, bob):
        tab.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    path = tmp_path / name
    path.write_bytes(data)
    attach(ann.page, path)
    link = bob.page.locator("#messages a.blob-file")
    expect(link).to_have_count(1, timeout=15_000)  # a download link, not a picture
    expect(bob.page.locator("#messages img")).to_have_count(0)
    sha = hashlib.sha256(data).hexdigest()
    # Opened directly, it is a download: never a page of our origin.
    with bob.page.expect_download() as dl:
        bob.page.evaluate("(u) => { location.href = u; }", f"/blob/{sha}")
    assert Path(dl.value.path()).read_bytes() == data
    # As a picture it shows nothing: the bytes are not served as an image.
    natural = bob.page.evaluate(
        """(u) => new Promise((done) => {
             const i = new Image(); i.onload = () => done(i.naturalWidth);
             i.onerror = () => done(-1); i.src = u; })""",
        f"/blob/{sha}",
    )
    assert natural == -1
    bob.page.wait_for_timeout(300)
    assert dialogs == [], dialogs
    # Still in the room and still logged in: the HTML's fetch('/logout') never ran.
    assert bob.page.url.endswith("/room/1")
    bob.page.reload()
    expect_connected(bob.page)


def test_a_photo_in_a_direct_message_opens_on_the_other_router_and_for_no_one_else(
    pair: list[Router], open_tab: OpenTab, tmp_path: Path
) -> None:
    """Ann on A attaches a photo in her conversation with bob, who is on B:
    bob's page shows its thumbnail (it came with the message) and opens it
    full size (B pulls it from A then); carol, logged in on either router,
    gets 404 for it."""
    a, b = pair
    ann = logged_in_tab(open_tab, a, "ann", PHONE)
    bob = logged_in_tab(open_tab, b, "bob", PHONE)
    carol = logged_in_tab(open_tab, b, "carol", PHONE)
    wait_for(lambda: ann.page.request.get(a.base + "/dm/bob").status == 200, 10, "bob on A")
    wait_for(lambda: bob.page.request.get(b.base + "/dm/ann").status == 200, 10, "ann on B")
    ann.page.goto(a.base + "/dm/bob")
    bob.page.goto(b.base + "/dm/ann")
    for tab in (ann, bob):
        expect_connected(tab.page)
        expect(tab.page.locator("#privacy")).to_contain_text(
            "messages, pictures and files travel between routers"
        )
    photo = camera_photo(ann.page, tmp_path)
    attach(ann.page, photo)
    mine = ann.page.locator("#messages li.message.mine").filter(
        has=ann.page.locator("img.blob-thumb")
    )
    expect(mine).to_have_count(1, timeout=30_000)
    expect(ann.page.locator("#outbox li")).to_have_count(0)
    (stored,) = (a.data_dir / "blobs").glob("??/*")
    sha = stored.name
    # On B: the thumbnail came with the direct message; the photo is not there yet.
    other = bob.page.locator("#messages li.message").filter(has=bob.page.locator("img.blob-thumb"))
    expect(other).to_have_count(1, timeout=10_000)
    thumb_src = other.locator("img.blob-thumb").get_attribute("src") or ""
    assert thumb_src.startswith("data:image/jpeg;base64,")
    assert not blob_file(b, sha).exists()
    bob.shot("dm-photo-thumbnail-360")
    other.locator("button.blob-open").click()
    expect(bob.page.locator("#viewer img.viewer-img")).to_be_visible()
    size = viewer_size(bob.page)
    assert size == [1600, 1067], size
    assert blob_file(b, sha).read_bytes() == stored.read_bytes(), "pulled from A when asked"
    bob.shot("dm-photo-full-size-360")
    # Carol, a third person, on B and on A: as if it did not exist.
    assert carol.page.request.get(f"{b.base}/blob/{sha}").status == 404
    wait_for(lambda: a.status()["accounts"] == 3, 10, "carol's account on A")
    ui_login(carol.page, a, "carol")
    expect_rooms_page(carol.page, a, "carol")
    assert carol.page.request.get(f"{a.base}/blob/{sha}").status == 404
    assert ann.page.request.get(f"{a.base}/blob/{sha}").status == 200
    for tab in (ann, bob):
        no_sideways_scroll(tab.page)
        expect_clean(tab)
