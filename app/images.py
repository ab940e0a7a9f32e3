"""What a blob is, decided from its bytes, and how it may be served.

Only JPEG, PNG, WebP and GIF whose bytes say so (their magic numbers) are
images shown inline; everything else (SVG, HTML, PDF, a file named ``.jpg``
that is none of the four) is a download.  A file's name and the type a phone
claims are never trusted: the name is only shown and offered for saving.

An image's dimensions are read from its header without decoding a pixel
(PNG IHDR; GIF logical screen and every frame's descriptor; JPEG SOFn
markers; WebP VP8, VP8L and VP8X), and bounded against decompression bombs:
a 300 KB PNG can claim 100,000 x 100,000 pixels and ask a phone for 40 GB.
An image over ``MAX_SIDE`` or ``MAX_PIXELS`` (or a GIF of over
``MAX_FRAMES`` frames) is not shown inline: it is a download like any file.
The parsers read a few bytes at known offsets of a ``bytes`` or an ``mmap``
(``sniff_file`` maps the file: a big blob is never read into memory).

``serve_headers`` is the one place that says how a blob goes to a browser:
Content-Type only from the sniffed kind (``application/octet-stream`` for
anything not an image), ``X-Content-Type-Options: nosniff``, a
``Content-Disposition`` that is ``inline`` for images and ``attachment`` for
the rest, with the name RFC 6266 / RFC 5987 encoded, and a sandboxing CSP so
that even a browser that rendered the bytes would run nothing.

Thumbnails are made by the page (the browser re-encodes the photo); the
router only checks that one is a small image of the four kinds with small
dimensions (``check_thumbnail``) before it goes into a record.
"""

from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# Either side over 8,000 px is more than any phone photo (a 50 Mpx camera is
# 8,160 x 6,120; the page re-encodes to about 1,600 px anyway).
MAX_SIDE = 8000
# 40 Mpx is 160 MB of RGBA once decoded: the most a phone's browser should be
# asked for by one picture in a chat.
MAX_PIXELS = 40_000_000
# An animated GIF is decoded frame by frame; 1,000 frames of a bounded size
# is a long animation already.
MAX_FRAMES = 1000
# A JPEG is walked marker by marker to its frame header; real files have a
# handful of segments before it (APPn, DQT, DHT...).
MAX_JPEG_SEGMENTS = 256
# Thumbnails ride inside a message record (the record is under node/wire.py's
# body limit, and every router stores it): a few KB, a small picture.
THUMB_MAX_BYTES = 6 * 1024
THUMB_MAX_SIDE = 320
# A file name as offered for saving: the name a phone gave, cut to this many
# characters (the UI shows it; file systems take 255 bytes).
MAX_NAME_CHARS = 120
DEFAULT_NAME = "file"

DOWNLOAD_TYPE = "application/octet-stream"


