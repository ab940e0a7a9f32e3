"""Hardening of records, against real router processes on loopback (issue
#13, items 7, 10 and 11, and file modes).

- A record is acknowledged only once it is stored; a clear from a router
  whose clock runs far ahead takes out what is here, not what this router
  stamps next (node/store.py, app/chat.py ``_make_record``).
- Every field of a record from a peer is bounded: a message whose time no
  page can show is refused, and one already on disk never breaks a page.
- Exactly the known fields, a size limit per kind, our own scrypt
  parameters only (app/chat.py ``check_remote_record``, app/accounts.py).
- The data folder is private to the router's user (umask 077); a mesh key
  that others can read is reported.

The test plays a holder of the mesh key: it signs records and sends them to
the router's unicast port, as tests/integration/test_mesh_fuzz.py does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.clock import pack
from node.record import Record, RecordKind
from node.store import ACCOUNTS_LOG, encode_line, room_log_name
from node.wire import RecordDatagram
from tests.helpers import (
    PASSWORD,
    Router,
    WsClient,
    free_port,
    free_udp_port,
    routers,
    rss_bytes,
    wait_for,
)

KEY_HOLDER = "0f0f0f0f0f0f0f03"  # a router of the mesh that the test plays
ADMIN_ROUTER = "0f0f0f0f0f0f0f04"  # the admin's router, its clock a year ahead
ADMIN_ID = f"{ADMIN_ROUTER}:1"  # the admin's account, made there
YEAR_MS = 365 * 24 * 3600 * 1000
PADDED = 400  # records of PAD_BYTES each: 23 MB of log and memory before the fix
PAD_BYTES = 60_000
FLOODERS = 20  # origins the padded records come from: each within its allowance
# Memory the router may gain while it refuses the padded records: far below
# the 23 MB it kept before, above what the allocator keeps of transient buffers.
MAX_RSS_GROWTH = 8 * 1024 * 1024
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


class KeyHolder:
    """Signs records with the mesh key and sends them to one router."""

    def __init__(self, router: Router, key: bytes) -> None:
        self.key = key
        host, port = router.status()["mesh"]["unicast"].rsplit(":", 1)
        self.unicast = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.counters: dict[str, int] = {}

    def send(self, record: Record, sender: str | None = None) -> None:
        sender = sender or record.origin
        self.counters[sender] = self.counters.get(sender, 0) + 1
        datagram = RecordDatagram(sender, record, counter=self.counters[sender])
        self.sock.sendto(datagram.serialize(self.key), self.unicast)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mesh_key(tmp_path: Path) -> tuple[bytes, list[str]]:
    key = secrets.token_bytes(32)
    key_file = tmp_path / "mesh.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(PRIVATE_FILE)
    return key, [
        "--mesh-port",
        str(free_udp_port()),
        "--mesh-key-file",
        str(key_file),
        "--beacon-interval",
        "0.3",
    ]


@pytest.fixture
def keyed(tmp_path: Path, mesh_key: tuple[bytes, list[str]]) -> Iterator[tuple[Router, KeyHolder]]:
    key, extra = mesh_key
    with routers(tmp_path, "keyed", extra=extra) as (router,):
        holder = KeyHolder(router, key)
        try:
            yield router, holder
        finally:
            holder.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def message(seq: int, when: int, text: str, origin: str = KEY_HOLDER, **extra: object) -> Record:
    body = {"author": "pat", "node": "pat-router", "time": when, "text": text, **extra}
    return Record(origin, seq, pack(now_ms(), 0), RecordKind.MESSAGE, 1, body)


def refused(router: Router) -> dict[str, int]:
    return router.status()["store"]["refused"]


def post(w: WsClient, text: str) -> dict:
    """Send a line; the ack or the error frame that answers it."""
    w.send({"type": "send", "text": text, "client_id": text})
    return w.recv_until(lambda f: f.get("client_id") == text and f.get("type") in ("ack", "error"))


def room_works(router: Router, user: str) -> None:
    """The room list renders, and room 1's socket serves past its hello."""
    session = router.user(user, register=False)
    page = session.get("/")
    assert page.status == 200, page.text[:300]
    w = router.ws(session)
    try:
        assert w.recv_type("hello")["room"] == 1
        history = w.recv_type("history")
        assert all(isinstance(m["time"], str) for m in history["messages"])
        answer = post(w, f"still here {secrets.token_hex(4)}")
        assert answer["type"] == "ack", answer
    finally:
        w.close()


