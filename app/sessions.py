"""Login sessions, kept server-side in the data folder.

The browser holds a random token in an HttpOnly, SameSite=Lax cookie; the
server keeps only the token's SHA-256, so a copied data folder does not hand
out live sessions.  ``sessions.json`` is rewritten atomically on every login
and logout (rare events), so a restart logs nobody out.  Each session has its
own CSRF token for the forms of a logged-in person.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from node.store import write_atomically

log = logging.getLogger(__name__)

SESSIONS_FILE = "sessions.json"
# Only the router's user reads it: a digest is no live session, but it tells
# who is logged in.  run() sets umask 077 too; this holds without it.
SESSIONS_MODE = 0o600
TOKEN_BYTES = 32  # 256 bits: unguessable
# A phone that stays away for a month logs in again.  Measured on the wall
# clock, not the monotonic one every other duration uses: a session outlives
# a restart in sessions.json, and a monotonic clock starts again at boot.
SESSION_LIFETIME = 30 * 24 * 3600
# Bounds the file and memory: a busy router's whole neighbourhood, many times.
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    account: str  # id of the ACCOUNT record
    csrf: str
    created: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / SESSIONS_FILE
        self._by_digest: dict[str, Session] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            self._by_digest = {d: Session(**s) for d, s in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): everyone logs in again", self.path, e)

    def _save(self) -> None:
        data = {d: asdict(s) for d, s in self._by_digest.items()}
        write_atomically(self.path, json.dumps(data, indent=0).encode())
        os.chmod(self.path, SESSIONS_MODE)

    def create(self, user: str, account: str, now: float) -> str:
        """A new session; returns the token for the cookie."""
        self._expire(now)
        if len(self._by_digest) >= MAX_SESSIONS:
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].created)
            del self._by_digest[oldest]
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._by_digest[_digest(token)] = Session(user, account, secrets.token_urlsafe(16), now)
        self._save()
        return token

    def get(self, token: str | None, now: float) -> Session | None:
        if not token:
            return None
        session = self._by_digest.get(_digest(token))
        if session is None or now - session.created > SESSION_LIFETIME:
            return None
        return session

    def delete(self, token: str | None) -> None:
        if token and self._by_digest.pop(_digest(token), None) is not None:
            self._save()

    def _expire(self, now: float) -> None:
        for d in [d for d, s in self._by_digest.items() if now - s.created > SESSION_LIFETIME]:
            del self._by_digest[d]

    def __len__(self) -> int:
        return len(self._by_digest)
