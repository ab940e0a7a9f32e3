"""The prototype's history catch-up, re-implemented for comparison only.

What the prototype did (from the issue): a router that starts multicasts
``ASK-FILE``; every peer that hears it multicasts ALL of its room logs, each
cut into MTU-sized chunks sent back to back; the asker keeps the chunks of
each (peer, room) file and, once the flood is over, merges the complete files
by wall-clock time.  A file with one chunk missing is useless: its lines
cannot be told apart from the next chunk's, so the whole file is dropped.
There is no repair and no pacing.

Two roles, each run inside a namespace (``ip netns exec``):

    askfile.py serve IFACE_ADDR DATA_DIR      answer ASK-FILE until killed
    askfile.py ask IFACE_ADDR TIMEOUT IDLE    ask, collect, merge; print JSON

The merge here sorts once (O(n log n)); the prototype's was O(n^2), which at
100,000 messages would take hours, so the times below flatter the prototype.
The data are the room logs our routers write (node/store.py), unchanged.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import time
from pathlib import Path

GROUP = "224.1.1.1"
PORT = 8890  # not the mesh's 8888: never confused with real mesh traffic
MTU = 1200  # UDP payload, the mesh's default
ASK = b"ASK-FILE"
CHUNK_HEAD = struct.Struct("!8sBII")  # sender, room, index, count
RCVBUF = 16 * 1024 * 1024  # generous: drops should come from the link, not our socket
SO_RCVBUFFORCE = 33  # Linux; Python's socket module does not name it (root may exceed rmem_max)
ROOMS = 4


def group_socket(iface_addr: str, *, receive: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface_addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    if receive:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        s.bind((GROUP, PORT))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton(iface_addr)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return s


def serve(iface_addr: str, data_dir: Path) -> None:
    """Wait for ASK-FILE; then flood every room log, chunk after chunk."""
    me = socket.inet_aton(iface_addr) + b"\0\0\0\0"
    s = group_socket(iface_addr, receive=True)
    print("ready", flush=True)
    size = MTU - CHUNK_HEAD.size
    while True:
        data, _ = s.recvfrom(2048)
        if data != ASK:
            continue
        for room in range(1, ROOMS + 1):
            path = data_dir / f"room-{room}.log"
            blob = path.read_bytes() if path.exists() else b""
            count = max(1, -(-len(blob) // size))
            for i in range(count):
                # PermissionError: the loss rule dropped it on the way out.
                with contextlib.suppress(PermissionError):
                    s.sendto(
                        CHUNK_HEAD.pack(me, room, i, count) + blob[i * size : (i + 1) * size],
                        (GROUP, PORT),
                    )


def ask(iface_addr: str, timeout: float, idle: float) -> dict[str, object]:
    s = group_socket(iface_addr, receive=True)
    s.settimeout(0.05)
    chunks: dict[tuple[bytes, int], dict[int, bytes]] = {}
    counts: dict[tuple[bytes, int], int] = {}
    start = time.monotonic()
    ask_lost = 0
    try:
        s.sendto(ASK, (GROUP, PORT))
    except PermissionError:  # the loss rule dropped it on the way out, as the air would
        ask_lost = 1
    last = start
    received = 0
    while True:
        now = time.monotonic()
        if now - start > timeout or (received and now - last > idle):
            break
        try:
            data, _ = s.recvfrom(2048)
        except TimeoutError:  # the prototype asked once: a lost ASK-FILE gets nothing
            continue
        if len(data) < CHUNK_HEAD.size:
            continue
        sender, room, index, count = CHUNK_HEAD.unpack_from(data)
        key = (sender, room)
        chunks.setdefault(key, {})[index] = data[CHUNK_HEAD.size :]
        counts[key] = count
        received += 1
        last = time.monotonic()
    flood_end = last
    # A file is usable only whole; both peers send the same rooms, so one
    # whole copy of a room is enough.
    complete_files, lost_files = 0, 0
    messages: dict[str, dict[str, object]] = {}
    for key, pieces in chunks.items():
        if len(pieces) != counts[key]:
            lost_files += 1
            continue
        complete_files += 1
        blob = b"".join(pieces[i] for i in range(counts[key]))
        for line in blob.splitlines():
            if line.strip():
                obj = json.loads(line)
                messages[obj["id"]] = obj
    merged = sorted(messages.values(), key=lambda o: o["body"]["time"])  # wall clock
    done = time.monotonic()
    return {
        "ask_lost": ask_lost,
        "chunks": received,
        "files_complete": complete_files,
        "files_lost": lost_files,
        "messages": len(merged),
        "seconds": done - start,
        "flood_seconds": flood_end - start,
    }


def main(argv: list[str]) -> int:
    if argv[1] == "serve":
        serve(argv[2], Path(argv[3]))
    elif argv[1] == "ask":
        print(json.dumps(ask(argv[2], float(argv[3]), float(argv[4]))), flush=True)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
