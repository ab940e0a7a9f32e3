from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.keys import KEY_BYTES, MeshKeyError, load_or_make_keys


def test_made_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mesh.key"
    first = load_or_make_keys(path)
    assert len(first) == 1 and len(first[0]) == KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_make_keys(path) == first
    assert list(path.parent.iterdir()) == [path], "no temp files left behind"


def test_current_and_previous_key(tmp_path: Path) -> None:
    path = tmp_path / "mesh.key"
    path.write_text("aa" * 16 + "\n\n" + "bb" * 32 + "\n")
    assert load_or_make_keys(path) == [b"\xaa" * 16, b"\xbb" * 32]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 1 or 2 keys"),
        ("aa" * 16 + "\n" + "bb" * 16 + "\n" + "cc" * 16, "expected 1 or 2 keys"),
        ("zz" * 16, "not hex"),
        ("aa" * 8, "at least 16 bytes"),
    ],
)
def test_bad_key_files_say_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mesh.key"
    path.write_text(text)
    with pytest.raises(MeshKeyError, match=message):
        load_or_make_keys(path)
