"""Meshes joined through a real Mosquitto (app/bridge.py).

Each mesh is its own loopback mesh (a UDP port and a mesh key nobody else
has, tests/helpers.py ``loopback_mesh``): its routers hear each other and
nobody else, as routers in separate namespaces would.  One router of a mesh
(or two) runs ``--bridge``; every bridge signs with one bridge key.  The
broker is Debian's mosquitto on a free loopback port with a generated
config (tests/bridge_lab.py), started and stopped by the tests.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.chat import RATE_BURST
from node.store import decode_line, room_log_name
from tests.bridge_lab import Broker, Uplink
from tests.helpers import Router, free_port, loopback_mesh, wait_for

# Everything here finishes in seconds; the bounds are for a loaded CI machine.
CONVERGE_TIMEOUT = 90.0
STATE_TIMEOUT = 30.0
# A keep-alive short enough that a cut uplink is noticed within seconds.
TEST_KEEPALIVE = 2


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def bridge_key(tmp_path: Path) -> Path:
    key = tmp_path / "bridge.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    return key


class Lab:
    """Routers of several meshes; stops them all at the end."""

    def __init__(self, tmp_path: Path, bridge_key: Path) -> None:
        self.tmp_path, self.bridge_key = tmp_path, bridge_key
        self.routers: list[Router] = []

    def router(self, mesh: str, name: str, bridge: str | None = None, *extra: str) -> Router:
        folder = self.tmp_path / mesh
        folder.mkdir(exist_ok=True)
        shared = folder / "flags"  # one mesh: one port and one key for its routers
        if not shared.exists():
            shared.write_text(" ".join(loopback_mesh(folder, beacon_interval=0.3)))
        flags = shared.read_text().split()
        if bridge is not None:
            flags += ["--bridge", bridge, "--bridge-key-file", str(self.bridge_key), *extra]
        r = Router(folder / name / "data", free_port(), name, flags)
        r.data_dir.mkdir(parents=True)
        self.routers.append(r.start())
        return r

    def stop(self) -> None:
        for r in self.routers:
            r.stop()


@pytest.fixture
def lab(tmp_path: Path, bridge_key: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, bridge_key)
    try:
        yield lab
    finally:
        lab.stop()


def post(router: Router, user: str, texts: list[str]) -> None:
    """Post ``texts`` in room 1, each acknowledged (stored), as new users
    ``user``-0, ``user``-1, ...: ``RATE_BURST`` each, under the per-user rate
    limit."""
    for k in range(0, len(texts), RATE_BURST):
        ws = router.ws(router.user(f"{user}-{k // RATE_BURST}"))
        try:
            ws.recv_type("hello")
            for n, text in enumerate(texts[k : k + RATE_BURST]):
                ws.send({"type": "send", "text": text, "client_id": f"c{n}"})
                ws.recv_until(lambda f, n=n: f.get("type") == "ack" and f["client_id"] == f"c{n}")
        finally:
            ws.close()


def texts_in_room(router: Router) -> list[str]:
    """Every message text in room 1's log file, one per stored record."""
    lines = (router.data_dir / room_log_name(1)).read_bytes().splitlines()
    return [str(decode_line(line).body["text"]) for line in lines if line.strip()]


def count(router: Router) -> int:
    return int(router.status()["rooms"]["1"])


def converge(routers: list[Router], total: int) -> None:
    for r in routers:
        wait_for(lambda r=r: count(r) >= total, CONVERGE_TIMEOUT, f"{r.name} to hold {total}")
    for r in routers:
        assert count(r) == total, f"{r.name}: {count(r)} messages, expected exactly {total}"


def bridge_status(router: Router) -> dict[str, Any]:
    return router.status()["mesh"]["bridge"]


def state(router: Router) -> str:
    return str(bridge_status(router)["state"])


def test_two_meshes_converge_on_200_messages(lab: Lab, broker: Broker) -> None:
    url = broker.url("valley")
    a1, a2 = lab.router("a", "a1", url), lab.router("a", "a2")
    b1, b2 = lab.router("b", "b1", url), lab.router("b", "b2")
    # On the routers without a bridge: every message crosses a radio mesh,
    # the broker and the other radio mesh.
    post(a2, "ann", [f"a{n}" for n in range(100)])
    post(b2, "bob", [f"b{n}" for n in range(100)])
    converge([a1, a2, b1, b2], 100 + 100 + 0)
    seen = texts_in_room(b2)
    assert sorted(seen) == sorted([f"a{n}" for n in range(100)] + [f"b{n}" for n in range(100)])
    status = bridge_status(a1)
    assert status["state"] == "connected"
    assert status["counters"]["records_published"] >= 100
    assert not status["dropped"], status["dropped"]


def test_broker_restarted_mid_stream(lab: Lab, broker: Broker) -> None:
    url = broker.url("valley")
    a1, b1 = lab.router("a", "a1", url), lab.router("b", "b1", url)
    post(a1, "ann", [f"before{n}" for n in range(30)])
    converge([a1, b1], 30)
    broker.stop()
    wait_for(lambda: state(a1) == "disconnected", STATE_TIMEOUT, "a1 to see the broker gone")
    assert bridge_status(a1)["last_error"]
    assert "lost the broker" in a1.log() or "cannot reach" in a1.log()
    # The chat goes on while the broker is down ...
    post(a1, "amy", [f"during{n}" for n in range(30)])
    post(b1, "bob", [f"b-during{n}" for n in range(30)])
    assert count(a1) == 60 and count(b1) == 60
    broker.start()
    post(a1, "ada", [f"after{n}" for n in range(30)])
    # ... and what was posted meanwhile crosses by catch-up, both ways.
    converge([a1, b1], 120)
    assert state(a1) == state(b1) == "connected"


