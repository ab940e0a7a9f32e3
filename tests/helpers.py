"""Test helpers: an HTTP session with cookies (against a live server or a
WSGI app in-process), router processes, and WebSocket clients."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import websocket

if TYPE_CHECKING:
    from app.chat import Chat
    from node.record import Record

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0  # a router starts in well under a second; CI machines are shared
PASSWORD = "correct horse"
# What a transport (``WsgiTransport``, ``HttpTransport``) answers: the status,
# the headers and the body, as they came.
RawResponse = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def receive_one(chat: Chat, record: Record) -> bool:
    """One record from a peer, as the mesh hands them over (in a list):
    True if the chat stored it."""
    return bool(chat.receive_records([record]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_mesh(tmp_path: Path, beacon_interval: float = 0.3) -> list[str]:
    """Flags for routers that form a mesh of their own on loopback: a group
    port and a random key nobody else has, so parallel tests never meet."""
    key = tmp_path / "mesh.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)  # as an operator keeps it (a readable key is warned about)
    return [
        "--mesh-port",
        str(free_udp_port()),
        "--mesh-key-file",
        str(key),
        "--beacon-interval",
        str(beacon_interval),
    ]


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class WsgiTransport:
    """Calls a WSGI app in-process, as a server would."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1:8080") -> None:
        self.app, self.host = app, host

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> RawResponse:
        path_info, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": self.host,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": str(len(body)),
        }
        for k, v in headers.items():
            key = k.upper().replace("-", "_")
            environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = v
        captured: dict[str, Any] = {}

        def start_response(status: str, hdrs: list[tuple[str, str]], exc: Any = None) -> None:
            captured["status"], captured["headers"] = int(status.split(maxsplit=1)[0]), hdrs

        chunks = self.app(environ, start_response)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return captured["status"], captured["headers"], data


class HttpTransport:
    """HTTP to ``host:port``; from the loopback address ``source`` if given
    (the throttles count per client address)."""

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host, self.port, self.source = host, port, source

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> RawResponse:
        bind = (self.source, 0) if self.source else None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10, source_address=bind)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()


@dataclass
class HttpSession:
    """A browser-like client: keeps cookies, never follows redirects."""

    transport: Callable[..., RawResponse]
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        status, raw_headers, data = self.transport(method, path, hdrs, body)
        set_cookies = [v for k, v in raw_headers if k.lower() == "set-cookie"]
        for line in set_cookies:
            jar = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        hmap = {k.lower(): v for k, v in raw_headers}
        return Response(status, hmap, set_cookies, data.decode("utf-8", "replace"))

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], **kw: Any) -> Response:
        return self.request("POST", path, form=form, **kw)

    def csrf(self, path: str) -> str:
        page = self.get(path)
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m, f"no CSRF token on {path}: {page.status} {page.text[:200]}"
        return m.group(1)

    def register(self, name: str, password: str = PASSWORD) -> Response:
        token = self.csrf("/register")
        return self.post(
            "/register",
            {"csrf": token, "username": name, "password": password, "confirm": password},
        )

    def login(self, name: str, password: str = PASSWORD) -> Response:
        # Registering logs in: a login after it starts from the login form.
        self.cookies.pop("cc_session", None)
        token = self.csrf("/login")
        return self.post("/login", {"csrf": token, "username": name, "password": password})

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


@dataclass
class Router:
    """A ``python -m app`` process on loopback."""

    data_dir: Path
    port: int
    name: str
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "app",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--node-name",
            self.name,
            *self.extra,
        ]

    def start(self) -> Router:
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        logf = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.argv(), cwd=ROOT, stdout=logf, stderr=logf, env=env, stdin=subprocess.DEVNULL
        )
        logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router {self.name} exited:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.http().get("/status").status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"router {self.name} did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def http(self) -> HttpSession:
        return HttpSession(HttpTransport("127.0.0.1", self.port))

    def status(self) -> dict[str, Any]:
        return self.http().get("/status").json()

    def user(self, name: str, *, register: bool = True) -> HttpSession:
        s = self.http()
        if register:
            r = s.register(name)
            assert r.status == 303, r.text  # registering logs in
            return s
        r = s.login(name)
        assert r.status == 303, r.text
        return s

    def ws(
        self,
        session: HttpSession,
        room: int = 1,
        query: str = "",
        origin: str | None = None,
        headers: tuple[str, ...] = (),
    ) -> WsClient:
        url = f"ws://127.0.0.1:{self.port}/ws/{room}{query}"
        conn = websocket.create_connection(
            url,
            timeout=5,
            origin=origin or self.base,
            header=[f"Cookie: {session.cookie_header()}", *headers],
        )
        return WsClient(conn)


def rss_bytes(router: Router) -> int:
    """The router process's resident memory (VmRSS), in bytes."""
    assert router.proc is not None
    for line in Path(f"/proc/{router.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class WsClient:
    """A WebSocket to a router that reads JSON frames."""

    def __init__(self, conn: websocket.WebSocket) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []

    def send(self, obj: Any) -> None:
        self.conn.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        self.conn.settimeout(timeout)
        frame = json.loads(self.conn.recv())
        self.frames.append(frame)
        return frame

    def recv_until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Read frames until one matches; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame; got {self.frames[-10:]}")
            frame = self.recv(left)
            if pred(frame):
                return frame

    def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        return self.recv_until(lambda f: f.get("type") == kind, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@contextlib.contextmanager
def running(made: list[Router]) -> Iterator[list[Router]]:
    """``made`` started in turn, and all stopped at the end, however it ends."""
    try:
        for r in made:
            r.start()
        yield made
    finally:
        for r in made:
            r.stop()


@contextlib.contextmanager
def routers(tmp_path: Path, *names: str, extra: list[str] | None = None) -> Iterator[list[Router]]:
    started: list[Router] = []
    try:
        for name in names:
            r = Router(tmp_path / name / "data", free_port(), name, list(extra or []))
            r.data_dir.mkdir(parents=True)
            started.append(r.start())
        yield started
    finally:
        for r in started:
            r.stop()
