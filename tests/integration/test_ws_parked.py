"""Idle pages are parked (app/hub.py ``Page``): no greenlet, no request
objects, no read buffer while a page is quiet; its frames are read and
answered when they arrive, and the socket is still counted, closed and
released at the page's end.

Against a real ``python -m app`` router on loopback, with raw sockets
(tests/integration/test_hardening_ws.py ``RawSocket``).  Memory bounds are
set well away from both the parked figure and the one before (a greenlet
per page), so a noisy machine cannot flip them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gevent
import gevent.socket
import pytest
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.websocket import Stream
from greenlet import greenlet

from app.hub import BoundedWebSocket, Page, serve_page
from tests.helpers import HttpSession, Router, free_port, routers, rss_bytes, wait_for
from tests.integration.test_hardening_ws import RawSocket, raw_frame

# Pages held at once for the memory figure.  Each cost about 27 KB of the
# router's resident memory while a greenlet waited in its read, about 5 KB
# parked; the bound sits between.
PAGES = 300
PAGE_BYTES_MAX = 8 * 1024
WARM_UP_PAGES = 20  # the first pages grow the heap's arenas: not counted
# A router refusing connections over this cap (app/server.py; the least it takes is 8).
CAP = 10
UNKNOWN = raw_frame(0x1, b'{"type":"nope"}')  # answered with a bad_request error frame
# A frame's deadline on a router started with it short (app/server.py
# ChatServer.frame_timeout; 30 s by default).
FRAME_TIMEOUT = 1.0


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    extra = ["--no-mesh", "--max-connections-per-address", "1000"]
    with routers(tmp_path, "alpha", extra=extra) as (r,):
        yield r


def descriptors(router: Router) -> int:
    assert router.proc is not None
    return len(os.listdir(f"/proc/{router.proc.pid}/fd"))


def json_frame(raw: RawSocket, kind: str, frames_max: int = 20) -> dict:
    """The next text frame of type ``kind`` (others are skipped)."""
    for _ in range(frames_max):
        opcode, payload = raw.read_frame()
        if opcode == 0x1:
            frame = json.loads(payload)
            if frame.get("type") == kind:
                return frame
    raise AssertionError(f"no {kind} frame in {frames_max}")


def open_pages(router: Router, session: HttpSession, n: int) -> list[RawSocket]:
    pages = [RawSocket(router, session) for _ in range(n)]
    for page in pages:
        json_frame(page, "history")
    return pages


def close_all(pages: list[RawSocket]) -> None:
    for page in pages:
        page.close()


def test_idle_pages_cost_little_memory(router: Router) -> None:
    session = router.user("alice")
    close_all(open_pages(router, session, WARM_UP_PAGES))
    wait_for(lambda: router.status()["clients"] == 0, 10, "the warm-up pages gone")
    before = rss_bytes(router)
    pages = open_pages(router, session, PAGES)
    try:
        wait_for(lambda: router.status()["clients"] == PAGES, 10, "every page joined")
        time.sleep(0.5)
        per_page = (rss_bytes(router) - before) / PAGES
        print(f"{per_page / 1024:.1f} KB per idle page")
        assert per_page < PAGE_BYTES_MAX, f"{per_page / 1024:.1f} KB per idle page"
        # Parked, every page is still served: one of them asks, gets its answer.
        pages[PAGES // 2].sock.sendall(UNKNOWN)
        assert json_frame(pages[PAGES // 2], "error")["code"] == "bad_request"
    finally:
        close_all(pages)


def test_a_frame_sent_with_the_handshake_is_answered(router: Router) -> None:
    """Bytes the page sends before it has the 101 are read ahead by the
    HTTP handler's buffer: they must reach the page, not be lost."""
    page = RawSocket(router, router.user("alice"), then=UNKNOWN * 2)
    try:
        assert json_frame(page, "error")["code"] == "bad_request"
        assert json_frame(page, "error")["code"] == "bad_request"
    finally:
        page.close()


