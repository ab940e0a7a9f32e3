"""Languages: one gettext catalogue per language, chosen per request.

Every string a person reads is an English msgid in ``locale/chat.pot``;
each language has ``locale/<lang>/LC_MESSAGES/chat.po`` and its compiled
``chat.mo`` (both committed; ``make catalogues`` extracts and compiles them
with tests/catalogues.py, a dev tool).  At run time only the standard
library's ``gettext`` reads the .mo files: nothing to install on a router.

The language follows the browser: ``Accept-Language`` with its q-values,
matched on the primary subtag (``de-AT`` is ``de``), English when nothing
matches.  Templates get ``_`` and ``ngettext`` (app/site.py ``Site.render``);
the page scripts get theirs from the page, a JSON block (``strings_block``)
holding the translations of every ``t("…")`` and ``tn("…", "…", n)`` in
static/*.js, read by a tiny ``t`` helper (docs/DESIGN.md, "Languages").

Messages raised by modules that know nothing of languages (app/accounts.py,
app/chat.py, bottle.abort bodies) are translated where they are shown, by
their English text as the msgid (``message``).
"""

from __future__ import annotations

import gettext
import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from app.accounts import PASSWORD_MAX, PASSWORD_MIN, PASSWORD_RULE, USERNAME_MAX, USERNAME_RULE

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "locale"
STATIC_DIR = ROOT / "static"
DOMAIN = "chat"
DEFAULT = "en"  # the msgids' own language: no catalogue
# An Accept-Language of many entries is not a browser's; the rest is ignored.
MAX_LANGUAGE_RANGES = 32
_RANGE_RE = re.compile(r"^([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)$")
_Q_RE = re.compile(r"^[qQ]\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")


def N_(message: str) -> str:
    """Marks a msgid for extraction where it is translated later."""
    return message


class Language:
    """One language's catalogue: ``gettext``/``ngettext`` as in the stdlib."""

    def __init__(self, code: str, translations: gettext.NullTranslations) -> None:
        self.code = code
        self.translations = translations

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)


@cache
def languages() -> dict[str, Language]:
    """English, and every language with a compiled catalogue in locale/."""
    found = {DEFAULT: Language(DEFAULT, gettext.NullTranslations())}
    for mo in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")):
        code = mo.parent.parent.name.lower().replace("_", "-")
        with mo.open("rb") as f:
            found[code] = Language(code, gettext.GNUTranslations(f))
    return found


def accepted(header: str | None) -> list[str]:
    """The language ranges of an Accept-Language header, most wanted first
    (q-values honoured, equal ones in their order; q=0 and malformed
    entries left out), lower case."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate((header or "").split(",")[:MAX_LANGUAGE_RANGES]):
        tag, *params = (p.strip() for p in item.split(";"))
        if not _RANGE_RE.match(tag):
            continue
        q = 1.0
        for p in params:
            m = _Q_RE.match(p)
            if m is None:
                q = -1.0
                break
            q = float(m.group(1))
        if q > 0:
            ranked.append((-q, i, tag.lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose(header: str | None, available: Iterable[str] | None = None) -> str:
    """The language to answer in: the first accepted range that one of
    ours matches (exactly or by its primary subtag), else English."""
    codes = list(languages() if available is None else available)
    for tag in accepted(header):
        if tag == "*":
            return DEFAULT
        for code in codes:
            if tag == code or tag.startswith(code + "-") or code.startswith(tag + "-"):
                return code
    return DEFAULT


def language(header: str | None) -> Language:
    return languages()[choose(header)]


# -- the page scripts' strings --------------------------------------------------

# t("…") and tn("…", "…", n) with a double-quoted literal, as the page
# scripts write them; tests/catalogues.py extracts the same calls.
_JS_CALL_RE = re.compile(
    r"""\b(?:t\(\s*"((?:[^"\\\n]|\\.)*)"|tn\(\s*"((?:[^"\\\n]|\\.)*)"\s*,\s*"((?:[^"\\\n]|\\.)*)")"""
)


def _js_literal(s: str) -> str:
    result: str = json.loads(f'"{s}"')
    return result


@cache
def script_messages() -> tuple[list[str], list[tuple[str, str]]]:
    """The msgids of static/*.js: singular ``t`` ones, and ``tn`` pairs."""
    single: dict[str, None] = {}
    plural: dict[tuple[str, str], None] = {}
    for js in sorted(STATIC_DIR.glob("*.js")):
        for m in _JS_CALL_RE.finditer(js.read_text(encoding="utf-8")):
            if m.group(1) is not None:
                single[_js_literal(m.group(1))] = None
            else:
                plural[(_js_literal(m.group(2)), _js_literal(m.group(3)))] = None
    return list(single), list(plural)


def page_strings(lang: Language) -> dict[str, str | list[str]]:
    """What the page scripts read: msgid -> translation, and for a plural
    msgid its two forms (singular, plural).  English needs none: ``t``
    falls back to the msgid."""
    if lang.code == DEFAULT:
        return {}
    single, plural = script_messages()
    strings: dict[str, str | list[str]] = {s: lang.gettext(s) for s in single}
    for one, many in plural:
        strings[one] = [lang.ngettext(one, many, 1), lang.ngettext(one, many, 2)]
    return strings


