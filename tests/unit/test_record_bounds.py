"""Records from peers are bounded field by field (app/chat.py
``check_remote_record``): exactly the known fields, a size limit per kind, a
message time a page can show, only our own scrypt parameters; and whatever
is already stored never breaks a page (``message_frame``, ``room_list``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.accounts import (
    HASH_BYTES,
    SALT_BYTES,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    hash_password,
    verify_password,
)
from app.chat import (
    Chat,
    ChatError,
    check_remote_record,
    clean_text,
    is_clean_text,
    iso_utc,
    message_frame,
)
from app.moderation import ChatPolicy, Moderation
from node.clock import pack, physical_ms
from node.record import Record, RecordKind
from node.store import Store
from node.wire import HEADER, MAC_LEN, RECORD_HEAD, VERSION, DatagramKind, RecordDatagram, parse
from tests.helpers import receive_one

PEER = "c" * 16
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DAY_MS = 24 * 3600 * 1000
PASSWORD = "correct horse"
# The chat's bounds (app/chat.py), spelled out here so this file runs, and
# fails, on code without them.
LATEST_SHOWN_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_TIME_SKEW_MS = DAY_MS


def message(body: dict, hlc: int = pack(NOW_MS, 0), room: int = 1, seq: int = 1) -> Record:
    return Record(PEER, seq, hlc, RecordKind.MESSAGE, room, body)


def good_body(**change: object) -> dict:
    body = {"author": "ann", "node": "r1", "time": NOW_MS, "text": "hello"}
    body.update(change)
    return body


def account(body: dict) -> Record:
    return Record(PEER, 2, pack(NOW_MS, 0), RecordKind.ACCOUNT, 0, body)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scrypt_hash(
    password: str,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
    salt: bytes = b"s" * SALT_BYTES,
    dklen: int = HASH_BYTES,
) -> str:
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=dklen
    )
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(digest)}"


# -- messages ----------------------------------------------------------------------------


def test_message_with_exactly_the_known_fields_is_accepted() -> None:
    assert check_remote_record(message(good_body()), 4) is None


@pytest.mark.parametrize(
    "body",
    [
        good_body(pad="x" * 60_000),  # an unknown field: bloat on every router
        good_body(extra=1),
        {"author": "ann", "node": "r1", "time": NOW_MS},  # no text
        {"author": "ann", "time": NOW_MS, "text": "hi"},  # no node
    ],
)
def test_message_with_other_fields_is_refused(body: dict) -> None:
    assert check_remote_record(message(body), 4) == "bad_message"


@pytest.mark.parametrize(
    "when",
    [
        10**18,  # past what a datetime can show: rendering it raised
        LATEST_SHOWN_MS + 1,
        NOW_MS + MAX_TIME_SKEW_MS + 1,  # ahead of the record's own HLC by more than a day
        -1,
        True,
        1.5,
        "1700000000000",
        None,
    ],
)
def test_message_time_out_of_bounds_is_refused(when: object) -> None:
    assert check_remote_record(message(good_body(time=when)), 4) == "bad_message"


@pytest.mark.parametrize(
    "when",
    [
        NOW_MS,
        NOW_MS + MAX_TIME_SKEW_MS,
        0,  # a router booted at 1970 whose HLC went on from its last run: honest
    ],
)
def test_message_time_within_bounds_is_accepted(when: int) -> None:
    assert check_remote_record(message(good_body(time=when)), 4) is None


def test_every_kind_has_a_byte_limit() -> None:
    """A body over its kind's limit is refused whatever its fields."""
    from app.chat import MAX_BODY_BYTES

    pad = "x" * 60_000
    bodies = {
        RecordKind.MESSAGE: (1, good_body(text=pad)),
        RecordKind.ACCOUNT: (0, {"name": "ann", "hash": hash_password(PASSWORD), "pad": pad}),
        RecordKind.READ: (1, {"user": "ann", "room": 1, "upto": 5, "pad": pad}),
        RecordKind.MODERATION: (1, {"action": "clear", "by": "boss", "pad": pad}),
        RecordKind.DIRECT: (
            0,
            {
                "from": "ann",
                "to": "bob",
                "from_id": f"{'a' * 16}:1",
                "to_id": f"{'b' * 16}:1",
                "node": "a",
                "time": 1,
                "text": pad,
            },
        ),
        RecordKind.SETTING: (0, {"user": "ann", "setting": "attention", "pad": pad}),
    }
    assert set(MAX_BODY_BYTES) == set(bodies)
    for kind, (room, body) in bodies.items():
        record = Record(PEER, 3, pack(NOW_MS, 0), kind, room, body)
        assert check_remote_record(record, 4) is not None, kind
        assert MAX_BODY_BYTES[kind] < 60_000


