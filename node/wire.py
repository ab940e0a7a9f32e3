"""Wire format: every datagram the mesh sends, as bytes (version 2).

How this works: a datagram is a fixed header, a body that depends on the kind,
and a 16-byte tag, HMAC-SHA256 truncated, over header and body under the mesh
key.  All integers are big-endian.

    header  16 B  version u8 | kind u8 | flags u8 | hops u8 | sender 8 B | counter u32
    body          one of the kinds below
    mac     16 B  HMAC-SHA256(key, header + body)[:16]

    RECORD    origin 8 B | seq u32 | hlc u64 | record kind u8 | room u16 | JSON object (rest)
    BEACON    origin 8 B | beacon seq u32 | boot id u64 | name len u8 | name
              | digest 8 B | n u16 | n * (origin 8 B | contiguous u32)
              | rooms u8 | rooms * (room u16 | users u16 | users * (len u8 | username))
    FRAGMENT  inner kind u8 | transfer id u32 | index u16 | count u16 | piece (rest)
    REQUEST   target 8 B | request flags u8 | n u16 | n * (origin 8 B | first u32 | last u32)
    BATCH     n u16 | n * (len u16 | a RECORD body of len bytes)
    GONE      n u16 | n * (origin 8 B | first u32 | last u32)
    FRAGMENT_REQUEST  target 8 B | transfer id u32 | n u16 | n * index u16

Catch-up (node/sync.py).  A REQUEST asks node ``target`` (every other node
ignores it for serving) for the records of each inclusive seq range; request
flag bit 0 (``REQUEST_ANSWER_MULTICAST``) asks for the answer on the group
instead of by unicast to the asker, so every neighbour missing the same records
is repaired by one answer.  A BATCH carries whole records back to back, each
length-prefixed, and is never relayed; a record too large for one datagram goes
as a BATCH of one, in FRAGMENTs.  A GONE lists inclusive seq ranges, each
``1 <= first <= last``: "these records existed and are gone for good here
(expired, or removed by moderation): stop asking me for them".  It never covers
a record the sender holds (node/sync.py says why ranges, not a low-water
mark).  A FRAGMENT_REQUEST asks the sender of a stalled fragmented transfer for the
listed pieces again.

``sender`` is the node that put this datagram on the wire (for a relayed record
or beacon the relayer, not the origin); ``counter`` counts that sender's
datagrams.  A beacon names its ``origin`` (the node it describes) in the body,
with ``seq`` numbering that origin's beacons since its boot (1, 2, 3...; at one
beacon a second a u32 lasts 136 years), so a relayed copy can be told from a
newer beacon: ``(origin, boot id, seq)`` names one beacon.  A
FRAGMENT carries a piece of a RECORD, BEACON or BATCH *body*; joined, the pieces are
parsed by ``parse_body`` with the fragments' header fields.

Version 2 (issue #12): a BEACON carries ``digest``, the first 8 bytes of
SHA-256 over its origin's whole version vector (sorted ``origin | contiguous``
pairs, ``vector_digest``), and the vector itself only when the sender wants its
neighbours to compare (after a disagreement): ``n`` is 0 otherwise.  A digest
is 8 bytes however many origins the mesh ever had; a full vector is 12 bytes
per origin, dead ones included (a wiped router comes back under a new id and
adds one), so 200 origins make a 2.4 kB beacon, sent in fragments and only
while neighbours disagree.  A datagram of version 1 is refused as
"old_version" (``OLD_VERSIONS``; its MAC is checked first, the header and tag
are the same in both versions) so /status can name the routers not yet
upgraded; any other version is "bad_version".

``parse`` checks the size, the version, then the MAC (any of several keys, so a
mesh can rotate its key), then everything else, and raises only ``WireError``
whose ``reason`` is one of ``REASONS`` (node/reasons.py ``Drop``): callers
count it and drop the datagram.
Building a datagram from bad values is our own bug and raises ``ValueError``.

Header flags: version 1 defines no flag bits.  A datagram with any flag bit set is
refused ("bad_flags"): a flag may change how the body reads, so a node must not
guess.  A later optional feature announces itself first (e.g. in the beacon)
and only then sets its bit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from node.reasons import WIRE_REASONS, Drop
from node.record import MAX_SEQ, ORIGIN_RE, Record, RecordKind

VERSION = 2
# Versions that were ours once: a router still speaking one is not upgraded
# yet ("old_version"), not garbage ("bad_version").
OLD_VERSIONS = frozenset({1})
# Largest UDP payload over IPv4 (65,535 - 20 IP - 8 UDP): nothing longer exists.
MAX_DATAGRAM = 65_507
# 128-bit tag: RFC 4868's HMAC-SHA-256-128, ample against forgery per datagram.
MAC_LEN = 16
FLAGS_KNOWN = 0x00  # version 1 defines no flag bits; see the opening comment

HEADER = struct.Struct("!BBBB8sI")  # version, kind, flags, hops, sender, counter
RECORD_HEAD = struct.Struct("!8sIQBH")  # origin, seq, hlc, record kind, room
BEACON_HEAD = struct.Struct("!8sIQB")  # origin, beacon seq, boot id, node name length
DIGEST = struct.Struct("!8s")  # vector digest (vector_digest)
VECTOR_COUNT = struct.Struct("!H")  # number of (origin, contiguous) pairs
VECTOR_ENTRY = struct.Struct("!8sI")  # origin, highest contiguous seq
ROOM_COUNT = struct.Struct("!B")  # number of rooms with users online
ROOM_HEAD = struct.Struct("!HH")  # room, number of usernames
NAME_LEN = struct.Struct("!B")  # length of one username
FRAGMENT_HEAD = struct.Struct("!BIHH")  # inner kind, transfer id, index, count
REQUEST_HEAD = struct.Struct("!8sBH")  # target node, request flags, number of ranges
REQUEST_RANGE = struct.Struct("!8sII")  # origin, first seq, last seq (inclusive)
BATCH_COUNT = struct.Struct("!H")  # number of records in a batch
BATCH_ENTRY = struct.Struct("!H")  # length of one record's RECORD body
GONE_COUNT = struct.Struct("!H")  # number of gone ranges
GONE_RANGE = struct.Struct("!8sII")  # origin, first seq, last seq (inclusive)
FRAGMENT_REQUEST_HEAD = struct.Struct("!8sIH")  # target node, transfer id, number of indexes
FRAGMENT_INDEX = struct.Struct("!H")  # one missing piece
REQUEST_ANSWER_MULTICAST = 0x01  # request flag: answer on the group, not by unicast
REQUEST_FLAGS_KNOWN = REQUEST_ANSWER_MULTICAST

# The largest body of one datagram, and so of a reassembled RECORD or BEACON:
# a body that fits one maximal datagram can always be sent, whole or in pieces.
MAX_BODY = MAX_DATAGRAM - HEADER.size - MAC_LEN
# Every record must also fit a BATCH of one (catch-up sends records in
# batches), so a record's JSON leaves room for the batch's count and length.
MAX_RECORD_JSON = MAX_BODY - BATCH_COUNT.size - BATCH_ENTRY.size - RECORD_HEAD.size
# How much longer a body's compact re-encoding can be than the JSON received:
# 4.5 x for a number such as "1e15" (node/wire.py ``_load_json``), rounded up.
JSON_GROWTH = 5
# Node names are shown next to usernames: 64 bytes is 16-64 characters.
MAX_NODE_NAME_BYTES = 64
# Usernames: 128 bytes holds 32 characters even if every one takes 4 bytes.
MAX_USERNAME_BYTES = 128
# One entry per router that ever wrote a record; a neighbourhood mesh has tens,
# and 4,096 entries (48 KiB) still leave room in MAX_BODY for the presence.
MAX_VECTOR_ENTRIES = 4096
MAX_ROOMS = 255  # the room count is a u8; the app has 4 rooms
MAX_USERS_PER_ROOM = 1000  # far above what one router's Wi-Fi can carry
# What is left of MAX_BODY once the largest name and vector are in: the
# presence of one node must fit there, so every valid beacon fits MAX_BODY.
MAX_PRESENCE_BYTES = (
    MAX_BODY
    - BEACON_HEAD.size
    - MAX_NODE_NAME_BYTES
    - DIGEST.size
    - VECTOR_COUNT.size
    - MAX_VECTOR_ENTRIES * VECTOR_ENTRY.size
    - ROOM_COUNT.size
)
# Ranges in one REQUEST or one GONE: whatever fits MAX_BODY (the sender keeps
# to its MTU, far fewer); the bound only caps what we parse.
MAX_REQUEST_RANGES = (MAX_BODY - REQUEST_HEAD.size) // REQUEST_RANGE.size
MAX_GONE_RANGES = (MAX_BODY - GONE_COUNT.size) // GONE_RANGE.size
# Pieces per transfer: at MIN_MTU (fragment.py) a MAX_BODY needs 130 pieces.
MAX_FRAGMENTS = 256
U16_MAX = (1 << 16) - 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
HOPS_MAX = 255  # hops-left is a u8


class DatagramKind(IntEnum):
    RECORD = 1  # one whole record: live delivery of a new record, and relays
    BEACON = 2  # who a node is: name, boot id, vector digest (or vector), users online
    FRAGMENT = 3  # a numbered piece of a RECORD, BEACON or BATCH body above the MTU
    REQUEST = 4  # asks one node for seq ranges (catch-up, or a NACK for a gap)
    BATCH = 5  # whole records back to back: the answer to a REQUEST; never relayed
    GONE = 6  # "these seq ranges are gone for good here": the asker stops asking
    FRAGMENT_REQUEST = 7  # asks a fragments' sender for the pieces that went missing
    # A node that does not know a kind drops it as "bad_kind".


# Kinds a FRAGMENT may carry: those that can outgrow the MTU.  Fragments of
# fragments would make no sense; requests and gone ranges are cut to fit.
INNER_KINDS = frozenset({DatagramKind.RECORD, DatagramKind.BEACON, DatagramKind.BATCH})
_RECORD_KINDS = frozenset(int(k) for k in RecordKind)

# What ``parse`` refuses a datagram for: node/reasons.py explains each.
REASONS = WIRE_REASONS


class WireError(Exception):
    """A datagram we refuse; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: Drop) -> None:
        assert reason in REASONS, reason
        super().__init__(reason)
        self.reason = reason