def test_a_frame_in_pieces_is_answered(router: Router) -> None:
    session = router.user("alice")
    page, other = RawSocket(router, session), RawSocket(router, session)
    try:
        json_frame(page, "history")
        for i in range(1, len(UNKNOWN)):  # one byte at a time, the rest at once
            page.sock.sendall(UNKNOWN[i - 1 : i])
            if i < 4:
                time.sleep(0.1)  # the page's reader waits in the middle of a frame
        other.sock.sendall(UNKNOWN)  # meanwhile another page is served
        assert json_frame(other, "error")["code"] == "bad_request"
        page.sock.sendall(UNKNOWN[-1:])
        assert json_frame(page, "error")["code"] == "bad_request"
    finally:
        page.close()
        other.close()


def test_closed_pages_leave_no_descriptor(router: Router) -> None:
    session = router.user("alice")
    close_all(open_pages(router, session, 2))
    wait_for(lambda: router.status()["clients"] == 0, 10, "the first pages gone")
    before = descriptors(router)
    pages = open_pages(router, session, 30)
    assert descriptors(router) >= before + 25  # (a status request's may have gone meanwhile)
    pages[0].sock.sendall(raw_frame(0x8, b"\x03\xe8"))  # a close frame: 1000
    assert pages[0].close_code() == 1000
    close_all(pages)  # the others without one
    wait_for(lambda: router.status()["clients"] == 0, 10, "every page gone")
    wait_for(lambda: descriptors(router) <= before, 10, "their sockets closed")


def test_a_parked_page_counts_until_it_ends(tmp_path: Path) -> None:
    """The connection cap holds parked pages (a page handed its socket
    over is not a finished request) and lets them go at their end."""
    extra = ["--no-mesh", "--max-connections", str(CAP), "--max-connections-per-address", "100"]
    with routers(tmp_path, "alpha", extra=extra) as (router,):
        session = router.user("alice")
        for _ in range(3):  # a count kept after the end would fill the cap
            pages = [open_page_soon(router, session) for _ in range(CAP)]
            for _ in range(3):  # parked pages hold the cap: over it, closed unread
                with pytest.raises(OSError):
                    router.status()
            close_all(pages)
            wait_for(lambda: clients(router) == 0, 10, "every page gone")
        assert router.status()["http"]["refused"]["server_full"] >= 9


def open_page_soon(router: Router, session: HttpSession) -> RawSocket:
    """A page, once the connection of the request before has been let go
    (the router sees its end a moment after the client)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            page = RawSocket(router, session)
            json_frame(page, "history")
            return page
        except (OSError, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def clients(router: Router) -> int | None:
    """The router's page count; None while it refuses the connection."""
    try:
        return int(router.status()["clients"])
    except OSError:
        return None


# -- a frame's deadline ---------------------------------------------------------------

# ``python -m app`` with ChatServer.frame_timeout set first (argv[1], then the
# router's own arguments): a deadline short enough to wait out in a test.
_SHORT_FRAMES_MAIN = (
    "import sys; from gevent import monkey; monkey.patch_all(); "
    "from app.server import ChatServer; ChatServer.frame_timeout = float(sys.argv.pop(1)); "
    "import runpy; runpy.run_module('app', run_name='__main__')"
)


@dataclass
class ShortFramesRouter(Router):
    """A router whose pages' frames must arrive within ``frame_timeout``."""

    frame_timeout: float = FRAME_TIMEOUT

    def argv(self) -> list[str]:
        python, _, _, *args = super().argv()  # [python, "-m", "app", ...]
        return [python, "-c", _SHORT_FRAMES_MAIN, str(self.frame_timeout), *args]


@contextlib.contextmanager
def short_frames_router(tmp_path: Path, extra: list[str]) -> Iterator[Router]:
    router = ShortFramesRouter(tmp_path / "alpha" / "data", free_port(), "alpha", extra)
    router.data_dir.mkdir(parents=True)
    try:
        yield router.start()
    finally:
        router.stop()


