"""app/images.py: what a blob is, from its bytes; how it is served.

The JPEG and WebP files are real: made by Chromium's encoders (a 37 x 23
canvas with ICC profile, ``canvas.toDataURL``) and kept here as base64; the
simple-format WebP is the lossy one's VP8 bitstream in its own RIFF, the
lossless one libwebp's 1 x 1 (as Modernizr ships it); PNG and GIF are built
by construction (zlib and struct), as tests/make_icons.py builds the icons.
Each decodes in Chromium to the size asserted (checked when written).
"""

from __future__ import annotations

import struct
import zlib
from base64 import b64decode
from pathlib import Path

import pytest

from app.images import (
    MAX_FRAMES,
    THUMB_MAX_BYTES,
    Kind,
    ThumbnailRefused,
    check_thumbnail,
    clean_name,
    content_disposition,
    serve_headers,
    sniff,
    sniff_file,
)

JPEG_37x23 = b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/4gHYSUNDX1BST0ZJTEUAAQEAAAHIAAAAAAQwAABtbnRyUkdCIFhZWiAH4AABAA"
    "EAAAAAAABhY3NwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAA9tYAAQAAAADTLQAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAlkZXNjAAAA8AAAACRyWFlaAAABFAAAABRnWFlaAAABKA"
    "AAABRiWFlaAAABPAAAABR3dHB0AAABUAAAABRyVFJDAAABZAAAAChnVFJDAAABZAAAAChiVFJDAAABZAAAAChjcHJ0"
    "AAABjAAAADxtbHVjAAAAAAAAAAEAAAAMZW5VUwAAAAgAAAAcAHMAUgBHAEJYWVogAAAAAAAAb6IAADj1AAADkFhZWi"
    "AAAAAAAABimQAAt4UAABjaWFlaIAAAAAAAACSgAAAPhAAAts9YWVogAAAAAAAA9tYAAQAAAADTLXBhcmEAAAAAAAQA"
    "AAACZmYAAPKnAAANWQAAE9AAAApbAAAAAAAAAABtbHVjAAAAAAAAAAEAAAAMZW5VUwAAACAAAAAcAEcAbwBvAGcAbA"
    "BlACAASQBuAGMALgAgADIAMAAxADb/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsj"
    "HBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKC"
    "goKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAARCAAXACUDASIAAhEBAxEB/8QAGQABAQADAQAAAAAAAAAAAAAAAAcD"
    "BAYF/8QAKxAAAQQBAQQKAwAAAAAAAAAAAQACAwQFEQYVF1QHEiExQVWSlNHSUXGR/8QAGQEBAAIDAAAAAAAAAAAAAA"
    "AAAAIDBAUG/8QAIhEAAQMEAQUBAAAAAAAAAAAAAQAEEQIDBSEGEiIyQVFx/9oADAMBAAIRAxEAPwDytnsLZzt19ao+"
    "FkjIzITKSBoCB4A/kLoeHOX5ih63/VYejO3Wp56eS3YhgjNZzQ6V4aCeszs1P6Kpe/cR5pQ9wz5UOTcgyzB8bLOmaI"
    "B8Z3+qvGY9o4sdd47k+4U64c5fmKHrf9VyN6s+ndsVpS0yQyOjcW9xIOh0/iue/cR5pQ9wz5UV2gkZLnslJE9r432Z"
    "HNc06hwLjoQVm8SzWSyV65Q+pgAAjtjcqnLMmzaik2Dsn7K0ERF3a0SIiIiIiIiIiIi//9k="
)
WEBP_37x23 = b64decode(
    "UklGRroCAABXRUJQVlA4WAoAAAAgAAAAJAAAFgAASUNDUMgBAAAAAAHIAAAAAAQwAABtbnRyUkdCIFhZWiAH4AABAA"
    "EAAAAAAABhY3NwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAA9tYAAQAAAADTLQAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAlkZXNjAAAA8AAAACRyWFlaAAABFAAAABRnWFlaAAABKA"
    "AAABRiWFlaAAABPAAAABR3dHB0AAABUAAAABRyVFJDAAABZAAAAChnVFJDAAABZAAAAChiVFJDAAABZAAAAChjcHJ0"
    "AAABjAAAADxtbHVjAAAAAAAAAAEAAAAMZW5VUwAAAAgAAAAcAHMAUgBHAEJYWVogAAAAAAAAb6IAADj1AAADkFhZWi"
    "AAAAAAAABimQAAt4UAABjaWFlaIAAAAAAAACSgAAAPhAAAts9YWVogAAAAAAAA9tYAAQAAAADTLXBhcmEAAAAAAAQA"
    "AAACZmYAAPKnAAANWQAAE9AAAApbAAAAAAAAAABtbHVjAAAAAAAAAAEAAAAMZW5VUwAAACAAAAAcAEcAbwBvAGcAbA"
    "BlACAASQBuAGMALgAgADIAMAAxADZWUDggzAAAAPAGAJ0BKiUAFwA+bS6RRiQioaEqrACADYloAL4Jjf4Bq2PZvwr/"
    "GbkAfADBRv2AywDeWQIN+68d2JwJuhOGxAAA/tihfmQzxEDroM9LaVVOE+i9w92jPVfj6gacHlWJjQL6P98lJF/BqH"
    "jQ4/91dpftf/ae5l57mW7JYVX4WjRbZSA8f8O6vaV1W6eojfEzTfBO0kNOqoXEqJG9rk2W/Jd8fs3x9VY6fXv2/Pe5"
    "pO34kHjgXI1Og4SB/IAu6Wp99d9H9Wp0ImvNAAAAAA=="
)
WEBP_ALPHA_41x17 = b64decode(
    "UklGRqoCAABXRUJQVlA4WAoAAAAwAAAAKAAAEAAASUNDUMgBAAAAAAHIAAAAAAQwAABtbnRyUkdCIFhZWiAH4AABAA"
    "EAAAAAAABhY3NwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAA9tYAAQAAAADTLQAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAlkZXNjAAAA8AAAACRyWFlaAAABFAAAABRnWFlaAAABKA"
    "AAABRiWFlaAAABPAAAABR3dHB0AAABUAAAABRyVFJDAAABZAAAAChnVFJDAAABZAAAAChiVFJDAAABZAAAAChjcHJ0"
    "AAABjAAAADxtbHVjAAAAAAAAAAEAAAAMZW5VUwAAAAgAAAAcAHMAUgBHAEJYWVogAAAAAAAAb6IAADj1AAADkFhZWi"
    "AAAAAAAABimQAAt4UAABjaWFlaIAAAAAAAACSgAAAPhAAAts9YWVogAAAAAAAA9tYAAQAAAADTLXBhcmEAAAAAAAQA"
    "AAACZmYAAPKnAAANWQAAE9AAAApbAAAAAAAAAABtbHVjAAAAAAAAAAEAAAAMZW5VUwAAACAAAAAcAEcAbwBvAGcAbA"
    "BlACAASQBuAGMALgAgADIAMAAxADZBTFBIGQAAAAEPMIAREUJNAAKM5mr7vKtARP8nAEGZR3kAVlA4IJoAAADwBQCd"
    "ASopABEAPm0wlEckIqIhKrgKAIANiUAYP1AKYDqAf4DCK/8z7f93AfoB8I3kZgLJXR2jAAD+9Bi33PIAhV4LuNT2zh"
    "xXINxFGkLf/zmOppO9Od//zRS/gA/+bPC3FD/q7Bmp9n9//zXqB/8fqMhW1s/+wP//4u50t5R/RrcWmt/0B7OvST+w"
    "tfcDCG21/s3mZDBLAAAA"
)
WEBP_LOSSLESS_1x1 = b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def riff_chunks(data: bytes) -> dict[bytes, bytes]:
    chunks, offset = {}, 12
    while offset + 8 <= len(data):
        tag, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks[tag] = data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    return chunks


