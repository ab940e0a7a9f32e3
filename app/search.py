"""Search in a room's (or one's own direct conversation's) retained
history, and the way back to a result.

How this works: ``search`` walks a room's messages newest first (those
held as records, in memory) and keeps those whose text holds the query,
compared case-insensitively (``str.casefold``: "STRASSE" finds "Straße");
it stops at ``RESULTS_MAX``.  If they do not give that many, the room's
older messages (held as columns, node/cold.py) are found by one pass over
its log, a line decoded only when its casefolded text holds the query.
Each result is the message's frame with its text cut to a snippet of
``CONTEXT_CHARS`` either side of the match, and ``match`` (where the
query is in the snippet) for the page to highlight.
The cost is linear in the room's history: 5,000 messages per room is the
size guard's default (app/retention.py), measured by
tests/bench/bench_search.py.

``around`` and ``newer`` take a page to a result's place in the timeline:
the messages just before and after it, then onwards to the latest.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any

from node.record import Record, RecordKind
from node.store import Store

QUERY_MAX_CHARS = 100  # longer is not a search for words someone remembers
RESULTS_MAX = 30  # a phone screen or three; a narrower query finds the rest
CONTEXT_CHARS = 60  # of the text shown either side of a match
AROUND_HALF = 25  # messages before and after a result when the page jumps to it
NEWER_MAX = 200  # one "newer" request, as one scroll-back request (OLDER_LIMIT_MAX)


def _text(record: Record) -> str:
    text = record.body.get("text")
    return text if isinstance(text, str) else ""


def snippet(text: str, at: int, length: int) -> tuple[str, int]:
    """``text`` cut to ``CONTEXT_CHARS`` around ``[at, at+length)``; the
    cut text and where the match starts in it."""
    start = max(0, at - CONTEXT_CHARS)
    end = min(len(text), at + length + CONTEXT_CHARS)
    cut = text[start:end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    return prefix + cut + suffix, at - start + len(prefix)


def find(text: str, folded_query: str) -> int:
    """Where ``folded_query`` (casefolded) is in ``text``, case-insensitively; -1 if not.

    The index is in ``text`` itself when casefolding keeps its length (all
    but a few letters: "ß" becomes "ss"); otherwise the match is placed at
    the nearest index, which only moves the snippet by a character or two.
    """
    folded = text.casefold()
    at = folded.find(folded_query)
    if at < 0 or len(folded) == len(text):
        return at
    return min(at, max(0, len(text) - 1))


def search(
    store: Store, room: Hashable, query: str, limit: int = RESULTS_MAX
) -> list[tuple[Record, str, int]]:
    """The newest ``limit`` messages of ``room`` holding ``query``: each with
    its snippet and the match's index in it."""
    folded = query.casefold()
    found: list[tuple[Record, str, int]] = []
    for record in reversed(store.recent(room)):
        text = _text(record)
        at = find(text, folded)
        if at >= 0:
            cut, where = snippet(text, at, len(query))
            found.append((record, cut, where))
            if len(found) >= limit:
                return found
    # The older messages are lines in the room's log (node/cold.py): read
    # in one pass, a line decoded only if its text can hold the query.
    older = (r for r in store.scan(room, _line_filter(folded)) if find(_text(r), folded) >= 0)
    for record in heapq.nlargest(limit - len(found), older, key=lambda r: r.order_key):
        text = _text(record)
        cut, where = snippet(text, find(text, folded), len(query))
        found.append((record, cut, where))
    return found


def _line_filter(folded: str) -> str | None:
    """What a log line, casefolded, holds if its message's text holds
    ``folded``: the query itself, unless it has a character JSON escapes
    (then every line is decoded)."""
    if '"' in folded or "\\" in folded or any(ord(c) < 0x20 for c in folded):
        return None
    return folded


def _message_in(store: Store, room: Hashable, rid: tuple[str, int]) -> Record | None:
    """The message ``rid`` if it is in ``room`` (a room's number, or a
    direct conversation's key: a direct message is found only there)."""
    record = store.get(*rid)
    if record is None:
        return None
    if isinstance(room, int):
        ok = record.kind == RecordKind.MESSAGE and record.room == room
    else:
        ok = store.conversation_of(*rid) == room
    return record if ok else None


def after(
    store: Store, room: Hashable, rid: tuple[str, int], limit: int
) -> tuple[list[Record], bool] | None:
    """Up to ``limit`` messages sorted just after ``rid``, and whether more
    follow; None if ``rid`` is not a message of ``room`` held here."""
    record = _message_in(store, room, rid)
    if record is None:
        return None
    newer = (r for r in store.after(room, record.hlc - 1) if r.order_key > record.order_key)
    later = list(itertools.islice(newer, limit + 1))
    return later[:limit], len(later) > limit


def around(store: Store, room: Hashable, rid: tuple[str, int]) -> tuple[list[Record], bool] | None:
    """The message ``rid`` with up to ``AROUND_HALF`` messages either side,
    and whether more follow; None if it is not a message of ``room``."""
    record = _message_in(store, room, rid)
    earlier = store.before(room, rid, AROUND_HALF)
    later = after(store, room, rid, AROUND_HALF)
    if record is None or earlier is None or later is None:
        return None
    return [*earlier, record, *later[0]], later[1]


def frames(found: list[tuple[Record, str, int]], frame: Any) -> list[dict[str, Any]]:
    """Results as a page gets them: ``frame(record)`` with the snippet."""
    return [{**frame(record), "text": cut, "match": at} for record, cut, at in found]
