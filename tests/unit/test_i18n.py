"""Languages (app/i18n.py): choosing one from Accept-Language, the catalogues
as committed against the sources, and the pages in each language through the
WSGI app in-process."""

from __future__ import annotations

import gettext
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import i18n
from app.accounts import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    AccountError,
    check_new_password,
    check_username,
)
from app.chat import MAX_TEXT_CHARS, NAME_TAKEN, STORE_UNAVAILABLE
from app.i18n import Language, accepted, choose, languages, message, status_line
from app.web import ERROR_PAGES
from tests import catalogues
from tests.helpers import PASSWORD
from tests.integration.test_web import Site

SECOND = "de"  # the second complete language
DE = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


# -- choosing the language ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("de-AT", "de"),
        ("DE-ch", "de"),
        ("fr-FR, de;q=0.5", "de"),  # no French: the next one we have
        ("fr", "en"),  # nothing we have: English
        ("en;q=0.4, de;q=0.9", "de"),  # q-values, not order
        ("de;q=0.5, en;q=0.5", "de"),  # equal q: the header's order
        ("de;q=0, en", "en"),  # q=0: not acceptable
        ("de;q=0.000", "en"),
        ("de;q=2", "en"),  # malformed q: the entry is left out
        ("de;q=abc, en", "en"),
        ("*", "en"),
        ("de;q=0.1, *;q=0.5", "en"),
        ("<script>, de", "de"),  # malformed ranges are skipped
        (",,;,de", "de"),
        ("x" * 100 + ", de", "de"),
    ],
)
def test_language_follows_accept_language(header: str | None, expected: str) -> None:
    assert choose(header, ["en", "de"]) == expected


def test_accepted_ranges_are_bounded_and_ordered() -> None:
    assert accepted("da, en-GB;q=0.8, en;q=0.7") == ["da", "en-gb", "en"]
    many = ", ".join(f"x{i}" for i in range(i18n.MAX_LANGUAGE_RANGES)) + ", de"
    assert "de" not in accepted(many)  # entries past the bound are not read
    assert choose(many) == "en"


def test_the_languages_are_english_and_german() -> None:
    assert set(languages()) >= {"en", SECOND}
    assert languages()["en"].gettext("Log in") == "Log in"
    assert languages()[SECOND].gettext("Log in") == "Anmelden"
    de = languages()[SECOND]
    assert de.ngettext("%(num)d hour", "%(num)d hours", 1) % {"num": 1} == "1 Stunde"
    assert de.ngettext("%(num)d hour", "%(num)d hours", 24) % {"num": 24} == "24 Stunden"


# -- the catalogues as committed ------------------------------------------------------------


def _ids(catalog: object) -> set[object]:
    return {m.id for m in catalog if m.id}  # type: ignore[attr-defined]


def test_template_holds_every_msgid_of_the_sources() -> None:
    fresh = catalogues.template()
    committed = catalogues.read(catalogues.POT)
    assert _ids(committed) == _ids(fresh), "run `make catalogues`"
    # Templates, Python and page scripts are all read.
    paths = {loc for m in fresh for loc, _ in m.locations}
    assert any(p.startswith("templates/") for p in paths)
    assert any(p.startswith("app/") for p in paths)


def test_every_language_translates_every_msgid() -> None:
    fresh = _ids(catalogues.template())
    pos = catalogues.po_files()
    assert {p.parent.parent.name for p in pos} >= {SECOND}
    for po in pos:
        catalog = catalogues.read(po)
        assert _ids(catalog) >= fresh, f"{po}: run `make catalogues`"
        for m in catalog:
            if not m.id:
                continue
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            assert all(strings), f"{po}: {m.id!r} is not translated"
            assert "fuzzy" not in m.flags, f"{po}: {m.id!r} is fuzzy"
        # Placeholders match the msgid's (babel's python-format checks).
        assert not list(catalog.check()), f"{po}: {list(catalog.check())}"


def test_compiled_catalogues_are_up_to_date() -> None:
    for po in catalogues.po_files():
        mo = po.with_suffix(".mo")
        assert mo.exists(), f"{mo} is missing: run `make catalogues`"
        assert mo.read_bytes() == catalogues.compiled(catalogues.read(po)), (
            f"{mo} is older than {po.name}: run `make catalogues`"
        )
        # And the standard library reads it, as the router does.
        with mo.open("rb") as f:
            assert gettext.GNUTranslations(f).gettext("Username") != "Username"


# -- the page scripts' strings --------------------------------------------------------------