class Kind(enum.StrEnum):
    """What the bytes say a blob is.  Only the first four are shown inline."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    GIF = "gif"
    FILE = "file"  # anything else: a download


MIME = {
    Kind.JPEG: "image/jpeg",
    Kind.PNG: "image/png",
    Kind.WEBP: "image/webp",
    Kind.GIF: "image/gif",
    Kind.FILE: DOWNLOAD_TYPE,
}
EXTENSION = {Kind.JPEG: ".jpg", Kind.PNG: ".png", Kind.WEBP: ".webp", Kind.GIF: ".gif"}


@dataclass(frozen=True)
class Sniffed:
    """What a blob is: ``kind`` (an image kind only if shown inline), its
    dimensions if it is an image format at all, and why an image-looking
    file is a download (``refused``: "too_large", "truncated"...)."""

    kind: Kind
    width: int = 0
    height: int = 0
    refused: str = ""

    @property
    def inline(self) -> bool:
        return self.kind is not Kind.FILE

    @property
    def mime(self) -> str:
        return MIME[self.kind]


class ThumbnailRefused(ValueError):
    """A thumbnail that is not a small image of the four kinds; the message says why."""

    status = 400


class _Truncated(Exception):
    """The bytes end, or break the format, before the dimensions."""


class _Bomb(Exception):
    """A GIF frame outside its screen, or too many frames."""


Data = bytes | bytearray | memoryview | mmap.mmap


def _take(data: Data, offset: int, n: int) -> bytes:
    if offset < 0 or offset + n > len(data):
        raise _Truncated
    return bytes(data[offset : offset + n])


def _u8(data: Data, offset: int) -> int:
    return _take(data, offset, 1)[0]


def _be16(data: Data, offset: int) -> int:
    return int(struct.unpack(">H", _take(data, offset, 2))[0])


def _le16(data: Data, offset: int) -> int:
    return int(struct.unpack("<H", _take(data, offset, 2))[0])


def _le24(data: Data, offset: int) -> int:
    return int.from_bytes(_take(data, offset, 3), "little")


# -- the four formats -----------------------------------------------------------------------


def _png(data: Data) -> tuple[int, int]:
    # 8-byte signature, then the first chunk must be IHDR: length 13, type, w, h.
    if _take(data, 8, 8) != b"\x00\x00\x00\x0dIHDR":
        raise _Truncated
    width, height = struct.unpack(">II", _take(data, 16, 8))
    return int(width), int(height)


def _gif(data: Data) -> tuple[int, int]:
    width, height = _le16(data, 6), _le16(data, 8)
    _gif_frames(data, width, height)
    return width, height


def _skip_sub_blocks(data: Data, offset: int) -> int:
    while True:
        n = _u8(data, offset)
        offset += 1 + n
        if n == 0:
            return offset


def _gif_frames(data: Data, width: int, height: int) -> None:
    """Walk the blocks: every frame must lie within the logical screen, and
    there may be at most ``MAX_FRAMES``.  Raises ``_Bomb`` or ``_Truncated``."""
    flags = _u8(data, 10)
    offset = 13
    if flags & 0x80:  # global colour table
        offset += 3 * (2 << (flags & 7))
    frames = 0
    while True:
        block = _u8(data, offset)
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, sub-blocks
            offset = _skip_sub_blocks(data, offset + 2)
        elif block == 0x2C:  # image descriptor
            left, top = _le16(data, offset + 1), _le16(data, offset + 3)
            w, h = _le16(data, offset + 5), _le16(data, offset + 7)
            frames += 1
            if left + w > width or top + h > height or frames > MAX_FRAMES:
                raise _Bomb
            local = _u8(data, offset + 9)
            offset += 10
            if local & 0x80:
                offset += 3 * (2 << (local & 7))
            offset = _skip_sub_blocks(data, offset + 1)  # LZW minimum code size, data
        else:
            raise _Truncated
    if frames == 0:
        raise _Truncated


# SOFn markers that carry a frame's size: C0-CF but DHT (C4), JPG (C8), DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length


def _jpeg(data: Data) -> tuple[int, int]:
    offset = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if _u8(data, offset) != 0xFF:
            raise _Truncated
        while _u8(data, offset) == 0xFF:  # fill bytes
            offset += 1
        marker = _u8(data, offset)
        offset += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came
            raise _Truncated
        length = _be16(data, offset)
        if length < 2:
            raise _Truncated
        if marker in _SOF:
            height, width = _be16(data, offset + 3), _be16(data, offset + 5)
            return width, height
        offset += length
    raise _Truncated


def _webp(data: Data) -> tuple[int, int]:
    chunk = _take(data, 12, 4)
    body = 20
    if chunk == b"VP8 ":
        # frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
        if _take(data, body + 3, 3) != b"\x9d\x01\x2a":
            raise _Truncated
        return _le16(data, body + 6) & 0x3FFF, _le16(data, body + 8) & 0x3FFF
    if chunk == b"VP8L":
        if _u8(data, body) != 0x2F:
            raise _Truncated
        bits = int.from_bytes(_take(data, body + 1, 4), "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        # flags (1), reserved (3), canvas width - 1 (24 bits), height - 1 (24 bits).
        return _le24(data, body + 4) + 1, _le24(data, body + 7) + 1
    raise _Truncated


def _kind_of(head: bytes) -> Kind:
    if head.startswith(b"\xff\xd8\xff"):
        return Kind.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind.PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Kind.GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Kind.WEBP
    return Kind.FILE


_DIMENSIONS = {Kind.JPEG: _jpeg, Kind.PNG: _png, Kind.GIF: _gif, Kind.WEBP: _webp}


def sniff(data: Data) -> Sniffed:
    """What ``data`` (a whole blob, or an ``mmap`` of one) is."""
    kind = _kind_of(bytes(data[:16]))
    if kind is Kind.FILE:
        return Sniffed(Kind.FILE)
    try:
        width, height = _DIMENSIONS[kind](data)
    except _Truncated:
        return Sniffed(Kind.FILE, refused="malformed")
    except _Bomb:
        return Sniffed(Kind.FILE, refused="too_large")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        return Sniffed(Kind.FILE, width, height, refused="too_large")
    return Sniffed(kind, width, height)


def sniff_file(path: Path) -> Sniffed:
    """``sniff`` of a file, mapped rather than read: only the pages the
    parser touches are read, and they stay reclaimable page cache."""
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return Sniffed(Kind.FILE)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return sniff(m)


def check_thumbnail(data: bytes) -> Sniffed:
    """A thumbnail fit to ride in a record, or ``ThumbnailRefused``."""
    if len(data) > THUMB_MAX_BYTES:
        raise ThumbnailRefused(f"a thumbnail is at most {THUMB_MAX_BYTES} bytes")
    found = sniff(data)
    if not found.inline:
        raise ThumbnailRefused("a thumbnail is a JPEG, PNG, WebP or GIF image")
    if max(found.width, found.height) > THUMB_MAX_SIDE:
        raise ThumbnailRefused(f"a thumbnail is at most {THUMB_MAX_SIDE} px a side")
    return found


# -- serving --------------------------------------------------------------------------------


def clean_name(name: str, kind: Kind = Kind.FILE) -> str:
    """The name a phone gave, fit to offer for saving: no path, no control
    characters, at most ``MAX_NAME_CHARS``; an image gets its kind's
    extension if it has none of it (a photo named "x.html" saves as
    "x.html.jpg")."""
    # str.isprintable is False for the control, format, separator and
    # unassigned categories (space aside): no unicodedata, which on OpenWrt
    # would pull in python3-codecs for this one line.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    name = name.strip(" .") or DEFAULT_NAME
    ext = EXTENSION.get(kind, "")
    if ext and not name.lower().endswith((ext, ".jpeg") if kind is Kind.JPEG else (ext,)):
        name = name[: MAX_NAME_CHARS - len(ext)] + ext
    return name[:MAX_NAME_CHARS]


def content_disposition(name: str, inline: bool) -> str:
    """RFC 6266: an ASCII ``filename`` fallback and the UTF-8 ``filename*``
    (RFC 5987: percent-encoded, so no quote, semicolon or newline survives)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%;' else "_" for c in name)
    encoded = quote(name, safe="")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def serve_headers(found: Sniffed, name: str, size: int) -> list[tuple[str, str]]:
    """The headers of a blob's response: type from the bytes only, never
    sniffed again by the browser, a download unless an inline image."""
    return [
        ("Content-Type", found.mime),
        ("Content-Length", str(size)),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Disposition", content_disposition(clean_name(name, found.kind), found.inline)),
        # Should a browser render the bytes anyway, it runs nothing and reaches nothing.
        ("Content-Security-Policy", "default-src 'none'; sandbox"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        # Named by their hash, blobs never change: the phone may keep them
        # (private: they are behind a login).
        ("Cache-Control", "private, max-age=31536000, immutable"),
    ]
