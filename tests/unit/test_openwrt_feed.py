"""The chat's OpenWrt package checked against OpenWrt's real packages feed.

tests/openwrt_feed/facts.json holds what tests/openwrt_feed/derive.py derived
from https://github.com/openwrt/packages at a recorded commit of the
openwrt-24.10 branch and of master: which standard-library modules each
``python3-*`` sub-package ships (the feed's own python3 split) and the
DEPENDS of every lang/python recipe.  Here, on both branches:

- every module a real router process (run as ``python -m app`` runs it) has
  loaded once it served a page, and every module app/ and node/ import
  anywhere in their source (imports inside functions too), is shipped by a
  package in the closure of
  openwrt/net/community-chat/Makefile's DEPENDS;
- every DEPENDS name of our recipes exists in the feed (or in our own feed).

When the feed clone is on this machine (``$OPENWRT_PACKAGES_GIT``, or where
the ``fetch`` tool puts it), the facts are derived again at the recorded
commits and must be what is stored.
"""

from __future__ import annotations

import ast
import fnmatch
import http.client
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.openwrt_feed import derive

ROOT = Path(__file__).resolve().parents[2]
FACTS = json.loads((ROOT / "tests" / "openwrt_feed" / "facts.json").read_text())
BRANCHES = ("openwrt-24.10", "master")
RECIPE = ROOT / "openwrt" / "net" / "community-chat" / "Makefile"
OWN_RECIPES = sorted((ROOT / "openwrt").glob("**/Makefile"))
FEED_CLONE = Path(os.environ.get("OPENWRT_PACKAGES_GIT", "/work/.mirror/openwrt+packages/repo"))
FIRST_PARTY = {"app", "node"}
# PyPI distribution -> the OpenWrt package that installs it, where the name
# is not python3-<distribution>: ours is bottle without its CLI and extras.
PACKAGE_OF_DISTRIBUTION = {"bottle": "python3-bottle-light"}
# Loaded here but not needed on a router: shutil and tarfile ``try: import
# lzma`` and go on without it; setuptools' .pth file in this virtual
# environment imports _distutils_hack at start-up.
OPTIONAL = {"lzma", "_lzma", "_distutils_hack"}
START_TIMEOUT = 15.0  # a router serves its first page in well under a second
# Printed by the app process at exit: every module it loaded while serving.
# A module with neither a file nor a place in the standard library is made
# in memory by an extension (Cython's shared ``_cython_3_x`` runtime): skipped.
DUMP_MODULES = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODULES ' + ' '.join(sorted(\n"
    "    n for n, m in list(sys.modules.items()) if '.' not in n\n"
    "    and (getattr(m, '__file__', None) or n in sys.builtin_module_names\n"
    "         or n in sys.stdlib_module_names))), flush=True))\n"
    "sys.argv = ['app', *sys.argv[1:]]\n"
    "import runpy\n"
    "runpy.run_module('app', run_name='__main__', alter_sys=True)\n"
)


def recipe_depends(path: Path) -> dict[str, list[str]]:
    text = path.read_text()
    blocks = dict(derive.DEPENDS_RE.findall(text))
    return {name: derive.depends(blocks.get(name, "")) for name in derive.DEFINE_RE.findall(text)}


OURS: dict[str, list[str]] = {}
for _recipe in OWN_RECIPES:
    OURS.update(recipe_depends(_recipe))


def closure(branch: str, roots: list[str]) -> set[str]:
    known = {**FACTS["branches"][branch]["packages"], **OURS}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(known.get(name, []))
    return seen


def stdlib_package(branch: str, top: str) -> str | None:
    """The python3-* package shipping standard-library module ``top`` on a
    branch; None if no package of the split ships it."""
    split = FACTS["branches"][branch]["python3"]
    for package, modules in split["subpackages"].items():
        if any(fnmatch.fnmatchcase(top, m) for m in modules):
            return package
    return None if top in split["light_excludes"] else "python3-light"


