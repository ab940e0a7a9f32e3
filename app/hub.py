"""The WebSocket hub: who is connected to which room, and fan-out to them.

Each connected page is a ``Client``.  Everything sent to it goes through its
own outbox, written by one writer at a time, so frames written from several
greenlets (fan-out, acks, pongs, the close frame) never interleave on the
socket: gevent-websocket has no send lock.  A client whose outbox grows past
``OUTBOX_MAX_BYTES`` cannot keep up and is disconnected (its page reconnects
and fetches what it missed) rather than letting one slow phone hold the
router's memory.  That happens in whichever greenlet queued the frame (often
another page's post being fanned out), so it only marks the client closed and
shuts its socket down: no close frame (the full outbox is where it would
wait), nothing that could raise into the sender.

Reading: every frame a page sends, control and continuation frames and empty
ones included, costs one from the socket's frame budget, a message comes in
at most ``MAX_MESSAGE_FRAGMENTS`` frames, and the reader yields to the other
greenlets after each frame (``BoundedWebSocket.read_message``): a socket that
floods frames is closed after a bounded number of them and never holds the
router meanwhile.  Between messages an idle page holds no greenlet: its
socket is parked (``Page``) until the page sends again.  A message once
begun must be in within ``FRAME_TIMEOUT``, or the page ends.

Fan-out: a frame is serialised and framed once per message and the same bytes
are queued for every client in the room.  One flush per hub, after the
greenlet that broadcast yields, writes each client's outbox in one
non-blocking ``send``; only a client whose socket does not take it all gets a
writer greenlet, which waits for the socket with a ``sendall``.  Messages that
arrive together (a burst) leave together: one write per client, not one per
message; and a quiet room costs one system call per client and message, not
a greenlet.  (A greenlet per client and message was twice the CPU per
delivery: tests/bench/bench_fanout.py.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import TYPE_CHECKING, Any

import gevent
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.websocket import Header, WebSocket
from greenlet import greenlet  # type: ignore[import-untyped]  # gevent's own dependency

if TYPE_CHECKING:
    from app.i18n import Language

log = logging.getLogger(__name__)

# The largest frame or message a page may send: a 2,000-character message of
# characters outside the BMP, each JSON-escaped as a surrogate pair
# ("\ud83d\udc69", 12 bytes), fits with room to spare: 24 KB + framing.
MAX_INCOMING_BYTES = 32 * 1024
# Per client; about 100 full-size history frames.  A phone this far behind is
# disconnected and catches up by reconnecting.
OUTBOX_MAX_BYTES = 1024 * 1024
# Frames one message may come in.  Browsers send every message whole, in one
# frame; a client library splits only what outgrows its buffer (4 KB or more),
# so MAX_INCOMING_BYTES fits in 8 pieces.  More is a socket spending the
# router's time on nothing (empty continuations cost no bytes).
MAX_MESSAGE_FRAGMENTS = 8
# How long a page has to send the rest of a message once its first byte is
# in (its frames, fragments and the control frames between them).  A phone
# sends a message in one write, a few hundred bytes; 30 s covers a weak
# Wi-Fi link's retransmissions many times over.  Without it a page that sent
# part of a frame and no more (a phone gone out of range mid frame, or a
# client doing it on purpose, a byte per connection) held a greenlet and its
# buffers for good.  An idle page, between messages, has no deadline.
FRAME_TIMEOUT = 30.0
OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
OPCODE_PONG = 0xA


def frame_bytes(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """An unmasked server-to-client WebSocket frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def encode_frame(obj: dict[str, Any]) -> bytes:
    """A JSON object as a ready-to-write text frame."""
    return frame_bytes(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())


class FrameFlood(WebSocketError):
    """A socket sent frames faster than its frame budget allows (close 1008)."""


class TooManyFragments(FrameTooLargeException):
    """A message came in more than ``MAX_MESSAGE_FRAGMENTS`` frames (close 1009)."""


class FrameTooSlow(WebSocketError):
    """A message begun was not in within its page's frame timeout."""


