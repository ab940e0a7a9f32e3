"""Routers in their own network namespaces, joined by bridges: what loopback
cannot show (a router that hears only some of the others, a stranger on the
wire, lossy links).  See ``netlab.py`` for the lab."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.store import room_log_name
from tests.conftest import require
from tests.helpers import WsClient, wait_for
from tests.netns.netlab import Lab, NetnsRouter

pytestmark = pytest.mark.netns

BEACON = "0.3"  # seconds: peers and presence converge within a second
# A peer that could hear another would have done so after this many beacons.
QUIET_BEACONS = 4

MakeLab = Callable[[], Lab]


def require_netns() -> None:
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None,
        "network namespaces need root and iproute2 (ip)",
    )


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def start(lab: Lab, tmp_path: Path, name: str, key: Path) -> NetnsRouter:
    return lab.start_router(
        name, tmp_path / name / "data", ["--mesh-key-file", str(key), "--beacon-interval", BEACON]
    )


def mesh(r: NetnsRouter) -> dict[str, Any]:
    return r.status()["mesh"]


def log_ids(r: NetnsRouter, room: int = 1) -> list[str]:
    path = r.data_dir / room_log_name(room)
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def drain(w: WsClient, seconds: float) -> None:
    """Read every frame that arrives within ``seconds`` into ``w.frames``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            w.recv(left)
        except Exception:  # the timeout: nothing more came
            return


def message_ids(w: WsClient) -> list[str]:
    return [f["id"] for f in w.frames if f.get("type") == "message"]


