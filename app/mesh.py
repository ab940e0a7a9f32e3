"""What the chat needs from the mesh, and the mesh of a lone router.

The chat is given one ``Mesh`` when it is made (app/server.py): a
``MeshLink`` (app/meshlink.py) on a router with neighbours, ``NoMesh`` on a
router on its own.  Layers call down, events come up: the chat calls the
mesh to send what it made here and to ask what the mesh knows; what the mesh
hears reaches the chat through the link calling ``Chat.receive_records`` and
``Chat.presence_changed``, from the transport's own greenlets, never from
inside a send.
"""

from __future__ import annotations

from typing import Any, Protocol

from node.record import Record

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


class NoMesh:
    """A router on its own: sends nothing, hears nobody."""

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
