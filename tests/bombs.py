"""Hostile pictures for the upload tests, built byte by byte (small files that declare or hide huge things)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png(width: int, height: int, *, pixels: bool = True, extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A 1-bit grey PNG of this size; with `pixels=False` only the header is honest (an empty image stream)."""
    compressor = zlib.compressobj(9)
    idat = b""
    if pixels:
        row = b"\0" * (1 + (width + 7) // 8)
        rows_per_piece = max(1, (1 << 20) // len(row))
        for start in range(0, height, rows_per_piece):
            idat += compressor.compress(row * min(rows_per_piece, height - start))
    idat += compressor.flush()
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    chunks = b"".join(_chunk(kind, body) for kind, body in extra)
    return b"\x89PNG\r\n\x1a\n" + head + chunks + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def ztxt(size: int) -> tuple[bytes, bytes]:
    """A zTXt chunk whose text inflates to `size` bytes (compressed: about size / 1000)."""
    compressor = zlib.compressobj(9)
    piece = b"a" * (1 << 20)
    body = b"".join(compressor.compress(piece[: min(len(piece), size - i)]) for i in range(0, size, len(piece)))
    return b"zTXt", b"Comment\0\0" + body + compressor.flush()


def gif(width: int, height: int) -> bytes:
    """A GIF whose screen and one frame declare width x height, with a few bytes of image data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


def animation(frames: int, side: int = 4) -> bytes:
    images = [Image.new("L", (side, side), (i * 37) % 256) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10)
    return out.getvalue()


def line(width: int = 65500) -> bytes:
    """The 270-byte 65500x1 PNG of the issue."""
    out = io.BytesIO()
    Image.new("1", (width, 1)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def picture(size: tuple[int, int] = (80, 60), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()
