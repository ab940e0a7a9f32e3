"""Why the mesh node dropped something: one enum, counted in ``dropped``.

How this works: every datagram (or part of one) the node refuses is counted
once under one of these reasons, in ``MeshProtocol.dropped`` (a Counter that
node/wire.py, node/fragment.py, node/sync.py and the protocol share); nothing
received raises.  ``Drop`` is a ``StrEnum``: /status shows the plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class Drop(StrEnum):
    # -- node/wire.py: the datagram does not parse (``WireError.reason``) --
    TOO_SHORT = "too_short"  # shorter than header + MAC
    TOO_LONG = "too_long"  # longer than MAX_DATAGRAM, or a length field above its bound
    BAD_VERSION = "bad_version"  # not wire.VERSION
    OLD_VERSION = "old_version"  # a version we spoke once: a router not upgraded yet
    BAD_MAC = "bad_mac"  # no key gives this tag (wrong mesh, corrupted, forged)
    BAD_KIND = "bad_kind"  # unknown datagram kind, or a fragment of an unknown kind
    BAD_FLAGS = "bad_flags"  # a flag bit this version does not define
    MALFORMED = "malformed"  # a body cut short, trailing bytes, a field out of range
    BAD_UTF8 = "bad_utf8"  # a name or JSON body that is not UTF-8
    BAD_JSON = "bad_json"  # a record body that is not a JSON object we can re-send
    BAD_RECORD_KIND = "bad_record_kind"  # a record kind this version does not know
    # -- node/fragment.py: reassembly --
    DUPLICATE_FRAGMENT = "duplicate_fragment"  # a piece we hold, or of a transfer just finished
    FRAGMENT_MISMATCH = "fragment_mismatch"  # count or inner kind disagrees with the rest
    FRAGMENT_TOO_LONG = "fragment_too_long"  # pieces add up to more than MAX_BODY
    FRAGMENT_TIMEOUT = "fragment_timeout"  # a partial transfer silent for the timeout
    FRAGMENT_EVICTED = "fragment_evicted"  # a partial transfer pushed out by the bounds
    # -- node/admission.py: before any work is done --
    DUPLICATE = "duplicate"  # a record we hold (normal: relays and repairs overlap)
    REPLAYED = "replayed"  # a control datagram the replay window refuses
    RATE_LIMITED = "rate_limited"  # beyond its sender's or its origin's allowance
    # -- node/protocol.py and node/nodes.py --
    OWN_ORIGIN = "own_origin"  # a record of our own origin, outside our lost window
    DUPLICATE_BEACON = "duplicate_beacon"  # a beacon no newer than one taken (normal)
    STALE_BEACON = "stale_beacon"  # another boot's beacon while the current one lives
    NODES_FULL = "nodes_full"  # a new origin beyond MAX_NODES
    # -- node/sync.py: catch-up and repair --
    NOT_PEER = "not_peer"  # a catch-up datagram from a node we do not hear directly
    REQUEST_ASKERS_FULL = "request_askers_full"  # a REQUEST beyond MAX_SERVED_ASKERS
    REQUEST_RANGES_FULL = "request_ranges_full"  # a range beyond MAX_QUEUED_RANGES
    GONE_OWN_ORIGIN = "gone_own_origin"  # a GONE range of our own origin
    GONE_NOT_ASKED = "gone_not_asked"  # a GONE range we did not ask that peer for
    GONE_ABOVE_CLAIM = "gone_above_claim"  # beyond what that peer's beacon claims


# What ``wire.parse`` may refuse a datagram for.
WIRE_REASONS = frozenset(
    {
        Drop.TOO_SHORT,
        Drop.TOO_LONG,
        Drop.BAD_VERSION,
        Drop.OLD_VERSION,
        Drop.BAD_MAC,
        Drop.BAD_KIND,
        Drop.BAD_FLAGS,
        Drop.MALFORMED,
        Drop.BAD_UTF8,
        Drop.BAD_JSON,
        Drop.BAD_RECORD_KIND,
    }
)
