"""Settings and the command line of ``python -m app``."""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit

from app.moderation import parse_admin
from app.retention import (
    DEFAULT_MAX_HISTORY,
    DEFAULT_RETENTION,
    parse_clock_time,
    parse_duration,
)
from node.blobs import DEFAULT_BUDGET, MAX_BLOB_BYTES
from node.config import BEACON_INTERVAL, CATCHUP_RATE, DEFAULT_MTU
from node.fragment import MIN_MTU

DEFAULT_PORT = 8080
DEFAULT_ROOMS = 4
MAX_ROOMS = 64  # the room list is one screen; the wire keeps room numbers in one byte
NODE_NAME_MAX = 32  # shown beside every author; long names wrap on a phone
NODE_NAME_MAX_BYTES = 64  # what a beacon carries (node/wire.py MAX_NODE_NAME_BYTES)
# The web server (app/server.py ChatServer, app/web.py ChatHandler).
# A phone sends its request line and headers in one packet or two: 10 s
# covers retransmissions on a weak Wi-Fi link, and is as long as a client
# that sends headers slowly (or never finishes them) holds a connection.
HEADER_TIMEOUT = 10.0
# Keep-alive: a connection with no request started is closed after this.
# Browsers keep idle connections for minutes (Chrome: 300 s) and open a new
# one at once when they need it, so this only frees descriptors.
IDLE_TIMEOUT = 15.0
# Connections one address (an IPv6 /64) holds at once: a phone's browser
# opens about 6 per host plus a WebSocket per open room (4 rooms); 32 leaves
# room for a second tab.  One phone cannot take every connection.
MAX_CONNECTIONS_PER_ADDRESS = 32
# The bridge (app/bridge.py).  A topic prefix: MQTT topic levels of letters,
# digits, "-", "_" and "."; no wildcards ("+", "#") nor "$" (the broker's
# own topics), and short: every topic of every message carries it.
BRIDGE_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}(/[A-Za-z0-9._-]{1,64}){0,3}")
BRIDGE_PORTS = {"mqtt": 1883, "mqtts": 8883}  # IANA's ports for MQTT and MQTT over TLS
# MQTT keep-alive, seconds: the bridge notices a silent uplink within about
# twice this, the broker a silent bridge within 1.5 times.  30 s costs a
# router two tiny packets a minute; tests shorten it to see a cut sooner.
BRIDGE_KEEPALIVE = 30
BRIDGE_KEEPALIVE_MIN = 2  # below this the pings themselves are the traffic
# Pictures and files (docs/BLOBS.md).  A photo re-encoded by the page is a
# few hundred KB; 8 MiB takes a short PDF or a phone's own video clip too.
MAX_UPLOAD = 8 * 1024 * 1024
# Per account and day (a sliding 24 h): a hundred photos, or four big files.
UPLOAD_BYTES_PER_DAY = 32 * 1024 * 1024
MIN_BLOB_BUDGET = 1024 * 1024


