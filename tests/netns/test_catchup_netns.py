"""History catch-up between routers in network namespaces: what the issue's
"must show" list asks for, on real sockets and a real kernel.

1. loss: 20% of datagrams dropped on every link, 1,000 messages from three
   routers: identical logs and vectors within a bound;
2. partition: one router cut off, posts on both sides, heal: identical within
   15 s, and catch-up served only what the other side lacked;
3. crash: ``kill -9`` ten times while messages pour in: every line parses,
   every acked message survives, the router catches up;
4. wipe: an empty data folder (a new node id) gets the whole history back;
5. fragments: 4 KB records at the smallest MTU under 20% loss arrive whole.

Accounts are written into every data folder before the routers start (the
same records, from a node id that never runs): registering through the page
is throttled per phone, and catch-up of accounts is not what these tests are
about.  See ``netlab.py`` for the lab.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from app.accounts import hash_password
from node.clock import pack
from node.record import Record, RecordKind
from node.store import Store, decode_line, room_log_name
from tests.helpers import PASSWORD, HttpSession, WsClient
from tests.netns.netlab import Lab, NetnsRouter
from tests.netns.test_mesh_netns import key_file, require_netns

pytestmark = pytest.mark.netns

MakeLab = Callable[[], Lab]

BEACON = "0.5"  # seconds: a router notices a difference within a beacon or two
ROOMS = 4
SEED_ORIGIN = "5eed5eed5eed5eed"  # the node that "registered" the seeded accounts
LOSS = 20  # percent, each way on every router's link: 64% of datagrams arrive
# The small MTU, also the smallest --mesh-mtu takes (node/fragment.py
# MIN_MTU): 4 KB records go in 9 fragments each.
SMALL_MTU = 500
# Every per-user limit of the app (app/chat.py): 2 messages/s, burst 10.
USER_BURST = 10
RATE_LIMIT_WAIT = 0.55  # one token comes back every 0.5 s
POLL = 0.25


# -- set-up -----------------------------------------------------------------------


_HASH: list[str] = []


def password_hash() -> str:
    """One scrypt hash for every seeded account (40 ms, made once)."""
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


def seed_accounts(data_dir: Path, names: Sequence[str]) -> None:
    """Write the same account records into a router's data folder."""
    base = pack(int(time.time() * 1000) - 60_000, 0)
    store = Store(data_dir, ROOMS)
    try:
        store.append_many(
            [
                Record(
                    SEED_ORIGIN,
                    i + 1,
                    base + i,
                    RecordKind.ACCOUNT,
                    0,
                    {"name": name, "hash": password_hash()},
                )
                for i, name in enumerate(names)
            ]
        )
    finally:
        store.close()


def start(
    lab: Lab, tmp_path: Path, name: str, key: Path, users: Sequence[str], extra: Sequence[str] = ()
) -> NetnsRouter:
    data = tmp_path / name / "data"
    if users:
        seed_accounts(data, users)
    return lab.start_router(
        name,
        data,
        ["--mesh-key-file", str(key), "--beacon-interval", BEACON, "--rooms", str(ROOMS), *extra],
    )


def lab_of(make_lab: MakeLab, names: Sequence[str]) -> Lab:
    lab = make_lab()
    for name in names:
        lab.add_host(name, [0])
    return lab


def in_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads; re-raise the first failure."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as e:  # handed to the test's thread below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(calls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


def logins(r: NetnsRouter, users: Sequence[str]) -> list[HttpSession]:
    return [r.user(u, register=False) for u in users]


def sockets(r: NetnsRouter, sessions: Sequence[HttpSession], room: int = 1) -> list[WsClient]:
    out = []
    for s in sessions:
        w = r.ws(s, room)
        w.recv_type("history")
        out.append(w)
    return out


# -- posting ------------------------------------------------------------------------


def post(w: WsClient, text: str, client_id: str, timeout: float = 10.0) -> str:
    """Send one message and return its id from the ``ack``; waits out the rate limit."""
    deadline = time.monotonic() + timeout
    while True:
        w.send({"type": "send", "text": text, "client_id": client_id})
        frame = w.recv_until(
            lambda f: f.get("type") in ("ack", "error") and f.get("client_id") == client_id,
            max(0.1, deadline - time.monotonic()),
        )
        if frame["type"] == "ack":
            return str(frame["id"])
        assert frame["code"] == "rate_limited", frame
        assert time.monotonic() < deadline, f"still rate limited after {timeout} s"
        time.sleep(RATE_LIMIT_WAIT)