# -- item 10: a time no page can show ----------------------------------------------------


def test_message_with_time_1e18_breaks_no_page(keyed: tuple[Router, KeyHolder]) -> None:
    router, holder = keyed
    router.user("ann")
    holder.send(message(1, now_ms(), "a fine one"))
    holder.send(message(2, 10**18, "from the far future"))  # the room's last: its preview
    wait_for(lambda: router.status()["rooms"]["1"] >= 1, what="pat's records handled")
    room_works(router, "ann")
    router.stop()
    router.start()
    room_works(router, "ann")
    assert "far future" not in (router.data_dir / room_log_name(1)).read_text()
    assert "Traceback" not in router.log(), router.log()[-3000:]


def test_bad_line_already_in_a_room_log_breaks_no_page(tmp_path: Path) -> None:
    """A line from before these checks: its time shows as its HLC's."""
    data = tmp_path / "old" / "data"
    data.mkdir(parents=True)
    stamped = now_ms() - 60_000
    bad = Record(
        KEY_HOLDER,
        1,
        pack(stamped, 0),
        RecordKind.MESSAGE,
        1,
        {"author": "pat", "node": "pat-router", "time": 10**18, "text": "old"},
    )
    (data / room_log_name(1)).write_bytes(encode_line(bad))
    router = Router(data, free_port(), "old", ["--no-mesh"])
    try:
        router.start()
        router.user("ann")
        room_works(router, "ann")
        w = router.ws(router.user("ann", register=False))
        shown = w.recv_type("history")["messages"]
        w.close()
        assert [m["text"] for m in shown][:1] == ["old"]
        assert shown[0]["time"][:16] == time.strftime("%Y-%m-%dT%H:%M", time.gmtime(stamped / 1000))
        router.stop()
        router.start()
        room_works(router, "ann")
        assert "Traceback" not in router.log(), router.log()[-3000:]
    finally:
        router.stop()


# -- item 7: never acknowledge what was not stored ---------------------------------------


def test_clear_from_a_router_far_ahead_leaves_new_posts_stored(
    tmp_path: Path, mesh_key: tuple[bytes, list[str]]
) -> None:
    """The admin's router, its clock a year ahead, clears room 1.  A post on
    this router after that is either stored (and acked, and on disk, and
    in history after a restart) or answered with an error: never acked and
    lost."""
    key, extra = mesh_key
    admin = ["--admin", f"boss={ADMIN_ID}"]
    with routers(tmp_path, "correct", extra=[*extra, *admin]) as (router,):
        holder = KeyHolder(router, key)
        ann = router.user("ann")
        w = router.ws(ann)
        w.recv_type("history")
        assert post(w, "before the clear")["type"] == "ack"
        ahead = pack(now_ms() + YEAR_MS, 0)
        clear = Record(
            ADMIN_ROUTER,
            2,
            ahead,
            RecordKind.MODERATION,
            1,
            {"action": "clear", "by": "boss", "account": ADMIN_ID},
        )
        holder.send(clear)
        holder.close()
        w.recv_type("cleared")
        assert router.status()["rooms"]["1"] == 0
        answer = post(w, "after the clear")
        stored = router.status()["rooms"]["1"]
        if answer["type"] == "ack":
            assert stored == 1, "acknowledged, and not stored"
            assert "after the clear" in (router.data_dir / room_log_name(1)).read_text()
        else:
            assert stored == 0
        w.close()
        router.stop()
        router.start()
        w = router.ws(router.user("ann", register=False))
        texts = [m["text"] for m in w.recv_type("history")["messages"]]
        w.close()
        assert texts == (["after the clear"] if answer["type"] == "ack" else [])
        # This router's clock did not follow the admin's: the clear was clamped.
        assert answer["type"] == "ack", answer


