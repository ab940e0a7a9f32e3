"""A small network lab of Linux network namespaces for several routers.

How this works:

- Every name starts with ``cc`` and a random per-run tag (``cc3fa1``), so a
  run that crashed never collides with a new one: namespaces are
  ``<tag>-sw`` (the switch) and ``<tag>-<host>`` (one per router).
- Bridges live only inside the switch namespace.  A host gets one veth pair
  per bridge it is on: ``m<bridge>`` inside the host's namespace, addressed
  198.18.<bridge>.<n>/24 (198.18.0.0/15 is set aside for test networks), and
  its peer enslaved to ``br<bridge>`` in the switch.  Nothing is ever made in
  the machine's own namespace; every ``ip``/``nft`` call names its namespace.
- A partition is a link set down; loss is an ``nft`` rule
  ``numgen random mod 100 < N drop`` (the kernel has no netem).
- The test process reaches a router's loopback web server through a
  single-thread executor per namespace whose thread has ``setns()``-ed into
  it: namespace membership is per thread, and a socket keeps the namespace it
  was created in, so a WebSocket made there is then used from any thread.
- ``Lab.close()`` stops the routers, joins the executor threads (a thread in a
  namespace keeps it alive) and deletes the namespaces, which deletes their
  veths and bridges.  ``sweep()`` removes namespaces left by a run that died
  (its owner process is gone), never those of a run still going.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import HttpSession, HttpTransport, RawResponse, Router, WsClient

NETNS_DIR = Path("/var/run/netns")
# Which process owns which tag: the sweep leaves a live run's namespaces alone.
OWNERS_DIR = Path("/run/cc-netlab")
NAME_RE = re.compile(r"^(cc[0-9a-f]{4})-[a-z0-9]+$")
TEST_NET = ipaddress.ip_network("198.18.0.0/15")
CLONE_NEWNET = 0x40000000
WEB_PORT = 8080  # every namespace has its own loopback, so every router can use it
CMD_TIMEOUT = 10.0  # an ip/nft call takes milliseconds; a hung one must not hang the suite


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def exec_argv(ns: str) -> list[str]:
    """The argv prefix that runs a long-lived process inside ``ns``.  If the
    test process dies without tearing down, the process dies with it
    (setpriv is util-linux); the next run's sweep removes the namespaces."""
    reaper = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    return ["ip", "netns", "exec", ns, *reaper]


