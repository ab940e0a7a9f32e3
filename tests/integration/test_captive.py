"""Getting there: the web app manifest and icons, and the captive-portal
probes answered with a redirect to the chat (only with --captive-portal)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.web import CAPTIVE_PROBES
from tests.helpers import Router, routers

PROBE_HOSTS = ["connectivitycheck.gstatic.com", "captive.apple.com", "www.msftconnecttest.com"]


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Router]:
    with routers(tmp_path, "portal", extra=["--no-mesh", "--captive-portal"]) as (r,):
        yield r


@pytest.mark.parametrize("host", PROBE_HOSTS)
def test_probes_are_redirected_to_the_login_page(portal: Router, host: str) -> None:
    for path in CAPTIVE_PROBES:
        for method in ("GET", "HEAD"):
            r = portal.http().request(method, path, headers={"Host": host})
            assert r.status == 302, (path, r.status)
            # To the address the phone reached, never to the probe's host name.
            assert r.headers["location"] == f"http://127.0.0.1:{portal.port}/login"
            assert r.headers["cache-control"] == "no-store"


def test_without_the_flag_probes_are_unknown_paths(router: Router) -> None:
    for path in CAPTIVE_PROBES:
        assert router.http().get(path, headers={"Host": PROBE_HOSTS[0]}).status == 404


def test_manifest_and_icons(router: Router) -> None:
    http = router.http()
    r = http.get("/static/manifest.webmanifest")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/manifest+json")
    manifest = json.loads(r.text)
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    for icon in manifest["icons"]:
        got = http.get(icon["src"])
        assert got.status == 200, icon
        assert got.headers["content-type"].startswith(icon["type"])
    for size in (192, 512):
        data = (Path(__file__).parents[2] / "static" / f"icon-{size}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        assert struct.unpack("!II", data[16:24]) == (size, size)
    page = http.get("/login").text
    assert '<link rel="manifest" href="/static/manifest.webmanifest">' in page
