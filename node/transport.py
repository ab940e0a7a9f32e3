"""Multicast sockets and greenlets: the only place the mesh touches the network.

How this works: ``MeshTransport`` drives a sans-I/O ``MeshProtocol``.

- One *group socket* is bound to the group address and port (so it sees only
  the group's datagrams) with ``SO_REUSEADDR``/``SO_REUSEPORT`` (several
  routers on one host each get a copy) and ``IP_MULTICAST_ALL`` off (only the
  memberships it made itself).  It joins the group on each configured mesh
  interface by index, never on "any" interface, which the kernel would map to
  the default route.  ``IP_PKTINFO`` tells which interface a datagram came in
  on.
- One *unicast socket*, on ``unicast_port`` (0: any free one), sends everything: multicast on
  each mesh interface in turn (``IP_MULTICAST_IF`` by index, TTL from the
  config, loopback on so routers on one host hear each other) and unicast
  replies to a peer.  Peers see its port as our source address, so unicast
  answers come back to it.
- Time: the protocol runs on ``time.monotonic()`` (``monotonic``), as
  aioquic's adapter passes ``loop.time()``: a router that sets its wall clock
  from NTP after boot moves no timer.
- Greenlets: one reader per socket, and one timer loop that sleeps until the
  protocol's next timer or until ``pump()`` wakes it.  After every input the
  transport drains the protocol's events (handed to ``on_events``, which
  settles them: ``records_settled``) and sends what it has queued.  Send
  errors (an interface that went down, a full buffer) are counted, never
  raised: the mesh repairs losses.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import gevent
from gevent.event import Event as Wakeup

from node.protocol import Event, MeshProtocol

log = logging.getLogger(__name__)

DEFAULT_GROUP = "224.1.1.1"
DEFAULT_PORT = 8888
# TTL 1: one layer-2 mesh (802.11s, batman-adv) needs no more; routers that
# cannot hear each other are bridged by our own relay, not by IP routing.
DEFAULT_TTL = 1
RECV_BUFFER = 65_535  # the largest UDP payload
# Socket buffers: a burst of catch-up datagrams must not overflow the kernel's
# default (about 200 KB) while the reader greenlet is busy.
SOCKET_BUFFER_BYTES = 1 << 20
# Datagrams taken from a socket in one go before their events are handed out:
# a catch-up burst at 1 MB/s brings ~800 datagrams a second; 64 per round
# keeps a round short (a few ms) while writing to the logs 64 times less often.
MAX_DRAIN = 64
# The timer loop re-reads the protocol's timer at least this often: a safety
# net should a wake-up ever be missed, at the cost of one idle check a second.
MAX_TIMER_SLEEP = 1.0
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux, not in every Python
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


def mreqn(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn: group, no local address, interface by index."""
    return struct.pack("=4s4si", socket.inet_aton(group), b"\0\0\0\0", ifindex)


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"mesh interface {name!r} does not exist") from None


def check_group(group: str) -> str:
    try:
        first = int(socket.inet_aton(group)[0])
    except OSError:
        raise ValueError(f"{group!r} is not an IPv4 address") from None
    if not 224 <= first <= 239:
        raise ValueError(f"{group} is not a multicast address (224.0.0.0/4)")
    return group