# -- building blocks -------------------------------------------------------------------


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


def _seal(datagram: Datagram, key: bytes) -> bytes:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the mesh key must be non-empty bytes")
    body = datagram.body()
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes exceeds MAX_BODY={MAX_BODY}")
    sender = bytes.fromhex(datagram.sender)
    head = HEADER.pack(VERSION, datagram.kind, 0, datagram.hops, sender, datagram.counter)
    return head + body + _mac(key, head + body)


def _check_header(sender: str, hops: int, counter: int) -> None:
    if not isinstance(sender, str) or not ORIGIN_RE.fullmatch(sender):
        raise ValueError(f"sender must be 16 lowercase hex digits: {sender!r}")
    if not 0 <= hops <= HOPS_MAX:
        raise ValueError(f"hops out of range: {hops}")
    if not 0 <= counter <= U32_MAX:
        raise ValueError(f"counter out of range: {counter}")


def _check_name(name: str, limit: int, what: str) -> bytes:
    raw = name.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (ValueError)
    if not 1 <= len(raw) <= limit:
        raise ValueError(f"{what} must be 1..{limit} UTF-8 bytes: {name!r}")
    return raw


def dump_json(body: Mapping[str, Any]) -> bytes:
    """The compact UTF-8 JSON a record body travels as."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


class _Reader:
    """Reads a body front to back; running out is "malformed"."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self.data, self.pos) if self.left() >= fmt.size else None
        if values is None:
            raise WireError(Drop.MALFORMED)
        self.pos += fmt.size
        return values

    def take(self, n: int) -> bytes:
        if self.left() < n:
            raise WireError(Drop.MALFORMED)
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def text(self, n: int, limit: int) -> str:
        if n > limit:
            raise WireError(Drop.TOO_LONG)
        if n == 0:
            raise WireError(Drop.MALFORMED)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(Drop.BAD_UTF8) from None

    def rest(self) -> bytes:
        return self.take(self.left())

    def left(self) -> int:
        return len(self.data) - self.pos

    def finish(self) -> None:
        if self.left():
            raise WireError(Drop.MALFORMED)