def simple_webp(vp8: bytes) -> bytes:
    """A simple-format (lossy, no VP8X) WebP around a VP8 bitstream."""
    body = b"WEBP" + b"VP8 " + struct.pack("<I", len(vp8)) + vp8 + b"\x00" * (len(vp8) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


WEBP_SIMPLE_37x23 = simple_webp(riff_chunks(WEBP_37x23)[b"VP8 "])


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """A greyscale PNG; its pixel data holds ``rows`` rows (all of them by
    default: a real image; fewer: a header that claims more than it holds)."""
    rows = height if rows is None else rows
    raw = b"".join(b"\x00" + bytes(width) for _ in range(rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def gif(width: int, height: int, frames: list[tuple[int, int, int, int]]) -> bytes:
    """A GIF89a with a 2-colour table and 1 x 1 frames of one pixel each at
    (left, top); a frame's descriptor may claim another size (w, h)."""
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\xff\xff\xff\x00\x00\x00"
    for left, top, w, h in frames:
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 0.1 s per frame
        out += b"\x2c" + struct.pack("<HHHHB", left, top, w, h, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW: one pixel of colour 1
    return out + b"\x3b"


def jpeg_with_sof(marker: int, width: int, height: int, base: bytes = JPEG_37x23) -> bytes:
    """The real JPEG with its frame header rewritten (marker and size)."""
    i = base.index(b"\xff\xc0")
    return (
        base[: i + 1]
        + bytes([marker])
        + base[i + 2 : i + 5]
        + struct.pack(">HH", height, width)
        + base[i + 9 :]
    )


def with_exif(jpeg: bytes, size: int) -> bytes:
    """An APP1 (Exif) segment of ``size`` bytes right after SOI, as a camera puts it."""
    payload = b"Exif\x00\x00" + b"\x00" * (size - 8)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


SVG_WITH_SCRIPT = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
)
HTML = b"<!doctype html><html><body><script>fetch('/logout')</script></body></html>"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
REAL = {
    "jpeg": (JPEG_37x23, Kind.JPEG, 37, 23),
    "png": (png(37, 23), Kind.PNG, 37, 23),
    "gif": (gif(5, 3, [(0, 0, 1, 1), (4, 2, 1, 1)]), Kind.GIF, 5, 3),
    "webp_vp8x": (WEBP_37x23, Kind.WEBP, 37, 23),
    "webp_vp8x_alpha": (WEBP_ALPHA_41x17, Kind.WEBP, 41, 17),
    "webp_vp8": (WEBP_SIMPLE_37x23, Kind.WEBP, 37, 23),
    "webp_vp8l": (WEBP_LOSSLESS_1x1, Kind.WEBP, 1, 1),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_images_are_shown_inline_with_their_size(name: str) -> None:
    data, kind, width, height = REAL[name]
    found = sniff(data)
    assert (found.kind, found.width, found.height, found.inline) == (kind, width, height, True)
    assert found.mime == f"image/{kind}"


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_file_is_sniffed_through_a_map_the_same(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(REAL[name][0])
    assert sniff_file(path) == sniff(REAL[name][0])


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_truncation_of_an_image_is_a_download_or_the_image(name: str) -> None:
    data, kind, width, height = REAL[name]
    for n in range(len(data)):
        found = sniff(data[:n])  # never raises, never claims another size
        assert found.kind in (Kind.FILE, kind)
        if found.inline:
            assert (found.width, found.height) == (width, height)
    assert not sniff(data[:12]).inline


def test_a_png_claiming_100000_pixels_a_side_is_a_download() -> None:
    bomb = png(100_000, 100_000, rows=1)
    assert len(bomb) < 1000
    found = sniff(bomb)
    assert found.kind is Kind.FILE and not found.inline
    assert (found.refused, found.width, found.height) == ("too_large", 100_000, 100_000)
    assert serve_headers(found, "bomb.png", len(bomb))[0] == (
        "Content-Type",
        "application/octet-stream",
    )


@pytest.mark.parametrize(
    ("width", "height", "inline"),
    [(8000, 5000, True), (8000, 5001, False), (8001, 10, False), (10, 8001, False), (0, 5, False)],
)
def test_the_bounds_on_sides_and_pixels(width: int, height: int, inline: bool) -> None:
    assert sniff(png(width, height, rows=0)).inline is inline
    assert sniff(jpeg_with_sof(0xC0, width, height)).inline is inline


def test_a_jpeg_frame_header_after_a_big_exif_block_is_found(tmp_path: Path) -> None:
    data = with_exif(JPEG_37x23, 60_000)
    assert (sniff(data).kind, sniff(data).width, sniff(data).height) == (Kind.JPEG, 37, 23)
    path = tmp_path / "camera.jpg"
    path.write_bytes(data)
    assert sniff_file(path).inline


def test_progressive_and_other_jpeg_frame_headers() -> None:
    for marker in (0xC1, 0xC2, 0xC3, 0xC9, 0xCA):
        found = sniff(jpeg_with_sof(marker, 640, 480))
        assert (found.kind, found.width, found.height) == (Kind.JPEG, 640, 480)
    assert not sniff(jpeg_with_sof(0xC2, 65_535, 65_535)).inline
    assert not sniff(jpeg_with_sof(0xC0, 640, 0)).inline  # height from a later DNL: refused


def test_a_gif_frame_outside_its_screen_or_too_many_frames_is_a_download() -> None:
    assert not sniff(gif(5, 3, [(0, 0, 60_000, 60_000)])).inline
    assert not sniff(gif(5, 3, [(4, 2, 2, 1)])).inline
    assert sniff(gif(5, 3, [(0, 0, 1, 1)] * MAX_FRAMES)).inline
    too_many = sniff(gif(5, 3, [(0, 0, 1, 1)] * (MAX_FRAMES + 1)))
    assert (too_many.kind, too_many.refused) == (Kind.FILE, "too_large")
    assert not sniff(gif(5, 3, [])).inline  # no frame at all


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (SVG_WITH_SCRIPT, "cat.svg"),
        (HTML, "cat.jpg"),
        (PDF, "notice.pdf"),
        (b"", "empty.png"),
        (b"\xff\xd8\xff" + HTML, "half.jpg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + HTML, "fake.webp"),
    ],
)
def test_everything_else_is_a_download(data: bytes, name: str, tmp_path: Path) -> None:
    found = sniff(data)
    assert found.kind is Kind.FILE and not found.inline
    (tmp_path / name).write_bytes(data)
    assert sniff_file(tmp_path / name) == found
    headers = dict(serve_headers(found, name, len(data)))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"].startswith("attachment; ")
    assert "sandbox" in headers["Content-Security-Policy"]
    assert headers["Content-Length"] == str(len(data))


def test_an_image_is_served_inline_as_its_sniffed_type() -> None:
    found = sniff(JPEG_37x23)
    headers = dict(serve_headers(found, "street.webp", 998))
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"] == (
        "inline; filename=\"street.webp.jpg\"; filename*=UTF-8''street.webp.jpg"
    )


def test_names_are_encoded_per_rfc_5987_and_cannot_break_the_header() -> None:
    value = content_disposition(clean_name('Straße "plan"; v2\r\nSet-Cookie: x=1.pdf'), False)
    assert "\r" not in value and "\n" not in value
    assert value == (
        'attachment; filename="Straße _plan__ v2Set-Cookie: x=1.pdf"'.replace("ß", "_")
        + "; filename*=UTF-8''Stra%C3%9Fe%20%22plan%22%3B%20v2Set-Cookie%3A%20x%3D1.pdf"
    )


@pytest.mark.parametrize(
    ("given", "kind", "saved"),
    [
        ("../../etc/passwd", Kind.FILE, "passwd"),
        ("C:\\Users\\ann\\photo.JPG", Kind.JPEG, "photo.JPG"),
        ("photo.jpeg", Kind.JPEG, "photo.jpeg"),
        ("x.html", Kind.PNG, "x.html.png"),
        ("", Kind.FILE, "file"),
        ("...", Kind.GIF, "file.gif"),
        ("\u202etxt.exe", Kind.FILE, "txt.exe"),  # no right-to-left override
        ("a" * 300 + ".pdf", Kind.FILE, "a" * 120),
        ("b" * 300, Kind.WEBP, "b" * 115 + ".webp"),
    ],
)
def test_clean_name(given: str, kind: Kind, saved: str) -> None:
    assert clean_name(given, kind) == saved


def test_a_thumbnail_is_a_small_image() -> None:
    assert check_thumbnail(JPEG_37x23).kind is Kind.JPEG
    assert check_thumbnail(WEBP_37x23).kind is Kind.WEBP
    with pytest.raises(ThumbnailRefused, match="bytes"):
        check_thumbnail(with_exif(JPEG_37x23, THUMB_MAX_BYTES))
    with pytest.raises(ThumbnailRefused, match="px"):
        check_thumbnail(png(321, 10))
    for not_image in (SVG_WITH_SCRIPT, HTML, png(100_000, 100_000, rows=0)):
        with pytest.raises(ThumbnailRefused, match="image"):
            check_thumbnail(not_image)