class _Idle(Exception):
    """Raised through the reader's step to the page, which parks: a control
    frame was read and nothing more is at hand.  Neither a WebSocketError
    nor an OSError, so a step lets it by."""


class BoundedWebSocket(WebSocket):
    """gevent-websocket's WebSocket with limits and one writer.

    gevent-websocket reads a frame of any announced length into memory; this
    refuses a frame or a message larger than ``MAX_INCOMING_BYTES`` before
    reading its payload (``FrameTooLargeException``), and counts every frame
    (``read_message``).  Pongs and the close frame go through the client's
    outbox, so they cannot interleave with other frames.
    """

    # Same layout as WebSocket (so the handler can swap the class of the
    # socket it made); per-socket state lives on the handler object.
    __slots__ = ()

    @property
    def client(self) -> Client | None:
        return getattr(self.handler, "cc_client", None)

    @client.setter
    def client(self, client: Client) -> None:
        self.handler.cc_client = client

    def read_message(
        self,
        take_frame: Callable[[], bool] | None = None,
    ) -> str | bytearray | None:
        """The next text or binary message; None once the page closed.

        gevent-websocket's own loops over frames and answers control frames
        without returning, so a socket sending empty pongs, or empty
        continuations of an unfinished message, was never counted nor made
        to yield.  Here each frame costs one ``take_frame()`` (``FrameFlood``
        when it returns False), a message has at most
        ``MAX_MESSAGE_FRAGMENTS`` frames (``TooManyFragments``), and the
        other greenlets run after every frame.  Bad UTF-8 raises
        ``UnicodeError``, other protocol faults ``ProtocolError``.
        """
        opcode = 0
        message = bytearray()
        fragments = 0
        page = self.stream if isinstance(self.stream, Page) else None
        first = True
        while True:
            if page is not None and not opcode:  # between messages
                page.between_messages(first)
            first = False
            header, payload = self.read_frame()
            if take_frame is not None and not take_frame():
                raise FrameFlood("frames faster than the socket's budget")
            gevent.sleep(0)  # buffered frames must not hold the router
            kind = header.opcode
            if kind == self.OPCODE_PING:
                self.handle_ping(header, payload)
                continue
            if kind == self.OPCODE_PONG:
                continue
            if kind == self.OPCODE_CLOSE:
                self.handle_close(header, payload)
                return None
            opcode = self._message_opcode(opcode, kind)
            fragments += 1
            if fragments > MAX_MESSAGE_FRAGMENTS:
                raise TooManyFragments(f"message in over {MAX_MESSAGE_FRAGMENTS} frames")
            message += payload
            if header.fin:
                break
        return message.decode("utf-8") if opcode == self.OPCODE_TEXT else message

    def _message_opcode(self, opcode: int, kind: int) -> int:
        """The opcode of the message a data frame of ``kind`` belongs to."""
        if kind in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            if opcode:
                raise ProtocolError(f"opcode {kind} inside a fragmented message")
            return kind
        if kind == self.OPCODE_CONTINUATION:
            if not opcode:
                raise ProtocolError("continuation frame outside a message")
            return opcode
        raise ProtocolError(f"unknown opcode {kind}")

    def read_frame(self) -> tuple[Header, bytes]:
        header = Header.decode_header(self.stream)
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.handler.cc_message_bytes = 0
        if header.opcode < self.OPCODE_CLOSE:  # control frames are not part of the message
            total = getattr(self.handler, "cc_message_bytes", 0) + header.length
            self.handler.cc_message_bytes = total
            if total > MAX_INCOMING_BYTES:
                raise FrameTooLargeException(f"message over {MAX_INCOMING_BYTES} bytes")
        if header.flags:
            raise ProtocolError("reserved bits set")
        payload = self.raw_read(header.length) if header.length else b""
        if len(payload) != header.length:
            raise WebSocketError("unexpected EOF reading frame payload")
        if header.mask:
            payload = header.unmask_payload(payload)
        return header, payload

    def handle_ping(self, header: Header, payload: bytes) -> None:
        if self.client is not None:
            self.client.send_raw(frame_bytes(payload, OPCODE_PONG))

    def close(self, code: int = 1000, message: bytes = b"") -> None:
        client = self.client
        if client is not None:
            client.close(code)
            client.flush()
        self.closed = True  # type: ignore[misc]  # a slot of WebSocket, which is untyped