# -- RECORD ------------------------------------------------------------------------------


def _check_record(r: Record) -> None:
    if not ORIGIN_RE.fullmatch(r.origin):
        raise ValueError(f"origin must be 16 lowercase hex digits: {r.origin!r}")
    if not 1 <= r.seq <= MAX_SEQ:
        raise ValueError(f"seq out of range: {r.seq}")
    if not 0 <= r.hlc <= U64_MAX:
        raise ValueError(f"hlc out of range: {r.hlc}")
    if r.kind not in _RECORD_KINDS:
        raise ValueError(f"unknown record kind: {r.kind!r}")
    if not 0 <= r.room <= U16_MAX:
        raise ValueError(f"room out of range: {r.room}")
    if not isinstance(r.body, Mapping):
        raise ValueError("record body must be a mapping")


def record_body(r: Record) -> bytes:
    """The RECORD body encoding of ``r`` (also one entry of a BATCH)."""
    try:
        payload = dump_json(r.body)
    except TypeError as exc:
        raise ValueError(f"record body is not JSON: {exc}") from None
    if len(payload) > MAX_RECORD_JSON:
        raise ValueError(f"record body of {len(payload)} bytes exceeds {MAX_RECORD_JSON}")
    head = RECORD_HEAD.pack(bytes.fromhex(r.origin), r.seq, r.hlc, r.kind, r.room)
    return head + payload


