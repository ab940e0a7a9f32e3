"""Issue 16, first part, over real sockets against real router processes:
no duplicates on resend, named rooms, search and the jump to a message,
the live room list, the first visit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import websocket

from tests.helpers import Router, WsClient, loopback_mesh, routers, wait_for
from tests.integration.test_moderation import bind_admin


def test_resend_after_a_dropped_ack_stores_one_message(router: Router) -> None:
    ann = router.user("ann")
    first = router.ws(ann, 1)
    first.recv_type("history")
    first.send({"type": "send", "text": "only once", "client_id": "c-1"})
    # The socket dies before the page reads the ack: the page cannot know
    # whether the router stored it, and resends on a new socket.
    first.conn.sock.close()
    wait_for(lambda: router.status()["rooms"]["1"] == 1, what="the first send stored")
    again = router.ws(ann, 1)
    history = again.recv_type("history")
    again.send({"type": "send", "text": "only once", "client_id": "c-1"})
    ack = again.recv_type("ack")
    assert ack["client_id"] == "c-1"
    assert ack["id"] == history["messages"][-1]["id"], "the first ack, not a new message"
    # A new client_id is a new message; the old one still answers the same.
    again.send({"type": "send", "text": "only once", "client_id": "c-2"})
    assert again.recv_type("ack")["id"] != ack["id"]
    assert router.status()["rooms"]["1"] == 2
    again.close()


def test_client_ids_are_per_user_and_room(router: Router) -> None:
    ann, bob = router.user("ann"), router.user("bob")
    a, b = router.ws(ann, 1), router.ws(bob, 1)
    a.send({"type": "send", "text": "from ann", "client_id": "same"})
    b.send({"type": "send", "text": "from bob", "client_id": "same"})
    assert a.recv_type("ack")["id"] != b.recv_type("ack")["id"]
    assert router.status()["rooms"]["1"] == 2
    in_two = router.ws(ann, 2)
    in_two.send({"type": "send", "text": "ann in two", "client_id": "same"})
    in_two.recv_type("ack")
    assert router.status()["rooms"]["2"] == 1
    a.close()
    b.close()
    in_two.close()


def test_registering_logs_in_and_the_login_page_says_what_this_is(router: Router) -> None:
    anon = router.http()
    page = anon.get("/login").text
    assert "alpha" in page and "needs no internet" in page and "24 hours" in page
    assert "0 people online now" in page
    ann = router.http()
    r = ann.register("ann")
    assert (r.status, r.headers["location"]) == (303, "/")
    assert 'href="/room/1"' in ann.get("/").text  # logged in, at the rooms
    ws = router.ws(ann, 2)
    ws.recv_type("history")
    wait_for(lambda: "1 person online now" in router.http().get("/login").text, what="online")
    ws.close()


def post(ws: WsClient, text: str) -> str:
    ws.send({"type": "send", "text": text, "client_id": text[:60]})
    return str(ws.recv_type("ack")["id"])


def test_search_finds_case_insensitively_and_jumps_to_the_message(router: Router) -> None:
    ann = router.user("ann")
    ws = router.ws(ann, 1)
    ws.recv_type("history")
    ids = [post(ws, f"note {i}" + (" the Kettle is on" if i == 3 else "")) for i in range(9)]
    ws.send({"type": "search", "q": "KETTLE"})
    found = ws.recv_type("results")
    assert [r["id"] for r in found["results"]] == [ids[3]]
    hit = found["results"][0]
    assert hit["text"][hit["match"] : hit["match"] + 6] == "Kettle"
    ws.send({"type": "around", "id": ids[3]})
    around = ws.recv_type("around")
    assert [m["id"] for m in around["messages"]] == ids and around["more"] is False
    ws.send({"type": "newer", "after": ids[3], "limit": 2})
    newer = ws.recv_type("newer")
    assert [m["id"] for m in newer["messages"]] == ids[4:6] and newer["more"] is True
    ws.send({"type": "latest"})
    assert [m["id"] for m in ws.recv_type("history")["messages"]] == ids
    # Bounded: a query's length; an empty one; a message of another room.
    ws.send({"type": "search", "q": "x" * 101})
    assert ws.recv_type("error")["code"] == "too_long"
    ws.send({"type": "search", "q": "  "})
    assert ws.recv_type("error")["code"] == "bad_request"
    other = router.ws(ann, 2)
    other.send({"type": "around", "id": ids[0]})
    assert other.recv_type("error")["code"] == "not_found"
    ws.close()
    other.close()


def test_room_list_socket_is_live_and_checked_like_the_rooms(router: Router) -> None:
    ann, bob = router.user("ann"), router.user("bob")
    url = f"ws://127.0.0.1:{router.port}/ws/rooms"
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(
            url, timeout=5, origin="http://evil.example", header=[f"Cookie: {ann.cookie_header()}"]
        )
    assert e.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(url, timeout=5, origin=router.base)
    assert e.value.status_code == 403
    conn = websocket.create_connection(
        url, timeout=5, origin=router.base, header=[f"Cookie: {ann.cookie_header()}"]
    )
    first = json.loads(conn.recv())
    assert first["type"] == "rooms" and first["rooms"][0]["unread"] == 0
    b = router.ws(bob, 1)
    b.recv_type("history")
    for i in range(5):
        post(b, f"hello {i}")
    # Coalesced: the five messages and bob's arrival come in one or two updates.
    deadline, updates = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        frame = json.loads(conn.recv())
        updates.append(frame)
        if frame["rooms"][0]["unread"] == 5:
            break
    last = updates[-1]["rooms"][0]
    assert last["unread"] == 5 and last["last"]["text"] == "hello 4" and last["online"] == 1
    assert len(updates) <= 3, updates
    conn.close()
    b.close()


def test_a_room_named_on_a_shows_on_c_and_only_an_admin_names(tmp_path: Path) -> None:
    with routers(tmp_path, "na", "nc", extra=loopback_mesh(tmp_path)) as (a, c):
        bind_admin(a, "boss", c)
        boss = a.ws(a.user("boss", register=False), 2)
        boss.recv_type("history")
        cat_http = c.user("cat")
        cat = c.ws(cat_http, 2)
        cat.recv_type("history")
        cat.send({"type": "name_room", "name": "Squat", "topic": "mine now"})
        assert cat.recv_type("error")["code"] == "forbidden"
        boss.send({"type": "name_room", "name": "  Garden\n club ", "topic": "Seeds & tools"})
        named = cat.recv_type("room_name")
        assert named == {
            "type": "room_name",
            "room": 2,
            "name": "Garden club",
            "topic": "Seeds & tools",
        }
        page = cat_http.get("/room/2").text
        assert "<title>Garden club · Community Chat</title>" in page
        assert "Seeds &amp; tools" in cat_http.get("/").text
        boss.send({"type": "name_room", "name": "n" * 41, "topic": ""})
        assert boss.recv_type("error")["code"] == "too_long"
        # A restart keeps it (the record is in the moderation log).
        c.stop()
        c.start()
        assert "Garden club" in c.user("dan").get("/").text
