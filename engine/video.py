"""Animations out: MP4 (H.264, yuv420p, playable everywhere Discord is) fitted to a byte limit, an animated WebP or
GIF preview, and a probe of what a video file holds. No torch: frames are PNG bytes or PIL images.

    fitted = fit_video(frames, fps=12, max_bytes=10 * 2**20)   # Fitted(data, width, height, kbps, note)
    fitted = fit_mp4(result.video, max_bytes)                   # a finished MP4, re-encoded only if too large
    preview = animated_preview(frames, fps=12, max_bytes=2**20)   # WebP bytes, or None where it cannot fit
    probe(data)                                                 # VideoInfo(frames, fps, width, height, codec, ...)

ffmpeg is the system's when one is on PATH, else the binary in the imageio-ffmpeg wheel (nothing to install).
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

from engine.errors import EngineError

log = logging.getLogger(__name__)

CRF = 18  # x264's "visually lossless" end: the first try, before any bit rate is imposed
# Bits per pixel and frame below which H.264 is mush: make the picture smaller instead (never under MIN_SIDE).
MIN_BITS_PER_PIXEL = 0.05
MIN_SIDE = 64
CONTAINER_SLACK = 0.92  # the MP4's boxes and the encoder's overshoot: aim a little under the limit
MAX_TRIES = 12
MAX_PREVIEW_FRAMES = 120  # a longer animation's preview shows every 2nd (3rd...) frame, each for longer
FrameLike = bytes | Image.Image


class VideoError(EngineError):
    """ffmpeg could not be run or failed; the message says which and why."""


@dataclass(frozen=True)
class Fitted:
    """An MP4 fitted to a byte limit: `data` (None where it could not fit), its size and bit rate (None at the
    first, quality-based try), and `note`, a sentence saying what was given up ("" when nothing was)."""

    data: bytes | None
    width: int
    height: int
    kbps: int | None
    note: str = ""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: frame count, frame rate, size, codec and pixel format of its first video stream."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: str


def ffmpeg_exe() -> str:
    """The system's ffmpeg where one is on PATH, else imageio-ffmpeg's own binary."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("Videos need ffmpeg: install imageio-ffmpeg (pip install imageio-ffmpeg) or ffmpeg.") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _rgb(frame: FrameLike) -> Image.Image:
    if isinstance(frame, bytes | bytearray | memoryview):
        with Image.open(io.BytesIO(bytes(frame))) as opened:
            return opened.convert("RGB")
    return frame.convert("RGB")


def _even(width: int, height: int) -> tuple[int, int]:
    return max(2, width // 2 * 2), max(2, height // 2 * 2)  # yuv420p halves the chroma: sides must be even


def encode_mp4(
    frames: Sequence[FrameLike], fps: float, size: tuple[int, int] | None = None, kbps: int | None = None
) -> bytes:
    """H.264 yuv420p MP4 of `frames` at `fps`, at `size` (default: the frames' own, cut to even sides) and either
    x264's quality `CRF` or a bit rate of `kbps` kilobits a second. VideoError if ffmpeg fails."""
    if not frames:
        raise VideoError("A video needs at least one frame.")
    pictures = [_rgb(f) for f in frames]
    width, height = pictures[0].size
    target = _even(*(size or (width, height)))
    if target == _even(width, height):
        scale = f"crop={target[0]}:{target[1]}:0:0"  # at most one row or column dropped: no resampling
    else:
        scale = f"scale={target[0]}:{target[1]}:flags=lanczos"
    rate = ["-crf", str(CRF)] if kbps is None else ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k"]
    fps_text = str(Fraction(fps).limit_denominator(1001))
    with tempfile.TemporaryDirectory(prefix="imagine-video-") as folder:
        out = Path(folder) / "video.mp4"
        command = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", fps_text, "-i", "-",
            "-an", "-vf", scale, "-c:v", "libx264", "-preset", "medium", *rate,
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-r", fps_text, str(out),
        ]  # fmt: skip
        raw = b"".join((p if p.size == (width, height) else p.resize((width, height))).tobytes() for p in pictures)
        try:
            done = subprocess.run(command, input=raw, capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VideoError(f"ffmpeg could not be run to make the video ({type(exc).__name__}).") from None
        if done.returncode != 0 or not out.is_file():
            detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise VideoError(f"ffmpeg could not make the video: {detail[0]}")
        return out.read_bytes()


def _megabytes(size: int) -> str:
    if size < 10_000:
        return f"{size} bytes"
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.0f} KB"


def _floor(size: tuple[int, int], fps: float) -> float:
    """The least kbit/s worth spending on pictures of `size`: below it a smaller picture looks better."""
    return MIN_BITS_PER_PIXEL * size[0] * size[1] * fps / 1000


