"""WebSocket load generator for the fan-out and footprint benchmarks.

Runs in its own process (so it does not share the server's interpreter lock)
and holds many WebSocket clients on one asyncio loop.  The clients are raw
sockets with just enough RFC 6455 to read a broadcast: a hand-written
handshake, masked client frames, and a frame parser that only looks at the
start of each payload (``{"type":"message"`` counts as a delivery).  That
keeps the generator's cost per delivered frame to a few microseconds, well
below any server's, so the figures measure the server.

Modes (``python wsload.py MODE --port P --cookies FILE ...``):

- ``fanout``: connect, then (a) every sender posts ``--burst`` messages as
  fast as the socket takes them, and deliveries per second are counted over
  all clients; (b) the senders take turns posting at ``--rate`` per second for
  ``--seconds``, and every delivery's send-to-delivery latency is kept.
  Prints one JSON object.
- ``hold``: connect, print ``READY <json>`` and keep the sockets open until a
  line (or end of file) arrives on stdin.
- ``probe``: connect, then ``--probes`` times: one sender posts one message
  and the generator waits for its ack and for its delivery to every client
  before the next.  Prints one JSON object: send-to-ack and
  send-to-last-delivery milliseconds of each probe (router-class lab).

Client ``i`` uses the cookie header ``cookies[i % len(cookies)]``; the first
``--senders`` clients are also the senders (one per user: the router's rate
limit is per user).  Every text is ``m<seq>|`` padded to ``--text-len``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from pathlib import Path

MESSAGE = b'{"type":"message"'
ERROR = b'{"type":"error"'
HISTORY = b'{"type":"history"'
ACK = b'{"type":"ack"'
CLIENT_ID_KEY = b'"client_id":"c'
TEXT_KEY = b'"text":"m'
# Client i connects from 127.0.0.(2 + i % SOURCE_ADDRESSES), as pages come from
# many phones: the router caps connections per address (app/server.py).
SOURCE_ADDRESSES = 250
CONNECT_AT_ONCE = 64  # handshakes in flight: stays under any listen backlog
CONNECT_TIMEOUT = 60.0
SETTLE_QUIET = 0.5  # connected when no frame arrived for this long...
SETTLE_MAX = 15.0  # ...or after this long (presence frames as users join)
STALL = 5.0  # a phase ends when no delivery arrived for this long
THROUGHPUT_TIMEOUT = 120.0
DRAIN_AFTER_LAST_SEND = 5.0
HOLD_MAX = 600.0
PROBE_TIMEOUT = 30.0  # one probe's ack and deliveries; a 5 % CPU router takes well under
PROBE_GAP = 0.1  # seconds between probes: the room is quiet when the next one starts
# Between throughput runs: the router refills a sender's burst of 10 at 2/s
# (app/chat.py RATE_BURST, RATE_PER_SECOND).
REFILL_PAUSE = 6.0  # a held client set never outlives a crashed benchmark by much


def client_frame(payload: bytes) -> bytes:
    """A masked client-to-server text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return header + key + masked


def send_payload(seq: int, text_len: int) -> bytes:
    text = f"m{seq}|".ljust(text_len, "x")
    return json.dumps(
        {"type": "send", "text": text, "client_id": f"c{seq}"}, separators=(",", ":")
    ).encode()


class Stats:
    def __init__(self) -> None:
        self.opened = 0
        self.histories = 0
        self.lost = 0
        self.closed_by_server = 0
        self.delivered = 0
        self.errors = 0
        self.first_error: str | None = None
        self.last_frame = time.perf_counter()
        self.last_delivery = 0.0
        self.record = False  # keep (seq, arrival) of each delivery
        self.arrivals: list[tuple[int, float]] = []
        self.acks: dict[int, float] = {}  # client_id seq -> arrival of its ack