# What a page's socket is read in: a page's frames are a few hundred bytes,
# so one recv takes a frame whole, often several.  Only bytes read past the
# current frame are kept, and only until they are taken: an idle page holds
# no buffer (a BufferedReader held 2 KB per open page).
READ_CHUNK_BYTES = 2 * 1024


class Page:
    """An open page's socket after the handshake, read without a greenlet
    of its own while the page is idle.

    How this works: ``serve(step, on_end)`` reads messages with ``step``
    (one message read and answered; False ends the page) as long as bytes
    are at hand, then *parks*: an io watcher on the socket's descriptor
    waits for the next bytes, and the greenlet that was reading returns.
    When bytes arrive the watcher's callback starts a greenlet that reads
    and answers what came, parks again and ends.  A frame that arrives in
    pieces is waited for inside that greenlet, as before, but only until
    ``frame_timeout`` after the message's first byte: past it the read
    raises ``FrameTooSlow`` (counted in ``counts["frame_too_slow"]``), and
    the page ends as a closed page does.  A control frame with nothing
    after it parks the page again: waiting for the next message is idle.
    A greenlet held by every idle page cost its suspended C stack (about
    6 KB, copied to the heap at each switch) and, being the route's
    greenlet, Bottle's request and response, the environ and the HTTP
    handler with its read buffer: 29.5 KB a page, against 4-5 KB parked
    (tests/bench/bench_footprint.py, 500 pages).

    The page stands in for the HTTP handler as the WebSocket's ``handler``
    (``socket``, and the hub's per-socket state) and as its ``stream``
    (``read``).  Once it has parked it owns its socket: it closes it at the
    end, and calls the server's ``release`` (``hand_over``).
    """

    __slots__ = (
        "_buffer",
        "_counts",
        "_deadline",
        "_frame_timeout",
        "_on_end",
        "_pos",
        "_release",
        "_step",
        "_watcher",
        "cc_client",
        "cc_message_bytes",
        "ended",
        "socket",
        "taken",
        "ws",
    )

    def __init__(
        self,
        sock: Any,
        ws: WebSocket,
        buffered: bytes = b"",
        *,
        frame_timeout: float = FRAME_TIMEOUT,
        counts: MutableMapping[str, int] | None = None,
    ) -> None:
        self.socket = sock
        self.ws: WebSocket | None = ws
        self.cc_client: Client | None = None
        self.cc_message_bytes = 0
        self._buffer = buffered  # read from the socket, not yet taken from _pos on
        self._pos = 0
        self._step: Callable[[], bool] | None = None
        self._on_end: Callable[[], None] | None = None
        self._release: Callable[[], None] | None = None
        self._watcher: Any = None
        self._frame_timeout = frame_timeout
        self._deadline: float | None = None  # the message's, once its first byte is read
        self._counts = counts  # the server's, for /status
        self.taken = False  # parked once: the socket is the page's to close
        self.ended = False
        ws.handler = self
        ws.stream = self
        ws.raw_read = self.read
        ws.environ = None  # the upgrade request's, held by nobody else
        ws.utf8validator = None  # gevent-websocket's receive() only; read_message decodes

    def read(self, n: int) -> bytes:
        """``n`` bytes (fewer only at the end of the stream), waiting for them."""
        buf, pos = self._buffer, self._pos
        end = pos + n
        if end <= len(buf):
            if end == len(buf):
                self._buffer, self._pos = b"", 0
            else:
                self._pos = end
            return buf[pos:end]
        pieces = [buf[pos:]]
        have = len(pieces[0])
        if self._deadline is None:  # the message's first byte is here, or about to be read
            self._deadline = time.monotonic() + self._frame_timeout
        while have < n:
            chunk = self._recv(max(n - have, READ_CHUNK_BYTES))
            if not chunk:
                break
            pieces.append(chunk)
            have += len(chunk)
        data = b"".join(pieces)
        self._buffer, self._pos = data[n:], 0
        return data[:n]

    def _recv(self, size: int) -> bytes:
        """What the socket has, waiting at most until the message's deadline.

        A timer of this greenlet's own, not the socket's timeout: the
        client's writer may be waiting on the same socket meanwhile."""
        assert self._deadline is not None
        timer = gevent.Timeout.start_new(max(self._deadline - time.monotonic(), 0.0))
        try:
            return self.socket.recv(size)  # bytes at hand come at once
        except gevent.Timeout as e:
            if e is not timer:
                raise
            if self._counts is not None:
                self._counts["frame_too_slow"] += 1
            log.info(
                "closing %s's socket: a message unfinished after %g s",
                getattr(self.cc_client, "user", "?"),
                self._frame_timeout,
            )
            raise FrameTooSlow(f"a message unfinished after {self._frame_timeout:g} s") from None
        finally:
            timer.close()

    def between_messages(self, first: bool) -> None:
        """The reader is about to read a message's first frame: no deadline
        until its first byte.  Unless it is the first of this turn, with
        nothing at hand the page parks (``_Idle``) rather than wait."""
        self._deadline = None
        if not first and self._pos >= len(self._buffer):
            raise _Idle

    def serve(self, step: Callable[[], bool], on_end: Callable[[], None]) -> None:
        """Answer the page's messages with ``step`` until it returns False or
        raises; then ``on_end()``, and the socket is closed.  Returns when the
        page has ended or is parked (idle)."""
        self._step, self._on_end = step, on_end
        self._run(readable=False)

    def _run(self, readable: bool) -> None:
        step = self._step
        try:
            while readable or self._pos < len(self._buffer):
                readable = False
                if step is None or not step():
                    self._end()
                    return
        except _Idle:  # a control frame read, nothing after it: idle
            pass
        except BaseException:
            self._end()
            raise
        self._deadline = None
        self._park()

    def _park(self) -> None:
        if self._watcher is None:
            self._watcher = gevent.get_hub().loop.io(self.socket.fileno(), 1)
        self._watcher.start(self._wake)
        self.taken = True

    def _wake(self) -> None:
        # In the event loop, as gevent wakes a greenlet waiting on a socket:
        # straight into a new reader, back here when it waits or yields.  So
        # every page whose bytes came in together is read before the loop
        # runs its callbacks (the hub's flush, app/hub.py Hub), and their
        # messages leave together, as they did when a greenlet waited on
        # each page.  (gevent.spawn would start it from the callbacks, which
        # the loop runs a few milliseconds' worth at a time.)
        self._watcher.stop()
        if not self.ended:
            greenlet(self._resume, parent=gevent.get_hub()).switch()

    def _resume(self) -> None:
        try:
            self._run(readable=True)
        except Exception:  # the reader's own: nobody else would hear of it
            log.exception("reading %s's socket", getattr(self.cc_client, "user", "?"))

    def hand_over(self, release: Callable[[], None]) -> bool:
        """The server leaves the socket open and ``release()`` to the page's
        end; False if the page never parked or has ended already."""
        if not self.taken or self.ended:
            return False
        self._release = release
        return True

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
        ws, self.ws = self.ws, None
        try:
            if self._on_end is not None:
                self._on_end()
            if ws is not None and not ws.closed:
                ws.close()  # a close frame, unless the page closed first
        finally:
            self._step = self._on_end = None
            self._buffer, self._pos = b"", 0
            if self.taken:  # otherwise the HTTP handler closes it, as for any request
                with contextlib.suppress(OSError):
                    self.socket.close()
            release, self._release = self._release, None
            if release is not None:
                release()