def test_largest_honest_message_fits_its_byte_limit() -> None:
    """2,000 four-byte characters, the longest names: within the limit."""
    body = good_body(
        author="a" * 32, node="\U0001f600" * 32, text="\U0001f600" * 2000, time=LATEST_SHOWN_MS
    )
    record = message(body, hlc=pack(physical_ms((1 << 64) - 1), 0))
    assert check_remote_record(record, 4) is None


def from_the_wire(room: int, raw: bytes, kind: RecordKind = RecordKind.MESSAGE) -> Record:
    """The record a peer's RECORD datagram with body JSON ``raw`` gives."""
    key = b"bounds"
    signed = HEADER.pack(VERSION, DatagramKind.RECORD, 0, 1, bytes.fromhex(PEER), 0)
    signed += RECORD_HEAD.pack(bytes.fromhex(PEER), 5, pack(NOW_MS, 0), kind, room) + raw
    datagram = parse(signed + hmac.new(key, signed, hashlib.sha256).digest()[:MAC_LEN], [key])
    assert isinstance(datagram, RecordDatagram)
    return datagram.record


def test_byte_limits_count_a_received_body_as_it_would_be_sent_on() -> None:
    """The limit is on the compact JSON, not on what a peer sent: padding
    that the compact form drops is no reason to refuse, and a body over the
    limit is refused however it came."""
    from app.chat import MAX_BODY_BYTES

    limit = MAX_BODY_BYTES[RecordKind.READ]
    body = {"user": "ann", "room": 1, "upto": 5}
    padded = json.dumps(body, indent=limit).encode()
    assert len(padded) > limit
    record = from_the_wire(1, padded, RecordKind.READ)
    assert record.json_size > limit
    assert check_remote_record(record, 4) is None
    over = json.dumps({**body, "user": "a" * limit}, separators=(",", ":")).encode()
    assert check_remote_record(from_the_wire(1, over, RecordKind.READ), 4) == "bad_read"
    pad = {"action": "clear", "by": "boss", "account": f"{PEER}:1", "x": "y" * limit * 4}
    raw = json.dumps(pad, separators=(",", ":")).encode()
    assert check_remote_record(from_the_wire(1, raw, RecordKind.MODERATION), 4) == "bad_moderation"
    blob = good_body(text="", blob={"sha": "0" * 64}, thumb="t" * 60_000)
    assert from_the_wire(1, json.dumps(blob).encode()).json_size > 60_000
    assert check_remote_record(message(blob), 4) is not None


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    st.lists(
        st.characters(min_codepoint=0, max_codepoint=0xE000)
        | st.sampled_from(["\r\n", "\r", "\n", "\t", " ", "\x85", "\u2028", "\ud800"]),
        max_size=40,
    ).map("".join)
    | st.integers(1990, 2010).map(lambda n: "x" * n)
    | st.just(None)
)
def test_is_clean_text_is_clean_text_taking_the_text_as_it_is(text: str | None) -> None:
    try:
        expected = clean_text(text) == text
    except ChatError:
        expected = False
    assert is_clean_text(text) is expected


# -- read markers ------------------------------------------------------------------------


def test_read_marker_with_an_unknown_field_is_refused() -> None:
    body = {"user": "ann", "room": 1, "upto": 5, "x": 1}
    assert check_remote_record(Record(PEER, 4, 10, RecordKind.READ, 1, body), 4) == "bad_read"


