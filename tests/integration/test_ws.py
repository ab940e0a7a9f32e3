"""The WebSocket protocol over real sockets, against a real router process."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import websocket

from app.accounts import USERNAME_RE
from app.chat import HISTORY_LIMIT, MAX_TEXT_CHARS, RATE_BURST
from node.store import room_log_name
from tests.helpers import Router


def test_refused_without_session_or_with_foreign_origin(router: Router) -> None:
    anon = router.http()
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        router.ws(anon)
    assert e.value.status_code == 403
    ann = router.user("ann")
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        router.ws(ann, origin="http://evil.example")
    assert e.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        router.ws(ann, origin=f"http://127.0.0.1:{router.port + 1}")
    assert e.value.status_code == 403
    ws = router.ws(ann)
    assert ws.recv()["type"] == "hello"
    ws.close()


def test_hello_history_presence_then_chat_between_two_clients(router: Router) -> None:
    ann, bob, cat = router.user("ann"), router.user("bob"), router.user("cat")
    a = router.ws(ann, 1)
    hello = a.recv()
    assert int(hello.pop("read")) > 0  # ann's read marker: her account's creation
    assert hello == {
        "type": "hello",
        "user": "ann",
        "room": 1,
        "node": "alpha",
        "node_id": router.status()["node_id"],
        "admin": False,
        # What the page needs to agree with the server: the name key, the
        # rule for a name (and a mention), the page size of a history.
        "key": "ann",
        "name_rule": USERNAME_RE.pattern,
        "history_page": HISTORY_LIMIT,
        # Whether the page beeps or buzzs on a mention (issue 16): off by default.
        "attention": {"sound": False, "vibrate": False},
    }
    assert a.recv()["type"] == "history"
    assert a.recv_type("presence")["users"] == [{"user": "ann", "node": "alpha"}]
    b = router.ws(bob, 1)
    c = router.ws(cat, 2)
    assert a.recv_type("presence")["users"] == [
        {"user": "ann", "node": "alpha"},
        {"user": "bob", "node": "alpha"},
    ]
    a.send({"type": "send", "text": "hello room 1", "client_id": "c1"})
    ack = a.recv_type("ack")
    assert ack["client_id"] == "c1"
    mine = a.recv_type("message")
    theirs = b.recv_type("message")
    assert mine == theirs
    assert mine["id"] == ack["id"] and mine["id"].startswith(hello["node_id"] + ":")
    assert mine["author"] == "ann" and mine["node"] == "alpha" and mine["room"] == 1
    assert mine["text"] == "hello room 1" and mine["time"].endswith("Z")
    c.send({"type": "send", "text": "room 2 only", "client_id": "c2"})
    assert c.recv_type("message")["text"] == "room 2 only"
    a.send({"type": "send", "text": "second", "client_id": "c3"})
    assert b.recv_type("message")["text"] == "second", "room 2's message never reached room 1"
    assert all(f.get("text") != "room 2 only" for f in a.frames + b.frames)
    b.close()
    assert a.recv_type("presence")["users"] == [{"user": "ann", "node": "alpha"}]
    for w in (a, c):
        w.close()


def test_ack_means_flushed_to_the_log(router: Router) -> None:
    a = router.ws(router.user("ann"))
    a.send({"type": "send", "text": "on disk?", "client_id": "x"})
    ack = a.recv_type("ack")
    lines = (router.data_dir / room_log_name(1)).read_text().splitlines()
    assert json.loads(lines[-1])["id"] == ack["id"]
    assert json.loads(lines[-1])["body"]["text"] == "on disk?"
    a.close()


def test_history_after_restart_and_after_param(router: Router) -> None:
    ann = router.user("ann")
    a = router.ws(ann)
    ids = []
    for i in range(5):
        a.send({"type": "send", "text": f"m{i}", "client_id": f"c{i}"})
        ids.append(a.recv_type("ack")["id"])
    a.close()
    router.stop()
    router.start()
    again = router.ws(ann)  # the session survived the restart too
    again.recv_type("hello")
    hist = again.recv_type("history")
    assert [m["id"] for m in hist["messages"]] == ids
    assert [m["text"] for m in hist["messages"]] == [f"m{i}" for i in range(5)]
    assert hist["last"] == ids[-1]
    again.close()
    b = router.ws(ann, query=f"?after={ids[2]}")
    b.recv_type("hello")
    hist = b.recv_type("history")
    assert [m["id"] for m in hist["messages"]] == ids[3:]
    assert hist["reset"] is False
    b.close()
    for bad in ["?after=garbage", "?after=" + "f" * 16 + ":99"]:
        c = router.ws(ann, query=bad)
        c.recv_type("hello")
        hist = c.recv_type("history")
        assert hist["reset"] is True and len(hist["messages"]) == 5
        c.close()


def test_older_for_scroll_back(router: Router) -> None:
    a = router.ws(router.user("ann"))
    ids = []
    for i in range(8):
        a.send({"type": "send", "text": f"m{i}", "client_id": f"c{i}"})
        ids.append(a.recv_type("ack")["id"])
        time.sleep(0.3)  # stay under the rate limit
    a.send({"type": "older", "before": ids[5], "limit": 3})
    older = a.recv_type("older")
    assert [m["id"] for m in older["messages"]] == ids[2:5]
    a.send({"type": "older", "before": ids[0], "limit": 3})
    assert a.recv_type("older")["messages"] == []
    a.send({"type": "older", "before": "nonsense", "limit": 3})
    assert a.recv_type("error")["code"] == "bad_request"
    a.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ('"text"', "bad_request"),
        ({"type": "dance"}, "bad_request"),
        ({"type": "send", "text": "x"}, "bad_request"),
        ({"type": "send", "text": 5, "client_id": "a"}, "bad_request"),
        ({"type": "send", "text": "hi", "client_id": ["a"]}, "bad_request"),
        ({"type": "send", "text": "   \n ", "client_id": "a"}, "empty"),
        ({"type": "send", "text": "", "client_id": "a"}, "empty"),
        ({"type": "send", "text": "x" * (MAX_TEXT_CHARS + 1), "client_id": "a"}, "too_long"),
        ({"type": "older", "before": 3}, "bad_request"),
    ],
)
def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    router: Router, frame: object, code: str
) -> None:
    a = router.ws(router.user("ann"))
    a.send(frame)
    err = a.recv_type("error")
    assert err["code"] == code and err["message"]
    a.send({"type": "send", "text": "still here", "client_id": "ok"})
    assert a.recv_type("message")["text"] == "still here"
    assert router.status()["rooms"]["1"] == 1, "nothing bad was stored"
    a.close()


def test_text_of_exactly_the_limit_is_accepted(router: Router) -> None:
    a = router.ws(router.user("ann"))
    text = "👩" * MAX_TEXT_CHARS
    a.send({"type": "send", "text": text, "client_id": "big"})
    assert a.recv_type("message")["text"] == text
    a.close()


def test_binary_and_oversized_frames(router: Router) -> None:
    ann = router.user("ann")
    a = router.ws(ann)
    a.conn.send_binary(b"\x00\x01")
    assert a.recv_type("error")["code"] == "bad_request"
    # The server closes (1009) without reading the rest; the kernel may turn
    # the unread bytes into a reset, so the close frame is not always seen.
    a.conn.settimeout(5)
    try:
        a.conn.send("x" * 100_000)
        op, data = a.conn.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", data[:2])[0] == 1009
    except (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException):
        pass
    assert router.status()["rooms"]["1"] == 0
    b = router.ws(ann)
    assert b.recv()["type"] == "hello", "the server keeps serving others"
    b.close()


def test_a_frame_announcing_a_huge_length_is_refused_unread(router: Router) -> None:
    ann = router.user("ann")
    a = router.ws(ann)
    a.recv_type("presence")
    # A masked text frame header announcing 2**40 bytes, then nothing.
    a.conn.sock.sendall(bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 40) + b"\0\0\0\0")
    a.conn.settimeout(5)
    op, data = a.conn.recv_data(control_frame=True)
    assert op == websocket.ABNF.OPCODE_CLOSE and struct.unpack("!H", data[:2])[0] == 1009
    assert router.status()["clients"] == 0 or router.ws(ann).recv()["type"] == "hello"


def test_rate_limit(router: Router) -> None:
    a = router.ws(router.user("ann"))
    for i in range(RATE_BURST + 5):
        a.send({"type": "send", "text": f"flood {i}", "client_id": f"f{i}"})
    err = a.recv_type("error")
    assert err["code"] == "rate_limited" and err["client_id"].startswith("f")
    acks = [f for f in a.frames if f["type"] == "ack"]
    assert len(acks) == RATE_BURST
    a.close()


def test_abrupt_disconnects_do_not_hurt_the_server(router: Router) -> None:
    ann = router.user("ann")
    for _ in range(20):
        a = router.ws(ann)
        a.conn.sock.shutdown(socket.SHUT_RDWR)
        a.conn.sock.close()
    b = router.ws(ann)
    b.send({"type": "send", "text": "alive", "client_id": "z"})
    assert b.recv_type("message")["text"] == "alive"
    assert router.status()["clients"] == 1
    b.close()