class MeshTransport:
    def __init__(
        self,
        protocol: MeshProtocol,
        *,
        interfaces: Sequence[str],
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        ttl: int = DEFAULT_TTL,
        unicast_port: int = 0,
        on_events: Callable[[list[Event]], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interfaces:
            raise ValueError("name at least one mesh interface (the default is lo)")
        self.protocol = protocol
        self.group = check_group(group)
        self.port = port
        self.ttl = ttl
        self.unicast_port = unicast_port
        self.on_events = on_events
        self.monotonic = monotonic  # the protocol's time: timers, rates, durations
        self.ifindex = {name: interface_index(name) for name in interfaces}
        self.ifname = {i: n for n, i in self.ifindex.items()}
        self.errors: Counter[str] = Counter()
        self._wakeup = Wakeup()
        self._greenlets: list[gevent.Greenlet] = []
        self.group_sock = self._open_group_socket()
        self.unicast_sock = self._open_unicast_socket()

    # -- sockets ---------------------------------------------------------------

    def _open_group_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.bind((self.group, self.port))
            for index in self.ifindex.values():
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn(self.group, index))
        except OSError:
            s.close()
            raise
        return s

    def _open_unicast_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            # Loopback only: bind to 127.0.0.1, or the kernel would stamp our
            # datagrams with another interface's address.  Otherwise any
            # address: unicast replies may come on any mesh interface, and
            # every datagram is MAC-checked before anything reads it.
            only_lo = list(self.ifindex) == ["lo"]
            s.bind(("127.0.0.1" if only_lo else "0.0.0.0", self.unicast_port))  # noqa: S104
        except OSError:
            s.close()
            raise
        return s

    @property
    def unicast_address(self) -> tuple[str, int]:
        host, port = self.unicast_sock.getsockname()[:2]
        return str(host), int(port)

    # -- running ---------------------------------------------------------------

    def start(self) -> None:
        self._greenlets = [
            gevent.spawn(self._read_group),
            gevent.spawn(self._read_unicast),
            gevent.spawn(self._timer_loop),
        ]
        self.pump()

    def stop(self) -> None:
        gevent.killall(self._greenlets, timeout=1)
        self._greenlets = []
        for s in (self.group_sock, self.unicast_sock):
            s.close()

    def pump(self) -> None:
        """Hand out events, then ``flush``: the reader's and the timer's path.

        Events go out as one list per pump, so a burst of records (catch-up)
        is stored with one write per log.
        """
        events = []
        while (event := self.protocol.next_event()) is not None:
            events.append(event)
        if events:
            try:
                self.on_events(events)
            except Exception:
                log.exception("handling %d mesh events failed", len(events))
            # Settled (stored, refused or noted gone) or, after a failure,
            # lacking again: catch-up brings those back.
            self.protocol.records_settled()
        self.flush()

    def flush(self) -> None:
        """Send what the protocol queued and re-arm the timer: the sender's
        path (a record or presence made here).  Events stay queued for the
        reader and timer greenlets, so a sender never re-enters ``on_events``."""
        for data, dest in self.protocol.datagrams_to_send(self.monotonic()):
            self._send(data, dest)
        self._wakeup.set()

    def _send(self, data: bytes, dest: tuple[str, int] | None) -> None:
        try:
            if dest is not None:
                self.unicast_sock.sendto(data, dest)
                return
            for index in self.ifindex.values():
                self.unicast_sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn(self.group, index)
                )
                self.unicast_sock.sendto(data, (self.group, self.port))
        except OSError as e:
            self.errors[errno.errorcode.get(e.errno or 0, "OSError")] += 1

    def _recv_group(self) -> tuple[bytes, Any, str | None]:
        data, ancdata, _flags, addr = self.group_sock.recvmsg(
            RECV_BUFFER, socket.CMSG_SPACE(PKTINFO.size)
        )
        return data, addr, self._arrival_interface(ancdata)

    def _recv_unicast(self) -> tuple[bytes, Any, str | None]:
        data, addr = self.unicast_sock.recvfrom(RECV_BUFFER)
        return data, addr, None

    def _read_group(self) -> None:
        self._read_loop(self.group_sock, self._recv_group)

    def _read_unicast(self) -> None:
        self._read_loop(self.unicast_sock, self._recv_unicast)

    def _read_loop(
        self, sock: socket.socket, recv: Callable[[], tuple[bytes, Any, str | None]]
    ) -> None:
        """Wait for a datagram, then take whatever else is already queued (up
        to ``MAX_DRAIN``) before handing events out once: a catch-up burst is
        stored with one write per batch of datagrams, not one per datagram,
        so the reader keeps up with the socket instead of the kernel dropping
        what does not fit its buffer."""
        while True:
            try:
                batch = [recv()]
            except OSError as e:
                self.errors["recv_" + errno.errorcode.get(e.errno or 0, "OSError")] += 1
                gevent.sleep(0.1)
                continue
            sock.settimeout(0.0)  # no greenlet switch below: nobody else sees it
            try:
                while len(batch) < MAX_DRAIN:
                    batch.append(recv())
            except OSError:  # BlockingIOError: nothing more queued
                pass
            finally:
                sock.settimeout(None)
            for data, addr, iface in batch:
                self._receive(data, addr, iface)
            self.pump()

    def _arrival_interface(self, ancdata: list[tuple[int, int, bytes]]) -> str | None:
        for level, kind, payload in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= PKTINFO.size:
                return self.ifname.get(PKTINFO.unpack_from(payload)[0])
        return None

    def _receive(self, data: bytes, addr: Any, iface: str | None) -> None:
        try:
            self.protocol.receive_datagram(data, addr, self.monotonic(), iface)
        except Exception:  # a bug of ours must not end the reader: log, count, go on
            self.errors["protocol_bug"] += 1
            log.exception("receiving a datagram from %s failed", addr)

    def _timer_loop(self) -> None:
        while True:
            self._wakeup.clear()
            timer = self.protocol.get_timer()
            now = self.monotonic()
            if timer is not None and timer <= now:
                try:
                    self.protocol.handle_timer(now)
                except Exception:  # as in _receive: never end the timer loop
                    self.errors["protocol_bug"] += 1
                    log.exception("mesh timer failed")
                    gevent.sleep(MAX_TIMER_SLEEP)
                self.pump()
                continue
            self._wakeup.wait(
                MAX_TIMER_SLEEP if timer is None else min(timer - now, MAX_TIMER_SLEEP)
            )
