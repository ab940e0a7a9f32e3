"""Moderation over real sockets: delete, clear, ban and unban, checked by the
server whatever the page shows; and across routers on loopback.  The admin
is set up as an operator does it (app/moderation.py): register the name,
then restart the router with the rights bound to that account."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import ACCOUNTS_LOG, MODERATION_LOG
from tests.helpers import Router, WsClient, loopback_mesh, routers, wait_for


def account_id(router: Router, name: str) -> str:
    """The id of ``name``'s registration, as the operator reads it off the router."""
    for line in (router.data_dir / ACCOUNTS_LOG).read_text().splitlines():
        obj = json.loads(line)
        if obj["body"].get("name") == name and "account" not in obj["body"]:
            return obj["id"]
    raise AssertionError(f"no account {name} on {router.name}")


def bind_admin(router: Router, name: str, *others: Router) -> str:
    """Register ``name`` on ``router``; restart it (and ``others``) with
    ``--admin NAME=ID``.  Returns the id."""
    assert router.http().register(name).status == 303
    account = account_id(router, name)
    for r in (router, *others):
        r.stop()
        r.extra = [*r.extra, "--admin", f"{name.upper()}={account}"]  # names match without case
        r.start()
    return account


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Router]:
    with routers(tmp_path, "mod", extra=["--no-mesh"]) as (r,):
        r.boss_id = bind_admin(r, "boss")  # type: ignore[attr-defined]
        yield r


def post(w: WsClient, text: str) -> str:
    w.send({"type": "send", "text": text, "client_id": text})
    return w.recv_until(lambda f: f.get("type") == "ack" and f["client_id"] == text)["id"]


def test_hello_says_who_is_admin(site: Router) -> None:
    boss, ann = site.user("boss", register=False), site.user("ann")
    assert site.ws(boss).recv_type("hello")["admin"] is True  # names match without case
    assert site.ws(ann).recv_type("hello")["admin"] is False


def test_non_admin_is_refused_whatever_it_sends(site: Router) -> None:
    ann = site.ws(site.user("ann"))
    mid = post(ann, "hello")
    for frame in [
        {"type": "delete", "id": mid},
        {"type": "clear"},
        {"type": "ban", "user": "boss"},
        {"type": "unban", "user": "ann"},
    ]:
        ann.send(frame)
        err = ann.recv_type("error")
        assert err["code"] == "forbidden"
    assert site.status()["rooms"]["1"] == 1
    assert not (site.data_dir / MODERATION_LOG).exists()


def test_delete_takes_the_message_off_every_page_and_the_log(site: Router) -> None:
    boss = site.ws(site.user("boss", register=False))
    ann = site.ws(site.user("ann"))
    keep, gone = post(ann, "keep me"), post(ann, "rude")
    boss.send({"type": "delete", "id": gone})
    note = ann.recv_type("deleted")
    assert note == {"type": "deleted", "id": gone, "by": "boss"}
    assert site.status()["rooms"]["1"] == 1
    lines = (site.data_dir / MODERATION_LOG).read_text().splitlines()
    assert json.loads(lines[0])["body"] == {
        "action": "delete",
        "by": "boss",
        "account": site.boss_id,
        "target": gone,
    }
    fresh = site.ws(site.user("cat"))
    ids = [m["id"] for m in fresh.recv_type("history")["messages"]]
    assert ids == [keep]
    boss.send({"type": "delete", "id": "0123456789abcdef:1"})
    assert boss.recv_type("error")["code"] == "bad_request"
    site.stop()
    site.start()
    again = site.ws(site.user("ann", register=False))
    assert [m["id"] for m in again.recv_type("history")["messages"]] == [keep]


def test_a_banned_persons_pages_are_told_in_their_language(site: Router) -> None:
    """The notice that closes a banned person's sockets is in the language
    each socket was opened in (its page's Accept-Language)."""
    boss = site.ws(site.user("boss", register=False))
    eve = site.user("eve")
    german = site.ws(eve, headers=("Accept-Language: de-DE,de;q=0.9",))
    english = site.ws(eve, room=2, headers=("Accept-Language: en",))
    boss.send({"type": "ban", "user": "eve"})
    told = german.recv_until(lambda f: f.get("code") == "banned")
    assert told["message"] == "Du bist von diesem Chat ausgeschlossen."
    told = english.recv_until(lambda f: f.get("code") == "banned")
    assert told["message"] == "You are banned from this chat."


def test_clear_room(site: Router) -> None:
    boss = site.ws(site.user("boss", register=False))
    ann = site.ws(site.user("ann"))
    for i in range(3):
        post(ann, f"m{i}")
    boss.send({"type": "clear"})
    assert ann.recv_type("cleared")["by"] == "boss"
    assert site.status()["rooms"]["1"] == 0
    after = post(ann, "after the clear")
    assert site.status()["rooms"]["1"] == 1 and after


def test_ban_closes_sockets_refuses_posts_and_logins_then_unban(site: Router) -> None:
    boss = site.ws(site.user("boss", register=False))
    eve_http = site.user("eve")
    eve = site.ws(eve_http)
    post(eve, "spam")
    boss.send({"type": "ban", "user": "EVE"})
    assert eve.recv_until(lambda f: f.get("code") == "banned")["type"] == "error"
    assert boss.recv_type("banned")["user"] == "eve"
    # The old session is dead, for pages and sockets.
    assert eve_http.get("/").status == 303
    with pytest.raises(Exception, match="403"):
        site.ws(eve_http)
    r = site.http().login("eve")
    assert r.status == 403 and "banned" in r.text
    boss.send({"type": "unban", "user": "eve"})
    wait_for(lambda: site.http().login("eve").status == 303, what="unban")
    boss.send({"type": "ban", "user": "nobody-here"})
    assert boss.recv_type("error")["code"] == "bad_request"


def test_a_delete_on_a_reaches_c_over_the_mesh(tmp_path: Path) -> None:
    with routers(tmp_path, "ma", "mc", extra=loopback_mesh(tmp_path)) as (a, c):
        bind_admin(a, "boss", c)
        boss = a.ws(a.user("boss", register=False))
        wait_for(lambda: c.status()["accounts"] == 1, what="boss's account on C")
        cat = c.ws(c.user("cat"))
        mid = post(cat, "on C")
        wait_for(lambda: a.status()["rooms"]["1"] == 1, what="message on A")
        boss.send({"type": "delete", "id": mid})
        assert cat.recv_type("deleted")["id"] == mid
        wait_for(lambda: c.status()["rooms"]["1"] == 0, what="deleted on C")
        # A ban on A holds on C too.
        boss.send({"type": "ban", "user": "cat"})
        wait_for(lambda: c.http().login("cat").status == 403, what="ban on C")