SAMPLE_JS = r"""
const STRINGS = JSON.parse(document.getElementById("strings").textContent);
function t(key) { return STRINGS[key] ?? key; }
el.textContent = t("Sending…");
el.title = t( "Say \"hi\"" );
status.textContent = tn("Seen by {n} router", "Seen by {n} routers", n).replace("{n}", n);
notThis("Not a message"); const at = "t(\"no\")";
"""


def test_page_script_messages_are_what_extraction_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sample.js").write_text(SAMPLE_JS, encoding="utf-8")
    monkeypatch.setattr(i18n, "STATIC_DIR", tmp_path)
    i18n.script_messages.cache_clear()
    try:
        single, plural = i18n.script_messages()
    finally:
        i18n.script_messages.cache_clear()
    found = {
        m
        for _, _, m in catalogues._extract(
            "javascript", SAMPLE_JS.encode(), catalogues.JS_KEYWORDS, "sample.js"
        )
    }
    assert set(single) | set(plural) == found
    assert single == ["Sending…", 'Say "hi"']
    assert plural == [("Seen by {n} router", "Seen by {n} routers")]
    # And those of the real page scripts are in the catalogue.
    monkeypatch.undo()
    i18n.script_messages.cache_clear()
    real_single, real_plural = i18n.script_messages()
    ids = _ids(catalogues.read(catalogues.POT))
    assert set(real_single) | set(real_plural) <= ids


class Evil(gettext.NullTranslations):
    def gettext(self, message: str) -> str:
        return "</script><script>alert(1)</script> & é"

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.gettext(singular)


def test_strings_block_is_data_that_no_text_can_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "script_messages", lambda: (["Sending…"], [("a {n}", "b {n}")]))
    block = i18n.strings_block(Language("xx", Evil()))
    assert block.startswith('<script type="application/json" id="strings">')
    inner = block.removeprefix('<script type="application/json" id="strings">')
    inner = inner.removesuffix("</script>")
    assert "<" not in inner and ">" not in inner and "&" not in inner
    data = json.loads(inner)
    assert data["Sending…"] == "</script><script>alert(1)</script> & é"
    assert data["a {n}"] == [data["Sending…"]] * 2
    assert i18n.strings_block(languages()["en"]).endswith(">{}</script>")


# -- messages from modules that know no language --------------------------------------------


def _raised(call: object, *args: str) -> str:
    with pytest.raises(AccountError) as e:
        call(*args)  # type: ignore[operator]
    return str(e.value)


def test_account_and_chat_messages_are_translated_where_shown() -> None:
    de = languages()[SECOND]
    raised = [
        _raised(check_username, "bad name!"),
        _raised(check_new_password, "x", "x"),
        _raised(check_new_password, PASSWORD, PASSWORD + "x"),
        NAME_TAKEN,
        STORE_UNAVAILABLE,
        "The current password is not right.",
    ]
    for english in raised:
        assert message(de, english) != english, english
        assert message(languages()["en"], english) == english
    assert message(de, raised[0]).endswith("1 bis 32 Zeichen: Buchstaben, Ziffern, _ . -.")
    assert (
        message(de, raised[1])
        == f"Das Passwort muss {PASSWORD_MIN} bis {PASSWORD_MAX} Zeichen lang sein."
    )
    for english in i18n.SERVER_MESSAGES:
        assert de.gettext(english) != english, english
    assert message(de, "Not found: '/nope'") == "Unter dieser Adresse gibt es nichts."
    # Messages with a value in them keep the value.
    assert message(de, f"A message holds at most {MAX_TEXT_CHARS} characters.") == (
        f"Eine Nachricht hat höchstens {MAX_TEXT_CHARS} Zeichen."
    )
    assert message(de, "A room's topic holds at most 200 characters.").startswith("Das Thema")
    assert message(de, "bob does not take direct messages from you.") == (
        "bob nimmt keine Direktnachrichten von dir an."
    )
    assert message(de, "You blocked a.b-c; unblock them to write.").startswith("Du hast a.b-c ")
    assert message(de, "something new") == "something new"  # unknown: as it is


def test_every_error_page_status_has_its_phrase_translated() -> None:
    import bottle

    de = languages()[SECOND]
    for code in ERROR_PAGES:
        line = f"{code} {bottle.HTTP_CODES[code]}"
        assert status_line(de, line) != line, line
        assert status_line(languages()["en"], line) == line