# -- accounts ----------------------------------------------------------------------------


def test_account_records_as_the_chat_writes_them_are_accepted() -> None:
    hashed = hash_password(PASSWORD)
    for extra in ({}, {"account": f"{PEER}:1"}, {"renamed_from": f"{PEER}:1"}):
        assert check_remote_record(account({"name": "ann", "hash": hashed, **extra}), 4) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"pad": "x" * 1000},
        {"account": f"{PEER}:1", "renamed_from": f"{PEER}:1"},  # nothing writes both
    ],
)
def test_account_record_with_other_fields_is_refused(extra: dict) -> None:
    body = {"name": "ann", "hash": hash_password(PASSWORD), **extra}
    assert check_remote_record(account(body), 4) == "bad_account"


def test_account_with_other_scrypt_parameters_is_refused() -> None:
    good = hash_password(PASSWORD)
    _, _, _, _, salt, digest = good.split("$")
    others = [
        f"scrypt${SCRYPT_N}${SCRYPT_R}$150${salt}${digest}",  # every login holds the hashing thread
        f"scrypt${SCRYPT_N * 2}${SCRYPT_R}${SCRYPT_P}${salt}${digest}",
        f"scrypt${SCRYPT_N}$16${SCRYPT_P}${salt}${digest}",
        f"scrypt$0{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}${digest}",  # not our spelling
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(b's' * 8)}${digest}",  # short salt
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}${b64(b'd' * 64)}",  # long hash
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}${digest}$",
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}$!{digest[1:]}",
    ]
    for hashed in others:
        assert check_remote_record(account({"name": "ann", "hash": hashed}), 4) == "bad_account", (
            hashed
        )


def test_verify_password_never_hashes_with_other_parameters() -> None:
    """A stored hash with p=2 of the right password does not log in: the
    router never spends a stranger's choice of work on a login."""
    assert verify_password(PASSWORD, scrypt_hash(PASSWORD))  # our parameters: fine
    assert not verify_password(PASSWORD, scrypt_hash(PASSWORD, p=2))
    assert not verify_password(PASSWORD, scrypt_hash(PASSWORD, n=1 << 10))
    assert not verify_password(PASSWORD, scrypt_hash(PASSWORD, dklen=16))
    assert not verify_password(PASSWORD, scrypt_hash(PASSWORD, salt=b"s" * 8))
    assert not verify_password(PASSWORD, "scrypt$x")


# -- showing what is stored --------------------------------------------------------------


def test_iso_utc_is_exact_and_never_raises() -> None:
    assert iso_utc(NOW_MS + 123) == "2023-11-14T22:13:20.123Z"
    assert iso_utc(LATEST_SHOWN_MS) == "9999-12-31T23:59:59.999Z"
    assert iso_utc(10**18) == "9999-12-31T23:59:59.999Z"
    assert iso_utc(-5) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "body",
    [
        good_body(time=10**18),
        good_body(time=-5),
        good_body(time="soon"),
        good_body(time=None),
        good_body(time=2**64),
        good_body(time=True),
        {"author": 5, "node": ["x"], "text": {"a": 1}},  # a line written by hand
    ],
)
def test_message_frame_never_raises_and_shows_the_hlc_time(body: dict) -> None:
    frame = message_frame(message(body))
    assert frame["time"] == iso_utc(NOW_MS)
    assert all(isinstance(frame[k], str) for k in ("author", "node", "text", "time", "hlc"))


def test_message_frame_shows_the_senders_time_near_the_hlc() -> None:
    frame = message_frame(message(good_body(time=NOW_MS - 5000)))
    assert frame["time"] == iso_utc(NOW_MS - 5000)
    far_behind = message_frame(message(good_body(time=NOW_MS - 2 * DAY_MS)))
    assert far_behind["time"] == iso_utc(NOW_MS)  # a clock at 1970: the HLC is nearer


def test_message_frame_with_an_hlc_past_any_date() -> None:
    frame = message_frame(message(good_body(time=10**18), hlc=(1 << 64) - 1))
    assert frame["time"] == iso_utc(LATEST_SHOWN_MS)


