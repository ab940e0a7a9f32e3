"""The data folder's log files: one JSON record per line.

How this works: the data folder holds one log per room (``room-1.log`` ...),
``accounts.log``, ``moderation.log``, ``reads.log``, ``direct.log`` and
``settings.log``, one JSON object per
line (readable with ``less``; JSON escapes every character a user can type,
so no text can forge a line).  A record is appended and flushed before anyone
is told it is stored; fsyncs are batched (``sync()``, called by the app every
``SYNC_INTERVAL``) because routers write to flash.  Lines are never edited in
place: a rewrite (``rewrite_without``, for compaction) goes to a temp file
that is fsynced and renamed over the log (``write_atomically``).

A crash can only tear the last line of a log.  ``records()`` cuts a torn tail
off (keeping the bytes in ``<log>.torn`` so nothing is silently lost) and
yields None for any line it cannot parse: the caller skips and counts it, and
the line stays in the file for a person to look at.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from node.record import MAX_SEQ, ORIGIN_RE, Record, RecordKind

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
ACCOUNTS_LOG = "accounts.log"
MODERATION_LOG = "moderation.log"
READS_LOG = "reads.log"
DIRECT_LOG = "direct.log"  # every conversation's direct messages, in arrival order
SETTINGS_LOG = "settings.log"  # SETTING records: the latest per key counts
TORN_SUFFIX = ".torn"
# A line longer than this is corrupt: the largest record we accept (a
# 2,000-character message of 4-byte characters, JSON-escaped) is well below.
MAX_LINE_BYTES = 64 * 1024
MAX_UTF8_BYTES = 4  # bytes of the longest UTF-8 character

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
KIND_NAMES = {
    RecordKind.MESSAGE: "message",
    RecordKind.ACCOUNT: "account",
    RecordKind.MODERATION: "moderation",
    RecordKind.READ: "read",
    RecordKind.DIRECT: "direct",
    RecordKind.SETTING: "setting",
}
KINDS_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}


def room_log_name(room: int) -> str:
    return f"room-{room}.log"


def log_name(record: Record) -> str:
    """The log a record is written to."""
    if record.kind == RecordKind.MESSAGE:
        return room_log_name(record.room)
    if record.kind == RecordKind.READ:
        return READS_LOG
    if record.kind == RecordKind.DIRECT:
        return DIRECT_LOG
    if record.kind == RecordKind.SETTING:
        return SETTINGS_LOG
    return MODERATION_LOG if record.kind == RecordKind.MODERATION else ACCOUNTS_LOG


def encode_line(record: Record) -> bytes:
    """One log line for a record, newline included."""
    hlc, room, seq, origin = record.hlc, record.room, record.seq, record.origin
    # A head of ints and an origin of hex digits is written as is: only the
    # body goes through the encoder (a fifth of a catch-up's store time).
    if type(hlc) is int and type(room) is int and type(seq) is int and _is_origin(origin):
        head = f'{{"id":"{origin}:{seq}","hlc":{hlc},"kind":"{KIND_NAMES[record.kind]}"'
        return f'{head},"room":{room},"body":{_ENCODER.encode(record.body)}}}\n'.encode()
    obj = {
        "id": record.id,
        "hlc": hlc,
        "kind": KIND_NAMES[record.kind],
        "room": room,
        "body": record.body,
    }
    return (_ENCODER.encode(obj) + "\n").encode()


# The head of a line as ``encode_line`` writes it, up to the body: read by
# one match instead of the JSON decoder (no dict and id string per line, two
# fifths of a line's decoding).  A line spelled any other way is decoded as
# JSON (``_decode_json``), which decides what such a line holds.
_HEAD = re.compile(
    r'\{"id":"([0-9a-f]{16}):([0-9]{1,10})","hlc":(0|[1-9][0-9]{0,19}),'
    r'"kind":"([a-z]{1,16})","room":(0|[1-9][0-9]{0,9}),"body":'
)
_BODY_DECODER = json.JSONDecoder()  # json.loads's own settings


# The body of a message read at load only to be held as columns
# (node/cold.py): checked, then left out; ``has_body`` tells it apart.
NO_BODY: Mapping[str, Any] = MappingProxyType({})


def decode_line(line: bytes | str, body: bool = True) -> Record:
    """A log line back to a record; raises ValueError if it is not one.

    Its origin, body keys and short body strings are shared (``share``).
    ``body=False``: a message's body is checked the same, but its record
    gets ``NO_BODY`` (no dict kept, nothing shared: a load's older lines)."""
    head = _HEAD.match(line) if isinstance(line, str) else None
    if head is not None and isinstance(line, str):
        kind = KINDS_BY_NAME.get(head[4])
        try:
            decoded, end = _BODY_DECODER.raw_decode(line, head.end())
        except ValueError:
            decoded = None
        n = int(head[2])
        if kind is not None and type(decoded) is dict and line[end:] == "}" and 1 <= n <= MAX_SEQ:
            origin = _ORIGINS.get(head[1]) or _valid_origin(head[1])
            if not body and kind == RecordKind.MESSAGE:
                return Record(origin, n, int(head[3]), kind, int(head[5]), NO_BODY)
            return Record(origin, n, int(head[3]), kind, int(head[5]), share_body(decoded))
    return _decode_json(line)


def has_body(record: Record) -> bool:
    return record.body is not NO_BODY


def _decode_json(line: bytes | str) -> Record:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    origin, _, seq = str(obj["id"]).partition(":")
    hlc, room, body = obj["hlc"], obj["room"], obj["body"]
    kind = KINDS_BY_NAME[obj["kind"]]
    if not seq.isascii() or not seq.isdigit():
        raise ValueError("bad id")
    origin = _ORIGINS.get(origin) or _valid_origin(origin)
    n = int(seq)
    if not 1 <= n <= MAX_SEQ:  # nothing beyond the wire's limit is held
        raise ValueError("seq out of range")
    if not isinstance(hlc, int) or not isinstance(room, int) or not isinstance(body, dict):
        raise ValueError("bad field types")
    return Record(origin, n, hlc, kind, room, share_body(body))


# Held records repeat a few strings many times: their origins, their body's
# keys ("author", "text"...), the names of authors and routers.  Each is
# kept once (10,000 records took 1,070 bytes each, 690 shared: measured with
# tracemalloc).  Private tables rather than sys.intern, which makes strings
# immortal on Python 3.12: a table that fills up is emptied and fills again,
# so what a peer sends can never pin memory.
SHARED_MAX = 4096  # distinct strings (~300 KB): a neighbourhood's names fit
SHARED_CHARS = 32  # a body string this short is shared: a username's length
_SHARED: dict[str, str] = {}
_ORIGINS: dict[str, str] = {}  # origins checked against ORIGIN_RE


def share(text: str) -> str:
    """The one copy of ``text`` the table holds (made so if there is room)."""
    kept = _SHARED.get(text)
    if kept is not None:
        return kept
    if len(_SHARED) >= SHARED_MAX:
        _SHARED.clear()
    _SHARED[text] = text
    return text


def share_body(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its keys and short string values shared."""
    get = _SHARED.get  # the usual case, a string shared already, without a call
    return {
        (get(k) or share(k)): (get(v) or share(v))
        if type(v) is str and len(v) <= SHARED_CHARS
        else v
        for k, v in body.items()
    }


def _valid_origin(origin: str) -> str:
    if not ORIGIN_RE.fullmatch(origin):
        raise ValueError("bad id")
    if len(_ORIGINS) >= SHARED_MAX:
        _ORIGINS.clear()
    _ORIGINS[origin] = origin
    return origin


def _is_origin(origin: str) -> bool:
    if origin in _ORIGINS:
        return True
    try:
        _valid_origin(origin)
    except ValueError:
        return False
    return True


def decode_or_none(line: bytes | str, body: bool = True) -> Record | None:
    """A log line's record, None if it is not one (never raises)."""
    if len(line) > MAX_LINE_BYTES or (
        isinstance(line, str)
        and len(line) * MAX_UTF8_BYTES > MAX_LINE_BYTES
        and len(line.encode()) > MAX_LINE_BYTES
    ):
        return None
    try:
        return decode_line(line, body)
    except (ValueError, KeyError, TypeError):
        return None


def _line_id(line: bytes) -> tuple[str, int] | None:
    try:
        record = decode_line(line)
    except (ValueError, KeyError, TypeError):
        return None
    return (record.origin, record.seq)


def _lines(data: bytes) -> Iterator[tuple[int, bytes | str]]:
    """A log's lines with the offset where each starts, decoded to text
    when it is UTF-8 (json.loads of a ``str`` skips the encoding detection
    it does for every ``bytes`` line).  Split at the same line ends as
    ``bytes.splitlines`` (``\\n``, ``\\r\\n``, ``\\r``): ``str.splitlines``
    would also split at U+2028 and the like, which a message's text may hold
    unescaped.  One line at a time: a list of them all, freed after the log,
    left holes among the records held (about 60 bytes a record of memory
    never given back)."""
    start, end = 0, data.find(b"\n")
    while end >= 0:  # what follows the last line end is not a line (records() cut it off)
        chunk = data[start:end]
        if b"\r" in chunk:  # a line written elsewhere: split as splitlines() would
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
            at = start
            for piece in chunk.split(b"\r"):
                yield at, _text(piece)
                at += len(piece) + 1
        else:
            yield start, _text(chunk)
        start, end = end + 1, data.find(b"\n", end + 1)


def _text(line: bytes) -> bytes | str:
    try:
        return line.decode()
    except UnicodeDecodeError:  # not UTF-8: the JSON decoder says what it is
        return line


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_make_node_id(data_dir: Path) -> str:
    """This router's node id: random on first start, then kept."""
    path = data_dir / NODE_ID_FILE
    try:
        node_id = path.read_text().strip()
    except FileNotFoundError:
        node_id = ""
    if ORIGIN_RE.fullmatch(node_id):
        return node_id
    if node_id:
        raise ValueError(f"{path} does not hold a node id (16 hex digits): {node_id!r}")
    node_id = secrets.token_hex(8)
    write_atomically(path, (node_id + "\n").encode())
    return node_id


@dataclass
class LogFile:
    path: Path
    handle: BinaryIO
    end: int = 0  # where the next line goes (the file's size: only we append)
    dirty: bool = False  # written since the last fsync


class Logs:
    """The open log files of one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.torn_bytes = 0  # bytes of torn tails moved aside
        self._files: dict[str, LogFile] = {}
        self._readers: dict[str, BinaryIO] = {}  # read_record's handles

    def records(
        self, name: str, bodies_last: int | None = None
    ) -> Iterator[tuple[int, int, Record | None]]:
        """``(line number, offset, record)`` for each line of a log, None for
        a line that is not a record; a torn last line is moved aside first.
        With ``bodies_last``, only the messages of the last that many lines
        come with their bodies (``decode_line``'s ``body``)."""
        path = self.data_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self._move_torn_tail(path, data[end:], end)
            data = data[:end]
        light = data.count(b"\n") - bodies_last if bodies_last is not None else 0
        for number, (offset, line) in enumerate(_lines(data), start=1):
            if line.strip():
                yield number, offset, decode_or_none(line, number > light)

    def read_record(self, name: str, offset: int) -> Record | None:
        """The record of the line starting at ``offset``; None if there is
        none there (a read handle per log, reopened after a rewrite)."""
        try:
            handle = self._readers.get(name)
            if handle is None:
                handle = self._readers[name] = open(self.data_dir / name, "rb")
            handle.seek(offset)
            line = handle.readline(MAX_LINE_BYTES + 1)
        except OSError as e:
            log.warning("%s: cannot read the line at %d: %s", name, offset, e)
            return None
        if not line.endswith(b"\n"):
            return None
        return decode_or_none(_text(line[:-1].rstrip(b"\r")))

    def lines(self, name: str) -> Iterator[tuple[int, str | bytes]]:
        """``(offset, line)`` for each whole line of a log, read as it goes
        (a line that is not UTF-8 stays bytes)."""
        try:
            handle = open(self.data_dir / name, "rb")
        except FileNotFoundError:
            return
        with handle:
            offset = 0
            for line in handle:
                if line.endswith(b"\n"):
                    yield offset, _text(line[:-1].rstrip(b"\r"))
                offset += len(line)

    def lines_holding(self, name: str, needle: bytes) -> Iterator[tuple[int, str | bytes]]:
        """``lines`` that hold ``needle``, found by searching the file's
        bytes: a line is taken apart only if it holds it."""
        try:
            data = (self.data_dir / name).read_bytes()
        except FileNotFoundError:
            return
        at = data.find(needle)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            if end < 0:  # what follows the last line end is not a line
                return
            yield start, _text(data[start:end].rstrip(b"\r"))
            at = data.find(needle, end)

    def end(self, lf: LogFile) -> int:
        """Where the next line written to ``lf`` will start."""
        return lf.end

    def _move_torn_tail(self, path: Path, tail: bytes, keep: int) -> None:
        """Cut an unterminated last line (a crash mid-write) off the log."""
        log.warning(
            "%s: moved a torn last line (%d bytes) to %s%s", path, len(tail), path.name, TORN_SUFFIX
        )
        with open(path.with_name(path.name + TORN_SUFFIX), "ab") as f:
            f.write(tail + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
        self.torn_bytes += len(tail)

    def open(self, name: str) -> LogFile:
        """The log ``name``, opened for appending (OSError: EMFILE)."""
        lf = self._files.get(name)
        if lf is None:
            path = self.data_dir / name
            handle = open(path, "ab")
            lf = self._files[name] = LogFile(path, handle, handle.tell())
        return lf

    def write(self, lf: LogFile, data: bytes) -> None:
        """Append and flush: in the kernel's hands, fsynced by ``sync()``."""
        lf.handle.write(data)
        lf.handle.flush()
        lf.end += len(data)
        lf.dirty = True

    def rewrite_without(
        self,
        name: str,
        keep: Container[tuple[str, int]],
        moved: Callable[[tuple[str, int], int], None] | None = None,
    ) -> bool:
        """Rewrite one log with only the records of ``keep`` (lines that are
        not records stay); True if it changed.  ``moved(id, offset)`` is then
        told where each kept record's line starts now."""
        path = self.data_dir / name
        if not path.exists():
            return False
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [(ln, rid) for ln in lines if (rid := _line_id(ln)) is None or rid in keep]
        if len(kept) == len(lines):
            return False
        lf = self._files.pop(name, None)
        if lf is not None:
            lf.handle.close()
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.close()
        write_atomically(path, b"".join(ln for ln, _ in kept))
        if moved is not None:
            offset = 0
            for ln, rid in kept:
                if rid is not None:
                    moved(rid, offset)
                offset += len(ln)
        return True

    def sync(self) -> int:
        """fsync every log written since the last sync; returns how many."""
        synced = 0
        for lf in self._files.values():
            if lf.dirty:
                os.fsync(lf.handle.fileno())
                lf.dirty = False
                synced += 1
        return synced

    def close(self) -> None:
        for lf in self._files.values():
            lf.handle.close()
        self._files.clear()
        for handle in self._readers.values():
            handle.close()
        self._readers.clear()
