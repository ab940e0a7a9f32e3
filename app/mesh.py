"""What the chat needs from the mesh, and the mesh of a lone router.

The chat is given one ``Mesh`` when it is made (app/server.py): a
``MeshLink`` (app/meshlink.py) on a router with neighbours, ``NoMesh`` on a
router on its own, ``Meshes`` when the radio mesh has a bridge to other
meshes beside it (app/bridge.py): every call fans out to each.  Layers
call down, events come up: the chat calls the mesh to send what it made
here and to ask what the mesh knows; what the mesh hears reaches the chat
through the link calling ``Chat.receive_records`` and
``Chat.presence_changed``, from the transport's own greenlets, never from
inside a send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from node.record import Record

if TYPE_CHECKING:
    from app.chat import Chat

# {node id: {origin: highest contiguous seq}}: the other routers' version
# vectors, as their beacons carry them.
Vectors = dict[str, dict[str, int]]


class Mesh(Protocol):
    def send_record(self, record: Record) -> None:
        """A record made and stored here: out to the other routers."""

    def set_presence(self, presence: dict[int, list[str]]) -> None:
        """Who is online here, per room."""

    def presence(self, room: int) -> list[tuple[str, str]]:
        """``(user, router name)`` online in ``room`` on the other routers."""

    def peer_vectors(self) -> Vectors:
        """The other routers' version vectors."""

    def status(self) -> dict[str, Any] | None:
        """The mesh's part of /status; None without a mesh."""


@runtime_checkable
class BlobPeers(Protocol):
    """A mesh that knows where its neighbours are: the routers a blob this
    router lacks is fetched from (app/blobfetch.py, over HTTP on the chat's
    port).  The bridge has no such neighbours: blobs do not cross it."""

    def peer_addresses(self) -> dict[str, str]:
        """``{node id: host}`` of the routers in range, as their datagrams come."""


class NoMesh:
    """A router on its own: sends nothing, hears nobody."""

    def peer_addresses(self) -> dict[str, str]:
        return {}

    def send_record(self, record: Record) -> None:
        pass

    def set_presence(self, presence: dict[int, list[str]]) -> None:
        pass

    def presence(self, room: int) -> list[tuple[str, str]]:
        return []

    def peer_vectors(self) -> Vectors:
        return {}

    def status(self) -> dict[str, Any] | None:
        return None


class Link(Mesh, Protocol):
    """A mesh with a life of its own: started with the chat it hands to."""

    def start(self, chat: Chat) -> None: ...

    def stop(self) -> None: ...


class Meshes:
    """Several links as one mesh: the radio mesh first, then bridges.

    A record made here goes to every link; what each hears reaches the chat
    by itself.  Presence and peers are the union.  /status shows the first
    link's part as it always did, and each further one under its name.
    """

    def __init__(self, links: Sequence[tuple[str, Link]]) -> None:
        if not links:
            raise ValueError("Meshes needs at least one link")
        self.links = list(links)

    def start(self, chat: Chat) -> None:
        for _, link in self.links:
            link.start(chat)

    def stop(self) -> None:
        for _, link in reversed(self.links):
            link.stop()

    def send_record(self, record: Record) -> None:
        for _, link in self.links:
            link.send_record(record)

    def set_presence(self, presence: dict[int, list[str]]) -> None:
        for _, link in self.links:
            link.set_presence(presence)

    def presence(self, room: int) -> list[tuple[str, str]]:
        return [p for _, link in self.links for p in link.presence(room)]

    def peer_addresses(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for _, link in reversed(self.links):  # the first link's view wins
            if isinstance(link, BlobPeers):
                found.update(link.peer_addresses())
        return found

    def peer_vectors(self) -> Vectors:
        vectors: Vectors = {}
        for _, link in reversed(self.links):  # the first link's view wins
            vectors.update(link.peer_vectors())
        return vectors

    def status(self) -> dict[str, Any] | None:
        (first_name, first), *rest = self.links
        status = dict(first.status() or {}) if first_name == "radio" else {}
        if first_name != "radio":
            rest = self.links
        for name, link in rest:
            status[name] = link.status()
        return status
