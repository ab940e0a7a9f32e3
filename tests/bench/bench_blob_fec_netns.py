"""The real-socket run behind bench_blob_fec.py: one holder and R receivers
in network namespaces on one bridge (tests/netns/netlab.py), each receiver's
interface losing p % of packets both ways (nft ``numgen random``), so every
receiver loses independently.  Real UDP multicast, real TCP, real zfec.

- unicast pulls: every receiver opens a TCP connection to the holder and
  reads the blob; the holder paces all of them together at SERVE_RATE.
  There is no link-layer retransmission on a veth: TCP sees the loss itself.
- multicast + NACK, multicast + FEC k+m + NACK: the holder multicasts the
  blob (bench_blob_fec.py's datagram size), paced at SERVE_RATE; a receiver
  quiet for ``IDLE`` with something missing multicasts a NACK after a random
  NACK_MIN..NACK_MAX back-off, unless NACKs it heard meanwhile asked for all
  it lacks; it asks again after NACK_RETRY if nothing comes.  The holder
  gathers NACKs for NACK_MAX and sends the union (NACK) or, per group, the
  neediest count of new parity symbols (FEC).  Every receiver checks the
  bytes it ends with (zfec decoding for FEC).

Measured: bytes and packets sent on every host's interface (Ethernet frames,
from the kernel's counters), time until the last receiver has the blob.
A veth has no basic rate: this checks the protocols' counts and times, not
air time (bench_blob_fec.py's table).  Needs root; about two minutes.

    .venv/bin/python tests/bench/bench_blob_fec_netns.py
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench_blob_fec import BLOB, DATA_PER_DATAGRAM, SERVE_RATE, SIZE, encode, zfec
from common import record_results, table

from node.sync import NACK_MAX, NACK_MIN, NACK_RETRY
from tests.netns.netlab import Host, Lab, available, ns_run, sweep

GROUP = "239.255.42.99"  # administratively scoped; only ever joined on the labs' veths
PORT = 18999
TCP_PORT = 18998
IDLE = 0.05  # a receiver this long without data, still lacking some: NACK
RUN_LIMIT = 60.0  # seconds a run may take before the bench fails
RECEIVERS = (4, 15)
LOSSES = (5, 10)  # percent
FEC = (32, 4)
REPEATS = 3  # runs per cell: medians (a lost NACK costs a NACK_RETRY, 0.5 s)
DATA = struct.Struct(">BHH")  # kind b"D", group, symbol
NACK = struct.Struct(">BH")  # kind b"N", number of (group, need) pairs
PAIR = struct.Struct(">HH")
MAX_PAIRS = 250  # a NACK stays one datagram


@dataclass
class Result:
    took: float
    bytes: float
    packets: float
    lost: float


FIELDS = ("took", "bytes", "packets", "lost")


class Pacer:
    """``rate`` bytes/s for every sender thread together."""

    def __init__(self, rate: float) -> None:
        self.rate, self.next, self.lock = rate, 0.0, threading.Lock()

    def wait(self, size: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.next = max(self.next, now) + size / self.rate
            delay = self.next - size / self.rate - now
        if delay > 0:
            time.sleep(delay)


def in_ns(host: Host, fn: Callable[[], socket.socket]) -> socket.socket:
    """A socket made inside ``host``'s namespace (it stays there)."""
    assert host.executor is not None
    return host.executor.submit(fn).result()


def mcast_socket(address: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", PORT))
    s.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(GROUP) + socket.inet_aton(address),
    )
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def send(sock: socket.socket, data: bytes) -> None:
    """Multicast one datagram; one the loss rule drops on the way out is lost."""
    with contextlib.suppress(PermissionError):  # nft dropped it in our output hook: EPERM
        sock.sendto(data, (GROUP, PORT))


def counters(hosts: list[Host]) -> tuple[int, int]:
    """Bytes and packets every host has sent on its lab interface."""
    total_bytes = total_packets = 0
    for h in hosts:
        out = ns_run(h.ns, "cat", "/sys/class/net/m1/statistics/tx_bytes").stdout
        pkts = ns_run(h.ns, "cat", "/sys/class/net/m1/statistics/tx_packets").stdout
        total_bytes += int(out)
        total_packets += int(pkts)
    return total_bytes, total_packets


# -- multicast ---------------------------------------------------------------------------------