class Client(asyncio.Protocol):
    def __init__(self, stats: Stats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.lost += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.stats.last_frame = now
        self.buf += data
        if self.upgraded or self._upgrade():
            self._read_frames(now)

    def _upgrade(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(buf[:end]).split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
            self.transport.close()
            return False
        del buf[: end + 4]
        self.upgraded = True
        self.stats.opened += 1
        self.opened.set_result(None)
        return True

    def _read_frames(self, now: float) -> None:
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            self._frame(buf[pos] & 0x0F, start, end, now)
            pos = end
        if pos:
            del buf[:pos]

    def _frame(self, opcode: int, start: int, end: int, now: float) -> None:
        buf, stats = self.buf, self.stats
        if buf.startswith(MESSAGE, start):
            stats.delivered += 1
            stats.last_delivery = now
            if stats.record:
                i = buf.find(TEXT_KEY, start, end) + len(TEXT_KEY)
                stats.arrivals.append((int(buf[i : buf.find(b"|", i, end)]), now))
        elif buf.startswith(ACK, start):
            i = buf.find(CLIENT_ID_KEY, start, end) + len(CLIENT_ID_KEY)
            with contextlib.suppress(ValueError):
                stats.acks[int(buf[i : buf.find(b'"', i, end)])] = now
        elif buf.startswith(HISTORY, start):
            stats.histories += 1
        elif buf.startswith(ERROR, start):
            stats.errors += 1
            if stats.first_error is None:
                stats.first_error = bytes(buf[start:end]).decode(errors="replace")[:200]
        elif opcode == 0x8:
            stats.closed_by_server += 1


def handshake(port: int, path: str, cookie: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    host = f"127.0.0.1:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n"
        f"Cookie: {cookie}\r\n\r\n"
    ).encode()


async def connect_all(args: argparse.Namespace, stats: Stats) -> list[Client]:
    loop = asyncio.get_running_loop()
    cookies = json.loads(Path(args.cookies).read_text()) if args.cookies else [""]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(i: int) -> Client:
        async with gate:
            request = handshake(args.port, args.path, cookies[i % len(cookies)])
            _, client = await loop.create_connection(
                lambda: Client(stats, request),
                "127.0.0.1",
                args.port,
                local_addr=(f"127.0.0.{2 + i % SOURCE_ADDRESSES}", 0),
            )
            await client.opened
            return client

    clients = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(args.clients))), CONNECT_TIMEOUT
    )
    # Settle: every page has its history (our router) and the presence frames
    # that each join set off are through.
    deadline = time.perf_counter() + SETTLE_MAX
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        quiet = time.perf_counter() - stats.last_frame > SETTLE_QUIET
        if quiet and (not args.expect_history or stats.histories >= args.clients):
            break
    return clients


async def wait_deliveries(stats: Stats, expected: int, since: float, deadline: float) -> None:
    """Until ``expected`` deliveries, the deadline, or nothing arrived for STALL s."""
    while stats.delivered < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
        if time.perf_counter() - max(since, stats.last_frame) > STALL:
            break


async def throughput(
    args: argparse.Namespace, clients: list[Client], stats: Stats, first_seq: int
) -> dict[str, float]:
    senders = clients[: args.senders]
    frames = [
        (senders[k], client_frame(send_payload(first_seq + r * len(senders) + k, args.text_len)))
        for r in range(args.burst)
        for k in range(len(senders))
    ]
    stats.delivered = 0
    expected = len(frames) * len(clients)
    start = time.perf_counter()
    for sender, frame in frames:
        sender.send(frame)
    await wait_deliveries(stats, expected, start, start + THROUGHPUT_TIMEOUT)
    elapsed = stats.last_delivery - start
    return {
        "messages": len(frames),
        "expected": expected,
        "delivered": stats.delivered,
        "seconds": elapsed,
        "per_second": stats.delivered / elapsed if elapsed > 0 else 0.0,
    }