@dataclass(frozen=True, slots=True)
class RecordDatagram:
    """One whole record.  ``Record.__eq__`` ignores the body: compare it too."""

    sender: str
    record: Record
    hops: int = 1
    counter: int = 0
    kind: ClassVar[DatagramKind] = DatagramKind.RECORD

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        _check_record(self.record)

    def body(self) -> bytes:
        return record_body(self.record)

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


# Floats decoded so far (``_finite`` counts them): a body without one
# re-encodes no longer than it came (``_load_json``).  Decoding never yields
# to another greenlet, so one count serves the process.
_FLOATS = [0]


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf, which JSON cannot carry
        raise ValueError(text)
    _FLOATS[0] += 1
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity, -Infinity are not JSON


# One decoder for every record: json.loads with hooks makes a new one per call.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def _load_json(raw: bytes) -> tuple[dict[str, Any], int]:
    """A record's body and its size: bytes of its compact re-encoding
    (``dump_json``) or more, so a reader can bound it without encoding it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(Drop.BAD_UTF8) from None
    floats = _FLOATS[0]
    try:
        body = _DECODER.decode(text)
        # It must serialize again (we relay it): lone surrogates from "\ud800"
        # escapes do not, and a re-encoding may be longer than the raw.  Only
        # a \u escape can make a surrogate (UTF-8 has none), and only floats
        # grow, at most JSON_GROWTH times ("1e15": "1000000000000000.0"):
        # whitespace, "\/" and other escapes, "-0" and repeated keys only
        # shrink.  So a record of neither kind skips the re-encoding (a tenth
        # of the catch-up receive path's time) and its size is the raw's.
        slow = b"\\u" in raw or len(raw) * JSON_GROWTH > MAX_RECORD_JSON
        if slow or _FLOATS[0] != floats:
            size = len(dump_json(body)) if isinstance(body, dict) else 0
        else:
            size = len(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
        raise WireError(Drop.BAD_JSON) from None
    if not isinstance(body, dict):
        raise WireError(Drop.BAD_JSON)
    if size > MAX_RECORD_JSON:
        raise WireError(Drop.TOO_LONG)
    checked: dict[str, Any] = body
    return checked, size


_KIND_OF = {int(k): k for k in RecordKind}


def _read_record(body: bytes) -> Record:
    if len(body) < RECORD_HEAD.size:
        raise WireError(Drop.MALFORMED)
    origin, seq, hlc, kind, room = RECORD_HEAD.unpack_from(body)
    if seq == 0:
        raise WireError(Drop.MALFORMED)
    record_kind = _KIND_OF.get(kind)
    if record_kind is None:
        raise WireError(Drop.BAD_RECORD_KIND)
    payload, size = _load_json(body[RECORD_HEAD.size :])
    return Record(origin.hex(), seq, hlc, record_kind, room, payload, size)


def _parse_record(body: bytes, sender: str, hops: int, counter: int) -> RecordDatagram:
    return RecordDatagram(sender, _read_record(body), hops, counter)


# -- BEACON ------------------------------------------------------------------------------


def _presence_size(presence: Mapping[int, Sequence[str]]) -> int:
    size = 0
    for users in presence.values():
        size += ROOM_HEAD.size + sum(NAME_LEN.size + len(u.encode("utf-8")) for u in users)
    return size


@dataclass(frozen=True, slots=True)
class BeaconDatagram:
    """Who node ``origin`` is and what it holds.  ``origin`` defaults to the
    sender (a beacon not relayed); ``seq`` numbers the origin's beacons per
    boot.  ``presence`` is kept sorted, without empty rooms or repeated
    usernames, so equal beacons compare equal."""

    sender: str
    name: str
    boot_id: int
    vector: Mapping[str, int] = field(default_factory=dict)
    presence: Mapping[int, Sequence[str]] = field(default_factory=dict)
    hops: int = 1
    counter: int = 0
    origin: str = ""  # "": the sender itself; a node id once built
    seq: int = 0
    # The digest of the origin's whole vector; b"": that of ``vector``, which
    # is then the whole vector.  Given with an empty ``vector``: digest only.
    digest: bytes = b""
    kind: ClassVar[DatagramKind] = DatagramKind.BEACON

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        if not self.origin:
            object.__setattr__(self, "origin", self.sender)
        if not isinstance(self.origin, str) or not ORIGIN_RE.fullmatch(self.origin):
            raise ValueError(f"origin must be 16 lowercase hex digits: {self.origin!r}")
        if not 0 <= self.seq <= U32_MAX:
            raise ValueError(f"beacon seq out of range: {self.seq}")
        _check_name(self.name, MAX_NODE_NAME_BYTES, "node name")
        if not 0 <= self.boot_id <= U64_MAX:
            raise ValueError(f"boot id out of range: {self.boot_id}")
        self._check_vector()
        if not self.digest:
            object.__setattr__(self, "digest", vector_digest(self.vector))
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST.size:
            raise ValueError(f"digest must be {DIGEST.size} bytes: {self.digest!r}")
        if self.vector and self.digest != vector_digest(self.vector):
            raise ValueError("digest does not match the vector")
        presence = {
            room: tuple(sorted(set(users)))
            for room, users in sorted(self.presence.items())
            if users
        }
        object.__setattr__(self, "vector", dict(sorted(self.vector.items())))
        object.__setattr__(self, "presence", presence)
        self._check_presence()

    def _check_vector(self) -> None:
        if len(self.vector) > MAX_VECTOR_ENTRIES:
            raise ValueError(f"more than {MAX_VECTOR_ENTRIES} vector entries")
        for origin, seq in self.vector.items():
            if not ORIGIN_RE.fullmatch(origin) or not 0 <= seq <= MAX_SEQ:
                raise ValueError(f"bad vector entry {origin!r}: {seq!r}")

    def _check_presence(self) -> None:
        if len(self.presence) > MAX_ROOMS:
            raise ValueError(f"more than {MAX_ROOMS} rooms")
        for room, users in self.presence.items():
            if not 0 <= room <= U16_MAX:
                raise ValueError(f"room out of range: {room}")
            if len(users) > MAX_USERS_PER_ROOM:
                raise ValueError(f"more than {MAX_USERS_PER_ROOM} users in room {room}")
            for user in users:
                _check_name(user, MAX_USERNAME_BYTES, "username")
        if _presence_size(self.presence) > MAX_PRESENCE_BYTES:
            raise ValueError(f"presence exceeds {MAX_PRESENCE_BYTES} bytes")

    def body(self) -> bytes:
        name = self.name.encode("utf-8")
        head = BEACON_HEAD.pack(bytes.fromhex(self.origin), self.seq, self.boot_id, len(name))
        parts = [head, name, DIGEST.pack(self.digest)]
        parts.append(VECTOR_COUNT.pack(len(self.vector)))
        parts += [VECTOR_ENTRY.pack(bytes.fromhex(o), s) for o, s in self.vector.items()]
        parts.append(ROOM_COUNT.pack(len(self.presence)))
        for room, users in self.presence.items():
            parts.append(ROOM_HEAD.pack(room, len(users)))
            for user in users:
                raw = user.encode("utf-8")
                parts += [NAME_LEN.pack(len(raw)), raw]
        return b"".join(parts)

    @property
    def has_vector(self) -> bool:
        """True if ``vector`` is the origin's whole vector, not left out."""
        return bool(self.vector) or self.digest == EMPTY_DIGEST

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def vector_digest(vector: Mapping[str, int]) -> bytes:
    """8 bytes naming a whole version vector: equal vectors, equal digests
    (entries at 0 say nothing and are left out); 64 bits make a chance
    collision between two routers' differing vectors negligible."""
    h = hashlib.sha256()
    for origin, seq in sorted(vector.items()):
        if seq:
            h.update(VECTOR_ENTRY.pack(bytes.fromhex(origin), seq))
    return h.digest()[: DIGEST.size]


