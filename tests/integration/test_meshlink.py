"""The chat's mesh link in-process, on real loopback sockets: layers call
down, events come up.  A post or a presence change only sends; what the
mesh heard meanwhile reaches the chat on the transport's own path."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.chat import Chat, make_clock
from app.config import Config
from app.meshlink import MeshLink
from node.store import Store
from tests.helpers import free_udp_port


@dataclass
class Node:
    chat: Chat
    link: MeshLink


def make_node(tmp_path: Path, name: str, port: int, key: Path) -> Node:
    config = Config(
        data_dir=tmp_path / name, node_name=name, mesh_port=port, mesh_key_file=key, rooms=2
    )
    store = Store(config.data_dir, config.rooms)
    clock = make_clock(store)
    link = MeshLink(config, store, clock)
    return Node(Chat(store, name, mesh=link, clock=clock), link)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    key = tmp_path / "mesh.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    port = free_udp_port()  # a group port of this test's own
    a, b = make_node(tmp_path, "a", port, key), make_node(tmp_path, "b", port, key)
    for node in (a, b):
        # Its greenlets run only when a test yields to gevent, and these
        # never do: the test plays the transport's part by calling pump().
        node.link.start(node.chat)
    yield a, b
    for node in (a, b):
        node.link.stop()
        node.chat.store.close()


def hear_from(listener: Node, sender: Node, text: str) -> None:
    """``sender`` posts; ``listener``'s protocol takes the datagram in, as its
    reader greenlet would, and holds the event for the transport to hand out."""
    record = sender.chat.post("bob", 1, text)
    now = sender.link.now()
    sender.link.protocol.send_record(record, now)
    datagrams = sender.link.protocol.datagrams_to_send(now)
    assert datagrams, "the record is queued to go out"
    for data, _dest in datagrams:
        listener.link.protocol.receive_datagram(data, sender.link.transport.unicast_address, now)


def test_a_post_does_not_take_in_what_the_mesh_heard(pair: tuple[Node, Node]) -> None:
    a, b = pair
    hear_from(a, b, "from b")
    a.chat.post("ann", 1, "from a")
    assert a.chat.store.count(1) == 1, "a post only sends: b's record waits for the transport"
    a.link.transport.pump()  # the transport's own path: its reader or timer greenlet
    assert a.chat.store.count(1) == 2


def test_a_presence_change_does_not_take_in_what_the_mesh_heard(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    hear_from(a, b, "from b")
    a.chat.local_presence_changed(1)
    assert a.chat.store.count(1) == 0
    a.link.transport.pump()
    assert a.chat.store.count(1) == 1
