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


# name: (the file, what the refusal says)
HOSTILE = {
    "a 65500x1 line": (line, "65500x1, too long and thin"),
    "10000x10000 in 12 KB": (lambda: png(10000, 10000), "10000x10000 (100 megapixels)"),
    "a 12000x12000 GIF": (lambda: gif(12000, 12000), "12000x12000 (144 megapixels)"),
    "a 30000x30000 header": (lambda: png(30000, 30000, pixels=False), "declares 900 megapixels"),
    "a 60000x60000 header": (lambda: png(60000, 60000, pixels=False), "declares 3,600 megapixels"),
    "a 200 MB zTXt chunk": (lambda: png(4, 4, extra=[ztxt(200 << 20)]), "of text in one metadata"),
    "101 frames": (lambda: animation(101), "an animation of 101 frames"),
    "not a picture": (lambda: b"GIF89a but not really", "not a picture that can be read"),
    "a truncated PNG": (lambda: picture()[:-30], "not a picture that can be read"),
}
