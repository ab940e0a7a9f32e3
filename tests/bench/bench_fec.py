"""Forward error correction for catch-up: does XOR parity (k data datagrams +
1 parity) beat plain repair?  Measured under loss in the simulated mesh.

Method (seeded, reproducible; simulated time, nothing sleeps):

(a) Plain repair: our protocol as it is (node/sync.py).  Two nodes on one link
    (tests/unit/mesh_sim.py); node 0 holds N messages of ~100 bytes of text from
    a router that is not in the run, node 1 holds nothing and catches up from
    it.  Every datagram, both ways, beacons included, is lost with probability
    p by a seeded ``drop_filter`` that notes which ones it dropped.  Measured:
    simulated time from node 1's first REQUEST to the last record in (the
    arrival of the last batch that got through); REQUESTs, datagrams and bytes
    both nodes sent meanwhile, beacons left out (they are the same with or
    without parity); lost datagrams count (they used the air).
(b) XOR parity k+1 is a replay of the same run: the SAME first-pass BATCH
    datagrams (each record's first sending) in the order the responder sent
    them, with the SAME drop decisions, cut into groups of k (the last may be
    shorter), each followed by one parity datagram as large as the largest in
    its group plus ``PARITY_HEAD`` bytes, lost with probability p (its own
    seeded draw).  A group with at most one loss among its k+1 is recovered
    whole.  The records of the lost datagrams of a group with two or more
    losses still need repair: that is measured, not guessed, by running our
    protocol again under the same loss with the asker holding everything but
    those records, and added after REQUEST_TIMEOUT (how our asker notices the
    tail; plain repair waits the same).  Parity bytes are paced like the rest,
    so they stretch the first pass by bytes / rate.  The rest of (a) is kept
    (the request, a lost request's timeout).  This favours parity a little:
    data datagrams get their group tag for free.

Figures are medians over ``SEEDS``; "faster" counts the seeds where parity
beat the plain run it replays.  Adopted only if, for some k, parity's median
time is below plain's with at most 10% more bytes at the loss a mesh link sees
(1% and 5%), for both sizes.  About a minute on one core.

    .venv/bin/python tests/bench/bench_fec.py
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import statistics
import time
from dataclasses import dataclass

from common import record_results, table, verdict
from history import WORDS

from node.protocol import BEACON_INTERVAL
from node.record import Record, RecordKind
from node.sync import CATCHUP_RATE, NACK_MAX, NACK_MIN, REQUEST_TIMEOUT
from node.wire import BATCH_COUNT, BATCH_ENTRY, HEADER, RECORD_HEAD, DatagramKind
from tests.unit.mesh_sim import LATENCY, Mesh

SIZES = (5_000, 20_000)  # records the newcomer missed
LOSSES = (0.0, 0.01, 0.05, 0.20)  # per datagram, both ways
MESH_LOSSES = (0.01, 0.05)  # what a mesh link sees: where the decision is made
KS = (4, 8, 16)  # data datagrams per parity datagram
SEEDS = tuple(range(1, 10))
TEXT_BYTES = 100
ORIGIN = "00000000000001c7"  # a router that is not in the run
STEP = 0.01  # simulated seconds between completion checks
LIMIT = 120.0  # simulated seconds a catch-up may take before the bench fails
# What a parity datagram adds to the largest datagram of its group: group id
# (4), data count (1), XOR of the data lengths (2), padding (1).
PARITY_HEAD = 8
MAX_EXTRA_BYTES = 0.10  # parity may cost at most this much more than plain
LIVE_RATES = (1.0, 20.0)  # live messages per second from one origin
WORKERS = 2  # processes: the runs are independent and seeded


def history(n: int, seed: int = 7) -> list[Record]:
    """``n`` messages of ``ORIGIN`` with ~``TEXT_BYTES`` bytes of text each."""
    rng = random.Random(seed)
    out = []
    for seq in range(1, n + 1):
        text = ""
        while len(text) < TEXT_BYTES:
            text += rng.choice(WORDS) + " "
        ms = 1_690_000_000_000 + seq * 10
        body = {"author": f"user{seq % 40}", "node": "old", "time": ms, "text": text[:TEXT_BYTES]}
        out.append(Record(ORIGIN, seq, ms << 16, RecordKind.MESSAGE, 1 + seq % 4, body))
    return out


class Loss:
    """A seeded ``Mesh.drop_filter``: loses each datagram with probability p
    and remembers which it lost."""

    def __init__(self, p: float, seed: int) -> None:
        self.p = p
        self.rng = random.Random(seed)
        self.lost: set[bytes] = set()

    def __call__(self, src: int, dst: int, data: bytes) -> bool:
        if self.rng.random() < self.p:
            self.lost.add(data)
            return True
        return False


@dataclass
class Batch:
    size: int
    seqs: list[int]
    lost: bool


@dataclass
class Plain:
    took: float  # first REQUEST to the last record in
    first_pass: float  # first REQUEST to the last first-pass batch's arrival time
    datagrams: int
    bytes: int
    batches: list[Batch]  # the first pass, in sending order
    lost_records: int  # records in first-pass batches that were lost
    repair_datagrams: int  # everything but the first request and the first pass
    repair_bytes: int
    requests: int  # REQUESTs the asker sent
    first_requests: int  # ... of which before the first pass ended (a lost one is resent)
    payload: int  # bytes of the first-pass batches


def kind(data: bytes) -> int:
    return data[1]  # HEADER: version, kind, ...


def batch_seqs(data: bytes) -> list[int]:
    """The seqs in a serialized BATCH (node/wire.py's layout, read in place)."""
    offset = HEADER.size
    (count,) = BATCH_COUNT.unpack_from(data, offset)
    offset += BATCH_COUNT.size
    seqs = []
    for _ in range(count):
        (length,) = BATCH_ENTRY.unpack_from(data, offset)
        offset += BATCH_ENTRY.size
        seqs.append(RECORD_HEAD.unpack_from(data, offset)[1])
        offset += length
    return seqs


def run_plain(records: list[Record], p: float, seed: int, lacking: set[int] | None = None) -> Plain:
    """Node 1 catches up from node 0, which holds ``records``; node 1 lacks
    them all, or only the seqs in ``lacking``."""
    mesh = Mesh.full(2, seed=seed)
    loss = Loss(p, seed * 7919 + round(p * 1000) + len(lacking or ()))
    mesh.drop_filter = loss
    mesh.preload(0, records)
    if lacking is not None:
        mesh.preload(1, [r for r in records if r.seq not in lacking])
    responder, asker = mesh.nodes
    start = mesh.now
    while len(asker.source.records) < len(records):
        if mesh.now - start > LIMIT:
            raise AssertionError(f"no catch-up of {len(records)} at loss {p} in {LIMIT} s")
        mesh.run_for(STEP)
    # The last record came in the last batch that got through (10 ms steps
    # would blur the end): its sending time plus the link's latency.
    end = max(
        t + LATENCY
        for t, d, _ in responder.sent_log
        if kind(d) == DatagramKind.BATCH and d not in loss.lost and t <= mesh.now
    )
    log = [
        (t, d) for node in mesh.nodes for t, d, _ in node.sent_log if kind(d) != DatagramKind.BEACON
    ]
    requests = [(t, d) for t, d, _ in asker.sent_log if kind(d) == DatagramKind.REQUEST]
    t0, first_request = requests[0]
    seen: set[int] = set()
    batches: list[Batch] = []
    first_end = t0
    for t, data, _ in responder.sent_log:
        if kind(data) != DatagramKind.BATCH:
            continue
        seqs = batch_seqs(data)
        if not seen.issuperset(seqs):  # the first sending of these records
            batches.append(Batch(len(data), seqs, data in loss.lost))
            first_end = t + LATENCY
        seen.update(seqs)
    total_bytes = sum(len(d) for _, d in log)
    first_bytes = len(first_request) + sum(b.size for b in batches)
    return Plain(
        took=end - t0,
        first_pass=first_end - t0,
        datagrams=len(log),
        bytes=total_bytes,
        batches=batches,
        lost_records=sum(len(b.seqs) for b in batches if b.lost),
        repair_datagrams=len(log) - 1 - len(batches),
        repair_bytes=total_bytes - first_bytes,
        requests=len(requests),
        first_requests=sum(t <= first_end for t, _ in requests),
        payload=sum(b.size for b in batches),
    )


@dataclass
class Parity:
    took: float
    datagrams: int
    bytes: int
    residual: int  # records that still went through plain repair
    requests: int


def replay_parity(records: list[Record], run: Plain, k: int, p: float, seed: int) -> Parity:
    """The first pass of ``run`` with a parity datagram after every k; what
    parity cannot recover is repaired by our protocol (measured)."""
    rng = random.Random(seed * 104_729 + k * 1000 + round(p * 1000))
    parity_bytes = parity_datagrams = 0
    residual: set[int] = set()
    for i in range(0, len(run.batches), k):
        group = run.batches[i : i + k]
        parity_bytes += max(b.size for b in group) + PARITY_HEAD
        parity_datagrams += 1
        lost = [b for b in group if b.lost]
        if len(lost) + (rng.random() < p) >= 2:
            residual.update(s for b in lost for s in b.seqs)
    took = run.first_pass + parity_bytes / CATCHUP_RATE
    sent = run.bytes - run.repair_bytes + parity_bytes  # the request, first pass, parity
    datagrams = run.datagrams - run.repair_datagrams + parity_datagrams
    requests = run.first_requests
    if residual:
        repair = run_plain(records, p, seed, residual)
        took += REQUEST_TIMEOUT + repair.took
        sent += repair.bytes
        datagrams += repair.datagrams
        requests += repair.requests
    return Parity(took, datagrams, sent, len(residual), requests)


def med(values: list[float]) -> float:
    return statistics.median(values)


@functools.cache
def cached_history(n: int) -> list[Record]:
    return history(n)


def job(n: int, p: float, seed: int) -> tuple[Plain, list[Parity]]:
    """One seed of one (N, p) cell: the plain run and its parity replays."""
    records = cached_history(n)
    run = run_plain(records, p, seed)
    parities = [replay_parity(records, run, k, p, seed) for k in KS]
    run.batches = run.batches[:1]  # only its size is used from here: keep the pickle small
    return run, parities


def main() -> None:
    started = time.perf_counter()
    cells = [(n, p) for n in SIZES for p in LOSSES]
    jobs = [(n, p, seed) for n, p in cells for seed in SEEDS]
    by_cost = sorted(jobs, key=lambda j: -j[0] * (1 + 10 * j[1]))  # the long ones first
    with multiprocessing.Pool(min(WORKERS, os.cpu_count() or 1)) as pool:
        done = dict(zip(by_cost, pool.starmap(job, by_cost), strict=True))
    wins: dict[int, list[bool]] = {k: [] for k in KS}
    faster_runs: dict[int, int] = dict.fromkeys(KS, 0)
    zero_cost: dict[int, list[float]] = {k: [] for k in KS}
    figures: dict[str, float] = {}
    for n in SIZES:
        rows: list[tuple[str, ...]] = []
        for p in LOSSES:
            plains = [done[(n, p, seed)][0] for seed in SEEDS]
            t_plain = med([r.took for r in plains])
            b_plain = med([r.bytes for r in plains])
            cell = f"fec.n{n}_loss{round(p * 100)}"
            figures.update({f"{cell}_plain_s": t_plain, f"{cell}_plain_kb": b_plain / 1000})
            rows.append(
                (
                    f"{p:.0%}",
                    "plain repair",
                    f"{t_plain:.2f}",
                    "1.00",
                    f"{med([r.requests for r in plains]):.0f}",
                    f"{med([r.datagrams for r in plains]):,.0f}",
                    f"{b_plain / 1000:,.0f}",
                    "1.00",
                    f"{med([r.lost_records for r in plains]):,.0f}",
                )
            )
            for i, k in enumerate(KS):
                par = [done[(n, p, seed)][1][i] for seed in SEEDS]
                t_par = med([x.took for x in par])
                b_par = med([x.bytes for x in par])
                faster = sum(x.took < r.took for x, r in zip(par, plains, strict=True))
                figures.update(
                    {
                        f"{cell}_xor{k}_time_ratio": t_par / t_plain,
                        f"{cell}_xor{k}_bytes_ratio": b_par / b_plain,
                    }
                )
                rows.append(
                    (
                        "",
                        f"xor {k}+1",
                        f"{t_par:.2f}",
                        f"{t_par / t_plain:.2f}",
                        f"{med([x.requests for x in par]):.0f}",
                        f"{med([x.datagrams for x in par]):,.0f}",
                        f"{b_par / 1000:,.0f}",
                        f"{b_par / b_plain:.2f}",
                        f"{med([x.residual for x in par]):,.0f}"
                        + f"  ({faster}/{len(SEEDS)} faster)",
                    )
                )
                if p in MESH_LOSSES:
                    wins[k].append(t_par < t_plain and b_par <= (1 + MAX_EXTRA_BYTES) * b_plain)
                    faster_runs[k] += faster
                if p == 0:
                    zero_cost[k].append(b_par / b_plain)
        table(
            f"catch-up of {n:,} records ({plains[0].payload / 1000:,.0f} KB of first-pass "
            f"batches) from one peer at {CATCHUP_RATE / 1e6:g} MB/s, median of "
            f"{len(SEEDS)} seeds",
            rows,
            (
                "loss",
                "scheme",
                "time s",
                "vs plain",
                "requests",
                "datagrams",
                "KB",
                "vs plain",
                "repaired records",
            ),
        )
    print(
        "  (time: first REQUEST to last record in; requests, datagrams, KB: both ways, "
        "beacons left out;\n   repaired records: plain = lost in the first pass, "
        "xor = in groups with >= 2 losses)"
    )
    live = []
    nack = (NACK_MIN + 2 * LATENCY, NACK_MAX + 2 * LATENCY)
    live.append(
        (
            "NACK (one round trip after a 20-60 ms back-off)",
            *(f"{nack[0] * 1000:.0f}-{nack[1] * 1000:.0f}" for _ in LIVE_RATES),
        )
    )
    for k in KS:
        live.append(
            (
                f"xor {k}+1 (wait for the rest of the group)",
                *(f"0-{(k - 1) / rate * 1000:,.0f}" for rate in LIVE_RATES),
            )
        )
    table(
        "live path, one record per datagram: ms from a lost record to its recovery",
        live,
        ("", *(f"at {r:g} msg/s" for r in LIVE_RATES)),
    )
    print(
        f"  (beacon interval {BEACON_INTERVAL:g} s; a parity group flushed early to bound the "
        "wait covers fewer records and costs more)"
    )
    adopt = [k for k in KS if all(wins[k])]
    runs = len(SIZES) * len(MESH_LOSSES) * len(SEEDS)
    for k in KS:
        verdict(
            f"xor {k}+1 faster with <= {MAX_EXTRA_BYTES:.0%} more bytes at "
            f"{'/'.join(f'{p:.0%}' for p in MESH_LOSSES)} loss, both sizes",
            all(wins[k]),
            f"{sum(wins[k])}/{len(wins[k])} cells, faster in {faster_runs[k]}/{runs} runs;"
            f" at 0% loss {med(zero_cost[k]):.2f}x the bytes, (k+1)/k = {(k + 1) / k:.2f}",
        )
    figures["fec.adopted_k"] = adopt[0] if adopt else 0
    record_results(figures)
    print(
        f"  decision: {'adopt xor ' + str(adopt[0]) + '+1' if adopt else 'plain repair stays'}"
        f" ({time.perf_counter() - started:.0f} s wall)"
    )


if __name__ == "__main__":
    main()