class Symbols:
    """What the holder sends: NACK mode, one symbol per fragment; FEC mode,
    zfec groups of k with m parity and more on demand."""

    def __init__(self, fec: tuple[int, int] | None) -> None:
        k, m = fec or (1, 0)
        self.m = m
        self.coded = encode(BLOB, k, min(256, 3 * k + m) if fec else 1)
        self.sizes = self.coded.sizes
        self.fec = fec is not None
        self.sent = [0] * len(self.sizes)

    def first_pass(self) -> list[tuple[int, int]]:
        out = []
        for g, k in enumerate(self.sizes):
            out += [(g, s) for s in range(k + self.m)]
            self.sent[g] = k + self.m
        return out

    def repairs(self, asked: dict[int, int]) -> list[tuple[int, int]]:
        if not self.fec:
            return [(g, 0) for g in sorted(asked)]
        out = []
        for g, n in sorted(asked.items()):
            for _ in range(n):
                out.append((g, self.sent[g]))
                self.sent[g] += 1
        return out

    def datagram(self, g: int, s: int) -> bytes:
        return DATA.pack(ord("D"), g, s) + self.coded.groups[g][s]


def holder(sock: socket.socket, symbols: Symbols, stop: threading.Event) -> None:
    pacer = Pacer(SERVE_RATE)
    for g, s in symbols.first_pass():
        data = symbols.datagram(g, s)
        pacer.wait(len(data))
        send(sock, data)
    sock.settimeout(0.05)
    while not stop.is_set():
        asked = gather(sock, stop)
        for g, s in symbols.repairs(asked):
            data = symbols.datagram(g, s)
            pacer.wait(len(data))
            send(sock, data)


def gather(sock: socket.socket, stop: threading.Event) -> dict[int, int]:
    """NACKs heard: from the first, for NACK_MAX more (the others' back-offs)."""
    asked: dict[int, int] = {}
    until = None
    while not stop.is_set() and (until is None or time.monotonic() < until):
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        if data[:1] != b"N":
            continue
        for g, n in parse_nack(data).items():
            asked[g] = max(asked.get(g, 0), n)
        if until is None:
            until = time.monotonic() + NACK_MAX
    return asked


def parse_nack(data: bytes) -> dict[int, int]:
    _, count = NACK.unpack_from(data)
    return dict(PAIR.iter_unpack(data[NACK.size : NACK.size + PAIR.size * count]))


def receiver(sock: socket.socket, symbols: Symbols, seed: int, start: float) -> float:
    """Until the blob is whole; returns when (seconds after ``start``)."""
    rng = random.Random(seed)
    sizes = symbols.sizes
    got: list[dict[int, bytes]] = [{} for _ in sizes]
    heard: dict[int, int] = {}
    quiet_at = time.monotonic() + IDLE + 1.0  # the first pass starts within a second
    nack_at: float | None = None
    while True:
        wants = {g: k - len(got[g]) for g, k in enumerate(sizes) if len(got[g]) < k}
        if not wants:
            took = time.monotonic() - start
            check(symbols, got)
            return took
        now = time.monotonic()
        if now - start > RUN_LIMIT:
            raise AssertionError("a receiver never got the whole blob")
        if nack_at is None and now >= quiet_at:
            nack_at, heard = now + rng.uniform(NACK_MIN, NACK_MAX), {}
        if nack_at is not None and now >= nack_at:
            if not all(heard.get(g, 0) >= n for g, n in wants.items()):
                pairs = list(wants.items())[:MAX_PAIRS]
                nack = NACK.pack(ord("N"), len(pairs)) + b"".join(PAIR.pack(*p) for p in pairs)
                send(sock, nack)
            nack_at, quiet_at = None, now + NACK_RETRY
        sock.settimeout(max(0.001, (nack_at or quiet_at) - now))
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        if data[:1] == b"D":
            _, g, s = DATA.unpack_from(data)
            got[g][s] = data[DATA.size :]
            quiet_at = time.monotonic() + IDLE
        elif data[:1] == b"N":
            for g, n in parse_nack(data).items():
                heard[g] = max(heard.get(g, 0), n)


def check(symbols: Symbols, got: list[dict[int, bytes]]) -> None:
    if symbols.fec:
        if zfec is None:
            return
        out = []
        for g, k in enumerate(symbols.sizes):
            ids = tuple(sorted(got[g])[:k])
            n = len(symbols.coded.groups[g])
            out += zfec.Decoder(k, n).decode(tuple(got[g][i] for i in ids), ids)
        blob = b"".join(out)[:SIZE]
    else:
        blob = b"".join(got[g][0] for g in range(len(symbols.sizes)))[:SIZE]
    assert hashlib.sha256(blob).digest() == hashlib.sha256(BLOB).digest(), "wrong bytes"


