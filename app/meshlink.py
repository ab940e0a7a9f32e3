"""Wires the chat to the mesh: local records and presence out, peers' in.

The protocol (node/protocol.py) shares the chat's hybrid clock, so a record
heard from a peer moves our clock past it; it gets its own copy of the
version vector, since it marks a record seen before the chat stores it.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from typing import Any

from app.chat import Chat
from app.config import Config
from node.keys import load_or_make_keys
from node.protocol import MeshProtocol, PeerJoined, PeerLost, PresenceChanged, RecordReceived
from node.record import VersionVector
from node.sync import CatchUpFinished, RecordsGone
from node.transport import MeshTransport

log = logging.getLogger(__name__)


class MeshLink:
    def __init__(self, config: Config, chat: Chat) -> None:
        self.chat = chat
        # The protocol's own copy: it marks a record seen before the chat
        # stores it.  It includes what is gone here (purged, deleted), so a
        # restart does not ask the mesh for it again.
        known: VersionVector = copy.deepcopy(chat.store.vector)
        self.protocol = MeshProtocol(
            node_id=chat.node_id,
            node_name=config.node_name,
            keys=load_or_make_keys(config.key_file),
            clock=chat.clock,
            known=known,
            rng=random.SystemRandom(),
            beacon_interval=config.beacon_interval,
            mtu=config.mesh_mtu,
            source=chat.store,
            catchup_rate=config.catchup_rate,
            recover_own=chat.store.recovery,
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
        chat.on_local_record = self.send_record
        chat.on_local_presence = self.send_presence
        chat.remote_presence = lambda room: self.protocol.presence().get(room, [])
        chat.mesh_status = self.status
        chat.peer_vectors = lambda: {n: node.vector for n, node in self.protocol.nodes.items()}

    def start(self) -> None:
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

    def send_record(self, record: Any) -> None:
        self.protocol.send_record(record, time.time())
        self.transport.pump()

    def send_presence(self, presence: dict[int, list[str]]) -> None:
        self.protocol.set_presence(presence, time.time())
        self.transport.pump()

    def handle_events(self, events: list[Any]) -> None:
        records = [e.record for e in events if isinstance(e, RecordReceived)]
        if records:
            self.chat.receive_records(records)
        for event in events:
            if isinstance(event, RecordsGone):
                self.chat.store.note_gone(event.origin, event.first, event.last)
        self.chat.store.save_state_if_changed()
        if any(isinstance(e, PresenceChanged) for e in events):
            for room in range(1, self.chat.rooms + 1):
                self.chat.presence_changed(room)
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
        p, now = self.protocol, time.time()
        ours = self.chat.store.vector.as_dict()
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
            "clock": {"clamped": p.clock.clamped, "jumps": p.clock_jumps},
            "limits": p.limits_status(),
            "sync": p.sync_status(),
        }
