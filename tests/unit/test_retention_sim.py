"""Retention across a simulated mesh whose nodes keep real stores: purge at
the horizon on every node; a node that slept through the purge rejoins and
nothing old comes back anywhere; a wiped node catching up from the sleeper
takes nothing old either.  Virtual time, no sleeping."""

from __future__ import annotations

from pathlib import Path

from node.clock import pack
from node.record import Record
from node.store import Store
from tests.unit.mesh_sim import Mesh

RETENTION_S = 60.0


class StoreSource:
    """A real ``node.store.Store`` behind a simulated node."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path, rooms=1)

    def put(self, record: Record) -> None:
        self.store.append(record)  # refuses what is past the horizon

    def get(self, origin: str, seq: int) -> Record | None:
        return self.store.get(origin, seq)

    def gone_through(self, origin: str, seq: int) -> int:
        return self.store.gone_through(origin, seq)

    def ids(self) -> set[tuple[str, int]]:
        return set(self.store.index)

    @property
    def records(self) -> dict[tuple[str, int], Record]:
        return dict(self.store.index)


def purge(mesh: Mesh, i: int) -> int:
    """What the app's purge loop does on node i, at the mesh's virtual now."""
    horizon_ms = int((mesh.now - RETENTION_S) * 1000)
    return mesh.nodes[i].source.store.expire(pack(horizon_ms, 0))


def test_nothing_old_comes_back_after_a_purge(tmp_path: Path) -> None:
    mesh = Mesh.full(4, beacon_interval=1.0)
    for i, node in enumerate(mesh.nodes):
        node.source = StoreSource(tmp_path / str(i))
        node.protocol.sync.responder.source = node.source  # answer from the store
    mesh.nodes[3].up = False  # D joins later, wiped
    old = [mesh.send(i % 3, f"old {i}") for i in range(30)]
    mesh.run_for(5)
    for i in range(3):
        assert {(r.origin, r.seq) for r in old} <= mesh.nodes[i].source.ids()
    mesh.nodes[2].up = False  # C sleeps through the purge, old records on disk
    mesh.run_for(RETENTION_S + 10)
    assert purge(mesh, 0) == 30 and purge(mesh, 1) == 30
    new = [mesh.send(0, f"new {i}") for i in range(5)]
    mesh.run_for(3)
    before = {i: len(mesh.nodes[i].records()) for i in range(2)}
    # C wakes with its old store (it has not purged yet: the worst case).
    mesh.nodes[2].up = True
    mesh.run_for(10)
    old_ids = {(r.origin, r.seq) for r in old}
    for i in (0, 1):
        got = mesh.nodes[i].records()[before[i] :]
        assert not {(r.origin, r.seq) for r in got} & old_ids, f"node {i} took old records"
        assert not mesh.nodes[i].source.ids() & old_ids
    assert {(r.origin, r.seq) for r in new} <= mesh.nodes[2].source.ids()
    # D starts wiped, its horizon set by its own clock, and catches up from
    # everyone, C included: it takes the new records and none of the old.
    d = mesh.restart(3, wipe=True)
    d.source = StoreSource(tmp_path / "d")
    d.protocol.sync.responder.source = d.source
    purge(mesh, 3)
    d.up = True
    mesh.run_for(10)
    assert {(r.origin, r.seq) for r in new} <= d.source.ids()
    assert not d.source.ids() & old_ids
