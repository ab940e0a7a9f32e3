"""Derive, from OpenWrt's own packages feed, the facts tests/unit/test_openwrt_feed.py
checks the chat's package against; write them to facts.json beside this file.

    python tests/openwrt_feed/derive.py PACKAGES_GIT_DIR

PACKAGES_GIT_DIR is a clone of https://github.com/openwrt/packages (a bare one
will do); it is read with ``git show`` at the tip of each branch in
``BRANCHES``, never copied.  Derived per branch, with the commit:

- the python3 split: for every ``python3-*`` sub-package that
  lang/python/python3/files/python3-package-*.mk defines, the standard-library
  modules it ships (top-level names, from the paths given to
  ``Py3BasePackage``; ``lib-dynload/_ssl.$(PYTHON3_SO_SUFFIX)`` is ``_ssl``) and
  its DEPENDS; python3-base's files (lang/python/python3/Makefile
  ``PYTHON3_BASE_LIB_FILES``); what python3-light leaves out;
- every package name the feed's lang/python recipes define, with its DEPENDS
  (package names only: ``+libopenssl`` is kept, conditions are dropped).

Everything else in the standard library is python3-light's: its filespec is
the whole lib directory minus the sub-packages' files and ``LIGHT_EXCLUDES``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "facts.json"
SOURCE = "https://github.com/openwrt/packages"
BRANCHES = ("openwrt-24.10", "master")
SPLIT_DIR = "lang/python/python3/files"
PYTHON3_MAKEFILE = "lang/python/python3/Makefile"
LIB = "/usr/lib/python$(PYTHON3_VERSION)/"
GIT_TIMEOUT = 60.0  # a git show of one file takes milliseconds; ls-tree of the feed, a second

DEFINE_RE = re.compile(r"^define Package/([A-Za-z0-9._+-]+)\s*$", re.M)
DEPENDS_RE = re.compile(r"^define Package/([A-Za-z0-9._+-]+)\s*$(.*?)^endef", re.M | re.S)
BASE_PACKAGE_RE = re.compile(r"Py3BasePackage,\s*([A-Za-z0-9._+-]+),(.*?)\)\)", re.S)
BASE_FILES_RE = re.compile(r"^PYTHON3_BASE_LIB_FILES:=(.*?)\n\n", re.M | re.S)
LIGHT_EXCLUDE_RE = re.compile(r"^-\|/usr/lib/python\$\(PYTHON3_VERSION\)/(\S+)$", re.M)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=GIT_TIMEOUT,
    ).stdout


def module_of(path: str) -> str | None:
    """``/usr/lib/python$(V)/lib-dynload/_ssl.$(SUFFIX)`` -> ``_ssl``; ``.../logging`` ->
    ``logging``; ``.../foo.py`` -> ``foo``; a path outside the lib -> None."""
    if not path.startswith(LIB):
        return None
    rest = path[len(LIB) :].removeprefix("lib-dynload/")
    top = rest.split("/", 1)[0]
    return re.sub(r"\.(py|\$\(PYTHON3_SO_SUFFIX\))$", "", top) or None


def depends(block: str) -> list[str]:
    """Package names in a recipe's DEPENDS (``+COND:pkg`` gives pkg; ``@...`` dropped)."""
    m = re.search(r"^\s*DEPENDS:?=((?:[^\n]*\\\n)*[^\n]*)", block, re.M)
    if not m:
        return []
    names = []
    for token in m.group(1).replace("\\\n", " ").split():
        if token.startswith("@") or token.startswith("$("):
            continue
        name = token.lstrip("+").rsplit(":", 1)[-1]
        if re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            names.append(name)
    return sorted(set(names))


def recipes(repo: Path, commit: str) -> dict[str, list[str]]:
    """Every package the lang/python recipes define: name -> DEPENDS."""
    files = [
        f
        for f in git(repo, "ls-tree", "-r", "--name-only", commit, "lang/python").splitlines()
        if f.endswith(("/Makefile", ".mk"))
    ]
    found: dict[str, list[str]] = {}
    for f in files:
        text = git(repo, "show", f"{commit}:{f}")
        blocks = {name: body for name, body in DEPENDS_RE.findall(text)}
        for name in DEFINE_RE.findall(text):
            found[name] = depends(blocks.get(name, ""))
    return dict(sorted(found.items()))


def python3_split(repo: Path, commit: str) -> dict[str, object]:
    split: dict[str, list[str]] = {}
    files = git(repo, "ls-tree", "--name-only", commit, f"{SPLIT_DIR}/").splitlines()
    for f in sorted(files):
        if not re.search(r"/python3-package-[a-z0-9-]+\.mk$", f):
            continue
        for name, paths in BASE_PACKAGE_RE.findall(git(repo, "show", f"{commit}:{f}")):
            mods = {module_of(p) for p in paths.replace("\\", " ").split()}
            split[name] = sorted(m for m in mods if m)
    makefile = git(repo, "show", f"{commit}:{PYTHON3_MAKEFILE}")
    base = BASE_FILES_RE.search(makefile)
    base_mods = {module_of(p) for p in (base.group(1) if base else "").replace("\\", " ").split()}
    split["python3-base"] = sorted(m for m in base_mods if m)
    light = makefile[makefile.find("define Py3Package/python3-light/filespec") :]
    light = light[: light.find("endef")]
    excludes = sorted(
        {re.sub(r"\.py$", "", x.split("/")[0]) for x in LIGHT_EXCLUDE_RE.findall(light)}
    )
    version = re.search(
        r"^PYTHON3_VERSION_MINOR:=(\d+)",
        git(repo, "show", f"{commit}:lang/python/python3-version.mk"),
        re.M,
    )
    return {
        "subpackages": dict(sorted(split.items())),
        "light_excludes": excludes,
        "python_version": f"3.{version.group(1)}" if version else None,
    }


def derive_branch(repo: Path, commit: str) -> dict[str, object]:
    return {
        "commit": commit,
        "date": git(repo, "show", "-s", "--format=%cI", commit).strip(),
        "python3": python3_split(repo, commit),
        "packages": recipes(repo, commit),
    }


def derive(repo: Path) -> dict[str, object]:
    out: dict[str, object] = {
        "source": SOURCE,
        "derived_by": "tests/openwrt_feed/derive.py",
        "note": "facts derived from the feed at these commits; no feed file is copied",
        "branches": {},
    }
    for branch in BRANCHES:
        commit = git(repo, "rev-parse", f"refs/heads/{branch}").strip()
        out["branches"][branch] = derive_branch(repo, commit)  # type: ignore[index]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    facts = derive(Path(argv[1]))
    OUT.write_text(json.dumps(facts, indent=1, sort_keys=False) + "\n")
    for branch, b in facts["branches"].items():  # type: ignore[union-attr]
        print(
            f"{branch} {b['commit']}: {len(b['python3']['subpackages'])} python3 "
            f"sub-packages, {len(b['packages'])} packages"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
