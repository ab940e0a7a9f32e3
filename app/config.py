"""Settings and the command line of ``python -m app``."""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8080
DEFAULT_ROOMS = 4
MAX_ROOMS = 64  # the room list is one screen; the wire keeps room numbers in one byte
NODE_NAME_MAX = 32  # shown beside every author; long names wrap on a phone


@dataclass
class Config:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    rooms: int = DEFAULT_ROOMS
    node_name: str = field(default_factory=lambda: socket.gethostname()[:NODE_NAME_MAX])
    log_level: str = "info"
    mesh: bool = True


def _rooms(text: str) -> int:
    n = int(text)
    if not 1 <= n <= MAX_ROOMS:
        raise argparse.ArgumentTypeError(f"rooms must be 1 to {MAX_ROOMS}")
    return n


def _port(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError("a port is 1 to 65535")
    return n


def _node_name(text: str) -> str:
    text = text.strip()
    if not 1 <= len(text) <= NODE_NAME_MAX or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"node name must be 1 to {NODE_NAME_MAX} printable characters")
    return text


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
    mesh = p.add_argument_group("mesh")
    mesh.add_argument("--no-mesh", dest="mesh", action="store_false",
                      help="a lone router: no multicast at all")
    p.add_argument("--log-level", default=d.log_level,
                   choices=["debug", "info", "warning", "error"])
    return p


def parse_args(argv: list[str] | None = None) -> Config:
    ns = build_parser().parse_args(argv)
    return Config(**vars(ns))