async def latency(
    args: argparse.Namespace, clients: list[Client], stats: Stats, first_seq: int
) -> dict[str, float]:
    senders = clients[: args.senders]
    count = round(args.rate * args.seconds)
    frames = [client_frame(send_payload(first_seq + i, args.text_len)) for i in range(count)]
    sent: dict[int, float] = {}
    stats.delivered = 0
    stats.arrivals = []
    stats.record = True
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[first_seq + i] = time.perf_counter()
        senders[i % len(senders)].send(frame)
    last_send = time.perf_counter()
    await wait_deliveries(stats, count * len(clients), last_send, last_send + DRAIN_AFTER_LAST_SEND)
    stats.record = False
    ms = sorted((t - sent[seq]) * 1000 for seq, t in stats.arrivals if seq in sent)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))] if ms else float("nan")

    return {
        "messages": count,
        "expected": count * len(clients),
        "delivered": len(ms),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": ms[-1] if ms else float("nan"),
        "send_span_s": time.perf_counter() - start,
    }


async def run_fanout(args: argparse.Namespace) -> dict[str, object]:
    stats = Stats()
    clients = await connect_all(args, stats)
    result: dict[str, object] = {"clients": stats.opened, "histories": stats.histories}
    runs = []
    per_run = args.burst * args.senders
    for r in range(args.repeats):
        if r:
            await asyncio.sleep(REFILL_PAUSE)
        runs.append(await throughput(args, clients, stats, first_seq=r * per_run))
    result["throughput"] = runs
    await asyncio.sleep(1.0)
    result["latency"] = await latency(args, clients, stats, first_seq=args.repeats * per_run)
    result.update(
        errors=stats.errors,
        first_error=stats.first_error,
        lost=stats.lost,
        closed_by_server=stats.closed_by_server,
    )
    for c in clients:
        c.transport.abort()
    return result


async def run_probe(args: argparse.Namespace) -> dict[str, object]:
    """One message at a time: send -> ack on the sender, send -> the last of
    all clients has it."""
    stats = Stats()
    clients = await connect_all(args, stats)
    senders = clients[: args.senders]
    print("CONNECTED", flush=True)  # the caller starts counting the router's CPU time here
    ack_ms, all_ms, lost = [], [], 0
    for seq in range(args.probes):
        stats.delivered = 0
        frame = client_frame(send_payload(seq, args.text_len))
        start = time.perf_counter()
        senders[seq % len(senders)].send(frame)
        deadline = start + PROBE_TIMEOUT
        while (
            stats.delivered < len(clients) or seq not in stats.acks
        ) and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)
        if stats.delivered < len(clients) or seq not in stats.acks:
            lost += 1
        else:
            ack_ms.append((stats.acks[seq] - start) * 1000)
            all_ms.append((stats.last_delivery - start) * 1000)
        await asyncio.sleep(PROBE_GAP)
    for c in clients:
        c.transport.abort()
    return {
        "clients": stats.opened,
        "histories": stats.histories,
        "ack_ms": ack_ms,
        "all_ms": all_ms,
        "lost": lost,
        "errors": stats.errors,
        "first_error": stats.first_error,
    }


async def run_hold(args: argparse.Namespace) -> None:
    stats = Stats()
    clients = await connect_all(args, stats)
    print(
        "READY " + json.dumps({"clients": stats.opened, "histories": stats.histories}), flush=True
    )
    line = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    await asyncio.wait([line], timeout=HOLD_MAX)
    for c in clients:
        c.transport.abort()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["fanout", "hold", "probe"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/ws/1")
    p.add_argument("--cookies", help="JSON file: a list of Cookie header values")
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--senders", type=int, default=100)
    p.add_argument("--burst", type=int, default=10, help="messages per sender in (a)")
    p.add_argument("--repeats", type=int, default=3, help="runs of (a)")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second in (b)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--text-len", type=int, default=80)
    p.add_argument("--probes", type=int, default=40, help="messages sent one at a time (probe)")
    p.add_argument(
        "--expect-history",
        action="store_true",
        help="the server sends a history frame per client (our router)",
    )
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.mode == "fanout":
        print(json.dumps(asyncio.run(run_fanout(args))), flush=True)
    elif args.mode == "probe":
        print(json.dumps(asyncio.run(run_probe(args))), flush=True)
    else:
        asyncio.run(run_hold(args))


if __name__ == "__main__":
    main()
