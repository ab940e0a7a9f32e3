"""Baseline for the mesh latency benchmark: a plain UDP echo and a plain UDP
forwarder, run inside the test namespaces (no app, no gevent)."""

from __future__ import annotations

import contextlib
import socket
import sys

TIMEOUT = 60.0  # the benchmark runs far shorter; the helper must not outlive it


def send(s: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    """A datagram a loss rule drops on the way out fails with EPERM: lost, go on."""
    with contextlib.suppress(PermissionError):
        s.sendto(data, addr)


def echo(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(TIMEOUT)
    while True:
        data, addr = s.recvfrom(2048)
        send(s, data, addr)


def forward(port: int, target: str) -> None:
    """Forward datagrams from a client to ``target`` and the answers back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(TIMEOUT)
    dest = (target, port)
    client = None
    while True:
        data, addr = s.recvfrom(2048)
        if addr == dest:
            if client is not None:
                send(s, data, client)
        else:
            client = addr
            send(s, data, dest)


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        forward(int(sys.argv[2]), sys.argv[3])