def test_clear_far_ahead_already_on_disk(tmp_path: Path) -> None:
    """A data folder from before these fixes: a clear a year ahead in
    moderation.log, a message of an hour ago in room 2.  The router's clock
    does not start a year ahead (retention would drop every room at once),
    and room 1 takes posts again, kept across a restart."""
    data = tmp_path / "legacy" / "data"
    data.mkdir(parents=True)
    clear = Record(
        ADMIN_ROUTER,
        2,
        pack(now_ms() + YEAR_MS, 0),
        RecordKind.MODERATION,
        1,
        {"action": "clear", "by": "boss", "account": ADMIN_ID},
    )
    (data / "moderation.log").write_bytes(encode_line(clear))
    earlier = Record(
        KEY_HOLDER,
        1,
        pack(now_ms() - 3600_000, 0),
        RecordKind.MESSAGE,
        2,
        {"author": "pat", "node": "pat-router", "time": now_ms() - 3600_000, "text": "an hour ago"},
    )
    (data / room_log_name(2)).write_bytes(encode_line(earlier))
    router = Router(data, free_port(), "legacy", ["--no-mesh", "--admin", f"boss={ADMIN_ID}"])
    try:
        router.start()
        assert router.status()["rooms"]["2"] == 1
        w = router.ws(router.user("ann"))
        w.recv_type("history")
        answer = post(w, "room 1 again")
        w.close()
        assert answer["type"] == "ack", answer
        router.stop()
        router.start()
        assert router.status()["rooms"] == {"1": 1, "2": 1, "3": 0, "4": 0}
    finally:
        router.stop()


# -- item 11: exactly the known fields, our own scrypt parameters --------------------------


