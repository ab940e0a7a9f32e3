"""The store's load, made smaller and faster (issue "Router budget"): what it
holds and what it answers must be what it was."""

from __future__ import annotations

import random
from pathlib import Path

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