def third_party_package(top: str) -> str:
    dists = importlib.metadata.packages_distributions().get(top)
    assert dists, f"{top}: imported, but neither standard library nor an installed distribution"
    dist = dists[0].lower().replace("_", "-").replace(".", "-")
    return PACKAGE_OF_DISTRIBUTION.get(dist, f"python3-{dist}")


def package_of(branch: str, top: str) -> str | None:
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return stdlib_package(branch, top)
    return third_party_package(top)


def source_imports() -> set[str]:
    """Top-level names app/ and node/ import, wherever in a function they are."""
    found: set[str] = set()
    for path in [*ROOT.glob("app/**/*.py"), *ROOT.glob("node/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - FIRST_PARTY


@pytest.fixture(scope="module")
def runtime_modules(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Top-level modules a real router process has loaded after serving a page
    (a lone router: no mesh, so nothing leaves this machine)."""
    data, port = tmp_path_factory.mktemp("router"), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DUMP_MODULES,
            "--no-mesh",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the router served no page"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/login")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        proc.send_signal(signal.SIGTERM)  # the app exits through sys.exit: atexit runs
        out, err = proc.communicate(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in out.splitlines() if ln.startswith("MODULES ")]
    assert lines, f"no module list: {err[-2000:]}"
    return {m.split(".")[0] for m in lines[-1].split()[1:]} - FIRST_PARTY - {"__main__"}


def test_facts_name_their_commits() -> None:
    assert FACTS["source"] == "https://github.com/openwrt/packages"
    for branch in BRANCHES:
        b = FACTS["branches"][branch]
        assert re.fullmatch(r"[0-9a-f]{40}", b["commit"]), b["commit"]
        # the split the test relies on is really there
        assert "_hashlib" in b["python3"]["subpackages"]["python3-openssl"]
        assert "logging" in b["python3"]["subpackages"]["python3-logging"]


@pytest.mark.parametrize("branch", BRANCHES)
def test_every_module_the_app_loads_is_in_a_declared_package(
    branch: str, runtime_modules: set[str]
) -> None:
    roots = OURS["community-chat"]
    have = closure(branch, roots)
    missing = {}
    for top in sorted((runtime_modules | source_imports()) - OPTIONAL):
        package = package_of(branch, top)
        if package is None or package not in have:
            missing[top] = package
    assert not missing, (
        f"{branch}: modules whose package is not in the closure of DEPENDS {roots}: {missing}"
    )


@pytest.mark.parametrize("branch", BRANCHES)
def test_every_depends_name_exists_in_the_feed(branch: str) -> None:
    feed = FACTS["branches"][branch]["packages"]
    ours = {name for name, _ in OURS.items()}
    unknown = {}
    for name in ("community-chat", *(n for n in OURS if n.startswith("python3-"))):
        for dep in OURS[name]:
            if dep.startswith("python3-") and dep not in feed and dep not in ours:
                unknown.setdefault(name, []).append(dep)
    assert not unknown, f"{branch} {FACTS['branches'][branch]['commit']}: {unknown}"


def test_the_app_needs_the_openssl_and_logging_subpackages() -> None:
    """What the split means for us: hashlib.scrypt is _hashlib (python3-openssl)."""
    for branch in BRANCHES:
        assert stdlib_package(branch, "_hashlib") == "python3-openssl"
        assert stdlib_package(branch, "logging") == "python3-logging"
        assert stdlib_package(branch, "json") == "python3-light"


def test_facts_are_what_the_feed_gives_at_the_recorded_commits() -> None:
    if not (FEED_CLONE / "HEAD").exists() and not (FEED_CLONE / ".git").exists():
        pytest.skip(f"no clone of openwrt/packages at {FEED_CLONE} (set OPENWRT_PACKAGES_GIT)")
    for branch in BRANCHES:
        recorded = FACTS["branches"][branch]
        try:
            again = derive.derive_branch(FEED_CLONE, recorded["commit"])
        except subprocess.CalledProcessError:
            pytest.skip(f"{recorded['commit']} is not in {FEED_CLONE}")
        assert again == recorded, branch