def test_uplink_cut_for_a_while_and_restored(lab: Lab, broker: Broker) -> None:
    uplink = Uplink(broker.port)
    try:
        keepalive = ["--bridge-keepalive", str(TEST_KEEPALIVE)]
        a1 = lab.router("a", "a1", broker.url("valley", port=uplink.port), *keepalive)
        b1 = lab.router("b", "b1", broker.url("valley"))
        post(a1, "ann", ["one"])
        converge([a1, b1], 1)
        uplink.cut()
        wait_for(lambda: state(a1) != "connected", STATE_TIMEOUT, "a1 to notice the cut")
        post(a1, "amy", [f"cut-a{n}" for n in range(20)])
        post(b1, "bob", [f"cut-b{n}" for n in range(20)])
        assert (count(a1), count(b1)) == (21, 21)  # nothing crossed, nothing waited
        uplink.restore()
        converge([a1, b1], 41)
        wait_for(lambda: state(a1) == "connected", STATE_TIMEOUT, "a1 connected again")
    finally:
        uplink.close()


def test_two_bridges_in_one_mesh(lab: Lab, broker: Broker) -> None:
    url = broker.url("valley")
    a1, a2 = lab.router("a", "a1", url), lab.router("a", "a2", url)
    a3 = lab.router("a", "a3")
    b1 = lab.router("b", "b1", url)
    post(a1, "ann", [f"a1-{n}" for n in range(20)])
    post(a3, "cat", [f"a3-{n}" for n in range(20)])  # both bridges may carry these
    post(b1, "bob", [f"b1-{n}" for n in range(20)])
    converge([a1, a2, a3, b1], 60)
    assert sorted(texts_in_room(b1)) == sorted(texts_in_room(a3))


def test_loop_of_three_meshes(lab: Lab, broker: Broker) -> None:
    """A - B - C - A, each edge its own prefix: a record goes round and
    meets itself; no duplicate anywhere, nothing echoed for ever."""
    ab, bc, ca = broker.url("ab"), broker.url("bc"), broker.url("ca")
    a1, a2 = lab.router("a", "a1", ab), lab.router("a", "a2", ca)
    b1, b2 = lab.router("b", "b1", ab), lab.router("b", "b2", bc)
    c1, c2 = lab.router("c", "c1", bc), lab.router("c", "c2", ca)
    everyone = [a1, a2, b1, b2, c1, c2]
    post(a1, "ann", [f"a{n}" for n in range(15)])
    post(b2, "bob", [f"b{n}" for n in range(15)])
    post(c1, "cat", [f"c{n}" for n in range(15)])
    converge(everyone, 45)
    # Quiet: the records went round and stopped (a fixed count of messages).
    published = [bridge_status(r)["counters"].get("records_published", 0) for r in everyone]
    time.sleep(3 * 0.3 + 2.0)  # beacons and a vector interval: anything echoing would show
    again = [bridge_status(r)["counters"].get("records_published", 0) for r in everyone]
    assert again == published
    for r in everyone:
        assert count(r) == 45


def test_wrong_password_is_visible_and_harmless(tmp_path: Path, lab: Lab) -> None:
    broker = Broker(tmp_path / "auth-broker", users={"valley": "right one"}).start()
    try:
        wrong = tmp_path / "password"
        wrong.write_text("not it\n")
        wrong.chmod(0o600)
        a1 = lab.router(
            "a", "a1", broker.url("valley", user="valley"), "--bridge-password-file", str(wrong)
        )
        wait_for(lambda: state(a1) == "refused", STATE_TIMEOUT, "a refusal in /status")
        status = bridge_status(a1)
        assert "refused" in status["last_error"]
        assert "valley@" in status["url"] and "not it" not in a1.log()
        lines = [ln for ln in a1.log().splitlines() if "refused us" in ln]
        assert lines and all("not it" not in ln for ln in lines)
        post(a1, "ann", ["still here"])  # local chat unaffected
        assert count(a1) == 1
        assert "not it" not in " ".join(a1.argv())  # never on the command line
    finally:
        broker.stop()


def test_records_signed_with_another_key_are_dropped(
    tmp_path: Path, lab: Lab, broker: Broker
) -> None:
    url = broker.url("valley")
    a1 = lab.router("a", "a1", url)
    other = tmp_path / "other.key"
    other.write_text(secrets.token_hex(32) + "\n")
    other.chmod(0o600)
    lab.bridge_key = other
    m1 = lab.router("m", "mallory", url)
    post(m1, "mal", ["forged"])
    wait_for(
        lambda: bridge_status(a1)["dropped"].get("bad_mac", 0) >= 1,
        STATE_TIMEOUT,
        "a1 to drop mallory's records",
    )
    assert count(a1) == 0
