"""Issue 16, direct messages and attention, over real sockets against real
router processes: a direct message between two routers, seen by its two
people and refused to anyone else on every read path; blocking; resend
dedupe; the room list's conversations; the attention setting on every
router; settings stay with the person when two routers cut off from each
other gave out one name, and those of the previous release still count; a
picture in a direct message, served to its two people only."""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import websocket

from app.blobfetch import AUTH_HEADER, MESH_BLOB_PREFIX, sign
from node.clock import pack
from node.record import Record, RecordKind
from node.store import SETTINGS_LOG, encode_line
from node.wire import RecordDatagram
from tests.helpers import (
    HttpSession,
    Response,
    Router,
    WsClient,
    loopback_mesh,
    routers,
    running,
    wait_for,
)
from tests.integration.test_blobs_chat import THUMB, blob_file, get, send_blob, two_routers
from tests.unit.test_images import JPEG_37x23


def dm(router: Router, session: HttpSession, peer: str, query: str = "") -> WsClient:
    return router.ws(session, f"dm/{peer}", query)  # type: ignore[arg-type]


def test_a_direct_message_between_two_routers_is_seen_only_by_its_two(tmp_path: Path) -> None:
    with routers(tmp_path, "na", "nc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann, carol = a.user("ann"), a.user("carol")
        bob = c.user("bob")
        wait_for(lambda: ann.get("/dm/bob").status == 200, what="bob's account on A")
        page = ann.get("/dm/bob").text
        assert "not from whoever runs a router" in page, "the page says what private means"
        to_bob = dm(a, ann, "bob")
        hello = to_bob.recv_type("hello")
        assert hello["peer"] == "bob" and hello["blocked"] is False
        assert to_bob.recv_type("history")["messages"] == []
        to_bob.send({"type": "send", "text": "psst, bob", "client_id": "d-1"})
        ack = to_bob.recv_type("ack")
        mine = to_bob.recv_type("message")
        assert mine["id"] == ack["id"] and mine["author"] == "ann" and mine["to"] == "bob"

        # Bob, on router C, gets it in the history, then answers live.
        wait_for(lambda: c.status()["vector"] == a.status()["vector"], what="C caught up")
        to_ann = dm(c, bob, "ann")
        history = to_ann.recv_type("history")
        assert [m["text"] for m in history["messages"]] == ["psst, bob"]
        to_ann.send({"type": "send", "text": "hi ann", "client_id": "d-1"})
        assert to_bob.recv_until(lambda f: f.get("text") == "hi ann", timeout=10)["node"] == "nc"

        # Its two people find it on their conversation's socket.
        to_bob.send({"type": "search", "q": "psst"})
        assert [r["text"] for r in to_bob.recv_type("results")["results"]] == ["psst, bob"]
        to_bob.send({"type": "around", "id": ack["id"]})
        assert ack["id"] in [m["id"] for m in to_bob.recv_type("around")["messages"]]
        to_bob.send({"type": "newer", "after": ack["id"], "limit": 10})
        assert "hi ann" in [m["text"] for m in to_bob.recv_type("newer")["messages"]]

        # Carol, a third person on A, gets it nowhere.
        with_ann = dm(a, carol, "ann")
        assert with_ann.recv_type("history")["messages"] == []
        with_ann.send({"type": "around", "id": ack["id"]})
        assert with_ann.recv_type("error")["code"] == "not_found"
        with_ann.send({"type": "older", "before": ack["id"], "limit": 50})
        assert with_ann.recv_type("error")["code"] == "bad_request"
        with_ann.send({"type": "search", "q": "psst"})
        assert with_ann.recv_type("results")["results"] == []
        with_ann.send({"type": "newer", "after": ack["id"], "limit": 10})
        assert with_ann.recv_type("error")["code"] == "bad_request"
        room = a.ws(carol, 1)
        room.recv_type("history")
        room.send({"type": "around", "id": ack["id"]})
        assert room.recv_type("error")["code"] == "not_found"
        room.send({"type": "search", "q": "psst"})
        assert room.recv_type("results")["results"] == []
        assert carol.get(f"/message/{ack['id']}").status == 404
        assert ann.get(f"/message/{ack['id']}").status == 303
        assert carol.get("/dm/carol").status == 404  # no conversation with oneself
        assert carol.get("/dm/nobody").status == 404
        nobody = dm(a, carol, "nobody")
        assert nobody.recv_type("error")["code"] == "not_found"
        # /status, the rooms page and its live frame say nothing of it to her.
        for text in (json.dumps(a.status()), carol.get("/").text):
            assert "psst" not in text and "hi ann" not in text
        assert "psst" not in a.http().get("/status").text
        for ws in (to_bob, to_ann, with_ann, room, nobody):
            ws.close()


def test_a_third_person_cannot_open_anothers_socket_without_a_session(router: Router) -> None:
    ann = router.user("ann")
    router.user("bob")
    anon = router.http()
    assert anon.get("/dm/bob").status in (302, 303)  # to the login page
    try:
        websocket.create_connection(
            f"ws://127.0.0.1:{router.port}/ws/dm/bob", timeout=5, origin=router.base
        )
        raise AssertionError("a socket without a session")
    except websocket.WebSocketBadStatusException as e:
        assert e.status_code == 403
    try:  # another site's page, with ann's cookie: refused too
        router.ws(ann, "dm/bob", origin="http://evil.example")  # type: ignore[arg-type]
        raise AssertionError("a socket from another origin")
    except websocket.WebSocketBadStatusException as e:
        assert e.status_code == 403


def test_a_block_holds_on_every_router_and_the_sender_is_told(tmp_path: Path) -> None:
    with routers(tmp_path, "na", "nc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann = a.user("ann")
        bob = c.user("bob")
        wait_for(lambda: bob.get("/dm/ann").status == 200, what="ann's account on C")
        to_bob_page = dm(c, bob, "ann")
        to_bob_page.recv_type("history")
        to_bob_page.send({"type": "block", "on": True})
        assert to_bob_page.recv_type("blocked") == {"type": "blocked", "peer": "ann", "on": True}
        wait_for(lambda: c.status()["vector"] == a.status()["vector"], what="A has the block")
        to_bob = dm(a, ann, "bob")
        assert to_bob.recv_type("hello")["blocks_me"] is True
        to_bob.send({"type": "send", "text": "let me in", "client_id": "x"})
        error = to_bob.recv_type("error")
        assert error["code"] == "blocked" and error["client_id"] == "x"
        assert "does not take direct messages from you" in error["message"]
        # Bob sees the block on his rooms page, and lifts it: ann may write.
        to_bob_page.send({"type": "block", "on": False})
        assert to_bob_page.recv_type("blocked")["on"] is False
        wait_for(lambda: c.status()["vector"] == a.status()["vector"], what="A has the unblock")
        to_bob.send({"type": "send", "text": "thanks", "client_id": "y"})
        assert to_bob.recv_type("ack")["client_id"] == "y"
        assert to_bob_page.recv_until(lambda f: f.get("text") == "thanks", timeout=10)
        to_bob.close()
        to_bob_page.close()


def test_a_resent_direct_message_is_stored_once(router: Router) -> None:
    ann = router.user("ann")
    router.user("bob")
    first = dm(router, ann, "bob")
    first.recv_type("history")
    first.send({"type": "send", "text": "once", "client_id": "c-1"})
    first.conn.sock.close()  # the ack is lost with the socket

    def stored() -> dict[str, Any] | None:
        # A history is taken once per socket: look again on a new one until
        # the router has read the first send off the closed socket.
        probe = dm(router, ann, "bob")
        history: dict[str, Any] = probe.recv_type("history")
        probe.close()
        return history if history["messages"] else None

    history = wait_for(stored, what="the first send stored")
    again = dm(router, ann, "bob")
    again.recv_type("history")
    again.send({"type": "send", "text": "once", "client_id": "c-1"})
    ack = again.recv_type("ack")
    assert ack["id"] == history["messages"][-1]["id"], "the first ack, not a new message"
    again.close()
    check = dm(router, ann, "bob")
    assert [m["text"] for m in check.recv_type("history")["messages"]] == ["once"]
    check.close()


def test_the_room_list_shows_conversations_live(router: Router) -> None:
    ann, bob = router.user("ann"), router.user("bob")
    conn = websocket.create_connection(
        f"ws://127.0.0.1:{router.port}/ws/rooms",
        timeout=5,
        origin=router.base,
        header=[f"Cookie: {ann.cookie_header()}"],
    )
    assert json.loads(conn.recv())["direct"] == []
    to_ann = dm(router, bob, "ann")
    to_ann.recv_type("history")
    to_ann.send({"type": "send", "text": "lunch at one?", "client_id": "l"})
    frame = json.loads(conn.recv())
    (conv,) = frame["direct"]
    assert conv["peer"] == "bob" and conv["unread"] == 1
    assert conv["last"] == {**conv["last"], "author": "bob", "text": "lunch at one?"}
    assert "lunch at one?" in ann.get("/").text
    # Ann reads it: the count goes to 0, live.
    to_bob = dm(router, ann, "bob")
    message = to_bob.recv_type("history")["messages"][-1]
    to_bob.send({"type": "read", "upto": message["hlc"]})
    assert json.loads(conn.recv())["direct"][0]["unread"] == 0
    # Bob's rooms page never shows it as unread: he wrote it.
    assert 'data-unread="0"' in bob.get("/").text or "badge" not in bob.get("/").text
    conn.close()
    to_ann.close()
    to_bob.close()


def test_the_attention_setting_follows_the_person_to_another_router(tmp_path: Path) -> None:
    with routers(tmp_path, "na", "nc", extra=loopback_mesh(tmp_path)) as (a, c):
        ann = a.user("ann")
        room = a.ws(ann, 1)
        assert room.recv_type("hello")["attention"] == {"sound": False, "vibrate": False}
        room.send({"type": "attention", "sound": True, "vibrate": False})
        assert room.recv_type("attention") == {
            "type": "attention",
            "sound": True,
            "vibrate": False,
        }
        room.send({"type": "attention", "sound": "loud", "vibrate": False})
        assert room.recv_type("error")["code"] == "bad_request"
        wait_for(lambda: c.status()["vector"] == a.status()["vector"], what="C has it")
        on_c = c.user("ann", register=False)
        there = c.ws(on_c, 2)
        assert there.recv_type("hello")["attention"] == {"sound": True, "vibrate": False}
        room.close()
        there.close()


def test_a_direct_message_tells_the_recipients_other_pages(router: Router) -> None:
    ann, bob = router.user("ann"), router.user("bob")
    in_room = router.ws(ann, 1)
    in_room.recv_type("history")
    to_ann = dm(router, bob, "ann")
    to_ann.recv_type("history")
    to_ann.send({"type": "send", "text": "are you there?", "client_id": "n"})
    notice = in_room.recv_type("direct")
    assert notice["from"] == "bob" and "text" not in notice
    in_room.close()
    to_ann.close()


# -- settings belong to people, not to names (app/direct.py) -------------------------------

SYNC_TIMEOUT = 15.0  # two routers on loopback agree in about a second; CI is shared
OTHER_PASSWORD = "another horse"  # the second ann's: a login finds her, not the owner
OLD_ROUTER = "0ddba11c0ffee000"  # a router still on the previous release


def own_mesh(tmp_path: Path, name: str) -> list[str]:
    """Flags for a mesh of one router's own: another port, another key."""
    folder = tmp_path / name
    folder.mkdir()
    return loopback_mesh(folder)


def in_sync(*rs: Router, accounts: int) -> bool:
    """The routers hold the same records, and ``accounts`` names (/status)."""
    statuses = [r.status() for r in rs]
    return all(s["accounts"] == accounts and s["vector"] == statuses[0]["vector"] for s in statuses)


def dm_hello(router: Router, session: HttpSession, peer: str) -> dict[str, Any]:
    page = dm(router, session, peer)
    hello = page.recv_type("hello")
    page.close()
    return hello


def test_settings_stay_with_the_person_when_a_name_was_given_twice(tmp_path: Path) -> None:
    """Routers A and B, cut off from each other (each on a mesh of its own),
    both give out "ann", B first.  The ann on A blocks bob and turns the
    sound on.  Once they meet, B's ann owns the name: on both routers she
    does not block bob and her sound is off.  A's ann is sent to rename;
    as ann2 she still blocks bob and has the sound on, on both routers."""
    mesh_a, mesh_b = own_mesh(tmp_path, "ka"), own_mesh(tmp_path, "kb")
    with routers(tmp_path, "nb", extra=mesh_b) as (b,):
        owner = b.user("ann")
        with routers(tmp_path, "na", extra=mesh_a) as (a,):
            bob = a.user("bob")
            other = a.http()
            assert other.register("ann", OTHER_PASSWORD).status == 303
            to_bob = dm(a, other, "bob")
            to_bob.recv_type("history")
            to_bob.send({"type": "block", "on": True})
            assert to_bob.recv_type("blocked")["on"] is True
            to_bob.send({"type": "attention", "sound": True, "vibrate": False})
            assert to_bob.recv_type("attention")["sound"] is True
            to_bob.close()
            b.stop()
            b.extra = mesh_a  # the cut heals: B joins A's mesh
            b.start()
            wait_for(lambda: in_sync(a, b, accounts=2), SYNC_TIMEOUT, "A and B to agree")
            owner_on_a = a.user("ann", register=False)
            for router, session in ((b, owner), (a, owner_on_a)):
                hello = dm_hello(router, session, "bob")
                assert hello["blocked"] is False, f"the owner inherits the block on {router.name}"
                assert hello["attention"] == {"sound": False, "vibrate": False}, router.name
            to_bob = dm(b, owner, "bob")
            to_bob.recv_type("history")
            to_bob.send({"type": "send", "text": "hi bob, from the owner", "client_id": "o"})
            assert to_bob.recv_type("ack")["client_id"] == "o"
            to_bob.close()
            # A's ann is sent to rename, and keeps what she chose.
            assert other.get("/").headers["location"].endswith("/rename")
            token = other.csrf("/rename")
            assert other.post("/rename", {"csrf": token, "username": "ann2"}).status == 303
            wait_for(lambda: in_sync(a, b, accounts=3), SYNC_TIMEOUT, "B to have the rename")
            displaced_on_b = b.http()
            assert displaced_on_b.login("ann2", OTHER_PASSWORD).status == 303
            for router, session in ((a, other), (b, displaced_on_b)):
                hello = dm_hello(router, session, "bob")
                assert hello["blocked"] is True, f"the rename lost her block on {router.name}"
                assert hello["attention"] == {"sound": True, "vibrate": False}, router.name
            assert dm_hello(a, bob, "ann2")["blocks_me"] is True
            assert dm_hello(a, bob, "ann")["blocks_me"] is False


def test_settings_of_the_previous_release_still_count(tmp_path: Path) -> None:
    """A router upgraded over a data folder of the previous release, whose
    settings are keyed by name: ann's block of bob and her sound still hold.
    A setting from a router still on that release, over the mesh, counts too
    (the latest wins, whatever its form)."""
    key = secrets.token_bytes(32)
    key_file = tmp_path / "mesh.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    with routers(tmp_path, "up", extra=loopback_mesh(tmp_path)) as (r,):
        ann = r.user("ann")
        r.user("bob")
        r.stop()
        now = int(time.time() * 1000)
        old = [
            {"user": "ann", "setting": "block", "peer": "bob", "on": True},
            {"user": "ann", "setting": "attention", "sound": True, "vibrate": False},
        ]
        lines = [
            encode_line(Record(OLD_ROUTER, seq, pack(now, 0), RecordKind.SETTING, 0, body))
            for seq, body in enumerate(old, start=1)
        ]
        with open(r.data_dir / SETTINGS_LOG, "ab") as f:
            f.write(b"".join(lines))
        r.start()
        hello = dm_hello(r, ann, "bob")
        assert hello["blocked"] is True and hello["attention"]["sound"] is True
        unblock = Record(
            OLD_ROUTER,
            3,
            pack(int(time.time() * 1000), 0),
            RecordKind.SETTING,
            0,
            {"user": "ann", "setting": "block", "peer": "bob", "on": False},
        )
        host, port = r.status()["mesh"]["unicast"].rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(
                RecordDatagram(OLD_ROUTER, unblock, counter=1).serialize(key), (host, int(port))
            )
        wait_for(
            lambda: dm_hello(r, ann, "bob")["blocked"] is False, what="the old router's unblock"
        )
        assert r.status()["store"]["refused"] == {}


def test_a_displaced_persons_open_pages_are_closed_when_the_name_goes(tmp_path: Path) -> None:
    """A's "ann" has a room page and a conversation with bob open when the
    cut heals and B's earlier "ann" takes the name.  Her open sockets are
    told and closed at once: a frame meant for the name (a direct message
    to the owner) never reaches them; the owner's own pages stay open."""
    mesh_a, mesh_b = own_mesh(tmp_path, "ka"), own_mesh(tmp_path, "kb")
    with routers(tmp_path, "nb", extra=mesh_b) as (b,):
        b.user("ann")
        with routers(tmp_path, "na", extra=mesh_a) as (a,):
            bob = a.user("bob")
            other = a.http()
            assert other.register("ann", OTHER_PASSWORD).status == 303
            room_page = a.ws(other)
            room_page.recv_type("history")
            with_bob = dm(a, other, "bob")
            with_bob.recv_type("history")
            b.stop()
            b.extra = mesh_a  # the cut heals: B joins A's mesh
            b.start()
            wait_for(lambda: in_sync(a, b, accounts=2), SYNC_TIMEOUT, "A and B to agree")
            owner = a.user("ann", register=False)
            owners_page = a.ws(owner)
            owners_page.recv_type("history")
            for page in (room_page, with_bob):
                told = page.recv_until(lambda f: f.get("type") == "error", SYNC_TIMEOUT)
                assert told["code"] == "name_taken", told
                page.conn.settimeout(5.0)
                try:
                    later = page.conn.recv()  # "" is the close frame
                except websocket.WebSocketConnectionClosedException:
                    later = ""
                assert later == "", f"still open after the notice: {later}"
            to_ann = dm(a, bob, "ann")
            to_ann.recv_type("history")
            to_ann.send({"type": "send", "text": "for the owner only", "client_id": "x"})
            assert to_ann.recv_type("ack")["client_id"] == "x"
            owners_page.send({"type": "ping"})  # still open: answered
            assert owners_page.recv_until(lambda f: f.get("type") != "presence")
            assert "for the owner only" not in json.dumps(room_page.frames + with_bob.frames)


# -- a picture in a direct message ------------------------------------------------------


def dm_upload(r: Router, s: HttpSession, peer: str, data: bytes, name: str) -> Response:
    """``POST /dm/<peer>/upload`` as static/attach.js sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/dm/{peer}/upload?name={quote(name)}",
            body=data,
            headers={"Cookie": s.cookie_header(), "X-CSRF-Token": s.csrf("/")},
        )
        resp = conn.getresponse()
        return Response(resp.status, dict(resp.getheaders()), [], resp.read().decode())
    finally:
        conn.close()


def peer_get(r: Router, key: bytes, sha: str) -> int:
    """What a router with the mesh key gets for ``GET /mesh/blob/<sha>``."""
    path = MESH_BLOB_PREFIX + sha
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    try:
        conn.request("GET", path, headers={AUTH_HEADER: sign(key, "GET", path, int(time.time()))})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_picture_in_a_direct_message_is_served_to_its_two_people_only(tmp_path: Path) -> None:
    """Ann on A sends bob on B a photo in a direct message.  Bob gets it
    through B, which pulls it from A when his page asks; carol, logged in
    on both routers, gets the 404 of a blob nobody holds, and B fetches
    nothing for her; nobody logged in is sent to the login page.  Until the
    message exists the upload is ann's alone, not even a peer's."""
    made = two_routers(tmp_path)
    key = bytes.fromhex((tmp_path / "mesh.key").read_text().split()[0])
    with running(made) as (a, b):
        ann, carol_a = a.user("ann"), a.user("carol")
        bob = b.user("bob")
        wait_for(lambda: ann.get("/dm/bob").status == 200, 10, "bob's account on A")
        wait_for(lambda: b.status()["accounts"] == 3, 10, "carol's account on B")
        carol_b = b.user("carol", register=False)
        page = ann.get("/dm/bob").text
        assert 'id="attach-file"' in page, "the + is offered in a conversation"
        assert "pictures and files travel between routers" in page

        up = dm_upload(a, ann, "bob", JPEG_37x23, "us at the lake.jpg")
        assert up.status == 200, up.text
        found = up.json()
        sha = found["sha"]
        assert sha == hashlib.sha256(JPEG_37x23).hexdigest() and found["kind"] == "jpeg"
        assert dm_upload(a, ann, "nobody", JPEG_37x23, "x.jpg").status == 404
        # Uploaded, not sent: the uploader's only; no page, no peer gets it.
        # (What each router answers for a blob nobody holds, to compare.)
        not_held = {r.name: c.get("/blob/" + "ab" * 32) for r, c in ((a, carol_a), (b, carol_b))}
        assert all(r.status == 404 for r in not_held.values())
        assert get(a, ann, f"/blob/{sha}")[0] == 200
        assert get(a, carol_a, f"/blob/{sha}")[0] == 404
        assert peer_get(a, key, sha) == 404
        # Bob, on B, before B holds a message naming it: not served, not fetched.
        assert get(b, bob, f"/blob/{sha}")[0] == 404
        assert b.status()["blobs"]["fetch"].get("fetches", 0) == 0

        to_bob = dm(a, ann, "bob")
        to_bob.recv_type("history")
        ack = send_blob(to_bob, found, THUMB, "pic-1")
        assert ack["type"] == "ack", ack
        mine = to_bob.recv_until(lambda f: f.get("id") == ack["id"])
        assert mine["blob"]["sha"] == sha and mine["thumb"] == THUMB and mine["to"] == "bob"
        assert peer_get(a, key, sha) == 200, "routers are trusted with direct messages"

        # B holds the message (the thumbnail came with it), not the photo.
        wait_for(lambda: b.status()["vector"] == a.status()["vector"], 10, "B caught up")
        to_ann = dm(b, bob, "ann")
        (theirs,) = to_ann.recv_type("history")["messages"]
        assert theirs["blob"] == mine["blob"] and theirs["thumb"] == THUMB
        assert not blob_file(b, sha).exists()

        # Carol on B: the 404 of a blob nobody holds, and nothing fetched for her.
        status, _, body = get(b, carol_b, f"/blob/{sha}")
        assert status == 404 and body.decode() == not_held[b.name].text
        assert b.status()["blobs"]["fetch"].get("fetches", 0) == 0
        assert not blob_file(b, sha).exists()

        # Bob on B: pulled from A when his page asks, then held on B.
        status, headers, body = get(b, bob, f"/blob/{sha}")
        assert status == 200 and body == JPEG_37x23
        assert headers["content-type"] == "image/jpeg"
        assert "us at the lake.jpg" in headers["content-disposition"]
        assert headers["cache-control"] == "no-store", "a shared phone keeps no copy"
        assert blob_file(b, sha).read_bytes() == JPEG_37x23
        assert b.status()["blobs"]["fetch"]["fetched"] == 1
        assert a.status()["blobs"]["serve"]["served"] >= 2  # our probe, then B

        # Now held on both: still 404 for carol on both, as for a blob nobody holds.
        for r, carol in ((a, carol_a), (b, carol_b)):
            status, _, body = get(r, carol, f"/blob/{sha}")
            assert status == 404 and body.decode() == not_held[r.name].text, r.name
            anon = r.http().get(f"/blob/{sha}")
            assert anon.status == 303 and anon.headers["location"] == "/login"
            assert JPEG_37x23[:4].decode("latin-1") not in anon.text
            # Naming its hash in a room of her own does not make it public.
            room = r.ws(carol, 1)
            room.recv_type("history")
            refused = send_blob(room, {"sha": sha, "name": "leak.jpg"}, THUMB, "leak")
            assert refused["type"] == "error" and refused["code"] == "bad_blob", refused
            room.close()
        assert get(a, ann, f"/blob/{sha}")[0] == 200
        assert a.status()["rooms"]["1"] == 0 and b.status()["rooms"]["1"] == 0

        # The same bytes in a room message too: public from then on, under
        # the room's name for them (never the conversation's).
        in_room = a.ws(ann, 1)
        in_room.recv_type("history")
        assert send_blob(in_room, {"sha": sha, "name": "lake.jpg"}, THUMB, "pub")["type"] == "ack"
        wait_for(lambda: b.status()["rooms"]["1"] == 1, 10, "the room message on B")
        status, headers, body = get(b, carol_b, f"/blob/{sha}")
        assert status == 200 and body == JPEG_37x23
        assert 'filename="lake.jpg"' in headers["content-disposition"]
        assert headers["cache-control"] == "private, max-age=31536000, immutable"
        for ws in (to_bob, to_ann, in_room):
            ws.close()
