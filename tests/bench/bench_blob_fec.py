"""One photo, many routers in one cell wanting it at once: unicast pulls,
multicast with NACK repair, or multicast with forward error correction?

Method: a simulation of one radio cell (seeded, reproducible; simulated
time, nothing sleeps).  A 300 KB blob goes from one holder to R = 1, 4, 8,
15 receivers; every frame to every receiver is lost independently with
probability p = 0, 5, 10 % (random independent loss, as the namespace labs'
nft rule makes it; real radio loss is burstier, which hurts FEC's groups and
NACK rounds alike).  Figures are medians over ``SEEDS``.

(a) Unicast pulls: each receiver fetches the blob over HTTP/TCP
    (app/blobfetch.py): handshake, request, MSS-sized segments, a delayed
    ACK per two segments, close.  Wi-Fi retransmits unicast frames itself
    (and TCP would, past the link's retries), so a lost frame is sent again
    until it gets through: bytes on the air = R x size x 1/(1-p) and a bit.
    The holder paces all peers together at ``SERVE_RATE``.
(b) Multicast + NACK: the holder multicasts the blob once in MTU datagrams
    (node/fragment.py's size and overhead plus an 8-byte blob id); each
    receiver NACKs what it lacks after a random back-off of NACK_MIN to
    NACK_MAX (node/sync.py), staying quiet if the NACKs it heard already
    asked for all it lacks (suppression); the holder multicasts the union of
    what the NACKs it received asked for.  A round where no NACK got through
    waits NACK_RETRY.  Rounds until every receiver has every fragment.
(c) Multicast + FEC k+m (zfec, Reed-Solomon over GF(2^8)): each group of k
    fragments goes with m parity datagrams; a receiver with any k of a
    group's symbols has the group.  What is still missing is NACKed as
    "group g: j more symbols", and the holder sends, per group, as many *new*
    parity symbols as the neediest NACK asked for: one repair symbol serves
    every receiver that lacks any symbol of that group.  Every run decodes
    the blob from what its last receiver got, with zfec, and checks it.

Air time is what a shared cell pays, and it is not proportional to bytes:
Wi-Fi sends multicast at a basic rate, unacknowledged (``MCAST_PHY``), and
unicast at the link's own rate, acknowledged (``UCAST_PHY``); each frame also
costs a fixed contention and preamble time.  Completion is the time until
the last receiver has the whole blob (senders paced at ``SERVE_RATE`` and
never faster than the air).  zfec is optional: without it (no wheel for
this Python) the table is the same (any k symbols of a group decode, the
MDS property), only the decoding check and its timing are left out.

tests/bench/bench_blob_fec_netns.py runs the same three schemes over real
sockets in network namespaces, as a check on this model's counts.

    .venv/bin/python tests/bench/bench_blob_fec.py
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field

from common import record_results, table, verdict

from node.fragment import DEFAULT_MTU, FRAGMENT_OVERHEAD
from node.sync import NACK_MAX, NACK_MIN, NACK_RETRY
from node.wire import HEADER, MAC_LEN
from tests.unit.mesh_sim import LATENCY

try:
    import zfec
except ImportError:  # pragma: no cover - only where zfec has no wheel
    zfec = None

SIZE = 300_000  # a photo re-encoded by the page: about 1,600 px, a few hundred KB
RECEIVERS = (1, 4, 8, 15)
LOSSES = (0.0, 0.05, 0.10)
FEC = ((16, 2), (16, 4), (32, 4))  # (k data, m parity) per group
SEEDS = tuple(range(1, 16))
# Wire sizes.  A blob datagram: the mesh header and MAC, a fragment head and
# an 8-byte blob id (a prefix of its SHA-256); IP + UDP add 28 on the air.
BLOB_ID = 8
DATAGRAM_OVERHEAD = FRAGMENT_OVERHEAD + BLOB_ID
DATA_PER_DATAGRAM = DEFAULT_MTU - DATAGRAM_OVERHEAD
IP_UDP = 28
NACK_HEAD = HEADER.size + MAC_LEN + BLOB_ID  # then 4 bytes a range, or 3 a group
TCP_MSS = 1448  # Ethernet MTU less IP, TCP and the timestamp option
TCP_IP = 52  # IP + TCP with timestamps
HTTP_REQUEST = 330  # GET line, Host, X-Mesh-Auth: measured from app/blobfetch.py's requests
HTTP_RESPONSE_HEAD = 200
# The air.  802.11 MAC header + LLC/SNAP + FCS per frame; a fixed cost per
# frame for DIFS, the average back-off and the preamble; a unicast frame's
# SIFS + MAC ACK.  Multicast goes at a basic rate: 6 Mb/s is the lowest OFDM
# rate (OpenWrt's 2.4 GHz default with 802.11b rates enabled is 1 Mb/s, six
# times worse again).  Unicast between two routers of one cell: a modest
# 802.11n rate (real links often do 65-150 Mb/s).
WIFI_HEADER = 36
FRAME_FIXED_S = 100e-6
UNICAST_ACK_S = 44e-6
MCAST_PHY = 6e6
UCAST_PHY = 24e6
PHY = (MCAST_PHY, UCAST_PHY)
# Other air: multicast at 1 Mb/s (802.11b rates on), 12 or 24 Mb/s (mcast_rate
# set by the operator); unicast at 65 Mb/s (one 802.11n stream, 20 MHz).
SENSITIVITY = ((1e6, 24e6), (6e6, 24e6), (12e6, 24e6), (6e6, 65e6), (24e6, 65e6))
SENSITIVITY_FEC = (16, 4)
SENSITIVITY_LOSS = 0.05
MAX_RECEIVERS = 30
SERVE_RATE = 1_000_000  # app/blobfetch.py: a holder's pace for all peers together
MAX_ROUNDS = 200  # a run that needs more has a bug


@dataclass
class Run:
    air_bytes: int = 0  # IP bytes of every frame sent, repeats included
    frames: int = 0
    air_s: float = 0.0  # air time of all of them
    took: float = 0.0  # until the last receiver has the blob
    rounds: int = 0  # NACK rounds
    nacks: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    phy: tuple[float, float] = (MCAST_PHY, UCAST_PHY)  # bit/s: multicast, unicast

    def send(self, ip_bytes: int, multicast: bool, times: int = 1) -> float:
        """Account ``times`` transmissions of one frame; its air time each."""
        phy = self.phy[0] if multicast else self.phy[1]
        each = (
            FRAME_FIXED_S
            + (ip_bytes + WIFI_HEADER) * 8 / phy
            + (0.0 if multicast else UNICAST_ACK_S)
        )
        self.air_bytes += ip_bytes * times
        self.frames += times
        self.air_s += each * times
        return each


def tries(rng: random.Random, p: float) -> int:
    """Transmissions until one gets through (Wi-Fi unicast retries)."""
    n = 1
    while rng.random() < p:
        n += 1
    return n


def fragments(size: int) -> int:
    return math.ceil(size / DATA_PER_DATAGRAM)


# -- (a) unicast pulls -----------------------------------------------------------------------


def unicast(receivers: int, p: float, seed: int, phy: tuple[float, float] = PHY) -> Run:
    rng = random.Random(seed * 7_919 + receivers * 31 + round(p * 1000))
    run = Run(phy=phy)
    segments = math.ceil((SIZE + HTTP_RESPONSE_HEAD) / TCP_MSS)
    for _ in range(receivers):
        frames = [TCP_IP + 8] * 3  # SYN, SYN-ACK, ACK
        frames.append(TCP_IP + HTTP_REQUEST)
        last = SIZE + HTTP_RESPONSE_HEAD - (segments - 1) * TCP_MSS
        frames += [TCP_IP + TCP_MSS] * (segments - 1) + [TCP_IP + last]
        frames += [TCP_IP] * math.ceil(segments / 2)  # delayed ACKs
        frames += [TCP_IP] * 4  # FIN, ACK both ways
        for size in frames:
            run.send(size, multicast=False, times=tries(rng, p))
    # All fetches share the air, and the holder paces them together.
    run.took = max(run.air_s, receivers * SIZE / SERVE_RATE) + 3 * LATENCY
    return run


# -- (b) multicast and NACK repair -----------------------------------------------------------


def nack_bytes(missing: set[int]) -> int:
    """A NACK naming ``missing``: ranges (4 bytes each) or a bitmap, the smaller."""
    ranges = sum(1 for i in missing if i - 1 not in missing)
    return IP_UDP + NACK_HEAD + min(4 * ranges, math.ceil(fragments(SIZE) / 8) + 2)


def nack_round(
    rng: random.Random, p: float, wants: list[dict[int, int]], run: Run
) -> tuple[dict[int, int], float]:
    """One round of NACKs for ``wants`` (per receiver: item -> how many).
    Returns what the holder heard asked (item -> the most asked) and when
    the last NACK went.  A receiver keeps quiet if NACKs it heard before its
    back-off ran out already asked for all it wants."""
    order = sorted((rng.uniform(NACK_MIN, NACK_MAX), r) for r, w in enumerate(wants) if w)
    heard_by: list[dict[int, int]] = [{} for _ in wants]
    at_holder: dict[int, int] = {}
    last = NACK_MIN
    for when, r in order:
        want = wants[r]
        if all(heard_by[r].get(i, 0) >= n for i, n in want.items()):
            continue  # suppressed
        run.send(nack_bytes(set(want)), multicast=True)
        run.nacks += 1
        last = when
        if rng.random() >= p:
            for i, n in want.items():
                at_holder[i] = max(at_holder.get(i, 0), n)
        for other, heard in enumerate(heard_by):
            if other != r and rng.random() >= p:
                for i, n in want.items():
                    heard[i] = max(heard.get(i, 0), n)
    return at_holder, last


def multicast_nack(receivers: int, p: float, seed: int) -> Run:
    rng = random.Random(seed * 104_729 + receivers * 17 + round(p * 1000))
    run = Run()
    k = fragments(SIZE)
    each = 0.0
    missing: list[set[int]] = [set() for _ in range(receivers)]
    for i in range(k):
        each = run.send(DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD + IP_UDP, multicast=True)
        for r in range(receivers):
            if rng.random() < p:
                missing[r].add(i)
    gap = max(each, (DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD) / SERVE_RATE)
    now = k * gap + LATENCY
    while any(missing):
        run.rounds += 1
        if run.rounds > MAX_ROUNDS:
            raise AssertionError("multicast + NACK did not finish")
        asked, last = nack_round(rng, p, [dict.fromkeys(m, 1) for m in missing], run)
        now += last + LATENCY
        if not asked:
            now += NACK_RETRY
            continue
        for i in sorted(asked):
            run.send(DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD + IP_UDP, multicast=True)
            for m in missing:
                if i in m and rng.random() >= p:
                    m.discard(i)
        now += len(asked) * gap + LATENCY
    run.took = now
    return run


# -- (c) multicast with FEC and NACK repair -------------------------------------------------


@dataclass
class Coded:
    """The blob cut into groups of ``k`` and encoded with zfec, ``n`` symbols a group."""

    k: int
    groups: list[list[bytes]]  # per group: its n symbols (k data, then parity)
    sizes: list[int]  # data symbols per group (the last group may be short)
    encode_s: float


def encode(blob: bytes, k: int, n: int) -> Coded:
    pieces = [blob[i : i + DATA_PER_DATAGRAM] for i in range(0, len(blob), DATA_PER_DATAGRAM)]
    pieces[-1] = pieces[-1].ljust(DATA_PER_DATAGRAM, b"\x00")
    groups, sizes = [], []
    started = time.perf_counter()
    for g in range(0, len(pieces), k):
        data = tuple(pieces[g : g + k])
        sizes.append(len(data))
        if zfec is None:
            groups.append(list(data) + [b""] * (n - k))
        else:
            groups.append(zfec.Encoder(len(data), n - k + len(data)).encode(data))
    return Coded(k, groups, sizes, time.perf_counter() - started)


def decode(coded: Coded, got: list[set[int]]) -> tuple[bytes, float]:
    started = time.perf_counter()
    out = []
    for symbols, k, ids in zip(coded.groups, coded.sizes, got, strict=True):
        use = tuple(sorted(ids)[:k])
        out += zfec.Decoder(k, len(symbols)).decode(tuple(symbols[i] for i in use), use)
    return b"".join(out)[:SIZE], time.perf_counter() - started


def multicast_fec(
    receivers: int, p: float, seed: int, m: int, coded: Coded, phy: tuple[float, float] = PHY
) -> Run:
    rng = random.Random(seed * 15_485_863 + receivers * 13 + round(p * 1000) + m)
    run = Run(phy=phy)
    sizes = coded.sizes
    got: list[list[set[int]]] = [[set() for _ in sizes] for _ in range(receivers)]
    sent = [0] * len(sizes)  # symbols sent per group: the next repair is a new one
    each = 0.0
    for g, k in enumerate(sizes):
        for s in range(k + m):
            each = run.send(DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD + IP_UDP, multicast=True)
            for r in range(receivers):
                if rng.random() >= p:
                    got[r][g].add(s)
        sent[g] = k + m
    gap = max(each, (DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD) / SERVE_RATE)
    now = sum(k + m for k in sizes) * gap + LATENCY

    def needs(r: int) -> dict[int, int]:
        return {g: k - len(got[r][g]) for g, k in enumerate(sizes) if len(got[r][g]) < k}

    while any(needs(r) for r in range(receivers)):
        run.rounds += 1
        if run.rounds > MAX_ROUNDS:
            raise AssertionError("multicast + FEC did not finish")
        asked, last = nack_round(rng, p, [needs(r) for r in range(receivers)], run)
        now += last + LATENCY
        if not asked:
            now += NACK_RETRY
            continue
        repairs = 0
        for g, n in sorted(asked.items()):
            for _ in range(n):
                s = sent[g]
                sent[g] += 1
                if s >= len(coded.groups[g]):
                    raise AssertionError("ran out of parity symbols: encode more")
                run.send(DATA_PER_DATAGRAM + DATAGRAM_OVERHEAD + IP_UDP, multicast=True)
                repairs += 1
                for r in range(receivers):
                    if rng.random() >= p:
                        got[r][g].add(s)
        now += repairs * gap + LATENCY
    run.took = now
    check(run, coded, got[-1])
    return run


def check(run: Run, coded: Coded, got: list[set[int]]) -> None:
    """Decode what a receiver got, with zfec: the blob, or the bench fails."""
    if zfec is not None:
        blob, took = decode(coded, got)
        run.extra["decode_s"] = took
        run.extra["ok"] = float(blob == BLOB)


BLOB = random.Random(1).randbytes(SIZE)


def med(values: list[float]) -> float:
    return statistics.median(values)


def row(name: str, runs: list[Run], receivers: int, base: float) -> tuple[str, ...]:
    air = med([r.air_s for r in runs])
    return (
        name,
        f"{med([r.air_bytes for r in runs]) / 1000:,.0f}",
        f"{med([r.air_bytes for r in runs]) / 1000 / receivers:,.0f}",
        f"{med([r.frames for r in runs]):,.0f}",
        f"{air * 1000:,.0f}",
        f"{air / base:.2f}",
        f"{med([r.took for r in runs]) * 1000:,.0f}",
        f"{med([r.rounds for r in runs]):.0f}",
    )


def main() -> None:
    started = time.perf_counter()
    # Enough parity for any repair: the first m, then new ones on demand.
    coded = {(k, m): encode(BLOB, k, min(256, 3 * k + m)) for k, m in FEC}
    figures: dict[str, float] = {}
    rows: list[tuple[str, ...]] = []
    decode_s: list[float] = []
    wins: dict[str, list[bool]] = {f"fec{k}_{m}": [] for k, m in FEC} | {"nack": []}
    for receivers in RECEIVERS:
        for p in LOSSES:
            cell = f"blobfec.r{receivers}_loss{round(p * 100)}"
            pulls = [unicast(receivers, p, s) for s in SEEDS]
            base = med([r.air_s for r in pulls])
            schemes: list[tuple[str, str, list[Run]]] = [
                ("unicast pulls", "unicast", pulls),
                ("multicast + NACK", "nack", [multicast_nack(receivers, p, s) for s in SEEDS]),
            ]
            for k, m in FEC:
                runs = [multicast_fec(receivers, p, s, m, coded[k, m]) for s in SEEDS]
                if zfec is not None:
                    assert all(r.extra["ok"] == 1.0 for r in runs), "zfec decoded wrong bytes"
                    decode_s += [r.extra["decode_s"] for r in runs]
                schemes.append((f"multicast FEC {k}+{m} + NACK", f"fec{k}_{m}", runs))
            for i, (name, key, runs) in enumerate(schemes):
                rows.append(
                    (
                        f"{receivers}" if i == 0 else "",
                        f"{p:.0%}" if i == 0 else "",
                        *row(name, runs, receivers, base),
                    )
                )
                figures.update(
                    {
                        f"{cell}_{key}_air_kb": med([r.air_bytes for r in runs]) / 1000,
                        f"{cell}_{key}_air_ms": med([r.air_s for r in runs]) * 1000,
                        f"{cell}_{key}_done_ms": med([r.took for r in runs]) * 1000,
                        f"{cell}_{key}_frames": med([r.frames for r in runs]),
                    }
                )
                if key != "unicast" and p > 0:
                    wins[key].append(
                        med([r.air_s for r in runs]) < base
                        and med([r.took for r in runs]) < med([r.took for r in pulls])
                    )
    table(
        f"one {SIZE / 1000:.0f} KB blob to R receivers in one cell, random loss p per frame "
        f"and receiver; medians of {len(SEEDS)} seeds",
        rows,
        (
            "R",
            "loss",
            "scheme",
            "air KB",
            "KB/receiver",
            "frames",
            "air ms",
            "air vs pulls",
            "done ms",
            "rounds",
        ),
    )
    print(
        f"  (air: multicast at {MCAST_PHY / 1e6:g} Mb/s, unicast at {UCAST_PHY / 1e6:g} Mb/s, "
        f"{FRAME_FIXED_S * 1e6:.0f} us a frame; holder paced at {SERVE_RATE / 1e6:g} MB/s; "
        f"{DATA_PER_DATAGRAM} data bytes a datagram)"
    )
    # Where multicast starts to pay: the fewest receivers at which it takes less air.
    for key, label in [("nack", "multicast + NACK")] + [
        (f"fec{k}_{m}", f"FEC {k}+{m}") for k, m in FEC
    ]:
        for p in LOSSES:
            beats = [
                r
                for r in RECEIVERS
                if figures[f"blobfec.r{r}_loss{round(p * 100)}_{key}_air_ms"]
                < figures[f"blobfec.r{r}_loss{round(p * 100)}_unicast_air_ms"]
            ]
            figures[f"blobfec.{key}_loss{round(p * 100)}_fewest_receivers"] = (
                beats[0] if beats else 0
            )
        verdict(
            f"{label}: less air and sooner than unicast pulls, every R and loss > 0",
            all(wins[key]),
            f"{sum(wins[key])}/{len(wins[key])} cells; fewer air ms from R = "
            + ", ".join(
                f"{int(figures[f'blobfec.{key}_loss{round(p * 100)}_fewest_receivers'])} at {p:.0%}"
                for p in LOSSES
            ),
        )
    for (k, m), c in coded.items() if zfec is not None else ():
        figures[f"blobfec.zfec{k}_{m}_encode_ms"] = c.encode_s * 1000
        print(f"  zfec {k}+{m}: encode {c.encode_s * 1000:.1f} ms for {SIZE / 1000:.0f} KB")
    if zfec is None:
        print("  zfec is not installed: the blob was not decoded (the table is the same)")
    if decode_s:
        figures["blobfec.zfec_decode_ms"] = med(decode_s) * 1000
        print(f"  zfec decode, median: {med(decode_s) * 1000:.1f} ms (this machine)")
    sensitivity(coded[SENSITIVITY_FEC], figures)
    # The decision (docs/BLOBS.md): a router fetches a blob when one of its
    # pages asks, so one fetch has one receiver unless several routers' people
    # open the same photo within the same second.
    one = figures["blobfec.r1_loss5_unicast_air_ms"]
    best = min(figures[f"blobfec.r1_loss5_{k}_air_ms"] for k in ("nack", "fec16_4", "fec32_4"))
    figures["blobfec.multicast_adopted"] = 0
    print(
        f"  decision: unicast pulls.  One receiver (fetch on demand): pulls {one:.0f} ms of air,"
        f" multicast at best {best:.0f} ms.  Many at once: FEC + NACK beats NACK alone;"
        " kept in reserve (docs/BLOBS.md)."
    )
    record_results(figures)
    print(f"  ({time.perf_counter() - started:.0f} s wall)")


def crossover(coded: Coded, phy: tuple[float, float]) -> int:
    """The fewest receivers at which FEC multicast takes less air than pulls."""
    m = SENSITIVITY_FEC[1]
    for r in range(1, MAX_RECEIVERS + 1):
        pulls = med([unicast(r, SENSITIVITY_LOSS, s, phy).air_s for s in SEEDS[:5]])
        fec = med([multicast_fec(r, SENSITIVITY_LOSS, s, m, coded, phy).air_s for s in SEEDS[:5]])
        if fec < pulls:
            return r
    return 0


def sensitivity(coded: Coded, figures: dict[str, float]) -> None:
    rows = []
    for mcast, ucast in SENSITIVITY:
        r = crossover(coded, (mcast, ucast))
        figures[f"blobfec.crossover_m{mcast / 1e6:g}_u{ucast / 1e6:g}"] = r
        rows.append((f"{mcast / 1e6:g} Mb/s", f"{ucast / 1e6:g} Mb/s", str(r) if r else "> 30"))
    k, m = SENSITIVITY_FEC
    table(
        f"receivers at once from which FEC {k}+{m} multicast takes less air than unicast "
        f"pulls ({SENSITIVITY_LOSS:.0%} loss)",
        rows,
        ("multicast rate", "unicast rate", "receivers"),
    )


if __name__ == "__main__":
    main()
