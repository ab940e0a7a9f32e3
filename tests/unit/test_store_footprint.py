"""The store's load, made smaller and faster (issue "Router budget"): what it
holds and what it answers must be what it was."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.logs import MAX_LINE_BYTES
from node.record import Record, RecordKind, VersionVector
from node.store import Store, room_log_name

ORIGINS = ["a" * 16, "b" * 16, "c" * 16]
ROOMS = 4


def msg(origin: str, seq: int, room: int, text: str = "hi") -> Record:
    body = {"author": "ann", "node": "router-a", "time": 1000 + seq, "text": text}
    return Record(origin, seq, 1000 + seq, RecordKind.MESSAGE, room, body)


def test_loaded_records_share_their_repeated_strings(tmp_path: Path) -> None:
    store = Store(tmp_path, rooms=ROOMS)
    store.append_many([msg(ORIGINS[0], seq, 1 + seq % ROOMS) for seq in range(1, 5)])
    store.close()
    loaded = list(Store(tmp_path, rooms=ROOMS).index.values())
    first = loaded[0]
    for other in loaded[1:]:
        assert other.origin is first.origin
        assert other.body["author"] is first.body["author"]
        assert other.body["node"] is first.body["node"]
        for key, first_key in zip(other.body, first.body, strict=True):
            assert key is first_key


def test_load_builds_the_vector_one_by_one_would(tmp_path: Path) -> None:
    """Each origin's seqs spread over the rooms with gaps, out of order, with
    duplicates and seqs a peer reported gone: the same vector as adding
    every record as it arrives."""
    rng = random.Random(7)
    records = [
        msg(origin, seq, rng.randint(1, ROOMS))
        for origin in ORIGINS
        for seq in rng.sample(range(1, 400), 250)
    ]
    store = Store(tmp_path, rooms=ROOMS)
    store.note_gone(ORIGINS[1], 390, 420)  # above a hole: kept in state.json
    store.append_many(records)
    store.append_many(records[:20])  # duplicates: not stored twice
    expected = {o: (store.vector.contiguous(o), store.vector.missing(o, 450)) for o in ORIGINS}
    store.close()
    loaded = Store(tmp_path, rooms=ROOMS)
    assert {o: (loaded.vector.contiguous(o), loaded.vector.missing(o, 450)) for o in ORIGINS} == (
        expected
    )
    one_by_one = VersionVector()
    for r in records:
        one_by_one.add(r.origin, r.seq)
    one_by_one.add_range(ORIGINS[1], 390, 420)
    assert loaded.vector.as_dict() == one_by_one.as_dict()
    assert len(loaded.index) == len(records)


def test_text_with_unicode_line_separators_loads_as_one_line(tmp_path: Path) -> None:
    """A log is read as text for speed, but split only where bytes.splitlines
    splits: U+2028, U+2029, NEL and the like are a message's text."""
    text = "one\u2028two\u2029three\x85four\x1cfive\x0bsix\x0cseven"
    store = Store(tmp_path, rooms=ROOMS)
    store.append(msg(ORIGINS[0], 1, 1, text))
    store.append(msg(ORIGINS[0], 2, 1, "after"))
    store.close()
    loaded = Store(tmp_path, rooms=ROOMS)
    assert [r.body["text"] for r in loaded.messages(1)] == [text, "after"]
    assert loaded.skipped_lines == 0


def test_a_line_that_is_not_utf8_is_skipped_and_the_rest_load(tmp_path: Path) -> None:
    store = Store(tmp_path, rooms=ROOMS)
    store.append(msg(ORIGINS[0], 1, 1))
    store.close()
    with open(tmp_path / room_log_name(1), "ab") as f:
        f.write(b'{"id":"\xff\xfe"}\n')
    store = Store(tmp_path, rooms=ROOMS)
    store.append(msg(ORIGINS[0], 2, 1))
    store.close()
    loaded = Store(tmp_path, rooms=ROOMS)
    assert [r.seq for r in loaded.messages(1)] == [1, 2]
    assert loaded.skipped_lines == 1


def test_a_line_over_the_byte_limit_is_skipped_though_its_characters_fit(
    tmp_path: Path,
) -> None:
    """The limit is in bytes: 20,000 four-byte characters are 80,000 bytes."""
    store = Store(tmp_path, rooms=ROOMS)
    store.append(msg(ORIGINS[0], 1, 1, "👩" * (MAX_LINE_BYTES // 4 + 100)))
    store.append(msg(ORIGINS[0], 2, 1))
    store.close()
    loaded = Store(tmp_path, rooms=ROOMS)
    assert [r.seq for r in loaded.messages(1)] == [2]
    assert loaded.skipped_lines == 1


def _either(decode: Callable[[str], Record], line: str) -> tuple[object, ...] | str:
    """What a decoder makes of a line: the record's fields, or the error."""
    try:
        r = decode(line)
    except (ValueError, KeyError, TypeError) as e:
        return type(e).__name__
    return (r.origin, r.seq, r.hlc, r.kind, r.room, r.body)


# Spellings of a line that encode_line never writes: the head's quick read
# must leave each to the JSON decoder, which decides (a repeated key counts
# last, whitespace and other keys are JSON).
_RESPELLINGS = [
    lambda s: s,
    lambda s: s.replace('"body":', '"body": '),
    lambda s: s.replace('{"id"', '{ "id"'),
    lambda s: s[:-1] + ',"room":3}',
    lambda s: s[:-1] + ',"hlc":5}',
    lambda s: s[:-1] + ',"body":{"x":1}}',
    lambda s: s[:-1] + ',"extra":1}',
    lambda s: s[:-1] + " }",
    lambda s: s[:-1] + "}}",
    lambda s: s[:-1],
    lambda s: s.replace('"kind":"message"', '"kind":"nonsense"'),
    lambda s: s.replace('","hlc":', '0","hlc":').replace(":1", ":01", 1),
    lambda s: s.replace('"hlc":', '"hlc":-'),
    lambda s: s.replace('"hlc":', '"hlc":0'),
    lambda s: s.replace('"room":', '"room":0'),
    lambda s: s.replace('"body":{', '"body":[{').replace("}}", "}]}"),
    lambda s: s.replace(":1,", ":0,", 1),
    lambda s: s.replace(":1,", ":4294967296,", 1),
    lambda s: s.replace(":1,", ":00000000001,", 1),
]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(0, 2**64),
    st.dictionaries(
        st.text(max_size=6),
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        max_size=4,
    ),
    st.sampled_from(range(len(_RESPELLINGS))),
)
def test_a_lines_head_is_read_as_the_json_decoder_reads_it(
    seq: int, hlc: int, body: dict, spelling: int
) -> None:
    """decode_line reads the head encode_line writes without the JSON
    decoder: for any line, the same record (or the same refusal) as
    decoding it all as JSON."""
    from node.logs import _decode_json, decode_line, encode_line

    line = encode_line(Record(ORIGINS[0], seq, hlc, RecordKind.MESSAGE, 1, body)).decode()
    line = _RESPELLINGS[spelling](line.rstrip("\n"))
    assert _either(decode_line, line) == _either(_decode_json, line)