@dataclass(frozen=True)
class BridgeUrl:
    """``mqtt://[user@]host[:port]/prefix`` or ``mqtts://...``: never a password."""

    tls: bool
    host: str
    port: int
    prefix: str
    user: str | None = None

    @property
    def shown(self) -> str:
        """The URL as the log and /status show it."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.prefix}"


def parse_bridge_url(text: str) -> BridgeUrl:
    """A ``--bridge`` URL; ValueError saying what is wrong."""
    parts = urlsplit(text)
    if parts.scheme not in BRIDGE_PORTS:
        raise ValueError("must start with mqtt:// or mqtts://")
    if parts.password is not None:
        raise ValueError(
            "put the broker password in a file given with --bridge-password-file, "
            "not on the command line (every user of the router can read it there)"
        )
    try:
        port = BRIDGE_PORTS[parts.scheme] if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError("the port must be 1 to 65535")
    if not parts.hostname:
        raise ValueError("no broker host")
    prefix = parts.path.strip("/")
    if not BRIDGE_PREFIX_RE.fullmatch(prefix) or "?" in text or "#" in text:
        raise ValueError(
            "give a topic prefix after the host, e.g. mqtt://broker.example/valley-chat "
            "(letters, digits, - _ . and up to 4 levels)"
        )
    return BridgeUrl(parts.scheme == "mqtts", parts.hostname, port, prefix, parts.username)


def default_node_name() -> str:
    name = socket.gethostname().strip() or "router"
    return name.encode()[:NODE_NAME_MAX_BYTES].decode(errors="ignore")[:NODE_NAME_MAX]


@dataclass
class Config:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    rooms: int = DEFAULT_ROOMS
    node_name: str = field(default_factory=default_node_name)
    log_level: str = "info"
    retention: float = DEFAULT_RETENTION  # seconds
    purge_at: time | None = None
    admin: list[str] = field(default_factory=list)
    max_history: int = DEFAULT_MAX_HISTORY
    captive_portal: bool = False
    mesh: bool = True
    mesh_group: str = "224.1.1.1"
    mesh_port: int = 8888
    mesh_unicast_port: int = 0  # 0: any free port
    mesh_iface: list[str] = field(default_factory=list)  # empty: ["lo"]
    mesh_ttl: int = 1
    mesh_key_file: Path | None = None  # None: <data-dir>/mesh.key
    mesh_mtu: int = DEFAULT_MTU  # node/config.py: the mesh's one set of defaults
    beacon_interval: float = BEACON_INTERVAL
    catchup_rate: int = CATCHUP_RATE  # bytes/s
    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = 0  # 0: as many as the descriptor limit allows (app/server.py)
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    bridge: BridgeUrl | None = None  # None: no broker
    bridge_ca_file: Path | None = None  # mqtts: the CA that signed the broker's certificate
    bridge_password_file: Path | None = None
    bridge_key_file: Path | None = None  # None: the mesh key
    bridge_keepalive: int = BRIDGE_KEEPALIVE
    blob_budget: int = DEFAULT_BUDGET  # bytes of pictures and files kept here
    max_upload: int = MAX_UPLOAD  # bytes: the largest upload
    upload_bytes_per_day: int = UPLOAD_BYTES_PER_DAY  # per account, any 24 h
    blob_peer: list[str] = field(default_factory=list)  # HOST:PORT of other routers' chats

    @property
    def interfaces(self) -> list[str]:
        return self.mesh_iface or ["lo"]

    @property
    def key_file(self) -> Path:
        return self.mesh_key_file or self.data_dir / "mesh.key"


def _node_name(text: str) -> str:
    text = text.strip()
    if (
        not 1 <= len(text) <= NODE_NAME_MAX
        or len(text.encode()) > NODE_NAME_MAX_BYTES
        or not text.isprintable()
    ):
        raise argparse.ArgumentTypeError(
            f"node name must be 1 to {NODE_NAME_MAX} printable characters "
            f"({NODE_NAME_MAX_BYTES} bytes of UTF-8)"
        )
    return text


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}")
        return n

    return parse


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _clock_time(text: str) -> time:
    try:
        return parse_clock_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_port = _bounded_int(1, 65535)
_rooms = _bounded_int(1, MAX_ROOMS)


def _admin(text: str) -> str:
    try:
        name, account = parse_admin(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name if account is None else f"{name}={account}"


def _bridge_url(text: str) -> BridgeUrl:
    try:
        return parse_bridge_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--bridge {e}") from None


def _bytes(low: int, high: int) -> Callable[[str], int]:
    """A size: bytes, or with K, M or G (binary: 1K is 1024 bytes)."""

    def parse(text: str) -> int:
        t = text.strip().upper().removesuffix("IB").removesuffix("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
        digits = t[:-1] if scale > 1 else t
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 12:
            raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or 512K, 8M, 1G)")
        n = int(digits) * scale
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high} bytes")
        return n

    return parse


def _host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _positive_float(text: str) -> float:
    x = float(text)
    if not 0.05 <= x <= 3600:
        raise argparse.ArgumentTypeError("must be 0.05 to 3600 seconds")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="Community Chat: an offline chat served from a mesh router.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = Config()
    web = p.add_argument_group("web")
    web.add_argument(
        "--data-dir",
        type=Path,
        default=d.data_dir,
        help="folder for node id, room logs, accounts and sessions",
    )
    web.add_argument("--host", default=d.host, help="address the web server listens on")
    web.add_argument("--port", type=_port, default=d.port, help="HTTP port")
    web.add_argument("--rooms", type=_rooms, default=d.rooms, help="number of chat rooms")
    web.add_argument(
        "--node-name",
        type=_node_name,
        default=d.node_name,
        help="this router's name, shown beside its users' messages",
    )
    web.add_argument(
        "--captive-portal",
        action="store_true",
        help="answer phones' captive-portal probes (/generate_204, "
        "/hotspot-detect.html, /connecttest.txt ...) with a redirect to the "
        "chat, so joining the Wi-Fi opens it; see the README for the DNS",
    )
    web.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=d.header_timeout,
        metavar="SECONDS",
        help="a request's line and headers must arrive within this, or the "
        "connection is closed (slow or unfinished headers)",
    )
    web.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=d.idle_timeout,
        metavar="SECONDS",
        help="an idle keep-alive connection is closed after this",
    )
    web.add_argument(
        "--max-connections",
        type=_bounded_int(0, 1_000_000),
        default=d.max_connections,
        metavar="N",
        help="connections served at once; 0: as many as the descriptor limit "
        "(ulimit -n) allows, keeping room for the logs and the mesh",
    )
    web.add_argument(
        "--max-connections-per-address",
        type=_bounded_int(1, 65_535),
        default=d.max_connections_per_address,
        metavar="N",
        help="connections one client address (an IPv6 /64) holds at once; more are closed at once",
    )
    mesh = p.add_argument_group("mesh")
    mesh.add_argument(
        "--no-mesh", dest="mesh", action="store_false", help="a lone router: no multicast at all"
    )
    mesh.add_argument("--mesh-group", default=d.mesh_group, help="multicast group")
    mesh.add_argument("--mesh-port", type=_port, default=d.mesh_port, help="UDP port")
    mesh.add_argument(
        "--mesh-unicast-port",
        type=_bounded_int(0, 65535),
        default=d.mesh_unicast_port,
        help="UDP port for catch-up between two routers (0: any free port; "
        "a fixed one lets a firewall open exactly it)",
    )
    mesh.add_argument(
        "--mesh-iface",
        action="append",
        default=[],
        metavar="IFACE",
        help="interface to the other routers (repeat for several; "
        "default: lo, so nothing leaves this machine until you say so)",
    )
    mesh.add_argument(
        "--mesh-ttl",
        type=_bounded_int(1, 32),
        default=d.mesh_ttl,
        help="multicast TTL; 1 for one layer-2 mesh, our relay does the hops",
    )
    mesh.add_argument(
        "--mesh-key-file",
        type=Path,
        default=None,
        help="mesh key (hex); made on first start if absent "
        "(default: DATA_DIR/mesh.key); copy it to every router",
    )
    mesh.add_argument(
        "--mesh-mtu",
        type=_bounded_int(MIN_MTU, 65507),
        default=d.mesh_mtu,
        help="largest UDP payload we send; larger records are fragmented",
    )
    mesh.add_argument(
        "--catchup-rate",
        type=_bounded_int(10_000, 1_000_000_000),
        default=d.catchup_rate,
        metavar="BYTES_PER_S",
        help="pace of catch-up answers to one router; 1 MB/s keeps most of "
        "an 802.11n mesh link's airtime for live chat",
    )
    mesh.add_argument(
        "--beacon-interval",
        type=_positive_float,
        default=d.beacon_interval,
        help="the longest Trickle interval between beacons while neighbours agree "
        "(they go every 0.25 s while they do not); a router not heard for three "
        "of these is gone",
    )
    bridge = p.add_argument_group("bridge (app/bridge.py, docs/BRIDGE.md)")
    bridge.add_argument(
        "--bridge",
        type=_bridge_url,
        default=None,
        metavar="mqtt://[USER@]HOST[:PORT]/PREFIX",
        help="join other meshes through this MQTT broker (mqtts:// for TLS); "
        "every mesh on the same PREFIX is one chat",
    )
    bridge.add_argument(
        "--bridge-ca-file",
        type=Path,
        default=None,
        help="mqtts: the CA certificate(s) the broker's certificate must chain to "
        "(default: the system's)",
    )
    bridge.add_argument(
        "--bridge-password-file",
        type=Path,
        default=None,
        help="a file whose first line is the broker password for USER",
    )
    bridge.add_argument(
        "--bridge-key-file",
        type=Path,
        default=None,
        help="key (hex) that signs what crosses the broker; every bridge on the "
        "prefix needs it (default: the mesh key)",
    )
    bridge.add_argument(
        "--bridge-keepalive",
        type=_bounded_int(BRIDGE_KEEPALIVE_MIN, 3600),
        default=d.bridge_keepalive,
        metavar="SECONDS",
        help="MQTT keep-alive: a silent uplink is noticed within about twice this",
    )
    blobs = p.add_argument_group("pictures and files (docs/BLOBS.md)")
    blobs.add_argument(
        "--blob-budget",
        type=_bytes(MIN_BLOB_BUDGET, 1 << 40),
        default=d.blob_budget,
        metavar="BYTES",
        help="flash this router gives to pictures and files (its own and those "
        "fetched for its pages); the least recently used go first, and their "
        "messages then say the file is no longer held here.  8M, 64M, 1G",
    )
    blobs.add_argument(
        "--max-upload",
        type=_bytes(1024, MAX_BLOB_BYTES),
        default=d.max_upload,
        metavar="BYTES",
        help="the largest picture or file one upload may be; larger ones are "
        "refused (413) before their bytes are read",
    )
    blobs.add_argument(
        "--upload-bytes-per-day",
        type=_bytes(0, 1 << 40),
        default=d.upload_bytes_per_day,
        metavar="BYTES",
        help="what one account may upload in any 24 hours (429 beyond); 0: no uploads",
    )
    blobs.add_argument(
        "--blob-peer",
        action="append",
        default=[],
        type=_host_port,
        metavar="HOST:PORT",
        help="another router's chat to fetch pictures and files from, besides "
        "the mesh's neighbours (asked on this router's own --port); repeat for "
        "several.  For routers whose chat listens on another port",
    )
    history = p.add_argument_group("history")
    history.add_argument(
        "--retention",
        type=_duration,
        default="24h",
        help="how long messages are kept: 90s, 15m, 12h, 7d",
    )
    history.add_argument(
        "--max-history",
        type=_bounded_int(10, 1_000_000),
        default=d.max_history,
        metavar="N",
        help="messages kept per room at most; the oldest go first",
    )
    history.add_argument(
        "--purge-at",
        type=_clock_time,
        default=None,
        metavar="HH:MM",
        help="also wipe everything older every day at this local time",
    )
    web.add_argument(
        "--admin",
        action="append",
        default=[],
        type=_admin,
        metavar="USERNAME=ACCOUNT_ID",
        help="the account that may delete messages, clear rooms and ban users "
        "(repeat for several; give every router the same).  Register the "
        "name, read its id from the router's log, then bind it; a name "
        "without an id grants nothing (app/moderation.py)",
    )
    p.add_argument(
        "--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"]
    )
    return p


def parse_args(argv: list[str] | None = None) -> Config:
    parser = build_parser()
    ns = parser.parse_args(argv)
    config = Config(**vars(ns))
    if config.bridge is None and (config.bridge_password_file or config.bridge_ca_file):
        parser.error("--bridge-password-file and --bridge-ca-file need --bridge")
    if config.bridge is not None and config.bridge_ca_file and not config.bridge.tls:
        parser.error("--bridge-ca-file is for mqtts:// (TLS)")
    if config.bridge is not None and config.bridge_password_file and not config.bridge.user:
        parser.error("--bridge-password-file needs a user: mqtt://USER@host/prefix")
    if config.max_upload > config.blob_budget:
        parser.error("--max-upload must not be over --blob-budget")
    return config
