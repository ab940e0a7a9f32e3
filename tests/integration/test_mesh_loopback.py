"""Three real routers on loopback share chat, accounts and presence."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import room_log_name
from tests.helpers import Router, free_port, free_udp_port, routers, wait_for

BEACON = "0.3"  # seconds: presence converges within a second


def mesh_args(tmp_path: Path, port: int, key: str | None = None) -> list[str]:
    key_file = tmp_path / f"mesh-{port}.key"
    if not key_file.exists():
        key_file.write_text((key or secrets.token_hex(32)) + "\n")
    return ["--mesh-port", str(port), "--mesh-key-file", str(key_file), "--beacon-interval", BEACON]


@pytest.fixture
def mesh3(tmp_path: Path) -> Iterator[list[Router]]:
    # A mesh port of its own per test: parallel runs never hear each other.
    with routers(tmp_path, "ra", "rb", "rc", extra=mesh_args(tmp_path, free_udp_port())) as rs:
        yield rs


def test_account_message_and_presence_cross_routers(mesh3: list[Router]) -> None:
    a, b, c = mesh3
    ann = a.user("ann")
    # The account record replicates: ann logs in on C without registering there.
    wait_for(lambda: c.status()["accounts"] == 1, what="account on C")
    ann_c = c.user("ann", register=False)
    cat = c.user("cat")
    wait_for(lambda: b.status()["accounts"] == 2, what="accounts on B")
    bob = b.user("bob")
    wa, wc, wb = a.ws(ann), c.ws(cat), b.ws(bob)
    wa.send({"type": "send", "text": "from A to everyone", "client_id": "x"})
    ack = wa.recv_type("ack")
    got = wc.recv_until(lambda f: f.get("type") == "message")
    assert got["id"] == ack["id"] and got["node"] == "ra" and got["author"] == "ann"
    assert got["text"] == "from A to everyone"
    assert wb.recv_type("message")["id"] == ack["id"]
    # ...and is in C's log on disk.
    lines = (c.data_dir / room_log_name(1)).read_text().splitlines()
    assert [json.loads(ln)["id"] for ln in lines] == [ack["id"]]
    # Presence on B lists the users of A and C with their routers.
    expected = [
        {"user": "ann", "node": "ra"},
        {"user": "bob", "node": "rb"},
        {"user": "cat", "node": "rc"},
    ]
    wb.recv_until(lambda f: f.get("type") == "presence" and f["users"] == expected)
    # Exactly once everywhere, even though every router relays.
    time.sleep(1)
    for r in mesh3:
        assert r.status()["rooms"]["1"] == 1
    wa.close()
    wb.recv_until(
        lambda f: f.get("type") == "presence" and {"user": "ann", "node": "ra"} not in f["users"]
    )
    del ann_c
    for w in (wb, wc):
        w.close()


def test_status_lists_peers_and_vectors(mesh3: list[Router]) -> None:
    a, b, c = mesh3
    a.user("ann")
    st = wait_for(
        lambda: (s := b.status()) and len(s["mesh"]["peers"]) == 2 and s, what="two peers"
    )
    a_id, c_id = a.status()["node_id"], c.status()["node_id"]
    assert set(st["mesh"]["peers"]) == {a_id, c_id}
    wait_for(
        lambda: b.status()["mesh"]["peers"][a_id]["vector"].get(a_id) == 1,
        what="A's vector in B's beacon view",
    )
    peer = b.status()["mesh"]["peers"][a_id]
    assert peer["name"] == "ra" and peer["addr"].startswith("127.0.0.1:")
    assert b.status()["vector"][a_id] == 1
    assert st["mesh"]["datagrams"]["received"] > 0


def test_wrong_key_is_heard_by_nobody(tmp_path: Path) -> None:
    port = free_udp_port()
    good = mesh_args(tmp_path, port)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = mesh_args(bad_dir, port)  # same group and port, another key
    with (
        routers(tmp_path, "ga", "gb", extra=good) as (ga, gb),
        routers(bad_dir, "evil", extra=bad) as (evil,),
    ):
        w = evil.ws(evil.user("eve"))
        w.send({"type": "send", "text": "spoofed", "client_id": "e"})
        w.recv_type("ack")
        wait_for(
            lambda: ga.status()["mesh"]["datagrams"]["dropped"].get("bad_mac", 0) > 0,
            what="bad MAC drops",
        )
        time.sleep(0.5)
        for r in (ga, gb):
            st = r.status()
            assert st["accounts"] == 0 and st["rooms"]["1"] == 0
            assert evil.status()["node_id"] not in st["mesh"]["peers"]
        assert ga.status()["node_id"] in gb.status()["mesh"]["peers"]
        w.close()


def test_no_mesh_flag_runs_a_lone_router(tmp_path: Path) -> None:
    r = Router(tmp_path / "lone" / "data", free_port(), "lone", ["--no-mesh"])
    r.data_dir.mkdir(parents=True)
    r.start()
    try:
        assert r.status()["mesh"] is None
        assert not (r.data_dir / "mesh.key").exists()
    finally:
        r.stop()