def test_room_list_with_bad_stored_messages(tmp_path: Path) -> None:
    """Lines from before these checks, loaded from the logs: the room list
    still renders."""
    store = Store(tmp_path, 4)
    store.append(message(good_body(time=10**18)))
    store.append(message({"author": "bob", "node": "r", "time": 1, "text": 7}, room=2, seq=2))
    chat = Chat(store, "here", wall=lambda: NOW_MS / 1000)
    rooms = chat.room_list("ann")
    assert rooms[0]["last"]["time"] == iso_utc(NOW_MS)
    assert rooms[1]["last"]["text"] == ""
    store.close()


# -- never acknowledge what was not stored -----------------------------------------------


class Wall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        self.ms += 1000  # a second per look: past the rate limit's burst
        return self.ms / 1000


def test_post_that_the_store_refuses_is_an_error(tmp_path: Path) -> None:
    """A key holder's messages far ahead fill --max-history: the size guard's
    horizon is past anything this router stamps, so the store refuses the
    post.  The caller gets a ChatError, and no ack."""
    store = Store(tmp_path, 4)
    chat = Chat(store, "here", wall=Wall(NOW_MS))
    year_ahead = NOW_MS + 365 * DAY_MS
    for seq in (1, 2):
        assert receive_one(
            chat, message(good_body(time=year_ahead), hlc=pack(year_ahead, seq), seq=seq)
        )
    assert store.trim(1, 1) == 1  # keeps the newest, and nothing older from now on
    acks: list[Record] = []
    with pytest.raises(ChatError) as refused:
        chat.post("ann", 1, "lost?", on_stored=acks.append)
    assert refused.value.code == "not_stored"
    assert acks == [] and store.count(1) == 1
    store.close()


def test_clear_from_a_clock_far_ahead_is_clamped(tmp_path: Path) -> None:
    """A clear stamped a year ahead takes out what is here, not what this
    router stamps next; the clamped horizon survives a restart."""
    admins = [f"boss={PEER}:1"]  # the admin's account, made on the router far ahead
    store = Store(tmp_path, 4, policy=ChatPolicy(Moderation(admins).authorizes))
    chat = Chat(store, "here", wall=Wall(NOW_MS), admins=admins)
    before = chat.post("ann", 1, "before")
    clear = Record(
        PEER,
        9,
        pack(NOW_MS + 365 * DAY_MS, 0),
        RecordKind.MODERATION,
        1,
        {"action": "clear", "by": "boss", "account": f"{PEER}:1"},
    )
    assert receive_one(chat, clear)
    assert store.count(1) == 0
    after = chat.post("ann", 1, "after")
    assert [r.id for r in store.messages(1)] == [after.id]
    store.close()
    again = Store(tmp_path, 4, policy=ChatPolicy(Moderation(admins).authorizes))
    assert [r.id for r in again.messages(1)] == [after.id]
    assert again.get(before.origin, before.seq) is None
    again.close()


def test_clock_restarts_after_our_records_not_at_a_peers_far_future(tmp_path: Path) -> None:
    """At start the clock goes on after this router's own records, but a
    peer's record a year ahead moves it no further than the running clock
    follows a peer: otherwise retention, computed from the clock, would
    drop every message at the next start."""
    store = Store(tmp_path, 4)
    chat = Chat(store, "here", wall=Wall(NOW_MS))
    ours = chat.post("ann", 1, "ours")
    year_ahead = NOW_MS + 365 * DAY_MS
    assert receive_one(chat, message(good_body(time=year_ahead), hlc=pack(year_ahead, 0)))
    store.close()
    again = Store(tmp_path, 4)
    restarted = Chat(again, "here", wall=Wall(NOW_MS + 5000))
    assert ours.hlc < restarted.clock.last < pack(NOW_MS + DAY_MS, 0)
    booted_at_1970 = Chat(again, "here", wall=Wall(0))
    assert booted_at_1970.clock.last >= ours.hlc  # never back before our own records
    again.close()
