"""Live mesh fuzz: a running router gets 100,000 random and mutated datagrams
on its group and unicast ports (node/protocol.py, "Replays" and "Floods").

The mix, from three made-up nodes sharing the router's mesh key where it says
so: an honest peer "pat" (beacons every BEACON s with a user online, a few
chat lines, a catch-up request), a recorder that plays pat's datagrams back
from another address, and a flooder with the key that sends new records the
store must refuse, fragments it never finishes, and signed junk.  Everything
else is noise: random bytes, pat's datagrams with bytes changed, truncated,
extended, or signed with another key.

Throughout, the router must keep serving pages and WebSockets (a round trip
every CHECK_EVERY datagrams), keep pat as a peer with its user online, store
pat's lines and nothing else, count every drop by reason in /status, and stay
within MAX_RSS_GROWTH of memory.  Datagrams go in bursts; when the router
falls more than MAX_BACKLOG behind, the sender waits, so what is tested is the
router, not the kernel's socket buffer (what the kernel dropped anyway is
sent minus received).  The run takes about 15 s.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from node.clock import pack
from node.fragment import MAX_PARTIAL_PER_SENDER, split
from node.protocol import ORIGIN_RECORDS_PER_S
from node.record import Record, RecordKind
from node.transport import DEFAULT_GROUP
from node.wire import (
    HEADER,
    MAC_LEN,
    VERSION,
    BeaconDatagram,
    RecordDatagram,
    RequestDatagram,
)
from tests.helpers import Router, free_udp_port, routers, rss_bytes, wait_for

TOTAL = 100_000
BURST = 200  # datagrams sent back to back
# Then a pause: ~7,000 datagrams/s, 100,000 in about 15 s.  The router keeps
# up with several times that on loopback; pacing lets time-based parts (rate
# limits refilling, pat's beacons, peer timeouts) run as they would on a LAN,
# and spaces the WebSocket checks within the chat's own message rate limit.
PAUSE = 0.025
MAX_BACKLOG = 1_500  # sent but not yet received by the router: then wait
CHECK_EVERY = 5_000  # datagrams between WebSocket round trips and page loads
BEACON = 0.3  # seconds, the router's and pat's beacon interval
PAT_LINES = 20  # chat lines pat sends, spread over the run
MAX_RSS_GROWTH = 20 * 1024 * 1024  # bytes
TIME_LIMIT = 50.0  # seconds for the whole run: well under a minute

POLL_EVERY = 1_000  # datagrams between looks at how far behind the router is

PAT = "0f0f0f0f0f0f0f01"  # the honest peer
FLOODER = "0f0f0f0f0f0f0f02"
REQUIRED_REASONS = {
    "too_short",
    "bad_version",
    "bad_mac",
    "bad_kind",
    "bad_flags",
    "malformed",
    "replayed",
    "duplicate",
    "rate_limited",
    "fragment_evicted",
}  # not "duplicate_beacon": every beacon played back is caught first as "replayed"


def sign(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


class Mesh:
    """Our side: pat's and the flooder's state, and the sockets."""

    def __init__(self, router: Router, key: bytes) -> None:
        self.router, self.key = router, key
        self.rng = random.Random(8)
        st = router.status()
        self.target = st["node_id"]
        host, port = st["mesh"]["unicast"].rsplit(":", 1)
        self.unicast = (host, int(port))
        group, gport = st["mesh"]["group"].rsplit(":", 1)
        self.group = (group, int(gport))
        self.pat_sock = self._socket()  # pat's own address
        self.recorder = self._socket()  # plays pat's datagrams back from elsewhere
        self.counters = {PAT: 0, FLOODER: 0}
        self.beacon_seq = 0
        self.pat_seq = 0  # pat's records sent
        self.flood_seq = 0
        self.captured: list[bytes] = []  # pat's datagrams as sent
        self.sent = 0

    def _socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers: not read
        return s

    def send(self, data: bytes, sock: socket.socket | None = None) -> None:
        dest = self.unicast if self.rng.random() < 0.25 else self.group
        (sock or self.recorder).sendto(data, dest)
        self.sent += 1

    def counter(self, node: str) -> int:
        self.counters[node] += 1
        return self.counters[node]

    # -- pat, honest ------------------------------------------------------------------

    def pat(self, datagram) -> bytes:
        data = replace(datagram, counter=self.counter(PAT)).serialize(self.key)
        self.captured.append(data)
        self.send(data, self.pat_sock)
        return data

    def pat_beacon(self) -> None:
        self.beacon_seq += 1
        self.pat(
            BeaconDatagram(
                PAT, "pat-router", 77, {PAT: self.pat_seq}, {1: ["pat"]}, seq=self.beacon_seq
            )
        )

    def pat_line(self) -> None:
        self.pat_seq += 1
        now_ms = int(time.time() * 1000)
        body = {
            "author": "pat",
            "node": "pat-router",
            "time": now_ms,
            "text": f"pat line {self.pat_seq}",
        }
        record = Record(PAT, self.pat_seq, pack(now_ms, 0), RecordKind.MESSAGE, 1, body)
        self.pat(RecordDatagram(PAT, record, hops=1))

    def pat_request(self) -> None:
        self.pat(RequestDatagram(PAT, self.target, [(self.target, 1, 1000)]))

    # -- the flooder, with the key ------------------------------------------------------

    def flood_record(self) -> bytes:
        """A new record the store refuses (a message with a number for text)."""
        self.flood_seq += 1
        body = {"author": "x", "node": "x", "time": 0, "text": self.flood_seq}
        record = Record(
            FLOODER, self.flood_seq, pack(int(time.time() * 1000), 0), RecordKind.MESSAGE, 1, body
        )
        return RecordDatagram(FLOODER, record, counter=self.counter(FLOODER)).serialize(self.key)

    def flood_fragment(self) -> bytes:
        """Piece 0 of a big record in a transfer that never finishes."""
        body = {"text": "y" * 3000}
        record = Record(FLOODER, 10**9, 1 << 16, RecordKind.MESSAGE, 1, body)
        whole = RecordDatagram(FLOODER, record)
        piece = split(whole, transfer_id=self.rng.getrandbits(32))[0]
        return replace(piece, counter=self.counter(FLOODER)).serialize(self.key)

    def flood_junk(self) -> bytes:
        """A signed header of any kind and flags over a random body."""
        kind = self.rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 200])
        flags = self.rng.choice([0, 0, 0, 1, 0x80])
        head = HEADER.pack(VERSION, kind, flags, 1, bytes.fromhex(FLOODER), self.counter(FLOODER))
        data = head + self.rng.randbytes(self.rng.randrange(0, 80))
        return data + sign(self.key, data)

    # -- noise ------------------------------------------------------------------------

    def noise(self) -> bytes:
        rng, base = self.rng, self.rng.choice(self.captured)
        choice = rng.randrange(6)
        if choice == 0:  # random bytes, version byte and all
            return rng.randbytes(rng.randrange(0, 1300))
        if choice == 1:  # one to three bytes changed
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
            return bytes(data)
        if choice == 2:  # truncated
            return base[: rng.randrange(0, len(base))]
        if choice == 3:  # extended
            return base + rng.randbytes(rng.randrange(1, 64))
        if choice == 4:  # another key
            return base[:-MAC_LEN] + sign(secrets.token_bytes(32), base[:-MAC_LEN])
        return bytes([rng.choice([0, VERSION + 1, 255])]) + base[1:]  # another version


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[Router, bytes]]:
    key = secrets.token_bytes(32)
    key_file = tmp_path / "mesh.key"
    key_file.write_text(key.hex() + "\n")
    extra = [
        "--mesh-port",
        str(free_udp_port()),
        "--mesh-key-file",
        str(key_file),
        "--beacon-interval",
        str(BEACON),
    ]
    with routers(tmp_path, "fuzzed", extra=extra) as (router,):
        yield router, key


def test_router_survives_100000_hostile_datagrams(fuzzed: tuple[Router, bytes]) -> None:
    router, key = fuzzed
    assert router.status()["mesh"]["group"].startswith(DEFAULT_GROUP)
    ann = router.user("ann")
    ws = router.ws(ann, 2)
    mesh = Mesh(router, key)
    mesh.pat_beacon()
    wait_for(lambda: PAT in router.status()["mesh"]["peers"], what="pat as a peer")
    mesh.pat_request()  # served once; its replays never again
    checks = 0

    def check() -> None:
        nonlocal checks
        checks += 1
        ws.send({"type": "send", "text": f"ann check {checks}", "client_id": f"c{checks}"})
        ack = ws.recv_type("ack")
        assert ws.recv_type("message")["id"] == ack["id"]
        assert ann.get("/").status == 200
        st = router.status()["mesh"]
        assert PAT in st["peers"] and PAT in st["nodes"], "pat is gone"

    def received() -> int:
        st = router.status()["mesh"]["datagrams"]
        return st["received"] - st["looped"]

    start = time.monotonic()
    before, base_received, base_sent = None, received(), mesh.sent
    last_beacon = time.monotonic()
    kinds = [mesh.noise] * 14 + [mesh.flood_record] * 3 + [mesh.flood_junk, mesh.flood_fragment]
    while mesh.sent < TOTAL:
        for _ in range(BURST):
            roll = mesh.rng.random()
            if roll < 0.15:  # replay something pat sent, from the recorder
                mesh.send(mesh.rng.choice(mesh.captured))
            else:
                mesh.send(mesh.rng.choice(kinds)())
        time.sleep(PAUSE)
        if time.monotonic() - last_beacon >= BEACON:
            mesh.pat_beacon()
            last_beacon = time.monotonic()
        if mesh.pat_seq < PAT_LINES and mesh.sent >= (mesh.pat_seq + 1) * TOTAL // (PAT_LINES + 1):
            mesh.pat_line()
        if mesh.sent % CHECK_EVERY < BURST:
            check()
            if before is None:  # warmed up: every table has met its kinds
                before = rss_bytes(router)

        def backlog() -> int:
            return mesh.sent - base_sent - (received() - base_received)

        if mesh.sent % POLL_EVERY < BURST and backlog() > MAX_BACKLOG:
            wait_for(lambda: backlog() < BURST, timeout=10, what="the router to catch up")
        assert time.monotonic() - start < TIME_LIMIT, f"only {mesh.sent} sent"
    while mesh.pat_seq < PAT_LINES:
        mesh.pat_line()
    mesh.pat_beacon()
    time.sleep(0.5)
    check()
    took = time.monotonic() - start
    after = rss_bytes(router)

    st = router.status()
    datagrams = st["mesh"]["datagrams"]
    dropped = datagrams["dropped"]
    got = datagrams["received"] - datagrams["looped"] - base_received
    sent = mesh.sent - base_sent
    print(
        f"\nmesh fuzz: {sent:,} sent in {took:.1f} s, {got:,} received by the router "
        f"({sent - got:,} lost in the kernel); RSS {before / 2**20:.1f} -> "
        f"{after / 2**20:.1f} MiB\ndropped: {dict(sorted(dropped.items()))}\n"
        f"limits: {st['mesh']['limits']}\nrefused by the store: {st['store']['refused']}"
    )
    assert got >= 0.9 * sent
    assert set(dropped) >= REQUIRED_REASONS, REQUIRED_REASONS - set(dropped)
    # Stored: pat's lines and ann's checks; nothing of the flooder's.
    assert st["rooms"] == {"1": PAT_LINES, "2": checks, "3": 0, "4": 0}
    assert st["accounts"] == 1
    assert st["store"]["refused"].get("bad_message", 0) >= 1
    # Pat's request was served once; the recorder's copies were not.
    assert st["mesh"]["sync"]["requests_served"] == 1
    # Pat keeps its own address: the recorder's copies never moved it.
    assert st["mesh"]["peers"][PAT]["addr"] == "{}:{}".format(*mesh.pat_sock.getsockname())
    # The flooder's live records came at most at one origin's allowance.
    live = mesh.flood_seq - dropped["rate_limited"]
    assert live <= 2 * 512 + ORIGIN_RECORDS_PER_S * took
    assert st["mesh"]["limits"]["partial_transfers"] <= MAX_PARTIAL_PER_SENDER
    # Pat's user is online on the router's pages all along.
    room1 = router.ws(ann, 1)
    users = room1.recv_type("presence")["users"]
    assert {"user": "pat", "node": "pat-router"} in users, users
    room1.close()
    assert st["mesh"]["datagrams"]["send_errors"].get("protocol_bug", 0) == 0
    assert after - before < MAX_RSS_GROWTH
    assert "Traceback" not in router.log(), router.log()[-3000:]
    ws.close()
