"""Pictures from outside (init images, image prompts): checked completely before anything decodes or queues them.

PIL only, no torch, so the bot checks an attachment's bytes at upload with the very rules the engine applies
again when it loads the file (Reroll, Continue, Branch and a restart read it once more):

    width, height = check_image(data, "the init image")   # InvalidSpec with a sentence, or the size

The rules, cheapest first: the file's length; the format (PNG, JPEG, WebP, GIF); for a PNG, the size of every
text chunk (compressed chunks are inflated with a bound); the dimensions read from the header, before any
pixel is decoded: each side, the aspect ratio and the total pixels; the number of frames; then a full decode.
The decoded picture is turned the way its EXIF orientation says (as phones store photos) and brought to 8-bit RGB,
16-bit greyscale scaled rather than clipped.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import zlib

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InvalidSpec

MAX_FILE_BYTES = 10 * 1024 * 1024  # Discord's default upload limit
MAX_PIXELS = 4096 * 4096  # 16.7 megapixels: 50 MB as RGB
MAX_ASPECT = 8  # longest side over shortest side
MAX_FRAMES = 100  # only the first frame is used; counting frames reads headers, not pixels
MAX_TEXT_CHUNK = 256 * 1024  # one PNG text chunk, inflated (an imagine recipe is a few KB)
MAX_TEXT_TOTAL = 1024 * 1024  # all of a PNG's text chunks, inflated
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
# What PIL may report for a file that one of FORMATS's readers opened: a phone's multi-picture JPEG reads as "MPO"
# (an APNG reads as "PNG", an animated WebP as "WEBP").
EXTENSIONS = {**FORMATS, "MPO": ".jpg"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}


def _cap(what: str) -> str:
    return what[:1].upper() + what[1:]


def _kb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


def _inflated_size(data: bytes, limit: int) -> int:
    """Length of `data` inflated, reading at most `limit + 1` bytes of output (so a bomb costs nothing)."""
    try:
        return len(zlib.decompressobj().decompress(data, limit + 1))
    except zlib.error:
        return 0  # PIL reads a broken compressed chunk as empty text


def _text_length(kind: bytes, body: bytes) -> int:
    """The size of a PNG text chunk's text once inflated (bounded just above MAX_TEXT_CHUNK)."""
    if kind == b"tEXt":
        return len(body)
    key, _, rest = body.partition(b"\0")
    if kind == b"zTXt":
        return len(key) + _inflated_size(rest[1:], MAX_TEXT_CHUNK)
    # iTXt: compression flag, method, language\0, translated keyword\0, text
    if len(rest) < 2:
        return len(body)
    flag, tail = rest[0], rest[2:]
    parts = tail.split(b"\0", 2)
    text = parts[2] if len(parts) == 3 else b""
    return len(key) + (_inflated_size(text, MAX_TEXT_CHUNK) if flag else len(text))


def check_png_text(data: bytes, what: str) -> None:
    """Refuse a PNG whose text chunks (metadata) would inflate past the limits."""
    if not data.startswith(_PNG_SIGNATURE):
        return
    offset, total = len(_PNG_SIGNATURE), 0
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind in _TEXT_CHUNKS:
            size = _text_length(kind, body)
            if size > MAX_TEXT_CHUNK:
                raise InvalidSpec(
                    f"{_cap(what)} carries more than {_kb(MAX_TEXT_CHUNK)} of text in one metadata chunk; "
                    "save it again without metadata and resend it."
                )
            total += size
            if total > MAX_TEXT_TOTAL:
                raise InvalidSpec(
                    f"{_cap(what)} carries more than {_kb(MAX_TEXT_TOTAL)} of text metadata; "
                    "save it again without metadata and resend it."
                )
        if kind == b"IEND":
            return


def check_size(width: int, height: int, what: str) -> None:
    """Refuse dimensions that are empty, too thin or too many pixels (before any pixel is decoded)."""
    if width < 1 or height < 1:
        raise InvalidSpec(f"{_cap(what)} has no pixels ({width}x{height}).")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidSpec(
            f"{_cap(what)} is {width}x{height}, too long and thin: the longer side may be at most "
            f"{MAX_ASPECT} times the shorter one. Crop it and send it again."
        )
    if width * height > MAX_PIXELS:
        raise InvalidSpec(
            f"{_cap(what)} is {width}x{height} ({width * height / 1e6:.0f} megapixels); pictures up to "
            f"{MAX_PIXELS / 1e6:.1f} megapixels (4096x4096) are accepted. Make it smaller and send it again."
        )


def open_image(data: bytes, what: str = "the image", max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """The decoded first frame of `data` as RGB, after every check above; InvalidSpec with a sentence otherwise."""
    if len(data) > max_bytes:
        raise InvalidSpec(f"{_cap(what)} is {_kb(len(data))}; the limit is {_kb(max_bytes)}.")
    check_png_text(data, what)
    unreadable = f"{_cap(what)} is not a picture that can be read (PNG, JPEG, WebP or GIF)."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size says it better
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as img:
                check_size(img.width, img.height, what)  # the header's size: nothing decoded yet
                frames = getattr(img, "n_frames", 1)
                if frames > MAX_FRAMES:
                    raise InvalidSpec(
                        f"{_cap(what)} is an animation of {frames} frames; at most {MAX_FRAMES} are accepted "
                        "(only the first one is used)."
                    )
                img.seek(0)
                img.load()
                return _rgb(_upright(img))
    except InvalidSpec:  # ours, from the checks above (an InvalidSpec is also a ValueError)
        raise
    except Image.DecompressionBombError as exc:  # PIL refuses to open it at all: far beyond our own limit
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" {int(declared.group(1)) / 1e6:,.0f} megapixels" if declared else " more pixels than that"
        raise InvalidSpec(
            f"{_cap(what)} declares{size}; pictures up to {MAX_PIXELS / 1e6:.1f} megapixels (4096x4096) are accepted."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError):
        raise InvalidSpec(unreadable) from None
    except MemoryError:
        raise InvalidSpec(f"{_cap(what)} needs more memory to decode than this server allows.") from None


def _upright(img: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation says (in place: no copy when it is upright already); as it is
    when that tag cannot be read."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        pass  # broken EXIF: the pixels themselves are fine
    return img


def _rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit greyscale (PIL modes I;16*, and I for PNGs) is scaled down by 257, 65535 to 255: converted
    directly, every value above 255 would clip to white."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        img = img.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    return img.convert("RGB")


def check_image(data: bytes, what: str = "the image") -> tuple[int, int]:
    """Check `data` completely (decoding it once) and return its (width, height); InvalidSpec with a sentence."""
    image = open_image(data, what)
    return image.width, image.height


def stored_name(data: bytes) -> str:
    """The file name an upload is kept under: a digest of its content and the extension of its format (never
    the member's own file name)."""
    with Image.open(io.BytesIO(data), formats=list(FORMATS)) as img:
        ext = EXTENSIONS.get(img.format or "", ".img")
    return hashlib.sha256(data).hexdigest()[:32] + ext
