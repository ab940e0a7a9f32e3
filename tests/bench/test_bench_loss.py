"""The benchmarks' own UDP helpers survive the loss rule they run under.

The loss rule (tests/netns/netlab.py ``add_loss``) is an nft ``drop`` on the
output hook: a datagram it drops makes ``sendto`` fail with PermissionError
(EPERM) in the sender.  A helper must count that as a lost datagram, as the
air would lose it, and go on: ``make bench`` crashed once on the ASK-FILE
asker's unguarded request.  Here every datagram is dropped (100 %), so each
send fails for certain: real namespaces, real sockets, the helper run as the
bench runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.netns.netlab import Host, Lab, load_nft, ns_run

pytestmark = pytest.mark.netns

HERE = Path(__file__).resolve().parent
ASK_TIMEOUT = "1.0"  # seconds the asker listens: nothing can come at 100 % loss
ASK_IDLE = "0.5"
RUN_TIMEOUT = 30.0  # the helper stops itself after ASK_TIMEOUT; this bounds a hang
PROBES = 5  # datagrams per round to the echo
OUT_TABLE = "cc_out_loss"
ROUNDS = 3  # rounds of probes, 0.25 s each: the echo starts within the first


@pytest.fixture
def lab() -> Lab:
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("nft") is not None,
        "needs root, ip and nft",
    )
    with Lab() as made:
        yield made


def drop_output(host: Host) -> None:
    """Every datagram the host sends on its link dropped, as the loss rule
    drops some (``add_loss`` takes at most 99 %: nft's ``mod 100`` is 0-99)."""
    load_nft(
        host.ns,
        f"table inet {OUT_TABLE} {{\n"
        "  chain out { type filter hook output priority -300; policy accept;\n"
        f'    oifname "{host.ifaces[0]}" counter drop\n  }}\n}}\n',
    )


def output_drops(host: Host) -> int:
    out = ns_run(host.ns, "nft", "list", "table", "inet", OUT_TABLE).stdout
    return int(re.search(r"counter packets (\d+)", out).group(1))


def test_askfile_asker_survives_total_loss(lab: Lab) -> None:
    host = lab.add_host("n", [0])
    drop_output(host)
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            host.ns,
            sys.executable,
            str(HERE / "askfile.py"),
            "ask",
            host.address(0),
            ASK_TIMEOUT,
            ASK_IDLE,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["ask_lost"] == 1
    assert result["chunks"] == 0 and result["messages"] == 0
    assert output_drops(host) >= 1  # the rule really dropped the request


def test_udp_echo_survives_total_loss(lab: Lab) -> None:
    """The mesh-latency baseline's echo: a reply the loss rule drops must not
    end the helper (every probe after it would time out).  The rule here drops
    only what the echo's host sends, so the probes reach it and every reply fails."""
    echo_host, client = lab.add_host("e", [0]), lab.add_host("c", [0])
    drop_output(echo_host)
    port = "9999"
    echo = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            echo_host.ns,
            sys.executable,
            str(HERE / "udp_echo.py"),
            "echo",
            port,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(PROBES):\n"
        "    s.sendto(b'x', (sys.argv[1], int(sys.argv[2])))\n"
        "    time.sleep(0.05)\n"
    ).replace("PROBES", str(PROBES))
    try:
        for _ in range(ROUNDS):  # the echo may not be bound yet in the first round
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client.ns,
                    sys.executable,
                    "-c",
                    probe,
                    echo_host.address(0),
                    port,
                ],
                check=True,
                timeout=RUN_TIMEOUT,
            )
        assert output_drops(echo_host) >= 1  # replies were sent and dropped
        assert echo.poll() is None, echo.stderr.read()[-2000:] if echo.stderr else ""
    finally:
        echo.kill()
        echo.wait()
