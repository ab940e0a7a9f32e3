"""The fan-out benchmark's two comparison servers, each run in its own process.

- ``websockets PORT``: the baseline, a minimal broadcast server written with
  the ``websockets`` asyncio library the usual way.  It takes our frames
  (``{"type":"send","text":...,"client_id":...}``), acks the sender and
  broadcasts the same message JSON our router sends (``type``, ``id``,
  ``room``, ``author``, ``node``, ``time``, ``hlc``, ``text``) with
  ``websockets.asyncio.server.broadcast``.  No accounts, no store.
- ``limit PORT``: what writing the bytes costs and nothing else.  A gevent
  server (like ours) with a bare handshake; a received frame becomes the
  outgoing message by splicing bytes (no JSON decode or encode, no store, no
  hub, no per-client outbox) and is framed once.  One writer sends every frame
  queued so far to each socket in turn, in one write per socket (so a burst
  is coalesced, as our hub does; at a steady rate it is one write per frame).

Both exit by themselves after ``LIFETIME`` seconds, so neither can outlive a
benchmark that crashed.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

LIFETIME = 900.0
NODE_ID = "be0c4a11d00dfeed"
NODE_NAME = "bench"
MAX_MESSAGE = 32 * 1024  # as app/hub.py MAX_INCOMING_BYTES
SEND_PREFIX = b'{"type":"send",'
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def iso_utc(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def message(seq: int, author: str, text: str) -> dict[str, object]:
    now = time.time()
    return {
        "type": "message",
        "id": f"{NODE_ID}:{seq}",
        "room": 1,
        "author": author,
        "node": NODE_NAME,
        "time": iso_utc(now),
        "hlc": int(now * 1000) << 16,
        "text": text,
    }


def run_websockets(port: int) -> None:
    import asyncio
    import json

    from websockets.asyncio.server import broadcast, serve

    clients: set[object] = set()
    counter = {"seq": 0, "conn": 0}

    def dumps(obj: object) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        counter["conn"] += 1
        author = f"u{counter['conn']}"
        clients.add(ws)
        try:
            async for text in ws:
                frame = json.loads(text)
                if not isinstance(frame, dict) or frame.get("type") != "send":
                    continue
                counter["seq"] += 1
                seq = counter["seq"]
                await ws.send(
                    dumps(
                        {
                            "type": "ack",
                            "client_id": frame.get("client_id"),
                            "id": f"{NODE_ID}:{seq}",
                        }
                    )
                )
                broadcast(clients, dumps(message(seq, author, frame["text"])))
        finally:
            clients.discard(ws)

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", port, ping_interval=None, compression=None, max_size=MAX_MESSAGE
        ):
            await asyncio.sleep(LIFETIME)

    asyncio.run(main())


def frame_bytes(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def run_limit(port: int) -> None:
    import base64
    import hashlib
    import re

    import gevent
    from gevent.server import StreamServer

    sockets: list[object] = []
    outgoing: list[bytes] = []  # frames not yet written, in order
    state = {"seq": 0, "writing": False}

    def read_exact(sock, n: int, buf: bytearray) -> bytes | None:  # type: ignore[no-untyped-def]
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def write_all() -> None:
        """Everything queued, as one write per socket; one writer at a time."""
        try:
            while outgoing:
                data = b"".join(outgoing)
                outgoing.clear()
                for sock in list(sockets):
                    try:
                        sent = sock.send(data, 0, timeout=0.0)
                    except BlockingIOError:
                        sent = 0
                    try:
                        if sent < len(data):
                            sock.sendall(data[sent:])
                    except OSError:
                        sockets.remove(sock)
        finally:
            state["writing"] = False

    def broadcast(payload: bytes) -> None:
        state["seq"] += 1
        now = time.time()
        prefix = (
            b'{"type":"message","id":"%s:%d","room":1,"author":"u1","node":"%s",'
            b'"time":"%s","hlc":%d,'
            % (
                NODE_ID.encode(),
                state["seq"],
                NODE_NAME.encode(),
                iso_utc(now).encode(),
                int(now * 1000) << 16,
            )
        )
        outgoing.append(frame_bytes(prefix + payload[len(SEND_PREFIX) :]))
        if not state["writing"]:
            state["writing"] = True
            gevent.spawn(write_all)

    def handle(sock, _addr) -> None:  # type: ignore[no-untyped-def]
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk or len(buf) > 16384:
                return
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        m = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", bytes(buf[:end]))
        if m is None:
            return
        accept = base64.b64encode(hashlib.sha1(m.group(1) + WS_GUID).digest())
        del buf[:end]
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        sockets.append(sock)
        try:
            while True:
                head = read_exact(sock, 2, buf)
                if head is None or head[0] & 0x0F == 0x8:
                    return
                n = head[1] & 0x7F
                if n == 126:
                    n = int.from_bytes(read_exact(sock, 2, buf) or b"\0\0", "big")
                if n > MAX_MESSAGE or not head[1] & 0x80:
                    return
                key = read_exact(sock, 4, buf)
                body = read_exact(sock, n, buf)
                if key is None or body is None:
                    return
                stream = (key * (n // 4 + 1))[:n]
                payload = (int.from_bytes(body, "big") ^ int.from_bytes(stream, "big")).to_bytes(
                    n, "big"
                )
                if payload.startswith(SEND_PREFIX):
                    broadcast(payload)
        finally:
            if sock in sockets:
                sockets.remove(sock)

    server = StreamServer(("127.0.0.1", port), handle, backlog=1024)
    server.start()
    gevent.sleep(LIFETIME)


if __name__ == "__main__":
    kind, port_text = sys.argv[1], sys.argv[2]
    {"websockets": run_websockets, "limit": run_limit}[kind](int(port_text))
