"""Issue #14, item 4: one version vector, the store's.

A record the chat refuses is settled in the store as gone for good (in its
vector and ``dead``): answered as GONE, and never asked for again, not even
after a restart, so a peer that holds it cannot pull us into a catch-up loop.
Real Store, Chat and MeshLink (sockets on ``lo``, never started); the
protocol is fed by hand.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from app.chat import Chat, make_clock
from app.config import Config
from app.meshlink import MeshLink
from node.clock import pack
from node.record import Record, RecordKind
from node.store import Store
from node.wire import BeaconDatagram, RecordDatagram, RequestDatagram, parse
from tests.helpers import free_udp_port

PEER = "00000000000000b1"
PEER_ADDR = ("127.0.0.1", 40999)
WALL_MS = 1_700_000_000_000
_COUNTER = itertools.count(1)


def sealed(datagram, key: bytes) -> bytes:
    return replace(datagram, counter=next(_COUNTER)).serialize(key)


def drain(protocol) -> list:
    out = []
    for _ in range(1000):
        event = protocol.next_event()
        if event is None:
            break
        out.append(event)
    return out


def linked(tmp_path, port: int) -> tuple[Store, Chat, MeshLink]:
    """A router as app/server.py makes one; its link started on ``lo``."""
    config = Config(data_dir=tmp_path, node_name="here", mesh_port=port, mesh_iface=["lo"])
    store = Store(tmp_path, config.rooms)
    clock = make_clock(store)
    link = MeshLink(config, store, clock)
    chat = Chat(store, "here", mesh=link, clock=clock)
    link.start(chat)
    return store, chat, link


def test_a_refused_record_is_gone_for_good_and_never_asked_for_again(tmp_path):
    port = free_udp_port()
    body = {"author": "ana", "node": "there", "time": WALL_MS, "text": "no such room"}
    refused = Record(PEER, 1, pack(WALL_MS, 0), RecordKind.MESSAGE, 99, body)
    store, chat, link = linked(tmp_path, port)
    try:
        key, p = link.protocol.keys[0], link.protocol
        datagram = sealed(RecordDatagram(PEER, refused, hops=1), key)
        p.receive_datagram(datagram, PEER_ADDR, link.now())
        link.handle_events(drain(p))
        assert chat.refused["no_such_room"] == 1
        assert (PEER, 1) in store.vector  # settled: gone for good, not lacking
        assert store.gone_through(PEER, 1) == 1  # answered as GONE to whoever asks
    finally:
        link.stop()
        store.close()
    # After a restart a peer claims it: nobody is asked for it.
    store, chat, link = linked(tmp_path, port)
    try:
        key, p = link.protocol.keys[0], link.protocol
        beacon = BeaconDatagram(PEER, "there", 7, {PEER: 1}, seq=1)
        p.receive_datagram(sealed(beacon, key), PEER_ADDR, link.now())
        sent = [parse(data, [key]) for data, _ in p.datagrams_to_send(link.now())]
        assert PEER in p.peers
        assert [d for d in sent if isinstance(d, RequestDatagram)] == []
    finally:
        link.stop()
        store.close()
