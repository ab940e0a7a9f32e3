"""The translation catalogues, made again from the sources (`make catalogues`).

A dev tool (Babel, pinned in requirements-test.txt; never on a router):

1. extracts every msgid into locale/chat.pot: ``_``, ``gettext``,
   ``ngettext`` and ``N_`` in app/*.py and in templates/*.tpl (each template
   turned into the Python bottle runs, then read as Python), ``t`` and
   ``tn`` in static/*.js;
2. merges it into each locale/<lang>/LC_MESSAGES/chat.po (new msgids come
   in untranslated, gone ones go; no fuzzy guesses);
3. compiles every chat.po into the chat.mo next to it, which the app reads
   with the standard library's gettext (app/i18n.py).

tests/unit/test_i18n.py checks that the committed files are what this makes,
and that every msgid has a translation in every language.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale"
POT = LOCALE / "chat.pot"
DOMAIN = "chat"
PY_KEYWORDS: dict[str, Any] = {k: DEFAULT_KEYWORDS[k] for k in ("_", "gettext", "ngettext", "N_")}
JS_KEYWORDS: dict[str, Any] = {"t": None, "tn": (1, 2)}

Found = tuple[str, int, str | tuple[str, str]]  # path, line, msgid or (singular, plural)


def _extract(method: str, source: bytes, keywords: dict[str, Any], path: str) -> Iterator[Found]:
    for line, message, _comments, _context in extract(
        method, io.BytesIO(source), keywords=keywords, comment_tags=(), strip_comment_tags=True
    ):
        yield path, line, message


def sources() -> Iterator[Found]:
    """Every translatable string of the app, the templates and the page scripts."""
    for py in sorted((ROOT / "app").glob("*.py")):
        yield from _extract("python", py.read_bytes(), PY_KEYWORDS, f"app/{py.name}")
    for tpl in sorted((ROOT / "templates").glob("*.tpl")):
        code = bottle.StplParser(tpl.read_text(encoding="utf-8")).translate()
        yield from _extract("python", code.encode(), PY_KEYWORDS, f"templates/{tpl.name}")
    for js in sorted((ROOT / "static").glob("*.js")):
        yield from _extract("javascript", js.read_bytes(), JS_KEYWORDS, f"static/{js.name}")


def template() -> Catalog:
    """locale/chat.pot as the sources say it now."""
    catalog = Catalog(
        project="Community Chat",
        version="0.1.0",
        copyright_holder="Community Chat developers",
        msgid_bugs_address="the project's issue tracker",
        fuzzy=False,
    )
    for path, line, message in sources():
        catalog.add(message, locations=[(path, line)])
    if POT.exists():  # an unchanged template keeps its date: no churn
        with POT.open("rb") as f:
            old = read_po(f)
        if {m.id for m in old if m.id} == {m.id for m in catalog if m.id}:
            catalog.creation_date = old.creation_date
    return catalog


def po_files() -> list[Path]:
    return sorted(LOCALE.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def read(path: Path) -> Catalog:
    """A catalogue: ``locale/<lang>/LC_MESSAGES/chat.po`` in its language,
    the template ``locale/chat.pot`` in none (the folder above locale/ is
    the checkout's, whatever it is called: "community-chat" is no locale)."""
    locale = path.parent.parent.name if path.parent.name == "LC_MESSAGES" else None
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def compiled(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def _write(path: Path, catalog: Catalog, **kw: Any) -> None:
    out = io.BytesIO()
    write_po(out, catalog, width=100, **kw)
    path.write_bytes(out.getvalue())


def main() -> int:
    pot = template()
    _write(POT, pot)
    for po in po_files():
        catalog = read(po)
        catalog.update(pot, no_fuzzy_matching=True)
        _write(po, catalog, ignore_obsolete=True)
        catalog = read(po)
        po.with_suffix(".mo").write_bytes(compiled(catalog))
        missing = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
        for m in missing:
            print(f"{po.relative_to(ROOT)}: untranslated: {m!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