def serve_page(ws: WebSocket, step: Callable[[], bool], on_end: Callable[[], None]) -> None:
    """``Page.serve`` for a socket the server upgraded; elsewhere (a socket
    made by hand, as in tests) a plain loop in this greenlet."""
    page = getattr(ws, "handler", None)
    if isinstance(page, Page):
        page.serve(step, on_end)
        return
    try:
        while step():
            pass
    finally:
        on_end()


class Client:
    """One page connected to one room (or, ``room`` 0 and ``peer`` set, to
    one direct conversation)."""

    __slots__ = (
        "_pending",
        "_pending_bytes",
        "_writer",
        "account",
        "closed",
        "lang",
        "peer",
        "room",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        user: str,
        room: int,
        lang: Language | None = None,
        account: str | None = None,
    ) -> None:
        self.ws = ws
        self.user = user
        self.room = room
        self.lang = lang  # the upgrade request's (app/i18n.py), for what the router tells the page
        self.account = account  # the account whose session opened it (app/accounts.py)
        self.peer: str | None = None
        self.closed = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writer: gevent.Greenlet | None = None
        if isinstance(ws, BoundedWebSocket):
            ws.client = self

    def send(self, obj: dict[str, Any]) -> None:
        self.send_raw(encode_frame(obj))

    def send_raw(self, data: bytes) -> None:
        """Queue ready-framed bytes and start the writer; never blocks."""
        if self.queue(data) and self._writer is None:
            self._writer = gevent.spawn(self._drain)

    def queue(self, data: bytes) -> bool:
        """Queue ready-framed bytes for ``write_now`` or the writer.

        False if the client is closed, or is closed now: its outbox is full.
        """
        if self.closed:
            return False
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > OUTBOX_MAX_BYTES:
            log.info("dropping %s in room %d: outbox full", self.user, self.room)
            self.drop()
            return False
        return True

    def drop(self) -> None:
        """Disconnect at once, without a close frame: for a client that
        cannot keep up.  Never raises; the reader and the writer end on the
        shut-down socket, and the page reconnects."""
        self.closed = True  # first: nothing below queues again
        self._pending.clear()
        self._pending_bytes = 0
        self._shutdown()

    def _shutdown(self) -> None:
        # OSError: already gone; AttributeError/TypeError: gevent-websocket
        # cleared the handler's socket, or a socket that is not gevent's.
        with contextlib.suppress(OSError, AttributeError, TypeError):
            self.ws.handler.socket.shutdown(socket.SHUT_RDWR)

    def write_now(self) -> None:
        """Write the outbox without blocking; the writer takes what is left.

        Does nothing while a writer is at work (it takes the new frames in
        turn), so frames stay whole and in order.
        """
        if self._writer is not None or not self._pending or self.closed:
            return
        pending = self._pending
        chunk = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            # gevent's send with timeout 0 raises instead of waiting.
            sent = self.ws.handler.socket.send(chunk, 0, timeout=0.0)
        except BlockingIOError:
            sent = 0
        except (OSError, TypeError, AttributeError):
            # A dead socket, or a socket that is not gevent's: the writer
            # meets the same and ends the client as it always did.
            sent = 0
        pending.clear()
        if sent < len(chunk):
            pending.append(chunk[sent:])
            self._pending_bytes = len(chunk) - sent
            self._writer = gevent.spawn(self._drain)
        else:
            self._pending_bytes = 0

    def _drain(self) -> None:
        try:
            while self._pending:
                chunk = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self.ws.raw_write(chunk)
            if self.closed:
                # The close frame is out: end the reader's wait as well (a
                # slow or silent peer would otherwise hold it until timeout).
                self._shutdown()
        except (OSError, WebSocketError, TypeError, AttributeError):
            # TypeError/AttributeError: gevent-websocket set raw_write to None
            # when the socket closed under us.
            self.closed = True
            self._pending.clear()
        finally:
            self._writer = None

    def close(self, code: int = 1000) -> None:
        """Send a close frame after what is queued; the reader loop ends."""
        if self.closed:
            return
        self.send_raw(frame_bytes(struct.pack("!H", code), OPCODE_CLOSE))
        self.closed = True

    def flush(self, timeout: float = 1.0) -> None:
        """Wait (briefly) until the outbox is written."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)


class Hub:
    """Rooms of clients; calls ``on_presence(room)`` when a room's users change."""

    def __init__(self, rooms: int, on_presence: Callable[[int], None] | None = None) -> None:
        self.rooms: dict[int, set[Client]] = {n: set() for n in range(1, rooms + 1)}
        # Direct conversations' pages, by conversation key (app/direct.py):
        # no presence, and only their two people ever join.
        self.topics: dict[Hashable, set[Client]] = {}
        self.on_presence = on_presence
        self._unwritten: dict[Client, None] = {}  # clients with frames for the flush
        self._flush: gevent.Greenlet | None = None

    def join(self, client: Client) -> bool:
        """Add a client; True if the room's users changed (and were told)."""
        before = self.users(client.room)
        self.rooms[client.room].add(client)
        if self.users(client.room) == before:
            return False
        if self.on_presence:
            self.on_presence(client.room)
        return True

    def leave(self, client: Client) -> None:
        before = self.users(client.room)
        self.rooms[client.room].discard(client)
        if self.users(client.room) != before and self.on_presence:
            self.on_presence(client.room)

    def users(self, room: int) -> list[str]:
        return sorted({c.user for c in self.rooms[room]})

    def join_topic(self, key: Hashable, client: Client) -> None:
        self.topics.setdefault(key, set()).add(client)

    def leave_topic(self, key: Hashable, client: Client) -> None:
        clients = self.topics.get(key)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self.topics[key]

    def broadcast_topic(self, key: Hashable, obj: dict[str, Any]) -> int:
        """``broadcast`` to the pages of one direct conversation."""
        return self._queue(list(self.topics.get(key, ())), obj)

    def send_user(
        self,
        user: str,
        obj: dict[str, Any],
        key: Callable[[str], str] = str,
        skip_topic: Hashable | None = None,
    ) -> int:
        """One frame to every page of one person (rooms and conversations,
        but those of ``skip_topic``); returns how many."""
        clients = [c for c in self._all_clients() if key(c.user) == key(user)]
        if skip_topic is not None:
            clients = [c for c in clients if c not in self.topics.get(skip_topic, ())]
        return self._queue(clients, obj)

    def _all_clients(self) -> list[Client]:
        every = [c for clients in self.rooms.values() for c in clients]
        return every + [c for clients in self.topics.values() for c in clients]

    def broadcast(self, room: int, obj: dict[str, Any]) -> int:
        """Send one frame to every client in the room; returns how many.

        The frame is queued; the flush writes it once this greenlet yields.
        """
        return self._queue(list(self.rooms[room]), obj)

    def _queue(self, clients: list[Client], obj: dict[str, Any]) -> int:
        if not clients:
            return 0
        data = encode_frame(obj)
        unwritten = self._unwritten
        for client in clients:
            if client.queue(data):
                unwritten[client] = None
        if unwritten and self._flush is None:
            self._flush = gevent.spawn(self._write_unwritten)
        return len(clients)

    def _write_unwritten(self) -> None:
        try:
            while self._unwritten:  # write_now never yields: one pass, in practice
                clients = list(self._unwritten)
                self._unwritten.clear()
                for client in clients:
                    client.write_now()
        finally:
            self._flush = None

    def disconnect_user(
        self,
        user: str,
        key: Callable[[str], str] = str,
        notice: Callable[[Client], dict[str, Any]] | None = None,
        only: Callable[[Client], bool] | None = None,
    ) -> int:
        """Close every socket of a user (banned; or ``only`` those it picks),
        each told ``notice(client)`` first; returns how many."""
        closing = [
            c for c in self._all_clients() if key(c.user) == key(user) and (only is None or only(c))
        ]
        for client in closing:
            if notice is not None:
                client.send(notice(client))
            client.close(1008)
        return len(closing)

    def clients(self) -> int:
        return len(self._all_clients())