def test_three_routers_on_one_bridge(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    lab = make_lab()
    for name in ("ra", "rb", "rc"):
        lab.add_host(name, [0])
    key = key_file(tmp_path / "mesh.key")
    a, b, c = (start(lab, tmp_path, n, key) for n in ("ra", "rb", "rc"))

    ann = a.user("ann")
    wait_for(lambda: c.status()["accounts"] == 1, what="ann's account on C")
    c.user("ann", register=False)  # logs in on C without registering there
    cat = c.user("cat")
    wait_for(lambda: b.status()["accounts"] == 2, what="both accounts on B")
    bob = b.user("bob")
    wa, wb, wc = a.ws(ann), b.ws(bob), c.ws(cat)

    wa.send({"type": "send", "text": "over the bridge", "client_id": "x"})
    ack = wa.recv_type("ack")
    for w in (wb, wc):
        got = w.recv_until(lambda f: f.get("type") == "message")
        assert (got["id"], got["author"], got["node"], got["text"]) == (
            ack["id"],
            "ann",
            "ra",
            "over the bridge",
        )
    assert log_ids(c) == [ack["id"]]

    expected = [
        {"user": "ann", "node": "ra"},
        {"user": "bob", "node": "rb"},
        {"user": "cat", "node": "rc"},
    ]
    wb.recv_until(lambda f: f.get("type") == "presence" and f["users"] == expected)
    # The peers were heard over the veths, from their own addresses.
    peers = mesh(b)["peers"]
    assert sorted(p["addr"].split(":")[0] for p in peers.values()) == ["198.18.0.1", "198.18.0.3"]
    assert {p["iface"] for p in peers.values()} == {"m0"}
    for w in (wa, wb, wc):
        w.close()


def test_chain_relays_exactly_once(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    lab = make_lab()
    lab.add_host("ra", [0])
    lab.add_host("rb", [0, 1])
    lab.add_host("rc", [1])
    key = key_file(tmp_path / "mesh.key")
    a, b, c = (start(lab, tmp_path, n, key) for n in ("ra", "rb", "rc"))
    ids = {r.name: r.status()["node_id"] for r in (a, b, c)}

    # B hears both ends; the ends never hear each other, only B.
    wait_for(lambda: set(mesh(b)["peers"]) == {ids["ra"], ids["rc"]}, what="B hears A and C")
    time.sleep(QUIET_BEACONS * float(BEACON))
    assert set(mesh(a)["peers"]) == {ids["rb"]}
    assert set(mesh(c)["peers"]) == {ids["rb"]}
    assert {p["iface"] for p in mesh(b)["peers"].values()} == {"m0", "m1"}

    ann = a.user("ann")
    cat = c.user("cat")
    wa, wc = a.ws(ann), c.ws(cat)
    # Accounts cross the chain too.
    wait_for(
        lambda: a.status()["accounts"] == 2 and c.status()["accounts"] == 2,
        what="accounts relayed across B",
    )
    relayed_before = mesh(b)["datagrams"]["relayed"]

    wa.send({"type": "send", "text": "pass it on", "client_id": "x"})
    ack = wa.recv_type("ack")
    got = wc.recv_until(lambda f: f.get("type") == "message")
    assert (got["id"], got["node"], got["text"]) == (ack["id"], "ra", "pass it on")
    assert log_ids(c) == [ack["id"]]
    assert mesh(b)["datagrams"]["relayed"] > relayed_before
    # Every router relays and A hears B's relay back: still exactly once.
    drain(wc, 1.0)
    assert message_ids(wc) == [ack["id"]]
    assert log_ids(c) == [ack["id"]]
    assert [r.status()["rooms"]["1"] for r in (a, b, c)] == [1, 1, 1]
    for w in (wa, wc):
        w.close()


def test_wrong_key_is_heard_by_nobody(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    lab = make_lab()
    for name in ("ga", "gb", "evil"):
        lab.add_host(name, [0])
    good = key_file(tmp_path / "mesh.key")
    bad = key_file(tmp_path / "other.key")
    ga, gb = start(lab, tmp_path, "ga", good), start(lab, tmp_path, "gb", good)
    evil = start(lab, tmp_path, "evil", bad)
    evil_id = evil.status()["node_id"]

    w = evil.ws(evil.user("eve"))
    w.send({"type": "send", "text": "spoofed", "client_id": "e"})
    w.recv_type("ack")
    for r in (ga, gb):
        wait_for(
            lambda r=r: mesh(r)["datagrams"]["dropped"].get("bad_mac", 0) > 0,
            what=f"bad MAC drops on {r.name}",
        )
    wait_for(lambda: gb.status()["node_id"] in mesh(ga)["peers"], what="A hears B")
    time.sleep(QUIET_BEACONS * float(BEACON))
    for r in (ga, gb):
        st = r.status()
        assert st["accounts"] == 0 and st["rooms"]["1"] == 0, st
        assert evil_id not in st["mesh"]["peers"]
        assert evil_id not in st["vector"]
    # ...and the stranger heard nothing from us either.
    assert mesh(evil)["peers"] == {}
    assert mesh(evil)["datagrams"]["dropped"].get("bad_mac", 0) > 0
    w.close()


def test_loss_never_duplicates(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    lab = make_lab()
    for name in ("ra", "rb", "rc"):
        lab.add_host(name, [0])
    key = key_file(tmp_path / "mesh.key")
    a, b, c = (start(lab, tmp_path, n, key) for n in ("ra", "rb", "rc"))
    ann, cat = a.user("ann"), c.user("cat")
    wait_for(lambda: b.status()["accounts"] == 2, what="accounts on B")
    bob = b.user("bob")
    wa, wb, wc = a.ws(ann), b.ws(bob), c.ws(cat)
    drain(wb, 0.2)

    lab.add_loss("rb", 0, 30)
    sent: list[str] = []
    for i in range(8):  # within the per-user burst of 10
        for w, who in ((wa, "a"), (wc, "c")):
            w.send({"type": "send", "text": f"{who}{i}", "client_id": f"{who}{i}"})
            sent.append(w.recv_type("ack")["id"])
        time.sleep(0.05)
    drain(wb, 2.0)
    assert lab.loss_drops("rb", 0) > 0, "the loss rule dropped nothing"

    got = message_ids(wb)
    dupes = [i for i, n in Counter(got).items() if n > 1]
    assert not dupes, f"B's page got duplicates: {dupes}"
    stored = log_ids(b)
    assert len(stored) == len(set(stored)), f"B's log has duplicates: {stored}"
    assert set(got) <= set(sent) and set(stored) <= set(sent)
    assert set(got) <= set(stored)
    assert b.status()["rooms"]["1"] == len(stored)
    # Routers without loss got everything, once (relays included).
    for r in (a, c):
        assert sorted(log_ids(r)) == sorted(sent)
    lab.remove_loss("rb", 0)
    for w in (wa, wb, wc):
        w.close()


def test_partition_loses_and_finds_the_peer(make_lab: MakeLab, tmp_path: Path) -> None:
    require_netns()
    lab = make_lab()
    lab.add_host("ra", [0])
    lab.add_host("rb", [0])
    key = key_file(tmp_path / "mesh.key")
    a, b = start(lab, tmp_path, "ra", key), start(lab, tmp_path, "rb", key)
    b_id = b.status()["node_id"]
    wait_for(lambda: b_id in mesh(a)["peers"], what="A hears B")

    lab.set_link("rb", 0, up=False)  # B out of range; its own interface stays up
    wait_for(lambda: b_id not in mesh(a)["peers"], what="A loses B")
    wa = a.ws(a.user("ann"))
    wa.send({"type": "send", "text": "nobody on B hears this", "client_id": "p"})
    wa.recv_type("ack")
    time.sleep(QUIET_BEACONS * float(BEACON))
    assert b.status()["accounts"] == 0 and log_ids(b) == []

    lab.set_link("rb", 0, up=True)
    wait_for(lambda: b_id in mesh(a)["peers"], what="A hears B again")
    wa.close()