def test_a_frame_left_unfinished_ends_its_page(tmp_path: Path) -> None:
    """A page that sends the start of a frame and no more (a phone gone out
    of the Wi-Fi mid frame, or a client holding the router's memory one
    byte a connection) is ended once the frame's deadline is past, as a
    closed page ends: its socket closed, its descriptor and its place under
    the connection cap given back, its client gone from the room, and the
    event counted in /status.  An idle page has no deadline, and a frame in
    pieces within it is answered."""
    extra = ["--no-mesh", "--max-connections", str(CAP), "--max-connections-per-address", "100"]
    with short_frames_router(tmp_path, extra) as router:
        session = router.user("alice")
        idle = open_page_soon(router, session)
        pages = [idle]
        try:
            wait_for(lambda: clients(router) == 1, 10, "the idle page joined")
            before = descriptors(router)
            stuck = [open_page_soon(router, session) for _ in range(CAP - 1)]
            pages += stuck
            sent = time.monotonic()
            for page in stuck:
                page.sock.sendall(UNKNOWN[:1])  # one byte of a frame's header, then nothing
            with pytest.raises(OSError):  # the cap is full
                router.status()
            for page in stuck:  # each is closed once its frame's time is up
                assert page.close_code(timeout=FRAME_TIMEOUT + 10) != "open"
            assert time.monotonic() - sent >= FRAME_TIMEOUT * 0.9
            wait_for(lambda: clients(router) == 1, 10, "the stuck pages gone from the room")
            assert router.status()["http"]["refused"]["frame_too_slow"] == CAP - 1
            wait_for(lambda: descriptors(router) <= before, 10, "their sockets closed")
            # The idle page has outlived the deadline, and is served: a frame
            # whole, then one in pieces that come within the deadline.
            idle.sock.sendall(UNKNOWN)
            assert json_frame(idle, "error")["code"] == "bad_request"
            for i in range(0, len(UNKNOWN), 4):
                idle.sock.sendall(UNKNOWN[i : i + 4])
                time.sleep(FRAME_TIMEOUT / 20)
            assert json_frame(idle, "error")["code"] == "bad_request"
            assert clients(router) == 1
        finally:
            close_all(pages)


def test_a_frame_trickled_in_has_the_same_deadline(tmp_path: Path) -> None:
    """The deadline is the whole frame's, not a wait's: bytes that keep
    coming, each in time for the one before, do not hold the page's reader
    past it."""
    with short_frames_router(tmp_path, ["--no-mesh"]) as router:
        page = RawSocket(router, router.user("alice"))
        try:
            json_frame(page, "history")
            frame = raw_frame(0x1, b'{"type":"' + b"n" * 100 + b'"}')
            sent = time.monotonic()
            for i in range(len(frame) - 1):  # never the last byte
                try:
                    page.sock.sendall(frame[i : i + 1])
                except OSError:  # closed under us: the deadline is past
                    break
                if time.monotonic() - sent > FRAME_TIMEOUT + 10:
                    break
                time.sleep(FRAME_TIMEOUT / 10)
            assert page.close_code(timeout=FRAME_TIMEOUT + 10) != "open"
            assert time.monotonic() - sent < FRAME_TIMEOUT + 5
            wait_for(lambda: clients(router) == 0, 10, "the page gone from the room")
            assert router.status()["http"]["refused"]["frame_too_slow"] == 1
        finally:
            page.close()


# -- the Page in-process, on a gevent socket pair ------------------------------------


def _page_readers() -> list[greenlet]:
    """Live greenlets whose stack is inside a ``Page``'s reading."""
    found = []
    for g in gc.get_objects():
        if isinstance(g, greenlet) and not g.dead and g is not gevent.getcurrent():
            frame = g.gr_frame
            while frame is not None:
                if (
                    frame.f_code.co_name in ("_run", "read")
                    and "hub.py" in frame.f_code.co_filename
                ):
                    found.append(g)
                    break
                frame = frame.f_back
    return found