def post_many(ws: Sequence[WsClient], texts: Sequence[str], tag: str) -> list[str]:
    """Post ``texts`` round robin over the sockets; returns the acked ids."""
    return [post(ws[i % len(ws)], text, f"{tag}{i}") for i, text in enumerate(texts)]


# -- reading the routers' logs ------------------------------------------------------------


Entry = tuple[int, str, int, str]  # hlc, origin, seq, text


def log_lines(path: Path, *, whole_only: bool = True) -> list[bytes]:
    """A log's lines; with ``whole_only`` a line still being written is left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail and not whole_only:
        lines.append(tail)
    return [ln for ln in lines if ln.strip()]


def room_entries(r: NetnsRouter, room: int = 1) -> list[Entry]:
    """Room ``room`` of ``r``'s log, sorted as every router sorts it."""
    out = []
    for line in log_lines(r.data_dir / room_log_name(room)):
        rec = decode_line(line)
        out.append((rec.hlc, rec.origin, rec.seq, str(rec.body.get("text"))))
    return sorted(out)


def ids(entries: Sequence[Entry]) -> list[str]:
    return [f"{o}:{s}" for _, o, s, _ in entries]


def all_lines_parse(r: NetnsRouter, *, running: bool = False) -> int:
    """Every line of every log of ``r`` is a record (a torn tail is moved
    aside at start-up).  ``running``: leave out a last line being written."""
    n = 0
    for path in sorted(r.data_dir.glob("*.log")):
        for number, line in enumerate(log_lines(path, whole_only=running), start=1):
            try:
                decode_line(line)
            except (ValueError, KeyError, TypeError) as e:
                raise AssertionError(
                    f"{path}:{number} does not parse ({e}): {line[:200]!r}"
                ) from None
            n += 1
    return n


def snapshot(routers: Sequence[NetnsRouter], room: int = 1) -> dict[str, Any]:
    """What each router holds: sorted room entries, vector, room counts."""
    out = {}
    for r in routers:
        st = r.status()
        out[r.name] = {
            "entries": room_entries(r, room),
            "vector": st["vector"],
            "rooms": st["rooms"],
            "sync": st["mesh"]["sync"],
        }
    return out


def identical(snap: dict[str, Any], count: int | None = None) -> bool:
    views = list(snap.values())
    first = views[0]
    return (
        all(v["entries"] == first["entries"] and v["vector"] == first["vector"] for v in views[1:])
        and (count is None or len(first["entries"]) == count)
        and len({e[1:3] for e in first["entries"]}) == len(first["entries"])
    )


def describe(snap: dict[str, Any]) -> str:
    union = set().union(*({e[1:3] for e in v["entries"]} for v in snap.values()))
    lines = []
    for name, v in snap.items():
        have = {e[1:3] for e in v["entries"]}
        sync = {
            k: v["sync"][k]
            for k in ("catchup_peer", "catchup_outstanding_ranges", "serving", "peers")
            if k in v["sync"]
        }
        lines.append(
            f"  {name}: {len(v['entries'])} in room 1 (lacks {len(union - have)}), "
            f"vector {v['vector']}, sync {json.dumps(sync)}"
        )
    return "\n".join(lines)