def ns_run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` (never in the machine's own)."""
    return run("ip", "netns", "exec", ns, *argv, check=check)


def load_nft(ns: str, script: str) -> None:
    """Load an nft ruleset into namespace ``ns``; fail with nft's own words."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"nft in {ns} failed: {r.stderr.strip()}\n{script}")


def list_namespaces() -> list[str]:
    out = run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(ns: str) -> None:
    """Kill whatever still runs in ``ns`` (only we start processes there), then delete it."""
    pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "netns", "delete", ns, check=False)


def sweep() -> list[str]:
    """Delete ``cc*`` namespaces of this lab left by runs that are no longer alive."""
    removed = []
    for ns in list_namespaces():
        m = NAME_RE.match(ns)
        if m and not _owner_alive(OWNERS_DIR / m.group(1)):
            delete_namespace(ns)
            removed.append(ns)
    if OWNERS_DIR.is_dir():
        for owner in OWNERS_DIR.iterdir():
            if not _owner_alive(owner):
                owner.unlink(missing_ok=True)
    return removed


def _owner_alive(owner: Path) -> bool:
    """Is the run that wrote this owner file (a tag's pid) still going?"""
    try:
        pid = int(owner.read_text())
    except (OSError, ValueError):
        return False
    return pid != os.getpid() and _alive(pid)


# -- reaching into a namespace from this process --------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _enter_namespace(ns: str) -> None:
    """Executor initializer: move this thread into ``ns``, or fail loudly."""
    path = NETNS_DIR / ns
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
    # Never talk from the machine's namespace by mistake: check where we are.
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise RuntimeError(f"thread did not enter namespace {ns}")


def namespace_executor(ns: str) -> ThreadPoolExecutor:
    """One thread living in ``ns``; run socket-creating calls there."""
    return ThreadPoolExecutor(
        1, thread_name_prefix=f"netns-{ns}", initializer=_enter_namespace, initargs=(ns,)
    )


class NetnsHttpTransport(HttpTransport):
    """``HttpTransport`` whose connections are made inside a namespace."""

    def __init__(self, executor: ThreadPoolExecutor, host: str, port: int) -> None:
        super().__init__(host, port)
        self.executor = executor

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> RawResponse:
        call = super().__call__
        return self.executor.submit(call, method, path, headers, body).result()


@dataclass
class NetnsRouter(Router):
    """A ``python -m app`` inside a namespace, on that namespace's loopback."""

    ns: str = ""
    executor: ThreadPoolExecutor | None = None
    # Closed by Lab.close(): an open socket keeps its namespace (and veths) alive.
    sockets: list[WsClient] = field(default_factory=list)

    def argv(self) -> list[str]:
        return [*exec_argv(self.ns), *super().argv(), "--host", "127.0.0.1"]

    def _executor(self) -> ThreadPoolExecutor:
        assert self.executor is not None, "NetnsRouter needs its namespace's executor"
        return self.executor

    def http(self) -> HttpSession:
        return HttpSession(NetnsHttpTransport(self._executor(), "127.0.0.1", self.port))

    def ws(
        self, session: HttpSession, room: int = 1, query: str = "", origin: str | None = None
    ) -> WsClient:
        # The handshake runs in the namespace's thread; the socket then works anywhere.
        w = self._executor().submit(Router.ws, self, session, room, query, origin).result()
        self.sockets.append(w)
        return w


# -- the lab --------------------------------------------------------------------


@dataclass
class Host:
    name: str
    ns: str
    index: int  # the last octet of its addresses
    ifaces: dict[int, str] = field(default_factory=dict)  # bridge -> interface name
    executor: ThreadPoolExecutor | None = None

    def address(self, bridge: int) -> str:
        return f"198.18.{bridge}.{self.index}"


class Lab:
    """Namespaces, bridges and veths for one test; ``close()`` removes them all."""

    def __init__(self) -> None:
        self.tag = "cc" + secrets.token_hex(2)
        self.switch = f"{self.tag}-sw"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self.bridges: set[int] = set()
        self.routers: list[NetnsRouter] = []
        self._lock = threading.Lock()
        OWNERS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        (OWNERS_DIR / self.tag).write_text(str(os.getpid()))
        try:
            self._add_namespace(self.switch)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, ns: str) -> None:
        assert NAME_RE.match(ns), ns
        self.namespaces.append(ns)  # first: close() removes it even if "add" half-failed
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def bridge(self, n: int) -> str:
        """``br<n>`` in the switch namespace, made on first use."""
        name = f"br{n}"
        if n not in self.bridges:
            sw = self.switch
            # No IGMP snooping: the bridge floods the group to every port, like a radio.
            run("ip", "-n", sw, "link", "add", name, "type", "bridge", "mcast_snooping", "0")
            run("ip", "-n", sw, "link", "set", name, "up")
            self.bridges.add(n)
        return name

    def add_host(self, name: str, bridges: list[int]) -> Host:
        assert re.fullmatch(r"[a-z0-9]{1,6}", name), name
        assert name not in self.hosts and name != "sw"
        host = Host(name, f"{self.tag}-{name}", len(self.hosts) + 1)
        assert host.index < 255
        self._add_namespace(host.ns)
        for b in bridges:
            self._plug(host, b)
        host.executor = namespace_executor(host.ns)
        self.hosts[name] = host
        return host

    def _plug(self, host: Host, bridge: int) -> None:
        br = self.bridge(bridge)
        inner, outer = f"m{bridge}", f"{host.name}-{bridge}"  # both <= 15 characters
        address = ipaddress.ip_interface(f"{host.address(bridge)}/24")
        assert address.ip in TEST_NET
        # Made inside the host's namespace, the peer straight inside the switch's.
        run(
            "ip",
            "-n",
            host.ns,
            "link",
            "add",
            inner,
            "type",
            "veth",
            "peer",
            "name",
            outer,
            "netns",
            self.switch,
        )
        run("ip", "-n", self.switch, "link", "set", outer, "master", br, "up")
        run("ip", "-n", host.ns, "addr", "add", str(address), "dev", inner)
        run("ip", "-n", host.ns, "link", "set", inner, "up")
        host.ifaces[bridge] = inner

    # -- faults -----------------------------------------------------------------

    def set_link(self, host: str, bridge: int, up: bool, *, switch_side: bool = True) -> None:
        """Partition (``up=False``) or heal a host's link to a bridge.

        By default the switch's end goes down: the router's interface stays up
        but hears nothing, as when it walks out of radio range.
        """
        h = self.hosts[host]
        ns, dev = (self.switch, f"{h.name}-{bridge}") if switch_side else (h.ns, h.ifaces[bridge])
        run("ip", "-n", ns, "link", "set", dev, "up" if up else "down")

    def _loss_table(self, iface: str) -> str:
        return f"cc_loss_{iface}"

    def add_loss(self, host: str, bridge: int, percent: int) -> None:
        """Drop ``percent`` % of packets in and out of a host's interface at random."""
        assert 0 <= percent <= 100
        h = self.hosts[host]
        iface = h.ifaces[bridge]
        table = self._loss_table(iface)
        script = (
            f"table inet {table} {{\n"
            f"  chain in {{ type filter hook input priority -300; policy accept;\n"
            f'    iifname "{iface}" numgen random mod 100 < {percent} counter drop\n  }}\n'
            f"  chain out {{ type filter hook output priority -300; policy accept;\n"
            f'    oifname "{iface}" numgen random mod 100 < {percent} counter drop\n  }}\n'
            f"}}\n"
        )
        self.remove_loss(host, bridge)
        load_nft(h.ns, script)

    def remove_loss(self, host: str, bridge: int) -> None:
        h = self.hosts[host]
        ns_run(
            h.ns, "nft", "delete", "table", "inet", self._loss_table(h.ifaces[bridge]), check=False
        )

    def loss_drops(self, host: str, bridge: int) -> int:
        """Packets the loss rule dropped so far, both directions."""
        h = self.hosts[host]
        out = ns_run(
            h.ns, "nft", "list", "table", "inet", self._loss_table(h.ifaces[bridge])
        ).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))

    def _count_table(self, iface: str) -> str:
        return f"cc_count_{iface}"

    def count_udp(self, host: str, bridge: int) -> None:
        """Count UDP packets and bytes (IP lengths) on a host's interface, both
        ways, as they go on or come off the wire: before a loss rule drops
        them (priority -400 < -300), and without our own multicast looped back."""
        h = self.hosts[host]
        iface = h.ifaces[bridge]
        table = self._count_table(iface)
        script = (
            f"table inet {table} {{\n"
            f"  chain in {{ type filter hook input priority -400; policy accept;\n"
            f'    iifname "{iface}" ip saddr != {h.address(bridge)} meta l4proto udp counter\n'
            f"  }}\n"
            f"  chain out {{ type filter hook output priority -400; policy accept;\n"
            f'    oifname "{iface}" meta l4proto udp counter\n  }}\n'
            f"}}\n"
        )
        ns_run(h.ns, "nft", "delete", "table", "inet", table, check=False)
        load_nft(h.ns, script)

    def udp_counters(self, host: str, bridge: int) -> dict[str, tuple[int, int]]:
        """``{"in": (packets, bytes), "out": (packets, bytes)}`` since ``count_udp``."""
        h = self.hosts[host]
        out = ns_run(
            h.ns, "nft", "list", "table", "inet", self._count_table(h.ifaces[bridge])
        ).stdout
        found: dict[str, tuple[int, int]] = {}
        for chain, body in re.findall(r"chain (in|out) \{(.*?)\}", out, re.S):
            m = re.search(r"counter packets (\d+) bytes (\d+)", body)
            found[chain] = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        return found

    # -- routers ----------------------------------------------------------------

    def start_router(
        self,
        host: str,
        data_dir: Path,
        extra: list[str],
        *,
        mesh_bridges: Sequence[int] | None = None,
    ) -> NetnsRouter:
        """A router on ``host``; its mesh runs on every bridge the host is on,
        or only on ``mesh_bridges`` (the others are, say, an uplink)."""
        h = self.hosts[host]
        data_dir.mkdir(parents=True, exist_ok=True)
        on = sorted(h.ifaces) if mesh_bridges is None else sorted(mesh_bridges)
        ifaces = [arg for i in on for arg in ("--mesh-iface", h.ifaces[i])]
        r = NetnsRouter(data_dir, WEB_PORT, h.name, [*ifaces, *extra], ns=h.ns, executor=h.executor)
        self.routers.append(r)
        return r.start()  # type: ignore[return-value]

    # -- teardown ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            errors: list[BaseException] = []
            for r in self.routers:
                for w in r.sockets:
                    w.close()
                try:
                    r.stop()
                except Exception as e:  # keep tearing down whatever happens
                    errors.append(e)
            self.routers.clear()
            for h in self.hosts.values():
                if h.executor is not None:
                    h.executor.shutdown(wait=True, cancel_futures=True)
            for ns in reversed(self.namespaces):
                delete_namespace(ns)
            left = set(self.namespaces) & set(list_namespaces())
            self.namespaces.clear()
            (OWNERS_DIR / self.tag).unlink(missing_ok=True)
            if left:
                raise RuntimeError(f"namespaces not deleted: {sorted(left)}")
            if errors:
                raise errors[0]
