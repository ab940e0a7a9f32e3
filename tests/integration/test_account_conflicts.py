"""Accounts as replicated records: name conflicts between routers that were
cut off from each other, renames, and password changes (in-process)."""

from __future__ import annotations

from pathlib import Path

from app.accounts import Accounts, hash_password
from node.record import Record, RecordKind
from tests.helpers import PASSWORD, receive_one
from tests.integration.test_web import Site

OTHER = "0" * 16  # a router whose clock ran earlier


def registration(origin: str, seq: int, hlc: int, name: str, password: str) -> Record:
    return Record(
        origin, seq, hlc, RecordKind.ACCOUNT, 0, {"name": name, "hash": hash_password(password)}
    )


def test_earliest_registration_owns_the_name_in_any_arrival_order() -> None:
    early = registration("a" * 16, 1, 100, "Ann", "early-password")
    late = registration("b" * 16, 1, 200, "ann", "late-password")
    tie = registration("c" * 16, 1, 200, "ANN", "tie-password")  # same hlc: origin decides
    for order in ([early, late, tie], [tie, late, early], [late, early, tie]):
        accounts = Accounts()
        for r in order:
            accounts.add(r)
        owner = accounts.owner("aNN")
        assert owner is not None and owner.id == early.id and owner.name == "Ann"
        first = accounts.authenticate("ann", "early-password")
        assert first is not None and not first.displaced
        second = accounts.authenticate("ann", "late-password")
        assert second is not None and second.displaced and second.account.id == late.id
        assert accounts.authenticate("ann", "tie-password").displaced
        assert accounts.authenticate("ann", "nobody's") is None


def test_password_change_latest_wins_in_any_order() -> None:
    reg = registration("a" * 16, 1, 100, "ann", "first-password")
    c1 = Record(
        "a" * 16,
        2,
        150,
        RecordKind.ACCOUNT,
        0,
        {"name": "ann", "hash": hash_password("second-password"), "account": reg.id},
    )
    c2 = Record(
        "b" * 16,
        1,
        160,
        RecordKind.ACCOUNT,
        0,
        {"name": "ann", "hash": hash_password("third-password"), "account": reg.id},
    )
    for order in ([reg, c1, c2], [c2, c1, reg], [c1, reg, c2]):
        accounts = Accounts()
        for r in order:
            accounts.add(r)
        assert accounts.authenticate("ann", "third-password") is not None
        assert accounts.authenticate("ann", "second-password") is None
        assert accounts.authenticate("ann", "first-password") is None


def test_displaced_session_must_rename_and_keeps_its_password(tmp_path: Path) -> None:
    site = Site(tmp_path)
    c = site.client()
    c.register("ann")  # accepted here, while cut off from the other router
    c.login("ann")
    assert c.get("/").status == 200
    # The other router's earlier registration of the same name arrives.
    assert receive_one(site.chat, registration(OTHER, 1, 1, "ann", "the-other-ann"))
    r = c.get("/")
    assert r.status == 303 and r.headers["location"].endswith("/rename")
    assert c.get("/room/1").headers["location"].endswith("/rename")
    page = c.get("/rename")
    assert "was registered on another" in page.text
    # Our ann logging in with her password is sent to rename too, and can
    # never get into the other ann's account.
    fresh = site.client()
    assert fresh.login("ann").headers["location"].endswith("/rename")
    token = fresh.csrf("/rename")
    r = fresh.post("/rename", {"csrf": token, "username": "ann"})
    assert r.status == 409 and "taken" in r.text
    r = fresh.post("/rename", {"csrf": token, "username": "ann2"})
    assert r.status == 303 and r.headers["location"].endswith("/")
    assert "<strong>ann2</strong>" in fresh.get("/").text
    assert site.client().login("ann2", PASSWORD).status == 303, "password kept"
    # The other ann logs in to her own account with her own password.
    other = site.client()
    assert other.login("ann", "the-other-ann").headers["location"].endswith("/")
    assert "<strong>ann</strong>" in other.get("/").text


def test_change_password_form(tmp_path: Path) -> None:
    site = Site(tmp_path)
    c = site.client()
    c.register("ann")
    c.login("ann")
    token = c.csrf("/password")
    r = c.post(
        "/password",
        {
            "csrf": token,
            "current": "wrong one",
            "password": "new-secret-1",
            "confirm": "new-secret-1",
        },
    )
    assert r.status == 400 and "current password is not right" in r.text
    r = c.post(
        "/password",
        {"csrf": token, "current": PASSWORD, "password": "new-secret-1", "confirm": "new-secret-2"},
    )
    assert r.status == 400 and "do not match" in r.text
    r = c.post(
        "/password",
        {"csrf": token, "current": PASSWORD, "password": "new-secret-1", "confirm": "new-secret-1"},
    )
    assert r.status == 200 and "Password changed" in r.text
    assert site.client().login("ann", PASSWORD).status == 401
    assert site.client().login("ann", "new-secret-1").status == 303
    # The change is a record: a restarted router (or a peer) agrees.
    site.store.close()
    again = Site(tmp_path)
    assert again.client().login("ann", "new-secret-1").status == 303
    assert again.client().login("ann", PASSWORD).status == 401


def test_records_from_peers_are_checked_before_storing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    bad = [
        Record(
            OTHER,
            1,
            5,
            RecordKind.MESSAGE,
            9,
            {"author": "x", "node": "n", "time": 1, "text": "no room 9"},
        ),
        Record(
            OTHER,
            2,
            5,
            RecordKind.MESSAGE,
            1,
            {"author": "bad name", "node": "n", "time": 1, "text": "t"},
        ),
        Record(
            OTHER,
            3,
            5,
            RecordKind.MESSAGE,
            1,
            {"author": "x", "node": "n", "time": 1, "text": "x" * 2001},
        ),
        Record(
            OTHER,
            4,
            5,
            RecordKind.MESSAGE,
            1,
            {"author": "x", "node": "n", "time": 1, "text": "bell\x07"},
        ),
        Record(OTHER, 5, 5, RecordKind.ACCOUNT, 0, {"name": "x", "hash": "plaintext"}),
        Record(
            OTHER,
            6,
            5,
            RecordKind.ACCOUNT,
            0,
            {"name": "x", "hash": "scrypt$1", "account": "nonsense"},
        ),
    ]
    for r in bad:
        assert not receive_one(site.chat, r)
    assert site.store.count(1) == 0 and len(site.chat.accounts) == 0
    assert sum(site.chat.refused.values()) == len(bad)
    good = Record(
        OTHER, 7, 5, RecordKind.MESSAGE, 1, {"author": "x", "node": "n", "time": 1, "text": "fine"}
    )
    assert receive_one(site.chat, good) and site.store.count(1) == 1
