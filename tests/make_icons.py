"""Draws the app's PNG icons (static/icon-192.png, static/icon-512.png) with
nothing but zlib and struct: the same picture as static/icon.svg, a white
speech bubble on a green rounded square, 4x4 supersampled.

    .venv/bin/python -m tests.make_icons
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"
SIZES = (192, 512)
GREEN = (0x0B, 0x6E, 0x4F)
WHITE = (0xFF, 0xFF, 0xFF)
SAMPLES = 4  # per axis: 16 samples a pixel smooth the edges


def in_rounded_rect(
    x: float, y: float, x0: float, y0: float, x1: float, y1: float, r: float
) -> bool:
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def colour_at(x: float, y: float) -> tuple[int, int, int] | None:
    """The SVG's shapes, in its 64x64 coordinates; None is transparent."""
    if not in_rounded_rect(x, y, 0, 0, 64, 64, 14):
        return None
    bubble = in_rounded_rect(x, y, 10, 18, 54, 44, 4)
    tail = 20 <= x <= 30 and 44 <= y <= 52 and (x - 20) <= 10 * (52 - y) / 8
    return WHITE if bubble or tail else GREEN


def pixels(size: int) -> bytes:
    rows = []
    step = 64 / size / SAMPLES
    for py in range(size):
        row = bytearray([0])  # filter: none
        for px in range(size):
            r = g = b = a = 0
            for sy in range(SAMPLES):
                for sx in range(SAMPLES):
                    c = colour_at(
                        (px * SAMPLES + sx + 0.5) * step, (py * SAMPLES + sy + 0.5) * step
                    )
                    if c is not None:
                        r, g, b, a = r + c[0], g + c[1], b + c[2], a + 1
            n = SAMPLES * SAMPLES
            row += bytes((r // a, g // a, b // a, 255 * a // n) if a else (0, 0, 0, 0))
        rows.append(bytes(row))
    return b"".join(rows)


def chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack("!I", len(data))
        + kind
        + data
        + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png(size: int) -> bytes:
    header = struct.pack("!IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels(size), 9))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    for size in SIZES:
        path = STATIC / f"icon-{size}.png"
        path.write_bytes(png(size))
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
