"""The chat's mesh (app/mesh.py ``Mesh``) over the multicast transport.

Layers call down, events come up.  The link is made before the chat, from
the store and the hybrid clock the two share (node/protocol.py moves it past
every record heard from a peer); the chat is given the link as its mesh, and
``start(chat)`` names where what the mesh hears goes as the sockets start.
Events reach the chat only from the transport's own greenlets
(``handle_events``).  Sending only sends: a record or a presence change is
queued and what is queued is flushed; what the mesh heard meanwhile waits
for the transport, so a post never re-enters ``Chat.receive_records``.

The protocol reads the store's version vector and never writes it: every
record it hands up is settled here, stored or refused (``Store.note_refused``).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from app.config import Config
from app.mesh import Vectors
from node.clock import HybridClock
from node.keys import load_or_make_keys
from node.protocol import (
    MeshConfig,
    MeshProtocol,
    PeerJoined,
    PeerLost,
    PresenceChanged,
    RecordReceived,
)
from node.record import Record
from node.store import Store
from node.sync import CatchUpFinished, RecordsGone
from node.transport import MeshTransport

if TYPE_CHECKING:
    from app.chat import Chat

log = logging.getLogger(__name__)


class MeshLink:
    def __init__(self, config: Config, store: Store, clock: HybridClock) -> None:
        self.store = store
        self._chat: Chat | None = None  # where events go, from start()
        # The store's vector is the one truth: the protocol reads it, and
        # every record it hands us is settled in it (handle_events).
        self.protocol = MeshProtocol(
            MeshConfig(
                node_id=store.node_id,
                node_name=config.node_name,
                keys=tuple(load_or_make_keys(config.key_file)),
                beacon_interval=config.beacon_interval,
                mtu=config.mesh_mtu,
                catchup_rate=config.catchup_rate,
            ),
            clock=clock,
            known=store.vector,
            rng=random.SystemRandom(),
            source=store,
            recover_own=store.recovery,
        )
        self.transport = MeshTransport(
            self.protocol,
            interfaces=config.interfaces,
            group=config.mesh_group,
            port=config.mesh_port,
            ttl=config.mesh_ttl,
            unicast_port=config.mesh_unicast_port,
            on_events=self.handle_events,
        )

    def now(self) -> float:
        """The protocol's time: the clock the transport drives it with."""
        return self.transport.monotonic()

    def start(self, chat: Chat) -> None:
        """Hand what the mesh hears to ``chat`` from now on, and start."""
        self._chat = chat
        self.transport.start()
        log.info(
            "mesh: group %s:%d on %s, unicast %s:%d",
            self.transport.group,
            self.transport.port,
            ",".join(self.transport.ifindex),
            *self.transport.unicast_address,
        )

    def stop(self) -> None:
        self.transport.stop()

    # -- the chat's Mesh: calls down, sending only ---------------------------------

    def send_record(self, record: Record) -> None:
        self.protocol.send_record(record, self.now())
        self.transport.flush()

    def set_presence(self, presence: dict[int, list[str]]) -> None:
        self.protocol.set_presence(presence, self.now())
        self.transport.flush()

    def presence(self, room: int) -> list[tuple[str, str]]:
        return self.protocol.presence().get(room, [])

    def peer_vectors(self) -> Vectors:
        """Our neighbours' vectors (and those far routers with users online
        that sent one): since wire version 2 beacons are not relayed, so
        "seen by N routers" counts the routers in range that hold it."""
        return {n: node.vector for n, node in self.protocol.nodes.items()}

    # -- events up, from the transport's greenlets -----------------------------------

    def handle_events(self, events: list[Any]) -> None:
        chat = self._chat
        if chat is None:
            raise RuntimeError("mesh events before start(chat)")
        records = [e.record for e in events if isinstance(e, RecordReceived)]
        if records:
            chat.receive_records(records)
        # Refused here: gone for good, never asked for again.
        refused = [r for r in records if (r.origin, r.seq) not in self.store.vector]
        for r in refused:
            self.store.note_refused(r.origin, r.seq)
        gone = [e for e in events if isinstance(e, RecordsGone)]
        for event in gone:
            self.store.note_gone(event.origin, event.first, event.last)
        if gone or not refused:  # refusals ride with the next save: a flood of them costs no fsync
            self.store.save_state_if_changed()
        if any(isinstance(e, PresenceChanged) for e in events):
            for room in range(1, chat.rooms + 1):
                chat.presence_changed(room)
        for event in events:
            self.log_event(event)

    def log_event(self, event: Any) -> None:
        if isinstance(event, CatchUpFinished):
            log.info(
                "catch-up from %s %s: %d records",
                self._name(event.peer),
                "complete" if event.complete else "stopped",
                event.records,
            )
        elif isinstance(event, PeerJoined):
            log.info("mesh: peer %s (%s) at %s:%d", event.name, event.node_id, *event.addr)
        elif isinstance(event, PeerLost):
            log.info("mesh: lost peer %s (%s)", event.name, event.node_id)

    def _name(self, node_id: str) -> str:
        node = self.protocol.nodes.get(node_id)
        return f"{node.name} ({node_id})" if node else node_id

    def status(self) -> dict[str, Any]:
        p, now = self.protocol, self.now()
        ours = self.store.vector.as_dict()
        return {
            "group": f"{self.transport.group}:{self.transport.port}",
            "interfaces": list(self.transport.ifindex),
            "unicast": "{}:{}".format(*self.transport.unicast_address),
            "peers": {
                node_id: {
                    "name": peer.name,
                    "addr": "{}:{}".format(*peer.addr),
                    "last_heard_s": round(now - peer.last_heard, 3),
                    "iface": peer.iface,
                    "vector": peer.vector,
                    "behind_us": {
                        o: n - peer.vector.get(o, 0)
                        for o, n in ours.items()
                        if n > peer.vector.get(o, 0)
                    },
                    "ahead_of_us": {
                        o: n - ours.get(o, 0) for o, n in peer.vector.items() if n > ours.get(o, 0)
                    },
                }
                for node_id, peer in sorted(p.peers.items())
            },
            "nodes": {
                node_id: {
                    "name": node.name,
                    "hops": node.hops,
                    "via": node.via,
                    "last_heard_s": round(now - node.last_heard, 3),
                    "vector": node.vector,
                }
                for node_id, node in sorted(p.nodes.items())
            },
            "datagrams": {
                "sent": p.sent,
                "received": p.received,
                "relayed": p.relayed,
                "relayed_beacons": p.relayed_beacons,
                "looped": p.looped,
                "dropped": dict(p.dropped),
                "send_errors": dict(self.transport.errors),
            },
            # Routers still speaking the old wire version: upgrade them (README).
            "old_version": p.old_version,
            "beacons": p.beacon_status(),
            "clock": {"clamped": p.clock.clamped},
            "limits": p.limits_status(),
            "sync": p.sync_status(),
        }

    def peer_addresses(self) -> dict[str, str]:
        """Where the routers in range are (app/mesh.py ``BlobPeers``): the
        host their own datagrams come from, for fetching blobs."""
        return {node_id: peer.addr[0] for node_id, peer in self.protocol.peers.items()}