EMPTY_DIGEST = vector_digest({})


def _parse_vector(reader: _Reader) -> dict[str, int]:
    (count,) = reader.unpack(VECTOR_COUNT)
    if count > MAX_VECTOR_ENTRIES:
        raise WireError(Drop.TOO_LONG)
    vector: dict[str, int] = {}
    for _ in range(count):
        origin, seq = reader.unpack(VECTOR_ENTRY)
        vector[origin.hex()] = seq
    if len(vector) != count:  # an origin twice
        raise WireError(Drop.MALFORMED)
    return vector


def _parse_presence(reader: _Reader) -> dict[int, tuple[str, ...]]:
    (rooms,) = reader.unpack(ROOM_COUNT)
    presence: dict[int, tuple[str, ...]] = {}
    for _ in range(rooms):
        room, count = reader.unpack(ROOM_HEAD)
        if count > MAX_USERS_PER_ROOM:
            raise WireError(Drop.TOO_LONG)
        if room in presence:
            raise WireError(Drop.MALFORMED)
        presence[room] = tuple(
            reader.text(reader.unpack(NAME_LEN)[0], MAX_USERNAME_BYTES) for _ in range(count)
        )
    if _presence_size(presence) > MAX_PRESENCE_BYTES:
        raise WireError(Drop.TOO_LONG)
    return presence


