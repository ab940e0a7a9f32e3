"""Retention with real routers: history disappears from the pages, the
status and the logs on disk, and a router that slept through the purge does
not bring anything back."""

from __future__ import annotations

import json
import time
from pathlib import Path

from node.store import room_log_name
from tests.helpers import loopback_mesh, routers, wait_for

RETENTION = 10  # seconds: the shortest the app takes


def log_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(ln)["id"] for ln in path.read_text().splitlines() if ln.strip()]


def test_history_disappears_from_page_status_and_disk(tmp_path: Path) -> None:
    with routers(tmp_path, "ret", extra=["--no-mesh", "--retention", f"{RETENTION}s"]) as (r,):
        ann = r.ws(r.user("ann"))
        ann.send({"type": "send", "text": "short-lived", "client_id": "x"})
        old = ann.recv_type("ack")["id"]
        expired = ann.recv_type("expired", timeout=RETENTION + 8)
        assert int(expired["before_hlc"]) > 0
        assert r.status()["rooms"]["1"] == 0
        wait_for(
            lambda: old not in log_ids(r.data_dir / room_log_name(1)),
            RETENTION + 5,
            "the log rewritten without the expired line",
        )
        ann.send({"type": "send", "text": "fresh", "client_id": "y"})
        fresh = ann.recv_type("ack")["id"]
        assert log_ids(r.data_dir / room_log_name(1)) == [fresh]
        state = json.loads((r.data_dir / "state.json").read_text())
        assert state["dead"][old.split(":")[0]] == [[int(old.split(":")[1])] * 2]


def test_a_router_asleep_during_the_purge_brings_nothing_back(tmp_path: Path) -> None:
    extra = [*loopback_mesh(tmp_path), "--retention", f"{RETENTION}s"]
    with routers(tmp_path, "awake", "asleep", extra=extra) as (awake, asleep):
        ann = awake.ws(awake.user("ann"))
        ann.send({"type": "send", "text": "old news", "client_id": "x"})
        old = ann.recv_type("ack")["id"]
        wait_for(lambda: asleep.status()["rooms"]["1"] == 1, what="old news on the sleeper")
        asleep.stop()  # with the old message in its log
        assert old in log_ids(asleep.data_dir / room_log_name(1))
        ann.recv_type("expired", timeout=RETENTION + 8)
        assert awake.status()["rooms"]["1"] == 0
        asleep.start()  # its clock now says the old message is past the horizon
        wait_for(lambda: asleep.status()["mesh"]["peers"], what="peers again")
        time.sleep(1.5)  # beacons and catch-up had their chance
        for r in (awake, asleep):
            assert r.status()["rooms"]["1"] == 0, r.name
        cat = awake.ws(awake.user("cat"))
        assert cat.recv_type("history")["messages"] == []


def test_max_history_keeps_the_newest_per_room(tmp_path: Path) -> None:
    # --retention 60s: the horizon is checked every 6 s; nothing expires by age.
    with routers(
        tmp_path, "cap", extra=["--no-mesh", "--retention", "60s", "--max-history", "20"]
    ) as (r,):
        ids = []
        for u in range(3):  # each user may post a burst of 10
            w = r.ws(r.user(f"u{u}"))
            for i in range(10):
                w.send({"type": "send", "text": f"{u}-{i}", "client_id": f"c{i}"})
                ids.append(w.recv_until(lambda f: f.get("type") == "ack")["id"])
            w.close()
        wait_for(lambda: r.status()["rooms"]["1"] == 20, 10, "the size guard")
        fresh = r.ws(r.user("reader"))
        kept = [m["id"] for m in fresh.recv_type("history")["messages"]]
        assert kept == ids[-20:]


def test_an_open_direct_conversation_is_told_what_expired(tmp_path: Path) -> None:
    with routers(tmp_path, "ret", extra=["--no-mesh", "--retention", f"{RETENTION}s"]) as (r,):
        ann = r.user("ann")
        r.user("bob")
        to_bob = r.ws(ann, "dm/bob")
        to_bob.recv_type("history")
        to_bob.send({"type": "send", "text": "short-lived secret", "client_id": "x"})
        to_bob.recv_type("ack")
        expired = to_bob.recv_type("expired", timeout=RETENTION + 8)
        assert int(expired["before_hlc"]) > 0
        to_bob.close()