def wait_identical(
    routers: Sequence[NetnsRouter],
    timeout: float,
    count: int | None = None,
    what: str = "identical logs",
) -> tuple[dict[str, Any], float]:
    """Poll until every router holds the same room 1 and vector; returns the
    snapshot and how long it took.  On timeout, says who lacks what."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        snap = snapshot(routers)
        if identical(snap, count):
            return snap, time.monotonic() - start
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {r.name} log tail:\n{r.log()[-3000:]}" for r in routers)
            raise AssertionError(f"no {what} after {timeout} s:\n{describe(snap)}\n{logs}")
        time.sleep(POLL)


def served(r: NetnsRouter) -> int:
    return int(r.status()["mesh"]["sync"].get("served_records", 0))


def no_errors_logged(routers: Sequence[NetnsRouter]) -> None:
    for r in routers:
        bad = [
            ln
            for ln in r.log().splitlines()
            if "Traceback" in ln or " ERROR " in ln or "exception" in ln.lower()
        ]
        assert not bad, f"{r.name} logged errors:\n" + "\n".join(bad[:20]) + "\n" + r.log()[-4000:]


# -- 1. loss ----------------------------------------------------------------------------

LOSS_MESSAGES = 1000
LOSS_USERS = 25  # per router: 1,000 / 3 / 25 = 14 messages each, 10 at once then 2/s
LOSS_CONVERGE = 60.0  # seconds after the last post


def test_loss_three_routers_identical_logs(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    names = ("ra", "rb", "rc")
    lab = lab_of(make_lab, names)
    key = key_file(tmp_path / "mesh.key")
    users = [f"u{i}" for i in range(LOSS_USERS)]
    routers = [start(lab, tmp_path, n, key, users) for n in names]
    sessions = in_parallel(*(lambda r=r: logins(r, users) for r in routers))
    ws = [sockets(r, s) for r, s in zip(routers, sessions, strict=True)]
    for n in names:
        lab.add_loss(n, 0, LOSS)

    share = [len(range(i, LOSS_MESSAGES, 3)) for i in range(3)]
    texts = [[f"{names[i]} says {k}" for k in range(share[i])] for i in range(3)]
    acked = in_parallel(*(lambda i=i: post_many(ws[i], texts[i], f"{names[i]}-") for i in range(3)))
    assert sum(len(a) for a in acked) == LOSS_MESSAGES
    snap, took = wait_identical(routers, LOSS_CONVERGE, LOSS_MESSAGES, "identical logs under loss")
    assert sorted(ids(snap["ra"]["entries"])) == sorted(i for a in acked for i in a)
    assert {e[3] for e in snap["ra"]["entries"]} == {t for ts in texts for t in ts}
    assert all(lab.loss_drops(n, 0) > 0 for n in names), "the loss rule dropped nothing"
    print(
        f"loss: converged {took:.1f} s after the last post; drops "
        f"{[lab.loss_drops(n, 0) for n in names]}"
    )
    no_errors_logged(routers)


# -- 2. partition -------------------------------------------------------------------------

PARTITION_BEFORE = 30  # messages all three hold
PARTITION_MAJORITY = 40  # posted on A and B while C is cut off
PARTITION_MINORITY = 25  # posted on C meanwhile
HEAL_WITHIN = 15.0
RESEND_SLACK = 1.1  # served records / records lacking


def test_partition_heals_without_resending(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    names = ("ra", "rb", "rc")
    lab = lab_of(make_lab, names)
    key = key_file(tmp_path / "mesh.key")
    users = [f"u{i}" for i in range(8)]
    a, b, c = routers = [start(lab, tmp_path, n, key, users) for n in names]
    ws = {r.name: sockets(r, logins(r, users)) for r in routers}
    post_many(
        ws["ra"] + ws["rb"] + ws["rc"], [f"before {i}" for i in range(PARTITION_BEFORE)], "pre"
    )
    wait_identical(routers, 10, PARTITION_BEFORE, "the shared history")

    c_id = c.status()["node_id"]
    lab.set_link("rc", 0, up=False)
    wait_for_cond(
        lambda: c_id not in a.status()["mesh"]["peers"] and c_id not in b.status()["mesh"]["peers"],
        10,
        "A and B lose C",
    )
    in_parallel(
        lambda: post_many(
            ws["ra"] + ws["rb"], [f"majority {i}" for i in range(PARTITION_MAJORITY)], "maj"
        ),
        lambda: post_many(ws["rc"], [f"minority {i}" for i in range(PARTITION_MINORITY)], "min"),
    )
    time.sleep(2 * float(BEACON))  # every live datagram has landed (or not) on its side
    before = snapshot(routers)
    held = {n: {e[1:3] for e in v["entries"]} for n, v in before.items()}
    union = set().union(*held.values())
    lacking = {n: len(union - h) for n, h in held.items()}
    assert lacking == {
        "ra": PARTITION_MINORITY,
        "rb": PARTITION_MINORITY,
        "rc": PARTITION_MAJORITY,
    }, lacking
    served_before = {r.name: served(r) for r in routers}

    lab.set_link("rc", 0, up=True)
    _, took = wait_identical(routers, HEAL_WITHIN, len(union), "a healed partition")
    time.sleep(2 * float(BEACON))  # anything still queued would show now
    served_after = {r.name: served(r) for r in routers}
    extra = {n: served_after[n] - served_before[n] for n in served_after}
    total_lacking = sum(lacking.values())
    print(f"partition: healed in {took:.1f} s; lacking {lacking}; served {extra}")
    assert sum(extra.values()) <= total_lacking * RESEND_SLACK, (extra, lacking)
    # C's side (A and B) served C; C served A and B (or one of them served the
    # other what it had from C): never the shared history.
    assert extra["ra"] + extra["rb"] <= (PARTITION_MAJORITY + PARTITION_MINORITY) * RESEND_SLACK
    assert extra["rc"] <= 2 * PARTITION_MINORITY * RESEND_SLACK
    no_errors_logged(routers)


def wait_for_cond(pred: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(POLL)


# -- 3. crash ---------------------------------------------------------------------------

KILLS = 10
UP_MIN, UP_MAX = 0.3, 2.0  # seconds a router runs before the next kill -9
POUR_USERS = 10  # on the router that stays up: 10 users x 2/s = 20 messages/s
POUR_INTERVAL = 1 / 20
CRASH_CONVERGE = 30.0


class Pour(threading.Thread):
    """Posts on ``ws`` round robin at a steady rate until stopped; keeps the acks."""

    def __init__(self, ws: Sequence[WsClient], tag: str) -> None:
        super().__init__(daemon=True)
        self.ws, self.tag = ws, tag
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                self.acked.append(
                    post(self.ws[i % len(self.ws)], f"{self.tag} {i}", f"{self.tag}{i}")
                )
                i += 1
                self.stop.wait(POUR_INTERVAL)
        except BaseException as e:
            self.error = e


def post_until_dead(ws: Sequence[WsClient], tag: str, acked: list[str]) -> None:
    """Post as fast as the rate limit allows until the router dies under us;
    every ack that came back goes into ``acked``."""
    i = 0
    while True:
        w = ws[i % len(ws)]
        cid = f"{tag}-{i}"
        try:
            w.send({"type": "send", "text": f"{tag} {i}", "client_id": cid})
            frame = w.recv_until(
                lambda f, cid=cid: f.get("type") in ("ack", "error") and f.get("client_id") == cid,
                5,
            )
        except Exception:  # the socket died with the router
            return
        if frame["type"] == "ack":
            acked.append(str(frame["id"]))
        i += 1


def test_crash_kill9_keeps_acked_messages(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    names = ("ra", "rb")
    lab = lab_of(make_lab, names)
    key = key_file(tmp_path / "mesh.key")
    users = [f"u{i}" for i in range(POUR_USERS)] + [f"k{i}" for i in range(20)]
    a, b = start(lab, tmp_path, "ra", key, users), start(lab, tmp_path, "rb", key, users)
    pour = Pour(sockets(a, logins(a, users[:POUR_USERS])), "from-a")
    b_sessions = logins(b, users[POUR_USERS:])
    rng = random.Random(secrets.randbits(32))
    acked_b: list[str] = []
    pour.start()
    try:
        for cycle in range(KILLS):
            ws = sockets(b, b_sessions)
            killer = threading.Timer(rng.uniform(UP_MIN, UP_MAX), b.stop, args=(9,))
            killer.start()
            post_until_dead(ws, f"b{cycle}", acked_b)
            killer.join()
            for w in ws:
                w.close()
            b.start()
            # Start-up moved any torn tail aside: every line left parses ...
            all_lines_parse(b, running=True)
            # ... and every message B acknowledged before the kill is there.
            have = set(ids(room_entries(b)))
            lost = [i for i in acked_b if i not in have]
            assert not lost, f"cycle {cycle}: acked but lost on B: {lost[:10]} ({len(lost)})"
            assert pour.error is None, pour.error
    finally:
        pour.stop.set()
        pour.join(15)
    assert pour.error is None, pour.error
    assert len(acked_b) > KILLS and len(pour.acked) > KILLS
    snap, took = wait_identical([a, b], CRASH_CONVERGE, what="B caught up after the kills")
    have = set(ids(snap["rb"]["entries"]))
    assert set(acked_b) <= have and set(pour.acked) <= have
    for r in (a, b):
        r.stop()
        all_lines_parse(r)
    print(
        f"crash: {KILLS} kills, {len(acked_b)} acked on B, {len(pour.acked)} on A; "
        f"caught up in {took:.1f} s; torn bytes moved aside: "
        f"{sum(p.stat().st_size for p in b.data_dir.glob('*.torn'))}"
    )


# -- 4. wipe ----------------------------------------------------------------------------

WIPE_MESSAGES = 150
WIPE_WITHIN = 20.0


def test_wiped_router_gets_the_whole_history(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    names = ("ra", "rb", "rc")
    lab = lab_of(make_lab, names)
    key = key_file(tmp_path / "mesh.key")
    users = [f"u{i}" for i in range(8)]
    a, _, c = routers = [start(lab, tmp_path, n, key, users) for n in names]
    ws = [w for r in routers for w in sockets(r, logins(r, users))]
    # Messages in every room, not only room 1.
    for room in range(2, ROOMS + 1):
        post(sockets(a, logins(a, users[:1]), room)[0], f"room {room}", f"r{room}")
    post_many(ws, [f"history {i}" for i in range(WIPE_MESSAGES)], "h")
    before, _ = wait_identical(routers, 15, WIPE_MESSAGES, "the history everywhere")
    old_id = c.status()["node_id"]

    c.stop(9)
    shutil.rmtree(c.data_dir)
    c.data_dir.mkdir()
    c.start()
    assert c.status()["node_id"] != old_id, "a wiped router must get a new node id"
    snap, took = wait_identical(routers, WIPE_WITHIN, WIPE_MESSAGES, "the history back on C")
    assert snap["rc"]["entries"] == before["ra"]["entries"]
    st_a, st_c = a.status(), c.status()
    assert st_c["rooms"] == st_a["rooms"] and st_c["accounts"] == st_a["accounts"] == len(users)
    # The new node id writes on: seq 1 of a new origin, heard by the others.
    w = sockets(c, logins(c, users[:1]))[0]
    new = post(w, "after the wipe", "aw")
    assert new.startswith(st_c["node_id"] + ":")
    wait_identical(routers, 10, WIPE_MESSAGES + 1, "C's new message everywhere")
    print(f"wipe: {WIPE_MESSAGES} messages back in {took:.1f} s")
    no_errors_logged(routers)


# -- 5. fragments -----------------------------------------------------------------------

BIG_CHARS = 2000  # the longest message: 2,000 two-byte characters, ~4 KB of UTF-8
BIG_PER_ROUTER = 4
FRAGMENTS_WITHIN = 60.0


def big_text(tag: str, rng: random.Random) -> str:
    alphabet = "éàüçñøßœ"  # all two bytes in UTF-8
    body = "".join(rng.choice(alphabet) for _ in range(BIG_CHARS - len(tag) - 1))
    return f"{tag} {body}"


def test_fragments_arrive_whole_under_loss(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    names = ("ra", "rb", "rc")
    lab = lab_of(make_lab, names)
    key = key_file(tmp_path / "mesh.key")
    users = [f"u{i}" for i in range(2)]
    routers = [start(lab, tmp_path, n, key, users, ["--mesh-mtu", str(SMALL_MTU)]) for n in names]
    ws = [sockets(r, logins(r, users)) for r in routers]
    for n in names:
        lab.add_loss(n, 0, LOSS)
    rng = random.Random(secrets.randbits(32))
    texts = [[big_text(f"{n}{k}", rng) for k in range(BIG_PER_ROUTER)] for n in names]
    assert all(len(t.encode()) > 3900 for ts in texts for t in ts)
    in_parallel(*(lambda i=i: post_many(ws[i], texts[i], f"{names[i]}-") for i in range(3)))
    count = BIG_PER_ROUTER * len(names)
    snap, took = wait_identical(routers, FRAGMENTS_WITHIN, count, "4 KB records everywhere")
    for name, view in snap.items():
        assert sorted(e[3] for e in view["entries"]) == sorted(t for ts in texts for t in ts), name
    sync = [r.status()["mesh"]["sync"] for r in routers]
    print(
        f"fragments: {count} records of ~4 KB at MTU {SMALL_MTU} in {took:.1f} s; "
        f"fragment requests {[s.get('fragment_requests_sent', 0) for s in sync]}, "
        f"resent {[s.get('fragments_resent', 0) for s in sync]}; drops "
        f"{[lab.loss_drops(n, 0) for n in names]}"
    )
    no_errors_logged(routers)