def _parse_beacon(body: bytes, sender: str, hops: int, counter: int) -> BeaconDatagram:
    reader = _Reader(body)
    origin, seq, boot_id, name_len = reader.unpack(BEACON_HEAD)
    name = reader.text(name_len, MAX_NODE_NAME_BYTES)
    (digest,) = reader.unpack(DIGEST)
    vector = _parse_vector(reader)
    presence = _parse_presence(reader)
    reader.finish()
    if vector and vector_digest(vector) != digest:
        raise WireError(Drop.MALFORMED)
    return BeaconDatagram(
        sender, name, boot_id, vector, presence, hops, counter, origin.hex(), seq, digest
    )


# -- FRAGMENT ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FragmentDatagram:
    """Piece ``index`` of ``count`` of the body of an ``inner_kind`` datagram."""

    sender: str
    inner_kind: DatagramKind
    transfer_id: int
    index: int
    count: int
    piece: bytes
    hops: int = 1
    counter: int = 0
    kind: ClassVar[DatagramKind] = DatagramKind.FRAGMENT

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        if self.inner_kind not in INNER_KINDS:
            raise ValueError(f"a fragment cannot carry {self.inner_kind!r}")
        if not 0 <= self.transfer_id <= U32_MAX:
            raise ValueError(f"transfer id out of range: {self.transfer_id}")
        if not 1 <= self.count <= MAX_FRAGMENTS or not 0 <= self.index < self.count:
            raise ValueError(f"fragment {self.index} of {self.count} out of range")
        if not self.piece:
            raise ValueError("empty fragment")

    def body(self) -> bytes:
        head = FRAGMENT_HEAD.pack(self.inner_kind, self.transfer_id, self.index, self.count)
        return head + self.piece

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def _parse_fragment(body: bytes, sender: str, hops: int, counter: int) -> FragmentDatagram:
    reader = _Reader(body)
    inner, transfer_id, index, count = reader.unpack(FRAGMENT_HEAD)
    if inner not in INNER_KINDS:
        raise WireError(Drop.BAD_KIND)
    if count > MAX_FRAGMENTS:
        raise WireError(Drop.TOO_LONG)
    piece = reader.rest()
    if not count or index >= count or not piece:
        raise WireError(Drop.MALFORMED)
    return FragmentDatagram(
        sender, DatagramKind(inner), transfer_id, index, count, piece, hops, counter
    )


# -- REQUEST -----------------------------------------------------------------------------


def _check_node(node: str, what: str) -> None:
    if not isinstance(node, str) or not ORIGIN_RE.fullmatch(node):
        raise ValueError(f"{what} must be 16 lowercase hex digits: {node!r}")


def _check_ranges(ranges: Sequence[tuple[str, int, int]], limit: int, what: str) -> None:
    if not 1 <= len(ranges) <= limit:
        raise ValueError(f"a {what} holds 1..{limit} ranges")
    for origin, first, last in ranges:
        _check_node(origin, "origin")
        if not 1 <= first <= last <= MAX_SEQ:
            raise ValueError(f"bad range {first}..{last}")


@dataclass(frozen=True, slots=True)
class RequestDatagram:
    """Asks node ``target`` for the records ``(origin, first..last)`` of each
    range; ``multicast``: answer on the group (a NACK), else unicast."""

    sender: str
    target: str
    ranges: Sequence[tuple[str, int, int]]
    multicast: bool = False
    hops: int = 1
    counter: int = 0
    kind: ClassVar[DatagramKind] = DatagramKind.REQUEST

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        _check_node(self.target, "target")
        object.__setattr__(self, "ranges", tuple(tuple(r) for r in self.ranges))
        _check_ranges(self.ranges, MAX_REQUEST_RANGES, "request")

    def body(self) -> bytes:
        flags = REQUEST_ANSWER_MULTICAST if self.multicast else 0
        parts = [REQUEST_HEAD.pack(bytes.fromhex(self.target), flags, len(self.ranges))]
        parts += [REQUEST_RANGE.pack(bytes.fromhex(o), f, la) for o, f, la in self.ranges]
        return b"".join(parts)

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def _read_ranges(
    reader: _Reader,
    count: int,
    limit: int,
    fmt: struct.Struct,
) -> list[tuple[str, int, int]]:
    """``count`` (origin, first, last) ranges, then the end of the body: at
    least one, at most ``limit``, each 1 <= first <= last."""
    if count > limit:
        raise WireError(Drop.TOO_LONG)
    ranges = []
    for _ in range(count):
        origin, first, last = reader.unpack(fmt)
        if not 1 <= first <= last:
            raise WireError(Drop.MALFORMED)
        ranges.append((origin.hex(), first, last))
    reader.finish()
    if not ranges:
        raise WireError(Drop.MALFORMED)
    return ranges