def fit_video(frames: Sequence[FrameLike], fps: float, max_bytes: int) -> Fitted:
    """The MP4 of `frames` at most `max_bytes` long: first at full quality; then at the bit rate the limit allows
    (lowered while it overshoots); where that is under what the picture's size needs (MIN_BITS_PER_PIXEL), at half
    the size, and so on down to MIN_SIDE. Where even that does not fit, `data` is None and `note` says so."""
    pictures = [_rgb(f) for f in frames]
    width, height = _even(*pictures[0].size)
    data = encode_mp4(pictures, fps)
    if len(data) <= max_bytes:
        return Fitted(data, width, height, None)
    seconds = len(pictures) / fps
    size, kbps = (width, height), int(max_bytes * 8 * CONTAINER_SLACK / seconds / 1000)  # kbit/s that fill the limit
    for _ in range(MAX_TRIES):
        while kbps < _floor(size, fps) and min(_even(size[0] // 2, size[1] // 2)) >= MIN_SIDE:
            size = _even(size[0] // 2, size[1] // 2)
        if kbps < max(1.0, _floor(size, fps) / 2):  # already the smallest picture: it would be mush
            break
        data = encode_mp4(pictures, fps, size, kbps)
        if len(data) <= max_bytes:
            what = f"at {kbps} kbit/s" if size == (width, height) else f"at {size[0]}x{size[1]} and {kbps} kbit/s"
            return Fitted(data, size[0], size[1], kbps, f"The video was made {what} to fit in {_megabytes(max_bytes)}.")
        kbps = min(kbps - 1, int(kbps * max_bytes / len(data) * 0.95))
    return Fitted(
        None,
        size[0],
        size[1],
        None,
        f"The video of {len(pictures)} frames cannot fit in {_megabytes(max_bytes)}, even at {size[0]}x{size[1]} "
        "and the lowest bit rate worth watching: it needs fewer frames or a larger limit.",
    )


def read_mp4(data: bytes) -> tuple[list[Image.Image], float]:
    """The frames of a video (as RGB images) and its frame rate."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="imagine-video-") as folder:
        path = Path(folder) / "video.mp4"
        path.write_bytes(data)
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = reader.__next__()
        size = tuple(meta["size"])
        frames = [Image.frombytes("RGB", size, bytes(frame)) for frame in reader]
    return frames, float(meta["fps"])


def fit_mp4(data: bytes, max_bytes: int) -> Fitted:
    """A finished MP4 (an animation's `Result.video`) at most `max_bytes` long: itself if it fits, else re-encoded
    by `fit_video` from its frames."""
    info = probe(data)
    if len(data) <= max_bytes:
        return Fitted(data, info.width, info.height, None)
    frames, fps = read_mp4(data)
    return fit_video(frames, fps or info.fps, max_bytes)


def animated_preview(
    frames: Sequence[FrameLike], fps: float, max_bytes: int, format: str = "WEBP", max_side: int = 512
) -> bytes | None:
    """A looping animated WebP (or GIF) of `frames` at most `max_bytes` long: at most `max_side` a side and
    MAX_PREVIEW_FRAMES frames, then smaller and with fewer frames (each shown longer, so it lasts as long) until it
    fits; None where it cannot."""
    stride = -(-len(frames) // MAX_PREVIEW_FRAMES)
    pictures = [_rgb(f) for f in frames[::stride]]
    width, height = pictures[0].size
    scale = min(1.0, max_side / max(width, height))
    fps, stride = fps / stride, 1
    for _ in range(MAX_TRIES):
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        chosen = [p.resize(size, Image.LANCZOS) if p.size != size else p for p in pictures[::stride]]
        data = _animated(chosen, 1000 * stride / fps, format)
        if len(data) <= max_bytes:
            return data
        if min(size) > MIN_SIDE:
            scale *= max(0.5, min(0.9, math.sqrt(max_bytes / len(data))))
        elif len(chosen) > 2:
            stride *= 2
        else:
            return None
    return None


def _animated(frames: list[Image.Image], duration_ms: float, format: str) -> bytes:
    out = io.BytesIO()
    options = {"quality": 70, "method": 4} if format.upper() == "WEBP" else {"optimize": False}
    frames[0].save(
        out,
        format=format,
        save_all=True,
        append_images=frames[1:],
        duration=max(20, round(duration_ms)),
        loop=0,
        **options,
    )
    return out.getvalue()


def probe(data: bytes | str | Path) -> VideoInfo:
    """What a video holds, by ffprobe where it is on PATH, else by decoding it with imageio-ffmpeg (frames counted
    one by one)."""
    with tempfile.TemporaryDirectory(prefix="imagine-video-") as folder:
        path = Path(data) if isinstance(data, str | Path) else Path(folder) / "video.mp4"
        if not isinstance(data, str | Path):
            path.write_bytes(data)
        ffprobe = shutil.which("ffprobe")
        if ffprobe:
            return _ffprobe(ffprobe, path)
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = reader.__next__()
        count = sum(1 for _ in reader)
        width, height = meta["source_size"]
        pix_fmt = meta["pix_fmt"].split("(")[0].strip()
        return VideoInfo(count, float(meta["fps"]), width, height, meta["codec"], pix_fmt)


def _ffprobe(ffprobe: str, path: Path) -> VideoInfo:
    fields = "codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames"
    command = [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", f"stream={fields}"]
    done = subprocess.run([*command, "-of", "json", str(path)], capture_output=True, timeout=120)
    if done.returncode != 0:
        raise VideoError(f"ffprobe cannot read the video: {done.stderr.decode(errors='replace').strip()[:200]}")
    stream = json.loads(done.stdout)["streams"][0]
    return VideoInfo(
        int(stream["nb_read_frames"]),
        float(Fraction(stream["r_frame_rate"])),
        int(stream["width"]),
        int(stream["height"]),
        stream["codec_name"],
        stream["pix_fmt"],
    )


def frames_of(pictures: Iterable[Image.Image]) -> list[bytes]:
    """PIL images as PNG bytes (the form a run keeps its frames in)."""
    out = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out