def test_a_status_is_translated_whatever_python_calls_it() -> None:
    """Python 3.13 renamed 413 "Request Entity Too Large" to "Content Too
    Large": the translation follows the code, on every Python."""
    de = languages()[SECOND]
    for phrase in ("Request Entity Too Large", "Content Too Large"):
        assert status_line(de, f"413 {phrase}") == status_line(de, "413 Request Entity Too Large")
        assert status_line(de, f"413 {phrase}") != f"413 {phrase}"
        assert status_line(languages()["en"], f"413 {phrase}") == f"413 {phrase}"


# -- pages --------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)  # the site of tests/integration/test_web.py: the chat's policy too
    yield s
    s.store.close()


def visible_text(page: str) -> str:
    page = re.sub(r"<script\b.*?</script>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_login_page_in_german_for_a_german_browser(site: Site) -> None:
    r = site.client().get("/login", headers=DE)
    assert r.status == 200
    assert r.headers["content-language"] == "de"
    assert "accept-language" in r.headers["vary"].lower()
    assert '<html lang="de">' in r.text
    text = visible_text(r.text)
    for german in ("Anmelden", "Benutzername", "Passwort", "Konto anlegen", "24 Stunden"):
        assert german in text
    assert "0 Personen gerade online." in text
    for english in ("Log in", "Username", "Password", "Create an account", "hours", "online now"):
        assert english not in text
    assert "<strong>router-a</strong>" in r.text  # the markup around the router's name stays
    assert 'aria-label="Über diesen Chat"' in r.text
    assert '<script type="application/json" id="strings">' in r.text


def test_login_page_in_english_by_default(site: Site) -> None:
    for headers in (EN, {}, {"Accept-Language": "fr-FR"}):
        r = site.client().get("/login", headers=headers)
        assert r.headers["content-language"] == "en"
        assert '<html lang="en">' in r.text
        assert "<h1>Log in</h1>" in r.text
        assert "kept for 24 hours" in r.text


def test_forms_refuse_in_german(site: Site) -> None:
    c = site.client()
    token = c.csrf("/register")
    form = {"csrf": token, "username": "ann", "password": PASSWORD, "confirm": PASSWORD + "x"}
    r = c.post("/register", form, headers=DE)
    assert r.status == 400
    assert "Die Passwörter stimmen nicht überein." in r.text
    assert "Erlaubt sind" not in visible_text(r.text).split("Passwort wiederholen")[1]
    r = c.post("/register", {**form, "username": "a b", "confirm": PASSWORD}, headers=DE)
    assert "Ungültiger Benutzername. Erlaubt sind 1 bis 32 Zeichen" in r.text
    assert c.register("ann").status == 303
    c2 = site.client()
    token = c2.csrf("/login")
    r = c2.post("/login", {"csrf": token, "username": "ann", "password": "wrong!!!"}, headers=DE)
    assert r.status == 401
    assert "Benutzername oder Passwort ist falsch." in r.text
    # A form without its CSRF token: the error page, in German.
    r = c2.post("/login", {"username": "ann", "password": PASSWORD}, headers=DE)
    assert r.status == 403
    assert "<h1>403 Verboten</h1>" in r.text
    assert "Das Formular ist abgelaufen" in r.text
    assert r.headers["content-language"] == "de"


def test_error_and_password_pages_in_german(site: Site) -> None:
    c = site.client()
    r = c.get("/nowhere", headers=DE)
    assert r.status == 404
    assert "<h1>404 Nicht gefunden</h1>" in r.text
    assert "Unter dieser Adresse gibt es nichts." in r.text
    assert "Zurück zu den Räumen" in r.text
    assert c.register("bea").status == 303
    r = c.get("/password", headers=DE)
    assert "<h1>Passwort ändern</h1>" in r.text
    assert f"{PASSWORD_MIN} bis {PASSWORD_MAX} Zeichen" in r.text
    r = c.get("/password", headers=EN)
    assert "<h1>Change password</h1>" in r.text


# -- the chat's own pages and their sockets -------------------------------------------


def _page_msgids(*templates: str) -> list[str]:
    """The msgids of these templates that have no placeholder and read
    differently in German: none of them may be left in a German page."""
    de = languages()[SECOND]
    ids = []
    for m in catalogues.template():
        if not m.id or not isinstance(m.id, str) or "%" in m.id:
            continue
        if any(path in templates for path, _ in m.locations) and de.gettext(m.id) != m.id:
            ids.append(m.id)
    return ids


def words(text: str) -> str:
    return " ".join(text.split())


def english_left(text: str, msgids: list[str]) -> list[str]:
    return [m for m in msgids if re.search(rf"(?<!\w){re.escape(m)}(?!\w)", text)]


def test_room_list_room_and_conversation_in_german(site: Site) -> None:
    ann, bob = site.client(), site.client()
    assert ann.register("ann").status == 303
    assert bob.register("bob").status == 303
    site.chat.post("bob", 1, "hallo @ann", on_stored=lambda r: None, client_id="c1")
    msgids = _page_msgids("templates/rooms.tpl", "templates/room.tpl", "templates/dm.tpl")
    assert len(msgids) > 30

    r = ann.get("/", headers=DE)
    assert r.headers["content-language"] == "de"
    text = words(visible_text(r.text))
    for german in ("Räume", "Angemeldet als", "Raum 2", "Noch keine Nachrichten.", "1 ungelesen"):
        assert german in text, german
    for german in ("Direktnachrichten", "Einen Ton spielen", "Abmelden", "0 online"):
        assert german in text, german
    assert 'placeholder="ein Benutzername"' in r.text
    assert english_left(text, msgids) == []
    assert "unread" not in text and "Logged in" not in text

    r = ann.get("/room/1", headers=DE)
    text = words(visible_text(r.text))
    for german in ("Raum 1", "Keine Verbindung zum Router.", "verbinde…", "Suchen", "Senden"):
        assert german in text, german
    assert "Hier beginnt der Verlauf dieses Raums." in text
    assert 'placeholder="In diesem Raum suchen"' in r.text
    assert 'placeholder="Nachricht an Raum 1"' in r.text
    assert 'aria-label="Alle Räume"' in r.text
    assert english_left(text, msgids) == []

    r = ann.get("/dm/bob", headers=DE)
    text = words(visible_text(r.text))
    assert "Privat heißt hier: verborgen vor anderen Benutzern" in text
    assert "<strong>Privat heißt hier" in r.text  # the markup is the template's
    for german in ("Blockieren", "Hier beginnt dein Gespräch mit bob.", "Ältere Nachrichten laden"):
        assert german in text, german
    assert 'placeholder="Nachricht an bob"' in r.text
    assert english_left(text, msgids) == []


def test_room_list_and_room_stay_english_for_an_english_browser(site: Site) -> None:
    ann = site.client()
    assert ann.register("ann").status == 303
    text = words(visible_text(ann.get("/", headers=EN).text))
    assert "Logged in as ann ." in text and "Room 1" in text and "0 online" in text
    assert "No messages yet." in text and "Direct messages" in text
    r = ann.get("/room/2", headers=EN)
    assert "<title>Room 2 · Community Chat</title>" in r.text
    assert 'placeholder="Message Room 2"' in r.text
    assert 'Online: <span id="online-count">0</span>' in r.text
    assert ">{}</script>" in r.text  # English: the page scripts' own msgids


class FakeClient:
    """What a frame handler uses of a socket's client: who, where, send."""

    def __init__(self, user: str, room: int = 1, peer: str | None = None) -> None:
        self.user, self.room, self.peer = user, room, peer
        self.sent: list[dict[str, object]] = []

    def send(self, frame: dict[str, object]) -> None:
        self.sent.append(frame)


def test_error_frames_speak_the_sockets_language(site: Site) -> None:
    from app import routes_rooms

    for name in ("ann", "bob"):
        assert site.client().register(name).status == 303
    de = languages()[SECOND]
    empty = json.dumps({"type": "send", "text": " ", "client_id": "c1"})
    for lang, said in (
        (de, "Eine Nachricht braucht etwas Text."),
        (None, "A message needs some text."),
    ):
        client = FakeClient("ann")
        routes_rooms.handle_frame(site.chat, client, empty, lang=lang)  # type: ignore[arg-type]
        assert client.sent == [
            {"type": "error", "code": "empty", "message": said, "client_id": "c1"}
        ]
    # A protocol message, for developers: English in every language.
    client = FakeClient("ann")
    routes_rooms.handle_frame(site.chat, client, "[]", lang=de)  # type: ignore[arg-type]
    assert client.sent[0]["message"] == "frames are JSON objects"
    # A conversation's refusal keeps its value.
    site.chat.set_block("ann", "bob", True)
    client = FakeClient("ann", 0, "bob")
    hi = json.dumps({"type": "send", "text": "hi", "client_id": "c2"})
    routes_rooms.handle_direct_frame(site.chat, client, hi, lang=de)  # type: ignore[arg-type]
    assert client.sent[0]["message"] == (
        "Du hast bob blockiert; hebe die Blockierung auf, um zu schreiben."
    )
    assert client.sent[0]["client_id"] == "c2"