def _parse_request(body: bytes, sender: str, hops: int, counter: int) -> RequestDatagram:
    reader = _Reader(body)
    target, flags, count = reader.unpack(REQUEST_HEAD)
    if flags & ~REQUEST_FLAGS_KNOWN:
        raise WireError(Drop.BAD_FLAGS)
    ranges = _read_ranges(reader, count, MAX_REQUEST_RANGES, REQUEST_RANGE)
    multicast = bool(flags & REQUEST_ANSWER_MULTICAST)
    return RequestDatagram(sender, target.hex(), ranges, multicast, hops, counter)


# -- BATCH -------------------------------------------------------------------------------


def batch_size(entry_sizes: Sequence[int]) -> int:
    """Bytes of a whole BATCH datagram holding RECORD bodies of these sizes."""
    entries = sum(BATCH_ENTRY.size + size for size in entry_sizes)
    return HEADER.size + BATCH_COUNT.size + entries + MAC_LEN


@dataclass(frozen=True, slots=True)
class BatchDatagram:
    """Whole records for catch-up or repair; never relayed.
    ``Record.__eq__`` ignores the body: compare it too."""

    sender: str
    records: Sequence[Record]
    hops: int = 1
    counter: int = 0
    # ``record_body`` of each record when the caller has it already (the
    # responder measured them to fill the batch): saves encoding them twice.
    encoded: Sequence[bytes] = field(default=(), compare=False, repr=False)
    kind: ClassVar[DatagramKind] = DatagramKind.BATCH

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        object.__setattr__(self, "records", tuple(self.records))
        if not 1 <= len(self.records) <= U16_MAX:
            raise ValueError(f"a batch holds 1..{U16_MAX} records")
        if self.encoded and len(self.encoded) != len(self.records):
            raise ValueError("encoded must hold one body per record")
        for record in self.records:
            _check_record(record)

    def body(self) -> bytes:
        return encode_batch(self.encoded or [record_body(r) for r in self.records])

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def encode_batch(entries: Sequence[bytes]) -> bytes:
    """A BATCH body from RECORD bodies already encoded (``record_body``)."""
    parts = [BATCH_COUNT.pack(len(entries))]
    for entry in entries:
        parts += [BATCH_ENTRY.pack(len(entry)), entry]
    return b"".join(parts)


def _parse_batch(body: bytes, sender: str, hops: int, counter: int) -> BatchDatagram:
    reader = _Reader(body)
    (count,) = reader.unpack(BATCH_COUNT)
    records = [_read_record(reader.take(reader.unpack(BATCH_ENTRY)[0])) for _ in range(count)]
    reader.finish()
    if not records:
        raise WireError(Drop.MALFORMED)
    return BatchDatagram(sender, records, hops, counter)


# -- GONE --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoneDatagram:
    """``ranges``: ``(origin, first, last)``, inclusive: those records existed
    and are gone for good at the sender (expired or removed by moderation);
    whoever asked should treat exactly those seqs as held and move on."""

    sender: str
    ranges: Sequence[tuple[str, int, int]]
    hops: int = 1
    counter: int = 0
    kind: ClassVar[DatagramKind] = DatagramKind.GONE

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        object.__setattr__(self, "ranges", tuple(tuple(r) for r in self.ranges))
        _check_ranges(self.ranges, MAX_GONE_RANGES, "gone datagram")

    def body(self) -> bytes:
        parts = [GONE_COUNT.pack(len(self.ranges))]
        parts += [GONE_RANGE.pack(bytes.fromhex(o), f, la) for o, f, la in self.ranges]
        return b"".join(parts)

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def _parse_gone(body: bytes, sender: str, hops: int, counter: int) -> GoneDatagram:
    reader = _Reader(body)
    (count,) = reader.unpack(GONE_COUNT)
    ranges = _read_ranges(reader, count, MAX_GONE_RANGES, GONE_RANGE)
    return GoneDatagram(sender, ranges, hops, counter)


