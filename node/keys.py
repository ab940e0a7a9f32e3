"""The mesh key: shared by every router of one mesh, kept in a file.

The file holds one or two keys as hex, one per line: the current key first,
then optionally the previous one, accepted while a mesh changes keys (every
router sends with the first, accepts both).  If the file does not exist, a
random key is made (32 bytes, the HMAC-SHA256 block-size sweet spot) with
mode 0600; copy that file to every other router of the mesh.  A key file
that other users of the router may read is reported at start (a warning).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

KEY_BYTES = 32
MIN_KEY_BYTES = 16  # 128 bits: below that a key could be guessed offline
MAX_KEYS = 2  # current and previous


class MeshKeyError(ValueError):
    """The key file is unusable; the message says why."""


def warn_if_shared(path: Path) -> bool:
    """Log a warning if users other than the file's owner may read or write
    the key file (whoever reads it can send records to the whole mesh);
    True if so.  A warning, not a refusal: the mesh keeps working while the
    operator runs chmod."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    log.warning(
        "%s can be read or written by other users (mode %03o): anyone who reads it "
        "can send records to the whole mesh; run chmod 600 %s",
        path,
        mode,
        path,
    )
    return True


def _make_key_file(path: Path) -> None:
    """Write a new key; if several routers on one host race, one key wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails if another process got there first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def load_or_make_keys(path: Path) -> list[bytes]:
    if not path.exists():
        _make_key_file(path)
    warn_if_shared(path)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not 1 <= len(lines) <= MAX_KEYS:
        raise MeshKeyError(f"{path}: expected 1 or 2 keys (hex, one per line), found {len(lines)}")
    keys = []
    for n, line in enumerate(lines, 1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise MeshKeyError(f"{path}: line {n} is not hex") from None
        if len(key) < MIN_KEY_BYTES:
            raise MeshKeyError(f"{path}: line {n}: a key needs at least {MIN_KEY_BYTES} bytes")
        keys.append(key)
    return keys