def until(pred: Callable[[], object], what: str) -> None:
    """``wait_for`` in this process's own event loop (the page runs in it)."""
    for _ in range(500):
        if pred():
            return
        gevent.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_page_holds_no_greenlet_between_frames() -> None:
    ours, theirs = gevent.socket.socketpair()
    handler = SimpleNamespace(socket=ours, rfile=ours.makefile("rb"))
    ws = BoundedWebSocket({}, Stream(handler), handler)
    page = Page(ours, ws)
    handler.rfile.close()  # as the HTTP handler's reader goes (it holds the socket open)
    got: list[str | bytearray] = []
    ended: list[bool] = []

    def step() -> bool:
        try:
            message = ws.read_message()
        except WebSocketError:  # the end of the stream
            return False
        if message is None:
            return False
        got.append(message)
        return True

    page.serve(step, lambda: ended.append(True))  # nothing to read: parked at once
    assert page.taken and not ended and _page_readers() == []
    theirs.sendall(raw_frame(0x1, b"one") + raw_frame(0x1, b"two"))
    until(lambda: len(got) == 2, "both messages")
    gevent.sleep(0.05)
    assert got == ["one", "two"] and _page_readers() == []  # parked again
    half = raw_frame(0x1, b"three")
    theirs.sendall(half[:3])
    gevent.sleep(0.05)
    assert len(_page_readers()) == 1  # waits inside the frame
    theirs.sendall(half[3:])
    until(lambda: len(got) == 3, "the frame sent in two pieces")
    gevent.sleep(0.05)
    assert _page_readers() == [] and not ended
    theirs.close()  # the end of the stream ends the page
    until(lambda: ended, "the page's end")
    assert page.ended and ours.fileno() == -1


def _served_page(
    frame_timeout: float,
) -> tuple[Page, gevent.socket.socket, list[str | bytearray], list[bool], Counter[str]]:
    """A page served on a socket pair, parked: the page, the other end,
    the messages read, whether it ended, and its counts."""
    ours, theirs = gevent.socket.socketpair()
    handler = SimpleNamespace(socket=ours, rfile=ours.makefile("rb"))
    ws = BoundedWebSocket({}, Stream(handler), handler)
    counts: Counter[str] = Counter()
    page = Page(ours, ws, frame_timeout=frame_timeout, counts=counts)
    handler.rfile.close()
    got: list[str | bytearray] = []
    ended: list[bool] = []

    def step() -> bool:
        try:
            message = ws.read_message()
        except WebSocketError:  # the end of the stream, or a frame too slow
            return False
        if message is None:
            return False
        got.append(message)
        return True

    page.serve(step, lambda: ended.append(True))
    return page, theirs, got, ended, counts


def test_a_control_frame_alone_leaves_the_page_parked() -> None:
    """A ping or a pong with nothing after it is read, and the page is
    parked again: the wait for its next frame is an idle page's, with no
    greenlet and no deadline."""
    _page, theirs, got, ended, counts = _served_page(frame_timeout=0.2)
    try:
        theirs.sendall(raw_frame(0x9, b"hi"))  # a ping, then nothing
        gevent.sleep(0.05)
        assert _page_readers() == []
        gevent.sleep(0.4)  # twice the deadline: an idle page has none
        assert not ended
        theirs.sendall(raw_frame(0xA, b"") + raw_frame(0x1, b"one"))
        until(lambda: got == ["one"], "the message after a pong")
        gevent.sleep(0.05)
        assert _page_readers() == [] and not ended and not counts
    finally:
        theirs.close()
    until(lambda: ended, "the page's end")


def test_an_unfinished_message_ends_its_page() -> None:
    """A frame cut short, or a message whose next fragment never comes,
    holds the page's reader until the deadline, no longer: the page ends,
    its socket is closed and the event counted."""
    for unfinished in (raw_frame(0x1, b"cut short")[:5], raw_frame(0x1, b"one", fin=False)):
        page, theirs, got, ended, counts = _served_page(frame_timeout=0.2)
        try:
            theirs.sendall(unfinished)
            gevent.sleep(0.05)
            assert len(_page_readers()) == 1 and not ended  # within the deadline: waits
            until(lambda: ended, "the page's end")  # noqa: B023 - called here, in this turn
            assert page.ended and page.socket.fileno() == -1 and _page_readers() == []
            assert counts == {"frame_too_slow": 1} and got == []
        finally:
            theirs.close()


def test_a_socket_made_by_hand_is_read_in_this_greenlet() -> None:
    ours, theirs = gevent.socket.socketpair()
    handler = SimpleNamespace(socket=ours, rfile=ours.makefile("rb"))
    ws = BoundedWebSocket({}, Stream(handler), handler)
    got: list[str | bytearray | None] = []
    theirs.sendall(raw_frame(0x1, b"one") + raw_frame(0x8, b"\x03\xe8"))
    serve_page(
        ws, lambda: got.append(ws.read_message()) or got[-1] is not None, lambda: got.append("end")
    )
    assert got == ["one", None, "end"]
    ours.close()
    theirs.close()
