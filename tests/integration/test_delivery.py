"""Delivery state: a message posted here is "seen by N other routers" once
their beacons' version vectors hold it; the sender's pages are told when N
grows, and again after a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.delivery import TRACK_MAX, TRACK_SECONDS, DeliveryTracker
from app.hub import Hub
from node.record import Record, RecordKind
from tests.helpers import loopback_mesh, routers

ME = "a" * 16


class FakeClient:
    def __init__(self, user: str, room: int) -> None:
        self.user, self.room, self.frames = user, room, []

    def send(self, obj: dict[str, Any]) -> None:
        self.frames.append(obj)


def message(seq: int, author: str = "ann", room: int = 1) -> Record:
    return Record(
        ME,
        seq,
        seq,
        RecordKind.MESSAGE,
        room,
        {"author": author, "node": "here", "time": 1, "text": "hi"},
    )


def test_counts_grow_and_go_to_the_senders_pages_only() -> None:
    hub = Hub(2)
    ann, ann_other_room, bob = FakeClient("Ann", 1), FakeClient("ann", 2), FakeClient("bob", 1)
    hub.rooms[1] |= {ann, bob}
    hub.rooms[2].add(ann_other_room)
    now = [0.0]
    vectors: dict[str, dict[str, int]] = {}
    tracker = DeliveryTracker(hub, dict, clock=lambda: now[0])  # a lone router's: {}
    tracker.track(message(1))
    tracker.track(message(2))
    assert tracker.check() == 0  # a lone router: no vectors, nothing said
    tracker.vectors = lambda: vectors
    vectors.update({"b" * 16: {ME: 1}, "c" * 16: {}})
    assert tracker.check() == 1
    assert ann.frames == [{"type": "seen", "id": f"{ME}:1", "routers": 1}]
    vectors["c" * 16] = {ME: 2}
    tracker.check()
    assert ann.frames[1:] == [
        {"type": "seen", "id": f"{ME}:1", "routers": 2},
        {"type": "seen", "id": f"{ME}:2", "routers": 1},
    ]
    assert tracker.check() == 0  # no growth, no frame
    assert bob.frames == [] and ann_other_room.frames == []
    late = FakeClient("ANN", 1)
    tracker.replay(late)  # type: ignore[arg-type]
    assert [f["routers"] for f in late.frames] == [2, 1]
    # Bounded: old messages and the overflow are forgotten.
    now[0] += TRACK_SECONDS + 1
    tracker.check()
    assert not tracker.tracked
    for seq in range(TRACK_MAX + 10):
        tracker.track(message(seq + 3))
    assert len(tracker.tracked) == TRACK_MAX


def test_seen_by_the_other_router_over_the_mesh(tmp_path: Path) -> None:
    extra = [*loopback_mesh(tmp_path)]
    with routers(tmp_path, "da", "db", extra=extra) as (a, b):
        ann_http = a.user("ann")
        ann = a.ws(ann_http, 1)
        ann.send({"type": "send", "text": "did you get this?", "client_id": "c1"})
        mid = ann.recv_type("ack")["id"]
        seen = ann.recv_type("seen", timeout=8)
        assert seen == {"type": "seen", "id": mid, "routers": 1}
        assert b.status()["rooms"]["1"] == 1
        # A reload hears it again, after the history.
        again = a.ws(ann_http, 1)
        again.recv_type("history")
        assert again.recv_type("seen") == seen
        # Nobody else is told.
        bob = a.ws(a.user("bob"), 1)
        frames = [bob.recv() for _ in range(3)]
        assert "seen" not in [f["type"] for f in frames]
