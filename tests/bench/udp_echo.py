"""Baseline for the mesh latency benchmark: a plain UDP echo and a plain UDP
forwarder, run inside the test namespaces (no app, no gevent)."""

from __future__ import annotations

import socket
import sys

TIMEOUT = 60.0  # the benchmark runs far shorter; the helper must not outlive it


def echo(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(TIMEOUT)
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)


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
                s.sendto(data, client)
        else:
            client = addr
            s.sendto(data, dest)


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        forward(int(sys.argv[2]), sys.argv[3])