def strings_block(lang: Language) -> str:
    """``<script type="application/json" id="strings">``: data, never run,
    so the CSP's script-src does not apply; ``<``, ``>`` and ``&`` are
    escaped so no text can close the element."""
    data = json.dumps(page_strings(lang), ensure_ascii=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="strings">{data}</script>'


# -- messages from modules that know no language ----------------------------------

# bottle.abort bodies and errors raised in app/accounts.py, app/chat.py and
# app/routes_rooms.py, by their English text; translated where shown.
SERVER_MESSAGES = (
    N_("The passwords do not match."),
    N_("That username is taken; please choose another."),
    N_("The current password is not right."),
    N_("The router cannot store messages right now."),
    N_("There is no such room."),
    N_("Log in first, from this router's own page."),
    N_("This address takes WebSocket connections only."),
    N_("Method not allowed."),
    N_("There is no such person to write to."),
    N_("There is no such message."),
    # Error frames a page shows (app/chat.py ChatError; app/routes_rooms.py
    # ``error_frame`` translates them with the socket's language).
    N_("A message needs some text."),
    N_("This router could not store that; it was not sent."),
    N_("You are banned from this chat."),
    N_("Someone registered this name first on another router: log in again to choose a new one."),
    N_("Too many messages; wait a moment."),
    N_("A search needs some text."),
    N_("Too many searches; wait a moment."),
    N_("That message is no longer in this room."),
    N_("Only an admin may do that."),
    N_("There is no such message in this room."),
    N_("There is no such user."),
    N_("Too many changes; wait a moment."),
)
# The reason phrases of the error pages (app/web.py ERROR_PAGES), by code:
# bottle takes them from Python's http.HTTPStatus, whose words change
# (413 is "Content Too Large" from Python 3.13), so a translation is found
# by the code, never by the phrase.
STATUS_PHRASES = {
    400: N_("Bad Request"),
    403: N_("Forbidden"),
    404: N_("Not Found"),
    405: N_("Method Not Allowed"),
    411: N_("Length Required"),
    413: N_("Request Entity Too Large"),
    415: N_("Unsupported Media Type"),
}


def username_rule(lang: Language) -> str:
    return lang.gettext("1 to %(max)d characters: letters, digits, _ . -") % {"max": USERNAME_MAX}


def password_rule(lang: Language) -> str:
    return lang.gettext("%(min)d to %(max)d characters") % {
        "min": PASSWORD_MIN,
        "max": PASSWORD_MAX,
    }


# Messages with a value in them: (pattern of the English, its msgid); the
# pattern's named groups fill the msgid's placeholders (digits as numbers).
_PATTERNS = (
    (
        r"A message holds at most (?P<num>\d+) characters\.",
        N_("A message holds at most %(num)d characters."),
    ),
    (r"Search for at most (?P<num>\d+) characters\.", N_("Search for at most %(num)d characters.")),
    (
        r"A room's name holds at most (?P<num>\d+) characters\.",
        N_("A room's name holds at most %(num)d characters."),
    ),
    (
        r"A room's topic holds at most (?P<num>\d+) characters\.",
        N_("A room's topic holds at most %(num)d characters."),
    ),
    (
        r"(?P<name>\S+) does not take direct messages from you\.",
        N_("%(name)s does not take direct messages from you."),
    ),
    (
        r"You blocked (?P<name>\S+); unblock them to write\.",
        N_("You blocked %(name)s; unblock them to write."),
    ),
)
_COMPILED = tuple((re.compile(p), m) for p, m in _PATTERNS)


def message(lang: Language, english: str) -> str:
    """A message raised in English, in ``lang``: by its text as the msgid,
    or the rule messages of app/accounts.py rebuilt; else as it is."""
    if english == f"Username must be {USERNAME_RULE}.":
        return lang.gettext("Username must be %(rule)s.") % {"rule": username_rule(lang)}
    if english == f"Password must be {PASSWORD_RULE}.":
        return lang.gettext("Password must be %(rule)s.") % {"rule": password_rule(lang)}
    if english.startswith("Not found: "):  # bottle's own 404 for an unknown path
        return lang.gettext("There is nothing at this address.")
    for pattern, msgid in _COMPILED:
        m = pattern.fullmatch(english)
        if m is not None:
            values = {k: int(v) if v.isdigit() else v for k, v in m.groupdict().items()}
            return lang.gettext(msgid) % values
    return lang.gettext(english)


def status_line(lang: Language, line: str) -> str:
    """``404 Not Found`` with its phrase in ``lang`` (English: as it is)."""
    code, _, phrase = line.partition(" ")
    msgid = STATUS_PHRASES.get(int(code)) if code.isdigit() else None
    if msgid is None or lang.code == DEFAULT:
        return f"{code} {lang.gettext(phrase)}" if phrase else line
    return f"{code} {lang.gettext(msgid)}"