def test_padded_records_are_refused_and_counted(keyed: tuple[Router, KeyHolder]) -> None:
    router, holder = keyed
    holder.send(message(1, now_ms(), "warm-up", origin="0f0f0f0f0f0f0f10"))
    wait_for(lambda: router.status()["rooms"]["1"] == 1, what="the warm-up stored")
    before = rss_bytes(router)
    log_path = router.data_dir / room_log_name(1)
    log_size = log_path.stat().st_size
    flooders = [f"0f0f0f0f0f0f{n:04x}" for n in range(0x100, 0x100 + FLOODERS)]
    for n in range(PADDED):
        origin = flooders[n % FLOODERS]
        holder.send(
            message(n // FLOODERS + 1, now_ms(), f"pad {n}", origin=origin, pad="x" * PAD_BYTES)
        )
        if n % FLOODERS == FLOODERS - 1:  # a pause per round: the kernel drops nothing
            handled = n + 1
            wait_for(
                lambda handled=handled: (
                    sum(refused(router).values()) + router.status()["rooms"]["1"] - 1 >= handled
                ),
                timeout=15,
                what=f"{handled} padded records handled",
            )
    got = refused(router)
    grown = rss_bytes(router) - before
    print(f"\n{PADDED} padded records: refused {got}, RSS grew {grown / 2**20:.1f} MiB")
    assert got.get("bad_message") == PADDED, got
    assert router.status()["rooms"]["1"] == 1
    assert log_path.stat().st_size == log_size
    assert grown < MAX_RSS_GROWTH


def scrypt_hash(password: str, p: int) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << 14, r=8, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )
    return "$".join(
        [
            "scrypt",
            str(1 << 14),
            "8",
            str(p),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def test_account_with_costly_scrypt_parameters_is_refused(keyed: tuple[Router, KeyHolder]) -> None:
    """p=150: every login for the name would hold the hashing thread ~150
    times as long.  The record is refused and counted, never stored."""
    router, holder = keyed
    _, _, _, _, salt, digest = scrypt_hash(PASSWORD, 1).split("$")
    costly = f"scrypt${1 << 14}$8$150${salt}${digest}"
    holder.send(
        Record(
            KEY_HOLDER,
            1,
            pack(now_ms(), 0),
            RecordKind.ACCOUNT,
            0,
            {"name": "slow", "hash": costly},
        )
    )
    holder.send(
        Record(
            KEY_HOLDER,
            2,
            pack(now_ms(), 0),
            RecordKind.ACCOUNT,
            0,
            {"name": "fine", "hash": scrypt_hash(PASSWORD, 1)},
        )
    )
    wait_for(lambda: router.status()["accounts"] >= 1, what="pat's accounts handled")
    assert refused(router).get("bad_account") == 1
    assert router.status()["accounts"] == 1
    assert "slow" not in (router.data_dir / ACCOUNTS_LOG).read_text()


def test_stored_hash_with_other_parameters_never_logs_in(tmp_path: Path) -> None:
    """A hash with p=2 of the right password, already in accounts.log: the
    router does not hash with it, so the login fails."""
    data = tmp_path / "acc" / "data"
    data.mkdir(parents=True)
    line = Record(
        KEY_HOLDER,
        1,
        pack(now_ms(), 0),
        RecordKind.ACCOUNT,
        0,
        {"name": "old", "hash": scrypt_hash(PASSWORD, 2)},
    )
    (data / ACCOUNTS_LOG).write_bytes(encode_line(line))
    router = Router(data, free_port(), "acc", ["--no-mesh"])
    try:
        router.start()
        assert router.http().login("old").status != 303
        router.user("new")  # our own parameters log in
    finally:
        router.stop()


# -- file modes --------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start_with_umask(router: Router, umask: int) -> None:
    """Start ``router`` as a shell with ``umask`` would."""
    old = os.umask(umask)
    try:
        router.start()
    finally:
        os.umask(old)


def assert_private(*paths: Path) -> None:
    for path in paths:
        want = PRIVATE_DIR if path.is_dir() else PRIVATE_FILE
        assert mode(path) == want, f"{path}: {oct(mode(path))}"


def test_data_folder_is_private(tmp_path: Path) -> None:
    """Every file the router makes is 0600 and every folder 0700, though it
    was started with a permissive umask."""
    (tmp_path / "priv").mkdir()
    data = tmp_path / "priv" / "data"  # the router makes it
    key = tmp_path / "priv" / "keys" / "mesh.key"  # and this, and its folder
    mesh = ["--mesh-port", str(free_udp_port()), "--mesh-key-file", str(key)]
    router = Router(data, free_port(), "priv", mesh)
    start_with_umask(router, 0o022)
    try:
        w = router.ws(router.user("ann"))
        w.recv_type("history")
        assert post(w, "hello")["type"] == "ack"
        w.send({"type": "read", "upto": "1"})  # a read marker: reads.log
        w.close()
        router.stop()
        made = sorted(data.rglob("*"))
        assert {"accounts.log", "sessions.json", "node_id", "room-1.log", "reads.log"} <= {
            p.name for p in made
        }, made
        assert_private(data, key.parent, key, *made)
        # A clear by a bound admin: moderation.log, and the room's horizon in state.json.
        ann_id = json.loads((data / ACCOUNTS_LOG).read_text().splitlines()[0])["id"]
        router.extra = [*mesh, "--admin", f"ann={ann_id}"]
        start_with_umask(router, 0o022)
        w = router.ws(router.user("ann", register=False))
        w.recv_type("history")
        w.send({"type": "clear"})
        w.recv_type("cleared")
        w.close()
        router.stop()
        made = sorted(data.rglob("*"))
        assert {"moderation.log", "state.json"} <= {p.name for p in made}, made
        assert_private(data, *made)
    finally:
        router.stop()


def test_readable_mesh_key_is_reported(tmp_path: Path) -> None:
    key = tmp_path / "mesh.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o644)
    with routers(
        tmp_path, "loose", extra=["--mesh-port", str(free_udp_port()), "--mesh-key-file", str(key)]
    ) as (router,):
        wait_for(
            lambda: "mesh.key" in router.log() and "chmod 600" in router.log(),
            what="a warning about the mesh key",
        )
