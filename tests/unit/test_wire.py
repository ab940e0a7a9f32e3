"""node/wire.py: exact bytes both ways, round trips, and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.clock import pack
from node.reasons import Drop
from node.record import MAX_SEQ, Record, RecordKind
from node.wire import (
    BATCH_COUNT,
    BATCH_ENTRY,
    BEACON_HEAD,
    EMPTY_DIGEST,
    FRAGMENT_HEAD,
    FRAGMENT_REQUEST_HEAD,
    HEADER,
    JSON_GROWTH,
    MAC_LEN,
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_FRAGMENTS,
    MAX_GONE_RANGES,
    MAX_NODE_NAME_BYTES,
    MAX_PRESENCE_BYTES,
    MAX_RECORD_JSON,
    MAX_REQUEST_RANGES,
    MAX_USERNAME_BYTES,
    MAX_USERS_PER_ROOM,
    MAX_VECTOR_ENTRIES,
    REASONS,
    RECORD_HEAD,
    REQUEST_HEAD,
    VERSION,
    BatchDatagram,
    BeaconDatagram,
    DatagramKind,
    FragmentDatagram,
    FragmentRequestDatagram,
    GoneDatagram,
    RecordDatagram,
    RequestDatagram,
    WireError,
    batch_size,
    dump_json,
    parse,
    parse_body,
)

KEY = b"community chat test key"
OLD_KEY = b"last month's key"
SENDER = "0123456789abcdef"
ORIGIN = "fedcba9876543210"


def make_record(body: dict | None = None, **fields) -> Record:
    values = dict(
        origin=ORIGIN, seq=42, hlc=pack(1_700_000_000_000, 7), kind=RecordKind.MESSAGE, room=2
    )
    values.update(fields)
    return Record(body={"author": "ana", "text": "hé 😀"} if body is None else body, **values)


RECORD = RecordDatagram(SENDER, make_record(), hops=7, counter=5)
BEACON = BeaconDatagram(  # ORIGIN's 9th beacon, relayed by SENDER
    SENDER,
    "café",
    0x1122334455667788,
    {ORIGIN: 42, SENDER: 3},
    {1: ["bo", "ana"], 3: ["zoë"]},
    hops=6,
    counter=6,
    origin=ORIGIN,
    seq=9,
)
FRAGMENT = FragmentDatagram(
    SENDER, DatagramKind.RECORD, 0xDEADBEEF, 1, 3, b"\x00\x01piece", hops=7, counter=9
)
REQUEST = RequestDatagram(
    SENDER, ORIGIN, [(ORIGIN, 1, 41), (SENDER, 7, 7)], multicast=True, counter=10
)
BATCH = BatchDatagram(
    SENDER, [make_record({"t": "a"}, seq=1), make_record({}, seq=2, room=0)], counter=11
)
GONE = GoneDatagram(SENDER, [(ORIGIN, 2, 100), (SENDER, 7, 0x01020304)], counter=12)
FRAGMENT_REQUEST = FragmentRequestDatagram(SENDER, ORIGIN, 0xDEADBEEF, [0, 255], counter=13)

# One line per part, fields separated by spaces (bytes.fromhex skips them).
RECORD_HEX = (
    "02 01 00 07 0123456789abcdef 00000005 "  # version kind flags hops sender counter
    "fedcba9876543210 0000002a 018bcfe568000007 01 0002 "  # origin seq hlc kind room
    # {"author":"ana","text":"hé 😀"}
    "7b22617574686f72223a22616e61222c2274657874223a2268c3a920f09f9880227d "
    "2a9c19bf9ffcde8c109694ccee440208"  # mac
)
BEACON_HEX = (
    "02 02 00 06 0123456789abcdef 00000006 "
    "fedcba9876543210 00000009 "  # origin, beacon seq
    "1122334455667788 05 636166c3a9 "  # boot id, name length, "café"
    "5c33bde797a35b80 "  # vector digest (wire.vector_digest)
    "0002 0123456789abcdef 00000003 fedcba9876543210 0000002a "  # vector: 2 entries
    "02 0001 0002 03 616e61 02 626f "  # 2 rooms; room 1: "ana", "bo"
    "0003 0001 04 7a6fc3ab "  # room 3: "zoë"
    "2934eff97baf5cb3d8c28fae52223f4e"
)
FRAGMENT_HEX = (
    "02 03 00 07 0123456789abcdef 00000009 "
    "01 deadbeef 0001 0003 00017069656365 "  # inner kind, transfer id, index, count, piece
    "0db2761159523c8bc16a0c4b17a1cd04"
)
REQUEST_HEX = (
    "02 04 00 01 0123456789abcdef 0000000a "
    "fedcba9876543210 01 0002 "  # target, flags (answer by multicast), 2 ranges
    "fedcba9876543210 00000001 00000029 "  # origin, first, last
    "0123456789abcdef 00000007 00000007 "
    "MAC"
)
BATCH_HEX = (
    "02 05 00 01 0123456789abcdef 0000000b "
    "0002 "  # 2 records
    "0020 fedcba9876543210 00000001 018bcfe568000007 01 0002 7b2274223a2261227d "  # {"t":"a"}
    "0019 fedcba9876543210 00000002 018bcfe568000007 01 0000 7b7d "  # {}
    "MAC"
)
GONE_HEX = (
    "02 06 00 01 0123456789abcdef 0000000c "
    "0002 "  # 2 ranges, in the order given
    "fedcba9876543210 00000002 00000064 "  # origin, first, last
    "0123456789abcdef 00000007 01020304 "
    "MAC"
)
FRAGMENT_REQUEST_HEX = (
    "02 07 00 01 0123456789abcdef 0000000d "
    "fedcba9876543210 deadbeef 0002 0000 00ff "  # target, transfer id, 2 indexes
    "MAC"
)


def with_mac(hexdata: str) -> str:
    """Fill in the MAC of a hex layout written by hand (the layout is the point)."""
    signed = bytes.fromhex(hexdata.replace("MAC", ""))
    return hexdata.replace("MAC", hmac.new(KEY, signed, hashlib.sha256).digest()[:16].hex())


def seal(
    body: bytes,
    kind: int = DatagramKind.RECORD,
    *,
    flags: int = 0,
    version: int = VERSION,
    hops: int = 1,
    key: bytes = KEY,
) -> bytes:
    """A datagram built by hand, with a valid MAC, around any body."""
    head = struct.pack("!BBBB8sI", version, kind, flags, hops, bytes.fromhex(SENDER), 1)
    return head + body + hmac.new(key, head + body, hashlib.sha256).digest()[:16]


def reason(data: bytes, keys=(KEY,)) -> str:
    with pytest.raises(WireError) as info:
        parse(data, keys)
    return info.value.reason


# -- exact bytes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "hexdata"),
    [
        (RECORD, RECORD_HEX),
        (BEACON, BEACON_HEX),
        (FRAGMENT, FRAGMENT_HEX),
        (REQUEST, with_mac(REQUEST_HEX)),
        (BATCH, with_mac(BATCH_HEX)),
        (GONE, with_mac(GONE_HEX)),
        (FRAGMENT_REQUEST, with_mac(FRAGMENT_REQUEST_HEX)),
    ],
    ids=["record", "beacon", "fragment", "request", "batch", "gone", "fragment_request"],
)
def test_exact_bytes_both_ways(datagram, hexdata):
    assert datagram.serialize(KEY).hex() == hexdata.replace(" ", "")
    parsed = parse(bytes.fromhex(hexdata), [KEY])
    assert parsed == datagram
    if isinstance(datagram, RecordDatagram):
        assert parsed.record.body == datagram.record.body
    if isinstance(datagram, BatchDatagram):
        assert [r.body for r in parsed.records] == [r.body for r in datagram.records]


def test_new_kinds_have_their_numbers():
    assert [int(k) for k in DatagramKind] == [1, 2, 3, 4, 5, 6, 7]


def test_struct_sizes():
    assert HEADER.size == 16
    assert RECORD_HEAD.size == 23
    assert BEACON_HEAD.size == 21
    assert FRAGMENT_HEAD.size == 9
    assert REQUEST_HEAD.size == 11
    assert FRAGMENT_REQUEST_HEAD.size == 14
    assert MAC_LEN == 16
    assert MAX_BODY == MAX_DATAGRAM - 32


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "plain"},
        {"text": "😀" * 2000, "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
        {"text": 'quotes " and \\ and \n newline and \x00 nul'},
    ],
)
@pytest.mark.parametrize("kind", list(RecordKind))
def test_record_round_trip(body, kind):
    record = make_record(body, kind=kind, seq=4_294_967_295, hlc=(1 << 64) - 1, room=65535)
    datagram = RecordDatagram(ORIGIN, record, hops=255, counter=4_294_967_295)
    parsed = parse(datagram.serialize(KEY), [KEY])
    assert parsed == datagram
    assert parsed.record.body == body
    assert type(parsed.record.kind) is RecordKind


def test_beacon_round_trip_and_normalization():
    empty = BeaconDatagram(SENDER, "n", 0)
    assert empty.origin == SENDER and empty.seq == 0  # not relayed: from its origin
    assert parse(empty.serialize(KEY), [KEY]) == empty
    relayed = BeaconDatagram(SENDER, "n", 0, hops=3, origin=ORIGIN, seq=(1 << 32) - 1)
    assert parse(relayed.serialize(KEY), [KEY]) == relayed
    messy = BeaconDatagram(SENDER, "n", 1, {}, {4: ["b", "a", "b"], 2: [], 1: ("c",)})
    assert messy.presence == {1: ("c",), 4: ("a", "b")}
    assert parse(messy.serialize(KEY), [KEY]) == messy


def test_beacon_at_its_limits_fits_max_body():
    vector = {f"{i:016x}": i for i in range(MAX_VECTOR_ENTRIES)}
    user = "x" * MAX_USERNAME_BYTES
    room_size = 4 + MAX_USERS_PER_ROOM * (1 + MAX_USERNAME_BYTES)
    users_left = (MAX_PRESENCE_BYTES - 4) // (1 + MAX_USERNAME_BYTES)
    assert users_left < MAX_USERS_PER_ROOM and room_size > MAX_PRESENCE_BYTES
    presence = {1: [f"{i:04d}" + user[4:] for i in range(users_left)]}
    beacon = BeaconDatagram(SENDER, "n" * MAX_NODE_NAME_BYTES, 1, vector, presence)
    data = beacon.serialize(KEY)
    assert len(data) <= MAX_DATAGRAM
    assert parse(data, [KEY]) == beacon


def test_fragment_round_trip():
    for index in (0, MAX_FRAGMENTS - 1):
        piece = FragmentDatagram(SENDER, DatagramKind.BEACON, 0, index, MAX_FRAGMENTS, b"x")
        assert parse(piece.serialize(KEY), [KEY]) == piece


def test_largest_record_fits_one_datagram_and_a_batch_of_one():
    text = "x" * (MAX_RECORD_JSON - len('{"t":""}'))
    datagram = RecordDatagram(SENDER, make_record({"t": text}))
    data = datagram.serialize(KEY)
    assert len(data) == MAX_DATAGRAM - BATCH_COUNT.size - BATCH_ENTRY.size
    assert parse(data, [KEY]).record.body == {"t": text}
    batch = BatchDatagram(SENDER, [make_record({"t": text})]).serialize(KEY)
    assert len(batch) == MAX_DATAGRAM == batch_size([len(datagram.body())])
    assert parse(batch, [KEY]).records[0].body == {"t": text}
    with pytest.raises(ValueError, match="exceeds"):
        RecordDatagram(SENDER, make_record({"t": text + "x"})).serialize(KEY)


def test_new_kinds_round_trip_at_their_limits():
    ranges = [(f"{i:016x}", 1, 4_294_967_295) for i in range(MAX_REQUEST_RANGES)]
    request = RequestDatagram(SENDER, ORIGIN, ranges)
    assert len(request.serialize(KEY)) <= MAX_DATAGRAM
    assert parse(request.serialize(KEY), [KEY]) == request
    assert parse(request.serialize(KEY), [KEY]).multicast is False
    most = [(f"{i:016x}", i + 1, 4_294_967_295) for i in range(MAX_GONE_RANGES)]
    gone = GoneDatagram(SENDER, most)
    assert len(gone.serialize(KEY)) <= MAX_DATAGRAM
    assert parse(gone.serialize(KEY), [KEY]) == gone
    assert GoneDatagram(SENDER, [(ORIGIN, 1, 1)] * 2).ranges == ((ORIGIN, 1, 1),) * 2
    every = FragmentRequestDatagram(SENDER, ORIGIN, 0, range(MAX_FRAGMENTS))
    assert parse(every.serialize(KEY), [KEY]) == every
    piece = FragmentDatagram(SENDER, DatagramKind.BATCH, 1, 0, 2, b"x")
    assert parse(piece.serialize(KEY), [KEY]) == piece


# -- keys -------------------------------------------------------------------------------


def test_any_listed_key_verifies():
    assert parse(RECORD.serialize(OLD_KEY), [KEY, OLD_KEY]) == RECORD
    assert parse(RECORD.serialize(KEY), [KEY, OLD_KEY]) == RECORD
    assert reason(RECORD.serialize(OLD_KEY), [KEY]) == "bad_mac"
    assert reason(RECORD.serialize(KEY), []) == "bad_mac"


# -- every refusal ---------------------------------------------------------------------

RECORD_BYTES = bytes.fromhex(RECORD_HEX)
RECORD_BODY = RECORD_BYTES[16:-16]


def record_body(json_bytes: bytes, kind: int = 1, seq: int = 1) -> bytes:
    return RECORD_HEAD.pack(bytes.fromhex(ORIGIN), seq, 1, kind, 1) + json_bytes


def beacon_body(
    name: bytes = b"n",
    vector: bytes = b"\x00\x00",
    presence: bytes = b"\x00",
    digest: bytes = EMPTY_DIGEST,
) -> bytes:
    head = struct.pack("!8sIQB", bytes.fromhex(ORIGIN), 1, 1, len(name))
    return head + name + digest + vector + presence


def request_body(flags: int = 0, count: int = 1, ranges: bytes | None = None) -> bytes:
    if ranges is None:
        ranges = struct.pack("!8sII", bytes.fromhex(ORIGIN), 1, 2)
    return struct.pack("!8sBH", bytes.fromhex(ORIGIN), flags, count) + ranges


def batch_entry(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + body


def gone_body(count: int = 1, ranges: bytes | None = None) -> bytes:
    if ranges is None:
        ranges = struct.pack("!8sII", bytes.fromhex(ORIGIN), 1, 2)
    return struct.pack("!H", count) + ranges


def fragment_request_body(count: int = 1, indexes: bytes = b"\x00\x00") -> bytes:
    return struct.pack("!8sIH", bytes.fromhex(ORIGIN), 1, count) + indexes


REFUSALS = {
    "too_short": [b"", b"\x01", bytes(31)],
    "too_long": [
        bytes(MAX_DATAGRAM + 1),
        seal(beacon_body(name=b"n" * (MAX_NODE_NAME_BYTES + 1)), DatagramKind.BEACON),
        seal(beacon_body(vector=struct.pack("!H", MAX_VECTOR_ENTRIES + 1)), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x01\x00\x01\x00\x03\xe9"), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x01\x00\x01\x00\x01\x81" + b"u" * 129), DatagramKind.BEACON),
        seal(FRAGMENT_HEAD.pack(1, 0, 0, MAX_FRAGMENTS + 1) + b"x", DatagramKind.FRAGMENT),
        seal(request_body(count=MAX_REQUEST_RANGES + 1), DatagramKind.REQUEST),
        seal(gone_body(count=MAX_GONE_RANGES + 1), DatagramKind.GONE),
        seal(fragment_request_body(count=MAX_FRAGMENTS + 1), DatagramKind.FRAGMENT_REQUEST),
    ],
    "bad_version": [b"\x03" + RECORD_BYTES[1:], seal(RECORD_BODY, version=0)],
    # Version 1, authentic: a router of our mesh not upgraded yet.
    "old_version": [
        seal(RECORD_BODY, version=1),
        seal(beacon_body(), DatagramKind.BEACON, version=1),
    ],
    "bad_mac": [
        RECORD.serialize(OLD_KEY),
        RECORD_BYTES[:-1] + b"\x00",
        b"\x01" + bytes(31),
    ],
    "bad_kind": [
        seal(RECORD_BODY, 0),
        seal(RECORD_BODY, 8),  # the first number not in use
        seal(RECORD_BODY, 255),
        seal(FRAGMENT_HEAD.pack(DatagramKind.FRAGMENT, 0, 0, 2) + b"x", DatagramKind.FRAGMENT),
        seal(FRAGMENT_HEAD.pack(9, 0, 0, 2) + b"x", DatagramKind.FRAGMENT),
    ],
    "bad_flags": [
        seal(RECORD_BODY, flags=0x01),
        seal(RECORD_BODY, flags=0x80),
        seal(request_body(flags=0x02), DatagramKind.REQUEST),  # request flags, too
    ],
    "malformed": [
        seal(b""),
        seal(RECORD_BODY[:22]),
        seal(record_body(b"{}", seq=0)),
        seal(beacon_body() + b"x", DatagramKind.BEACON),  # trailing byte
        seal(beacon_body(name=b""), DatagramKind.BEACON),
        seal(beacon_body()[:-1], DatagramKind.BEACON),
        seal(beacon_body(vector=b"\x00\x02" + bytes(12) * 2), DatagramKind.BEACON),  # origin twice
        seal(beacon_body(vector=b"\x00\x02" + bytes(12)), DatagramKind.BEACON),
        # a vector whose digest is not the one it came with
        seal(beacon_body(vector=b"\x00\x01" + bytes(11) + b"\x01"), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x02\x00\x01\x00\x00\x00\x01\x00\x00"), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x01\x00\x01\x00\x01\x00"), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x01\x00\x01\x00\x01\x05ab"), DatagramKind.BEACON),
        seal(FRAGMENT_HEAD.pack(1, 0, 0, 0) + b"x", DatagramKind.FRAGMENT),
        seal(FRAGMENT_HEAD.pack(1, 0, 2, 2) + b"x", DatagramKind.FRAGMENT),
        seal(FRAGMENT_HEAD.pack(1, 0, 0, 2), DatagramKind.FRAGMENT),  # empty piece
        seal(FRAGMENT_HEAD.pack(1, 0, 0, 2)[:-1], DatagramKind.FRAGMENT),
        seal(request_body(count=0, ranges=b""), DatagramKind.REQUEST),
        seal(request_body(ranges=struct.pack("!8sII", bytes(8), 0, 5)), DatagramKind.REQUEST),
        seal(request_body(ranges=struct.pack("!8sII", bytes(8), 6, 5)), DatagramKind.REQUEST),
        seal(request_body() + b"x", DatagramKind.REQUEST),
        seal(b"\x00\x00", DatagramKind.BATCH),  # no records
        seal(b"\x00\x01\x00\x00", DatagramKind.BATCH),  # an empty record
        seal(b"\x00\x01\x00\x05" + record_body(b"{}"), DatagramKind.BATCH),  # length too short
        seal(b"\x00\x01" + batch_entry(record_body(b"{}")) + b"x", DatagramKind.BATCH),
        seal(gone_body(count=0, ranges=b""), DatagramKind.GONE),  # no ranges
        seal(gone_body(ranges=struct.pack("!8sII", bytes(8), 0, 5)), DatagramKind.GONE),  # seq 0
        seal(gone_body(ranges=struct.pack("!8sII", bytes(8), 6, 5)), DatagramKind.GONE),  # 6..5
        seal(gone_body(count=2), DatagramKind.GONE),  # one range short
        seal(gone_body() + b"x", DatagramKind.GONE),  # trailing byte
        seal(gone_body()[:-1], DatagramKind.GONE),
        seal(fragment_request_body(count=0, indexes=b""), DatagramKind.FRAGMENT_REQUEST),
        seal(fragment_request_body(indexes=b"\x01\x00"), DatagramKind.FRAGMENT_REQUEST),
    ],
    "bad_utf8": [
        seal(record_body(b'{"t":"\xff"}')),
        seal(beacon_body(name=b"\xc3"), DatagramKind.BEACON),
        seal(beacon_body(presence=b"\x01\x00\x01\x00\x01\x02\xed\xa0"), DatagramKind.BEACON),
    ],
    "bad_json": [
        seal(record_body(b"")),
        seal(record_body(b"{")),
        seal(record_body(b"[]")),
        seal(record_body(b'"text"')),
        seal(record_body(b"null")),
        seal(record_body(b'{"t":NaN}')),
        seal(record_body(b'{"t":-Infinity}')),
        seal(record_body(b'{"t":1e999}')),
        seal(record_body(b'{"t":"\\ud800"}')),  # a lone surrogate cannot be re-sent
        seal(record_body(b'{"t":' + b"[" * 30_000 + b"]" * 30_000 + b"}")),  # too deep
        seal(record_body(b'{"t":' + b"9" * 5000 + b"}")),  # beyond int_max_str_digits
    ],
    "bad_record_kind": [
        seal(record_body(b"{}", kind=0)),
        seal(record_body(b"{}", kind=99)),
        seal(b"\x00\x01" + batch_entry(record_body(b"{}", kind=99)), DatagramKind.BATCH),
    ],
}


def test_every_reason_is_tested():
    assert set(REFUSALS) == REASONS


@pytest.mark.parametrize(
    ("expected", "data"),
    [(r, d) for r, cases in sorted(REFUSALS.items()) for d in cases],
    ids=[f"{r}-{i}" for r, cases in sorted(REFUSALS.items()) for i in range(len(cases))],
)
def test_refusal(expected, data):
    assert reason(data) == expected


def test_reencoded_json_longer_than_allowed_is_too_long():
    # "1e5" is 3 bytes but re-serializes as "100000.0": a body at the limit grows.
    pad = MAX_RECORD_JSON - len(b'{"t":"","f":1e5}')
    body = b'{"t":"' + b"x" * pad + b'","f":1e5}'
    assert len(body) == MAX_RECORD_JSON
    assert reason(seal(record_body(body))) == "too_long"


def test_a_body_short_enough_to_skip_the_reencoding_cannot_grow_past_the_limit():
    # The receive path re-encodes only bodies with a \\u escape or longer than
    # MAX_RECORD_JSON / JSON_GROWTH: a number grows at most 4.5 times.
    count = (MAX_RECORD_JSON // JSON_GROWTH - 16) // 5
    raw = b'{"n":[' + b",".join([b"1e15"] * count) + b"]}"
    assert len(raw) * JSON_GROWTH <= MAX_RECORD_JSON
    record = parse(seal(record_body(raw)), [KEY]).record
    assert len(raw) * 3 < len(dump_json(record.body)) <= MAX_RECORD_JSON  # it grew, within


def test_parse_body_refuses_unknown_kind_and_oversize():
    with pytest.raises(WireError, match="bad_kind"):
        parse_body(8, b"", sender=SENDER)
    with pytest.raises(WireError, match="too_long"):
        parse_body(DatagramKind.BEACON, bytes(MAX_BODY + 1), sender=SENDER)


def test_wire_error_reason_must_be_known():
    with pytest.raises(AssertionError):
        WireError("something_else")


# -- corruption ---------------------------------------------------------------------------

ALL = [RECORD, BEACON, FRAGMENT, REQUEST, BATCH, GONE, FRAGMENT_REQUEST]
SAMPLES = [d.serialize(KEY) for d in ALL]
SAMPLE_IDS = [d.kind.name.lower() for d in ALL]


@pytest.mark.parametrize("data", SAMPLES, ids=SAMPLE_IDS)
def test_any_flipped_bit_is_refused(data):
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        # The version byte is read before the MAC (so a mesh upgrade shows up as
        # such); every other bit fails the MAC.
        assert reason(bytes(flipped)) == ("bad_version" if bit < 8 else "bad_mac")


@pytest.mark.parametrize("data", SAMPLES, ids=SAMPLE_IDS)
def test_every_truncation_is_refused(data):
    for length in range(len(data)):
        assert reason(data[:length]) == ("too_short" if length < 32 else "bad_mac")


@pytest.mark.parametrize("data", SAMPLES, ids=SAMPLE_IDS)
def test_every_truncated_body_with_valid_mac_is_refused(data):
    body, kind = data[16:-16], data[1]
    # A fragment's piece is free-form: a shorter piece is a valid fragment.
    end = FRAGMENT_HEAD.size + 1 if kind == DatagramKind.FRAGMENT else len(body)
    for length in range(end):
        with pytest.raises(WireError):
            parse(seal(body[:length], kind), [KEY])


# -- our own misuse raises ValueError ---------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: RecordDatagram("ABCDEF0123456789", make_record()),
        lambda: RecordDatagram(SENDER, make_record(), hops=256),
        lambda: RecordDatagram(SENDER, make_record(), counter=-1),
        lambda: RecordDatagram(SENDER, make_record(origin="short")),
        lambda: RecordDatagram(SENDER, make_record(seq=0)),
        lambda: RecordDatagram(SENDER, make_record(hlc=1 << 64)),
        lambda: RecordDatagram(SENDER, make_record(kind=9)),
        lambda: RecordDatagram(SENDER, make_record(room=65536)),
        lambda: RecordDatagram(SENDER, make_record({"t": object()})).body(),
        lambda: RecordDatagram(SENDER, make_record({"t": float("nan")})).body(),
        lambda: RecordDatagram(SENDER, make_record({"t": "\ud800"})).body(),
        lambda: RECORD.serialize(b""),
        lambda: BeaconDatagram(SENDER, "", 0),
        lambda: BeaconDatagram(SENDER, "n" * (MAX_NODE_NAME_BYTES + 1), 0),
        lambda: BeaconDatagram(SENDER, "n", 1 << 64),
        lambda: BeaconDatagram(SENDER, "n", 0, origin="FEDCBA9876543210"),
        lambda: BeaconDatagram(SENDER, "n", 0, seq=1 << 32),
        lambda: BeaconDatagram(SENDER, "n", 0, seq=-1),
        lambda: BeaconDatagram(SENDER, "n", 0, {"xyz": 1}),
        lambda: BeaconDatagram(SENDER, "n", 0, {ORIGIN: -1}),
        lambda: BeaconDatagram(SENDER, "n", 0, {}, {70000: ["a"]}),
        lambda: BeaconDatagram(SENDER, "n", 0, {}, {1: [""]}),
        lambda: BeaconDatagram(SENDER, "n", 0, {}, {1: [str(i) for i in range(1001)]}),
        lambda: FragmentDatagram(SENDER, DatagramKind.FRAGMENT, 0, 0, 1, b"x"),
        lambda: FragmentDatagram(SENDER, DatagramKind.RECORD, 1 << 32, 0, 1, b"x"),
        lambda: FragmentDatagram(SENDER, DatagramKind.RECORD, 0, 1, 1, b"x"),
        lambda: FragmentDatagram(SENDER, DatagramKind.RECORD, 0, 0, MAX_FRAGMENTS + 1, b"x"),
        lambda: FragmentDatagram(SENDER, DatagramKind.RECORD, 0, 0, 1, b""),
        lambda: RequestDatagram(SENDER, "nobody", [(ORIGIN, 1, 1)]),
        lambda: RequestDatagram(SENDER, ORIGIN, []),
        lambda: RequestDatagram(SENDER, ORIGIN, [(ORIGIN, 0, 1)]),
        lambda: RequestDatagram(SENDER, ORIGIN, [(ORIGIN, 2, 1)]),
        lambda: RequestDatagram(SENDER, ORIGIN, [(ORIGIN, 1, 1 << 32)]),
        lambda: RequestDatagram(SENDER, ORIGIN, [("x", 1, 1)]),
        lambda: BatchDatagram(SENDER, []),
        lambda: BatchDatagram(SENDER, [make_record(seq=0)]),
        lambda: GoneDatagram(SENDER, []),
        lambda: GoneDatagram(SENDER, [(ORIGIN, 0, 1)]),
        lambda: GoneDatagram(SENDER, [(ORIGIN, 2, 1)]),
        lambda: GoneDatagram(SENDER, [(ORIGIN, 1, 1 << 32)]),
        lambda: GoneDatagram(SENDER, [("x", 1, 1)]),
        lambda: GoneDatagram(SENDER, [(ORIGIN, 1, 1)] * (MAX_GONE_RANGES + 1)),
        lambda: FragmentRequestDatagram(SENDER, ORIGIN, 0, []),
        lambda: FragmentRequestDatagram(SENDER, ORIGIN, 0, [MAX_FRAGMENTS]),
        lambda: FragmentRequestDatagram(SENDER, ORIGIN, 1 << 32, [0]),
    ],
)
def test_misuse_raises_value_error(build):
    with pytest.raises(ValueError):
        build()


# -- GONE, by property ------------------------------------------------------------------

GONE_PROPS = settings(max_examples=150, derandomize=True, database=None, deadline=None)
gone_ranges = st.tuples(
    st.binary(min_size=8, max_size=8).map(bytes.hex),
    st.integers(1, MAX_SEQ),
    st.integers(0, MAX_SEQ),
).map(lambda r: (r[0], r[1], min(MAX_SEQ, r[1] + r[2])))


@GONE_PROPS
@given(st.lists(gone_ranges, min_size=1, max_size=40), st.integers(0, (1 << 32) - 1))
def test_any_gone_datagram_round_trips(ranges, counter):
    gone = GoneDatagram(SENDER, ranges, counter=counter)
    data = gone.serialize(KEY)
    assert len(data) == HEADER.size + 2 + 16 * len(ranges) + MAC_LEN
    back = parse(data, [KEY])
    assert back == gone and back.serialize(KEY) == data


@GONE_PROPS
@given(st.binary(max_size=200))
def test_any_gone_body_parses_to_valid_ranges_or_is_refused(body):
    try:
        gone = parse(seal(body, DatagramKind.GONE), [KEY])
    except WireError as e:
        assert e.reason in REASONS
        return
    assert 1 <= len(gone.ranges) == struct.unpack_from("!H", body)[0]
    assert all(1 <= first <= last <= MAX_SEQ for _, first, last in gone.ranges)


def test_every_drop_reason_is_a_member_of_one_enum():
    """node/ counts drops only by ``Drop`` member (node/reasons.py), never by
    a bare string; /status still shows plain strings."""
    node = Path(__file__).resolve().parents[2] / "node"
    bare = re.compile(r"""(dropped\[\s*["']|WireError\(\s*["']|_discard\([^)]*["'])""")
    for path in sorted(node.glob("*.py")):
        assert not bare.search(path.read_text()), path.name
    assert json.dumps({Drop.BAD_MAC: 1}) == '{"bad_mac": 1}'
    assert set(Drop) > REASONS
