"""A real Mosquitto for the bridge's tests (app/bridge.py), and an uplink.

``Broker`` runs Debian's ``mosquitto`` binary (never the system service) on
a free loopback port with a config generated in the test's folder; it can
be stopped and started again on the same port (a broker restart).  In a
network namespace (tests/netns/test_bridge_netns.py) it listens on that
namespace's test address instead: ``wrap`` runs it there (``ip netns exec
NS``) and ``executor`` is a thread living there, from which the lab checks
that it listens (this process's own namespace cannot reach that address).
``Uplink`` is a TCP relay between a bridge and the broker: ``cut()`` stops
every byte both ways while the connections stay open, as a dead uplink
does (nobody is told; keep-alives find out), ``restore()`` lets them flow
again.  Both bind 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import pytest

from tests.helpers import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
BROKER_START_TIMEOUT = 10.0  # Mosquitto listens within milliseconds; CI machines are shared
RELAY_CHUNK = 65_536  # bytes read at once by the uplink relay
RELAY_POLL = 0.05  # seconds a relay thread waits before it looks at the cut flag again


def require_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            "mosquitto is not installed: run `make test` as root (apt-get install mosquitto)"
        )


# Where a broker may listen: loopback, or a namespace's address in the range
# set aside for test networks (198.18.0.0/15); never a real interface.
BROKER_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("198.18.0.0/15"))


def _accepts(host: str, port: int) -> bool:
    """Does ``host:port`` accept a TCP connection (from this thread's namespace)?"""
    try:
        with socket.create_connection((host, port), 1):
            return True
    except OSError:
        return False


class Broker:
    """A Mosquitto process on ``host``:``port`` (127.0.0.1 and a free port by
    default; see the opening comment for namespaces)."""

    def __init__(
        self,
        folder: Path,
        users: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        wrap: Sequence[str] = (),
        executor: Executor | None = None,
    ) -> None:
        require_mosquitto()
        if not any(ipaddress.ip_address(host) in net for net in BROKER_NETS):
            raise ValueError(f"a test broker listens on loopback or 198.18.0.0/15, not {host}")
        self.folder, self.host, self.port = folder, host, port or free_port()
        self.wrap, self.executor = list(wrap), executor
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            "user root",  # the test's folder is root's own (0700)
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if users:
            passwd = folder / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run([PASSWD, "-b", str(passwd), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def url(self, prefix: str, user: str | None = None, port: int | None = None) -> str:
        who = f"{user}@" if user else ""
        return f"mqtt://{who}{self.host}:{port or self.port}/{prefix}"

    def start(self) -> Broker:
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrap, MOSQUITTO, "-c", str(self.conf)],
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
        )
        logf.close()
        deadline = time.monotonic() + BROKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log()}")
            if self.listening():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen:\n{self.log()}")

    def listening(self) -> bool:
        if self.executor is None:
            return _accepts(self.host, self.port)
        return self.executor.submit(_accepts, self.host, self.port).result()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Uplink:
    """A TCP relay 127.0.0.1:``port`` -> the broker that can be cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.bytes = 0  # relayed both ways: what the bridge's link carried
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        self.listener.settimeout(RELAY_POLL)
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                client.close()
                continue
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(RELAY_POLL)
        try:
            while not self.closed:
                if not self.flowing.is_set():
                    time.sleep(RELAY_POLL)  # cut: bytes wait in the kernel's buffers
                    continue
                try:
                    data = src.recv(RELAY_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    break
                self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        for t in self.threads:
            t.join(2)
