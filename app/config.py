"""Settings and the command line of ``python -m app``."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from app.retention import (
    DEFAULT_MAX_HISTORY,
    DEFAULT_RETENTION,
    parse_clock_time,
    parse_duration,
)
from node.fragment import MIN_MTU

DEFAULT_PORT = 8080
DEFAULT_ROOMS = 4
MAX_ROOMS = 64  # the room list is one screen; the wire keeps room numbers in one byte
NODE_NAME_MAX = 32  # shown beside every author; long names wrap on a phone
NODE_NAME_MAX_BYTES = 64  # what a beacon carries (node/wire.py MAX_NODE_NAME_BYTES)


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
    mesh_mtu: int = 1200
    beacon_interval: float = 5.0
    catchup_rate: int = 1_000_000  # bytes/s; node/sync.py CATCHUP_RATE explains

    @property
    def interfaces(self) -> list[str]:
        return self.mesh_iface or ["lo"]

    @property
    def key_file(self) -> Path:
        return self.mesh_key_file or self.data_dir / "mesh.key"


def _node_name(text: str) -> str:
    text = text.strip()
    if (not 1 <= len(text) <= NODE_NAME_MAX or len(text.encode()) > NODE_NAME_MAX_BYTES
            or not text.isprintable()):
        raise argparse.ArgumentTypeError(
            f"node name must be 1 to {NODE_NAME_MAX} printable characters "
            f"({NODE_NAME_MAX_BYTES} bytes of UTF-8)")
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
    web.add_argument("--data-dir", type=Path, default=d.data_dir,
                     help="folder for node id, room logs, accounts and sessions")
    web.add_argument("--host", default=d.host, help="address the web server listens on")
    web.add_argument("--port", type=_port, default=d.port, help="HTTP port")
    web.add_argument("--rooms", type=_rooms, default=d.rooms, help="number of chat rooms")
    web.add_argument("--node-name", type=_node_name, default=d.node_name,
                     help="this router's name, shown beside its users' messages")
    web.add_argument("--captive-portal", action="store_true",
                     help="answer phones' captive-portal probes (/generate_204, "
                          "/hotspot-detect.html, /connecttest.txt ...) with a redirect to the "
                          "chat, so joining the Wi-Fi opens it; see the README for the DNS")
    mesh = p.add_argument_group("mesh")
    mesh.add_argument("--no-mesh", dest="mesh", action="store_false",
                      help="a lone router: no multicast at all")
    mesh.add_argument("--mesh-group", default=d.mesh_group, help="multicast group")
    mesh.add_argument("--mesh-port", type=_port, default=d.mesh_port, help="UDP port")
    mesh.add_argument("--mesh-unicast-port", type=_bounded_int(0, 65535),
                      default=d.mesh_unicast_port,
                      help="UDP port for catch-up between two routers (0: any free port; "
                           "a fixed one lets a firewall open exactly it)")
    mesh.add_argument("--mesh-iface", action="append", default=[], metavar="IFACE",
                      help="interface to the other routers (repeat for several; "
                           "default: lo, so nothing leaves this machine until you say so)")
    mesh.add_argument("--mesh-ttl", type=_bounded_int(1, 32), default=d.mesh_ttl,
                      help="multicast TTL; 1 for one layer-2 mesh, our relay does the hops")
    mesh.add_argument("--mesh-key-file", type=Path, default=None,
                      help="mesh key (hex); made on first start if absent "
                           "(default: DATA_DIR/mesh.key); copy it to every router")
    mesh.add_argument("--mesh-mtu", type=_bounded_int(MIN_MTU, 65507), default=d.mesh_mtu,
                      help="largest UDP payload we send; larger records are fragmented")
    mesh.add_argument("--catchup-rate", type=_bounded_int(10_000, 1_000_000_000),
                      default=d.catchup_rate, metavar="BYTES_PER_S",
                      help="pace of catch-up answers to one router; 1 MB/s keeps most of "
                           "an 802.11n mesh link's airtime for live chat")
    mesh.add_argument("--beacon-interval", type=_positive_float, default=d.beacon_interval,
                      help="seconds between beacons (version vector, presence)")
    history = p.add_argument_group("history")
    history.add_argument("--retention", type=_duration, default="24h",
                         help="how long messages are kept: 90s, 15m, 12h, 7d")
    history.add_argument("--max-history", type=_bounded_int(10, 1_000_000),
                         default=d.max_history, metavar="N",
                         help="messages kept per room at most; the oldest go first")
    history.add_argument("--purge-at", type=_clock_time, default=None, metavar="HH:MM",
                         help="also wipe everything older every day at this local time")
    web.add_argument("--admin", action="append", default=[], metavar="USERNAME",
                     help="a user who may delete messages, clear rooms and ban users "
                          "(repeat for several)")
    p.add_argument("--log-level", default=d.log_level,
                   choices=["debug", "info", "warning", "error"])
    return p


def parse_args(argv: list[str] | None = None) -> Config:
    ns = build_parser().parse_args(argv)
    return Config(**vars(ns))