# -- FRAGMENT_REQUEST --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FragmentRequestDatagram:
    """Asks ``target``, the sender of transfer ``transfer_id``, for the pieces
    ``indexes`` again."""

    sender: str
    target: str
    transfer_id: int
    indexes: Sequence[int]
    hops: int = 1
    counter: int = 0
    kind: ClassVar[DatagramKind] = DatagramKind.FRAGMENT_REQUEST

    def __post_init__(self) -> None:
        _check_header(self.sender, self.hops, self.counter)
        _check_node(self.target, "target")
        if not 0 <= self.transfer_id <= U32_MAX:
            raise ValueError(f"transfer id out of range: {self.transfer_id}")
        object.__setattr__(self, "indexes", tuple(self.indexes))
        if not 1 <= len(self.indexes) <= MAX_FRAGMENTS:
            raise ValueError(f"a fragment request names 1..{MAX_FRAGMENTS} pieces")
        if not all(0 <= i < MAX_FRAGMENTS for i in self.indexes):
            raise ValueError(f"fragment index out of range: {self.indexes}")

    def body(self) -> bytes:
        head = FRAGMENT_REQUEST_HEAD.pack(
            bytes.fromhex(self.target), self.transfer_id, len(self.indexes)
        )
        return head + b"".join(FRAGMENT_INDEX.pack(i) for i in self.indexes)

    def serialize(self, key: bytes) -> bytes:
        return _seal(self, key)


def _parse_fragment_request(
    body: bytes, sender: str, hops: int, counter: int
) -> FragmentRequestDatagram:
    reader = _Reader(body)
    target, transfer_id, count = reader.unpack(FRAGMENT_REQUEST_HEAD)
    if count > MAX_FRAGMENTS:
        raise WireError(Drop.TOO_LONG)
    indexes = [reader.unpack(FRAGMENT_INDEX)[0] for _ in range(count)]
    reader.finish()
    if not indexes or max(indexes) >= MAX_FRAGMENTS:
        raise WireError(Drop.MALFORMED)
    return FragmentRequestDatagram(sender, target.hex(), transfer_id, indexes, hops, counter)


# -- parsing -----------------------------------------------------------------------------

InnerDatagram = RecordDatagram | BeaconDatagram | BatchDatagram
Datagram = (
    RecordDatagram
    | BeaconDatagram
    | FragmentDatagram
    | RequestDatagram
    | BatchDatagram
    | GoneDatagram
    | FragmentRequestDatagram
)

_BodyParser = Callable[[bytes, str, int, int], Datagram]
_BODY_PARSERS: dict[int, _BodyParser] = {
    DatagramKind.RECORD: _parse_record,
    DatagramKind.BEACON: _parse_beacon,
    DatagramKind.FRAGMENT: _parse_fragment,
    DatagramKind.REQUEST: _parse_request,
    DatagramKind.BATCH: _parse_batch,
    DatagramKind.GONE: _parse_gone,
    DatagramKind.FRAGMENT_REQUEST: _parse_fragment_request,
}


def parse(data: bytes, keys: Sequence[bytes]) -> Datagram:
    """Parse and authenticate one datagram; raises only ``WireError``."""
    data = bytes(data)
    if len(data) > MAX_DATAGRAM:
        raise WireError(Drop.TOO_LONG)
    if len(data) < HEADER.size + MAC_LEN:
        raise WireError(Drop.TOO_SHORT)
    version, kind, flags, hops, sender, counter = HEADER.unpack_from(data)
    if version != VERSION and version not in OLD_VERSIONS:
        raise WireError(Drop.BAD_VERSION)
    signed, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    # Try every key (no early exit), each compare in constant time.
    if not sum(hmac.compare_digest(_mac(key, signed), tag) for key in keys):
        raise WireError(Drop.BAD_MAC)
    if version != VERSION:  # one of our mesh, authentic, not upgraded yet
        raise WireError(Drop.OLD_VERSION)
    if flags & ~FLAGS_KNOWN:
        raise WireError(Drop.BAD_FLAGS)
    if kind not in _BODY_PARSERS:
        raise WireError(Drop.BAD_KIND)
    return parse_body(kind, signed[HEADER.size :], sender=sender.hex(), hops=hops, counter=counter)


def parse_body(kind: int, body: bytes, *, sender: str, hops: int = 1, counter: int = 0) -> Datagram:
    """Parse a body of ``kind`` (e.g. a reassembled one) with the given header
    fields; raises only ``WireError``."""
    parser = _BODY_PARSERS.get(kind)
    if parser is None:
        raise WireError(Drop.BAD_KIND)
    if len(body) > MAX_BODY:
        raise WireError(Drop.TOO_LONG)
    try:
        return parser(body, sender, hops, counter)
    except WireError:
        raise
    except ValueError:  # a dataclass check that the parser did not make first
        raise WireError(Drop.MALFORMED) from None
