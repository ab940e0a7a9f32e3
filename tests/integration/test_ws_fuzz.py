"""WebSocket fuzz against a real router: bad frames get error frames or a
clean close, and all the while another page in the same room chats normally
and nothing but its messages reaches the room's log.

Every case runs a bounded number of frames (a few hundred in all), so the
file takes seconds.  Frames go in batches on fresh sockets where a case would
otherwise trip the per-socket frame budget (app/web.py FRAME_BURST), which is
itself tested below.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from app.chat import MAX_TEXT_CHARS, RATE_BURST
from app.hub import MAX_INCOMING_BYTES
from app.web import CLIENT_ID_MAX, FRAME_BURST, FRAMES_PER_SECOND
from node.store import room_log_name
from tests.helpers import HttpSession, Router, WsClient, wait_for

ERROR_CODES = {"bad_request", "empty", "too_long", "rate_limited"}
BATCH = FRAME_BURST // 2  # frames per socket, well inside the frame budget
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    10**30,
    -(10**30),
    "",
    " ",
    "x" * 300,
    [],
    {},
    [1, "a"],
    {"a": {"b": []}},
    "\u0000",
    "<script>alert(1)</script>",
]


class Room:
    """A bystander page (bob) in room 1 that must keep working throughout."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.bob = router.user("bob")
        self.ws = router.ws(self.bob, 1)
        self.ws.recv_type("presence")
        self.sent: list[str] = []

    def check(self) -> None:
        """Bob posts and gets both the ack and the message back at once."""
        text = f"bob still chatting {len(self.sent)}"
        self.ws.send({"type": "send", "text": text, "client_id": f"b{len(self.sent)}"})
        ack = self.ws.recv_type("ack")
        message = self.ws.recv_type("message")
        assert message["id"] == ack["id"] and message["text"] == text
        self.sent.append(text)

    def assert_nothing_else_stored(self, others: list[str] = ()) -> None:  # type: ignore[assignment]
        expected = sorted(self.sent + list(others))
        assert self.router.status()["rooms"]["1"] == len(expected)
        lines = (self.router.data_dir / room_log_name(1)).read_text().splitlines()
        assert sorted(json.loads(line)["body"]["text"] for line in lines) == expected
        assert "Traceback" not in self.router.log(), self.router.log()[-3000:]


@pytest.fixture
def room(router: Router) -> Iterator[Room]:
    r = Room(router)
    yield r
    r.ws.close()


def connect(router: Router, session: HttpSession) -> WsClient:
    w = router.ws(session, 1)
    w.recv_type("presence")
    return w


def closed_by_server(w: WsClient, timeout: float = 5.0) -> int | None:
    """Wait for the server to end the socket; its close code, or None if the
    connection was reset (unread bytes can turn the close into a reset)."""
    w.conn.settimeout(timeout)
    try:
        while True:
            op, data = w.conn.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            if not data and op == 0:
                return None
    except (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException):
        return None


