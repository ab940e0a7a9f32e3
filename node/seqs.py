"""Our own seqs: reserved durably before use, never reused.

How this works: a power cut can take the last second of a log (fsyncs are
batched), and a seq that reached a peer must never name another record.
So ``next`` reserves seqs in blocks of ``SEQ_BLOCK``, written durably to
``SEQ_FILE`` *before* the first seq of a block is used, and a restart
allocates above every seq that may have left.  What was reserved but is not
on disk (``recovery``: used and lost, or never used) is the mesh's to settle:
node/sync.py asks the peers for it and declares the rest gone.  One small
write per block, not per message, and one at a clean stop (``release``,
every log fsynced) that hands back the unused rest, so only a crash leaves a
window.  Seqs stop at ``record.MAX_SEQ`` (the wire's 32 bits): allocating
past it raises ``SeqExhausted``.
"""

from __future__ import annotations

from pathlib import Path

from node.logs import write_atomically
from node.record import MAX_SEQ, VersionVector

SEQ_FILE = "seq.reserved"  # our own seqs are reserved through this one
# Seqs reserved per durable write.  A busy router makes ~100 records/s at
# most (protocol.ORIGIN_RECORDS_PER_S): a write every 10 s at that peak, a
# tenth of the logs' own fsyncs, a few a day in normal use.  After a power
# cut the unused rest of a block is declared gone: one GONE range, whatever
# its length.
SEQ_BLOCK = 1024


class SeqExhausted(RuntimeError):
    """Our origin has used every seq the wire can carry (``MAX_SEQ``)."""


class SeqReservation:
    """The seqs of ``node_id`` reserved through ``SEQ_FILE``."""

    def __init__(self, data_dir: Path, node_id: str, vector: VersionVector) -> None:
        self.path = data_dir / SEQ_FILE
        self.node_id = node_id
        self.vector = vector
        # Reserved through this one; allocation never goes below ``floor``,
        # the reservation found at start.
        self.reserved = self.floor = 0
        # Reserved before the last stop and not on disk: ranges for the mesh
        # to recover or declare gone (node/sync.py).
        self.recovery: list[tuple[int, int]] = []

    def load(self) -> None:
        """Allocation starts above the last reservation; what it held that
        is not on disk is ``recovery`` (call once the logs are loaded).  A
        data folder from before reservations has none: we go on from the
        highest seq held."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return
        if not (
            text.isascii()
            and text.isdigit()
            and len(text) <= len(str(MAX_SEQ))
            and int(text) <= MAX_SEQ
        ):
            raise ValueError(f"{self.path} does not hold a seq (0..{MAX_SEQ}): {text!r}")
        self.reserved = self.floor = int(text)
        self.recovery = self.vector.missing(self.node_id, self.reserved)

    def next(self) -> int:
        """The seq for the next record we make, reserved durably."""
        seq = self._used() + 1
        if seq > MAX_SEQ:
            raise SeqExhausted(f"origin {self.node_id} has used every seq up to {MAX_SEQ}")
        if seq > self.reserved:  # one durable write per SEQ_BLOCK seqs
            through = min(seq + SEQ_BLOCK - 1, MAX_SEQ)
            write_atomically(self.path, f"{through}\n".encode())
            self.reserved = through
        return seq

    def release(self) -> None:
        """A clean stop, every log fsynced: hand back the unused rest of the
        block, so the next start has no lost window to settle."""
        used = self._used()
        if used < self.reserved:
            write_atomically(self.path, f"{used}\n".encode())
            self.reserved = used

    def _used(self) -> int:
        return max(self.vector.highest(self.node_id), self.floor)