def run_multicast(lab: Lab, receivers: list[Host], fec: tuple[int, int] | None) -> Result:
    symbols = Symbols(fec)
    src = lab.hosts["s"]
    hsock = in_ns(src, lambda: mcast_socket(src.address(1)))
    rsocks = [in_ns(h, lambda h=h: mcast_socket(h.address(1))) for h in receivers]  # type: ignore[misc]
    stop = threading.Event()
    before = counters([src, *receivers])
    drops = sum(lab.loss_drops(h.name, 1) for h in receivers)
    start = time.monotonic()
    times: list[float] = [0.0] * len(receivers)

    def one(i: int) -> None:
        times[i] = receiver(rsocks[i], symbols, i, start)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(receivers))]
    for t in threads:
        t.start()
    sender = threading.Thread(target=holder, args=(hsock, symbols, stop))
    sender.start()
    try:
        for t in threads:
            t.join(RUN_LIMIT)
    finally:
        stop.set()
        sender.join(5)
        for s in [hsock, *rsocks]:
            s.close()
    assert all(times), "a receiver failed"
    after = counters([src, *receivers])
    lost = sum(lab.loss_drops(h.name, 1) for h in receivers) - drops
    return Result(max(times), after[0] - before[0], after[1] - before[1], lost)


# -- unicast pulls -----------------------------------------------------------------------------


def run_unicast(lab: Lab, receivers: list[Host]) -> Result:
    src = lab.hosts["s"]

    def listen() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src.address(1), TCP_PORT))
        s.listen(32)
        return s

    server = in_ns(src, listen)
    pacer = Pacer(SERVE_RATE)
    header = f"HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n".encode()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(1024)
            conn.sendall(header)
            for i in range(0, SIZE, 16_384):
                piece = BLOB[i : i + 16_384]
                pacer.wait(len(piece))
                conn.sendall(piece)

    def accept() -> None:
        for _ in receivers:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    before = counters([src, *receivers])
    drops = sum(lab.loss_drops(h.name, 1) for h in receivers)
    start = time.monotonic()
    times: list[float] = [0.0] * len(receivers)

    def pull(i: int) -> None:
        s = in_ns(receivers[i], socket.socket)
        s.settimeout(RUN_LIMIT)
        with s:
            s.connect((src.address(1), TCP_PORT))
            s.sendall(b"GET /mesh/blob/x HTTP/1.1\r\nHost: s\r\n\r\n")
            data = bytearray()
            while len(data) < len(header) + SIZE:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert bytes(data[len(header) :]) == BLOB, "wrong bytes"
        times[i] = time.monotonic() - start

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(len(receivers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_LIMIT)
    server.close()
    assert all(times), "a pull failed"
    after = counters([src, *receivers])
    lost = sum(lab.loss_drops(h.name, 1) for h in receivers) - drops
    return Result(max(times), after[0] - before[0], after[1] - before[1], lost)


def main() -> None:
    if not available():
        raise SystemExit("needs root and iproute2 (network namespaces)")
    sweep()
    figures: dict[str, float] = {}
    rows = []
    for r in RECEIVERS:
        with Lab() as lab:
            lab.add_host("s", [1])
            receivers = [lab.add_host(f"r{i}", [1]) for i in range(1, r + 1)]
            for loss in LOSSES:
                for h in receivers:
                    lab.add_loss(h.name, 1, loss)
                k, m = FEC
                for key, name, fec in (
                    ("unicast", "unicast pulls (TCP)", None),
                    ("nack", "multicast + NACK", None),
                    (f"fec{k}_{m}", f"multicast FEC {k}+{m} + NACK", FEC),
                ):
                    runs = [
                        run_unicast(lab, receivers)
                        if key == "unicast"
                        else run_multicast(lab, receivers, fec)
                        for _ in range(REPEATS)
                    ]
                    res = Result(*(statistics.median(getattr(x, f) for x in runs) for f in FIELDS))
                    cell = f"blobfec.netns.r{r}_loss{loss}_{key}"
                    figures |= {
                        f"{cell}_kb": res.bytes / 1000,
                        f"{cell}_packets": res.packets,
                        f"{cell}_done_ms": res.took * 1000,
                    }
                    rows.append(
                        (
                            str(r),
                            f"{loss}%",
                            name,
                            f"{res.bytes / 1000:,.0f}",
                            f"{res.packets:,.0f}",
                            f"{res.took * 1000:,.0f}",
                            f"{res.lost:,.0f}",
                        )
                    )
    table(
        f"real sockets in namespaces: one {SIZE / 1000:.0f} KB blob, holder paced at "
        f"{SERVE_RATE / 1e6:g} MB/s, loss on each receiver's link both ways",
        rows,
        ("R", "loss", "scheme", "KB sent", "packets", "done ms", "dropped by nft"),
    )
    print(
        f"  (medians of {REPEATS} runs; {DATA_PER_DATAGRAM} data bytes a datagram; TCP's packets"
        " are GSO super-frames on a veth: compare its bytes, not its packets)"
    )
    record_results(figures)


if __name__ == "__main__":
    main()