def raw_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, length: int | None = None
) -> bytes:
    """A masked client frame built by hand (RFC 6455 section 5.2)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def bad_frames(known_id: str) -> list[Any]:
    """Malformed JSON, wrong types in every field, odd JSON, deep nesting.

    ``known_id`` is a message in the room, so an ``older`` with a bad limit
    fails for its limit alone."""
    frames: list[Any] = [
        "",
        " ",
        "not json",
        "{",
        "}",
        "[1, 2]",
        '"text"',
        "null",
        "true",
        "42",
        "1e999",
        "NaN",
        '{"type": NaN}',
        '{"type": "send", "text": Infinity, "client_id": "a"}',
        '{"type": "send", "text": "a\u0000b\n", "client_id": "raw control chars"}',
        '{"type": "send", "type": "dance", "text": "hi", "client_id": "dup keys"}',
        '{"type": "send", "text": "\\ud800", "client_id": "lone surrogate"}',
        '{"type": "send", "text": "hi", "client_id": "\\udfff"}',
        '{"type": "older", "before": "0123456789abcdef:\u00b2", "limit": 3}',
        '{"type": "older", "before": "0123456789abcdef:' + "9" * 5000 + '", "limit": 3}',
        '{"type": "send", "text": "hi", "client_id": "a", "limit": ' + "9" * 5000 + "}",
        "[" * 16_000 + "]" * 16_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        {},
        {"type": None},
        {"type": "SEND", "text": "hi", "client_id": "a"},
        {"type": "send"},
        {"type": "older"},
        {"type": "send", "text": "   \n\t ", "client_id": "blank"},
        {"type": "send", "text": "\u0001\u0002\u0085", "client_id": "only controls"},
        {"type": "send", "text": "x" * (MAX_TEXT_CHARS + 1), "client_id": "long"},
        {"type": "send", "text": "hi", "client_id": "c" * (CLIENT_ID_MAX + 1)},
        {"type": "older", "before": "f" * 16 + ":0", "limit": 3},
        {"type": "older", "before": "F" * 16 + ":1", "limit": 3},
        {"type": "older", "before": "f" * 16 + ":" + str(1 << 32), "limit": 3},
    ]
    for value in ODD_VALUES:
        frames.append({"type": value, "text": "hi", "client_id": "a"})
        if not isinstance(value, str) or not value.strip() or value == "\u0000":
            frames.append({"type": "send", "text": value, "client_id": "a"})
        if not isinstance(value, str) or not 1 <= len(value) <= CLIENT_ID_MAX:
            frames.append({"type": "send", "text": "hi", "client_id": value})
        frames.append({"type": "older", "before": value, "limit": 3})
        if not isinstance(value, int) or isinstance(value, bool):
            frames.append({"type": "older", "before": known_id, "limit": value})
    return frames


def test_bad_frames_get_error_frames_while_another_page_chats(router: Router, room: Room) -> None:
    ann = router.user("ann")
    room.check()
    frames = bad_frames(room.ws.frames[-1]["id"])
    assert len(frames) > 80
    errors: list[dict[str, Any]] = []
    for start in range(0, len(frames), BATCH):
        batch = frames[start : start + BATCH]
        w = connect(router, ann)
        for frame in batch:
            w.send(frame)
            reply = w.recv_until(lambda f: f["type"] in ("error", "older", "message"))
            assert reply["type"] == "error", (frame, reply)
            assert reply["code"] in ERROR_CODES and reply["message"], reply
            errors.append(reply)
        # The socket still works after all of that, and sees bob's message.
        room.check()
        assert w.recv_type("message")["text"] == room.sent[-1]
        w.close()
    assert {e["code"] for e in errors} == {"bad_request", "empty", "too_long"}
    assert all(1 <= len(e.get("client_id", "x")) <= CLIENT_ID_MAX for e in errors)
    room.assert_nothing_else_stored()


def test_binary_frames_pings_and_fragments(router: Router, room: Room) -> None:
    ann = router.user("ann")
    w = connect(router, ann)
    for payload in [
        b"",
        b"\x00",
        os.urandom(100),
        json.dumps({"type": "send", "text": "hi", "client_id": "bin"}).encode(),
    ]:
        w.conn.send_binary(payload)
        assert w.recv_type("error")["code"] == "bad_request"
    for i in range(20):
        w.conn.ping(f"p{i}")
        op, data = w.conn.recv_data(control_frame=True)
        assert (op, data) == (websocket.ABNF.OPCODE_PONG, f"p{i}".encode())
    # A message in three fragments, with a ping between them, is one frame.
    text = json.dumps({"type": "send", "text": "in pieces", "client_id": "frag"}).encode()
    parts = [text[:10], text[10:20], text[20:]]
    w.conn.sock.sendall(
        raw_frame(0x1, parts[0], fin=False)
        + raw_frame(0x0, parts[1], fin=False)
        + raw_frame(0x9, b"mid")
        + raw_frame(0x0, parts[2])
    )
    assert w.recv_type("ack")["client_id"] == "frag"
    room.check()
    w.close()
    room.assert_nothing_else_stored(["in pieces"])


@pytest.mark.parametrize(
    ("name", "data", "codes"),
    [
        # Over the size limit in one frame, or in fragments that add up.
        ("huge frame", raw_frame(0x1, b"x" * (MAX_INCOMING_BYTES + 1)), {1009}),
        ("huge announced", raw_frame(0x1, b"", length=1 << 62), {1009}),
        (
            "huge in fragments",
            b"".join(raw_frame(0x1 if i == 0 else 0x0, b"y" * 4096, fin=False) for i in range(9)),
            {1009},
        ),
        ("invalid utf-8", raw_frame(0x1, b'{"type": "send", "text": "\xff\xfe"}'), {1007}),
        ("reserved bits", raw_frame(0x1, b"{}", rsv=0b100), {1002}),
        ("unknown opcode", raw_frame(0x3, b"{}"), {1002}),
        ("continuation first", raw_frame(0x0, b"{}"), {1002}),
    ],
)
def test_protocol_abuse_closes_that_socket_only(
    router: Router, room: Room, name: str, data: bytes, codes: set[int]
) -> None:
    ann = router.user("ann")
    w = connect(router, ann)
    with contextlib.suppress(OSError):
        w.conn.sock.sendall(data)
    code = closed_by_server(w)
    assert code is None or code in codes, (name, code)
    w.close()
    room.check()
    again = connect(router, ann)
    again.send({"type": "send", "text": f"after {name}", "client_id": "ok"})
    assert again.recv_type("ack")["client_id"] == "ok"
    again.close()
    room.assert_nothing_else_stored([f"after {name}"])


def test_a_flood_of_frames_is_closed_and_others_go_on(router: Router, room: Room) -> None:
    ann = router.user("ann")
    w = connect(router, ann)
    flood = b"".join(
        raw_frame(
            0x1, json.dumps({"type": "send", "text": f"flood {i}", "client_id": f"f{i}"}).encode()
        )
        for i in range(FRAME_BURST * 5)
    )
    with contextlib.suppress(OSError):
        w.conn.sock.sendall(flood)
    frames: list[dict[str, Any]] = []
    w.conn.settimeout(5)
    with contextlib.suppress(websocket.WebSocketException, OSError):
        while True:
            op, data = w.conn.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                assert struct.unpack("!H", data[:2])[0] == 1008
                break
            if op == websocket.ABNF.OPCODE_TEXT:
                frames.append(json.loads(data))
    acks = [f for f in frames if f["type"] == "ack"]
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert len(acks) == RATE_BURST
    # Answered: the burst, and what the budget refilled meanwhile (a second at most).
    assert FRAME_BURST <= len(acks) + len(limited) <= FRAME_BURST + FRAMES_PER_SECOND
    room.check()
    room.assert_nothing_else_stored([f"flood {i}" for i in range(RATE_BURST)])
    # The flood's socket is gone: bob alone is online in the room again.
    wait_for(lambda: router.status()["clients"] == 1, what="the flood's socket to go")
    presence = [f["users"] for f in room.ws.frames if f["type"] == "presence"]
    assert presence[-1] == [{"user": "bob", "node": "alpha"}]


def test_many_sockets_that_vanish_mid_frame(router: Router, room: Room) -> None:
    ann = router.user("ann")
    for i in range(30):
        w = connect(router, ann)
        partial = raw_frame(
            0x1, json.dumps({"type": "send", "text": "cut", "client_id": "c"}).encode()
        )
        w.conn.sock.sendall(partial[: 3 + i % 10])
        w.conn.sock.shutdown(socket.SHUT_RDWR)
        w.conn.sock.close()
    room.check()
    assert router.status()["clients"] == 1
    room.assert_nothing_else_stored()


def test_a_flood_of_pings_does_not_stall_the_room(router: Router, room: Room) -> None:
    ann = router.user("ann")
    w = connect(router, ann)
    pings = raw_frame(0x9, b"p" * 125) * 20_000  # 2.6 MB of pings, pongs never read
    with contextlib.suppress(OSError):
        w.conn.sock.sendall(pings)
    started = time.monotonic()
    room.check()
    assert time.monotonic() - started < 2.0
    w.close()
    room.assert_nothing_else_stored()
