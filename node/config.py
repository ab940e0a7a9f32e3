"""The mesh node's settings: one frozen object, one set of defaults.

How this works: ``MeshConfig`` is what a ``MeshProtocol`` is (its id, name
and keys) and how it behaves (intervals, hops, MTU, pacing), checked once
when made: a bad value is our own misuse and raises ``ValueError``.  The
defaults are the constants of the modules that explain them; app/config.py
takes its mesh defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.fragment import DEFAULT_MTU, piece_size
from node.nodes import BEACON_INTERVAL, PEER_TIMEOUT_INTERVALS
from node.record import ORIGIN_RE
from node.sync import CATCHUP_RATE
from node.wire import HOPS_MAX

# Hops-left on a new record.  Each router relays a record at most once (it
# drops what it holds) and suppression cancels most relays (node/relay.py), so
# the limit bounds no cost; it only stops a flood somewhere, and past it the
# beacons' digests carry the record on hop by hop (node/trickle.py).  16 is
# more links than a neighbourhood mesh is across (200 routers on a unit-disk
# graph of mean degree 8: about 15), so the repair path is for loss.
DEFAULT_HOP_LIMIT = 16

__all__ = ["BEACON_INTERVAL", "CATCHUP_RATE", "DEFAULT_HOP_LIMIT", "DEFAULT_MTU", "MeshConfig"]


@dataclass(frozen=True, slots=True)
class MeshConfig:
    node_id: str  # 16 lowercase hex digits (node/store.py makes it)
    node_name: str  # shown to people; checked by the beacon that carries it
    keys: tuple[bytes, ...]  # mesh keys, the current one first (node/keys.py)
    beacon_interval: float = BEACON_INTERVAL
    hop_limit: int = DEFAULT_HOP_LIMIT
    mtu: int = DEFAULT_MTU
    catchup_rate: float = CATCHUP_RATE  # bytes/s of catch-up answers

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        if not ORIGIN_RE.fullmatch(self.node_id):
            raise ValueError(f"node_id must be 16 lowercase hex digits: {self.node_id!r}")
        if not self.keys or not all(isinstance(k, bytes) and k for k in self.keys):
            raise ValueError("keys: one or more non-empty bytes, the current key first")
        if not self.beacon_interval > 0:
            raise ValueError(f"beacon_interval must be positive: {self.beacon_interval}")
        if not 1 <= self.hop_limit <= HOPS_MAX:
            raise ValueError(f"hop_limit must be 1..{HOPS_MAX}: {self.hop_limit}")
        piece_size(self.mtu)  # raises ValueError for an impossible mtu
        if not self.catchup_rate > 0:
            raise ValueError(f"catchup_rate must be positive: {self.catchup_rate}")

    @property
    def peer_timeout(self) -> float:
        """A node silent this long is gone (node/nodes.py)."""
        return PEER_TIMEOUT_INTERVALS * self.beacon_interval
