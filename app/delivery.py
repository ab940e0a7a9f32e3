"""Delivery state of the messages people post here: seen by N other routers.

A message is "sent" once it is in this router's log (the page's ``ack``).
After that, the beacons of the routers in range say what they hold (their
version vector ``{origin: highest contiguous seq}``, or a digest equal to
ours): a router whose vector holds our seq for our origin has the message.
Since wire version 2 (issue #12) beacons are not relayed, so the count is of
neighbouring routers, and it grows as their beacons come (Trickle: soon after
a change, at most ``BEACON_INTERVAL`` when the mesh is quiet).  Once a
second the tracker counts, for each message posted here in the last few
minutes, the routers that have it, and tells the sender's pages in that room when the count grows:
``{"type":"seen","id","routers":n}``.  A page that connects (a reload) gets
the counts of its user's tracked messages after its history.

Memory is bounded: at most ``TRACK_MAX`` messages, none older than
``TRACK_SECONDS``.  The vectors come from the chat's mesh (app/mesh.py
``Mesh.peer_vectors``); a lone router has none and says nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from app.accounts import name_key
from app.hub import Client, Hub
from app.mesh import Vectors
from node.record import Record

# Long enough for a router that was briefly out of reach to catch up and say
# so in a beacon; the page's interest in a tick fades well before.
TRACK_SECONDS = 300.0
TRACK_MAX = 500  # messages tracked at most (2/s per user: a busy router)
CHECK_INTERVAL = 1.0  # beacons come every few seconds; a second is prompt enough


@dataclass
class Tracked:
    origin: str
    seq: int
    room: int
    author: str
    posted: float
    routers: int = 0

    @property
    def id(self) -> str:
        return f"{self.origin}:{self.seq}"

    def frame(self) -> dict[str, object]:
        return {"type": "seen", "id": self.id, "routers": self.routers}


class DeliveryTracker:
    def __init__(
        self,
        hub: Hub,
        vectors: Callable[[], Vectors],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.vectors = vectors  # the other routers' vectors, now
        self.clock = clock  # monotonic: how long a message has been tracked
        self.tracked: deque[Tracked] = deque(maxlen=TRACK_MAX)

    def track(self, record: Record) -> None:
        """A message posted on this router, stored and acknowledged."""
        self.tracked.append(
            Tracked(
                record.origin, record.seq, record.room, str(record.body.get("author")), self.clock()
            )
        )

    def check(self) -> int:
        """Count the routers holding each tracked message; tell the sender's
        pages of every count that grew.  Returns how many frames went out."""
        now = self.clock()
        while self.tracked and now - self.tracked[0].posted > TRACK_SECONDS:
            self.tracked.popleft()
        if not self.tracked:
            return 0
        vectors = list(self.vectors().values())
        sent = 0
        for t in self.tracked:
            n = sum(1 for v in vectors if v.get(t.origin, 0) >= t.seq)
            if n > t.routers:
                t.routers = n
                sent += self._send(t)
        return sent

    def _send(self, t: Tracked) -> int:
        key = name_key(t.author)
        clients = [c for c in self.hub.rooms.get(t.room, ()) if name_key(c.user) == key]
        for client in clients:
            client.send(t.frame())
        return len(clients)

    def replay(self, client: Client) -> None:
        """A page just connected: the counts of its user's messages so far."""
        key = name_key(client.user)
        for t in self.tracked:
            if t.routers and t.room == client.room and name_key(t.author) == key:
                client.send(t.frame())

    def run_forever(self) -> None:
        while True:
            gevent.sleep(CHECK_INTERVAL)
            self.check()
