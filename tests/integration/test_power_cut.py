"""Issue #13, item 8: a power cut must not split the mesh for good.

Two real routers on loopback.  A posts, B receives; then A loses power:
``kill -9`` and its room log cut back to the last fsync (the last second is
lost).  B is switched off meanwhile (a clean stop: it keeps everything), so
A restarts alone and posts before anyone can tell it what it lost, the case
where a seq would be reused.  B comes back.  No id may name two different
messages, and both routers end with the same vectors and the same messages.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from node.store import room_log_name
from tests.helpers import Router, loopback_mesh, routers, wait_for

CONVERGE = 30.0  # seconds: catch-up on loopback takes well under one


def messages(router: Router) -> dict[str, str]:
    """Id -> text of room 1, from the log on disk (every line is flushed)."""
    path = router.data_dir / room_log_name(1)
    lines = path.read_text().splitlines() if path.exists() else []
    return {obj["id"]: obj["body"]["text"] for obj in map(json.loads, lines)}


def say(router: Router, text: str) -> str:
    """Post ``text`` in room 1 as ann; the id the router gave it."""
    ws = router.ws(router.user("ann", register=False))
    try:
        ws.send({"type": "send", "text": text, "client_id": text})
        return ws.recv_type("ack")["id"]
    finally:
        ws.close()


def test_power_cut_never_reuses_an_id_and_the_mesh_converges(tmp_path: Path) -> None:
    with routers(tmp_path, "pa", "pb", extra=loopback_mesh(tmp_path)) as (a, b):
        a.user("ann")
        wait_for(lambda: b.status()["accounts"] == 1, what="ann's account on B")
        before = [say(a, f"before {k}") for k in range(3)]
        wait_for(lambda: set(before) <= set(messages(b)), what="B holds A's messages")
        b.stop()
        a.stop(signal.SIGKILL)
        log = a.data_dir / room_log_name(1)
        kept = log.read_bytes().splitlines(keepends=True)[:1]  # the last two unsynced
        log.write_bytes(b"".join(kept))
        a.start()
        after = say(a, "after the power cut")
        b.start()
        later = say(a, "once B is back")
        held_by_b = messages(b)
        assert held_by_b.get(after, "after the power cut") == "after the power cut", (
            f"{after} names another message on B: {held_by_b[after]!r}"
        )

        def same() -> bool:
            sa, sb = a.status(), b.status()
            return sa["vector"] == sb["vector"] and messages(a) == messages(b)

        wait_for(same, timeout=CONVERGE, what="identical vectors and messages")
        final = messages(a)
        assert final[after] == "after the power cut" and final[later] == "once B is back"
        assert [final[i] for i in before] == [f"before {k}" for k in range(3)]
        assert len(set(final.values())) == len(final) == 5
