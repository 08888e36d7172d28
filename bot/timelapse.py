"""Timelapses: the previews of a run, kept as small frames on disk while it runs, made into an animation at the
end (animated WebP, or GIF, and an MP4) that fits the channel's upload limit.

Frames are downscaled to FRAME_SIDE on arrival (a 300-step job with a preview every 10 steps keeps 30 of
them, a few hundred KB); they are deleted once the timelapse is posted.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

FRAME_SIDE = 384
FPS = 8
HOLD_LAST = 1.5  # seconds the final image stays on screen


def save_frame(directory: Path, step: int, png: bytes, side: int = FRAME_SIDE) -> Path:
    """Store one preview as a small lossless WebP frame named by its step."""
    directory.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.thumbnail((side, side))
    path = directory / f"{step:06d}.webp"
    image.save(path, format="WEBP", quality=85, method=2)
    return path


def frame_paths(directory: Path) -> list[Path]:
    """A run's saved frames in step order (none if the directory does not exist)."""
    return sorted(directory.glob("*.webp")) if directory.is_dir() else []


@dataclass(frozen=True)
class Timelapse:
    """An encoded animation: its bytes, format, frame count and size."""

    data: bytes
    ext: str  # "webp", "gif" or "mp4"
    frames: int
    size: tuple[int, int]


def _load(paths: list[Path], final_png: bytes | None, side: int) -> list[Image.Image]:
    images = [Image.open(p).convert("RGB") for p in paths]
    if final_png is not None:
        images.append(Image.open(io.BytesIO(final_png)).convert("RGB"))
    out = []
    for image in images:
        copy = image.copy()
        copy.thumbnail((side, side))
        out.append(copy)
    size = out[-1].size
    return [im if im.size == size else im.resize(size) for im in out]


def _encode(images: list[Image.Image], fmt: str, quality: int) -> bytes:
    durations = [int(1000 / FPS)] * len(images)
    durations[-1] = int(HOLD_LAST * 1000)
    buffer = io.BytesIO()
    options = dict(save_all=True, append_images=images[1:], duration=durations, loop=0)
    if fmt == "webp":
        images[0].save(buffer, format="WEBP", quality=quality, method=4, **options)
    else:
        frames = [
            im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256 if quality >= 70 else 128) for im in images
        ]
        frames[0].save(buffer, format="GIF", optimize=True, **{**options, "append_images": frames[1:]})
    return buffer.getvalue()


def make_timelapse(
    paths: list[Path], limit: int, final_png: bytes | None = None, fmt: str = "webp", side: int = FRAME_SIDE
) -> Timelapse | None:
    """An animation of the frames (and the final image, held at the end) within `limit` bytes. When a try is too
    big, the next one shrinks the side by the square root of the overshoot, and below 128 px keeps every other
    frame instead. None when there is nothing to animate or nothing small enough fits."""
    if len(paths) + (final_png is not None) < 2:
        return None
    step, quality = 1, 75
    for _ in range(10):
        images = _load(paths[::step], final_png, side)
        data = _encode(images, fmt, quality)
        if len(data) <= limit:
            return Timelapse(data, fmt, len(images), images[0].size)
        shrink = (limit / len(data) * 0.85) ** 0.5
        if side * shrink >= 128:
            side = int(side * shrink)
        elif len(paths[::step]) > 2:
            step *= 2
            side = max(128, int(side * shrink * 2**0.5))
        else:
            return None
    return None


def make_mp4(paths: list[Path], limit: int, final_png: bytes | None = None) -> Timelapse | None:
    """An H.264 MP4 of the frames at most `limit` bytes long (engine.video: the system's ffmpeg, else the one in the
    imageio-ffmpeg wheel); None for fewer than two frames, or if it cannot be made or made to fit."""
    from engine.video import VideoError, fit_video

    if len(paths) < 2:
        return None
    images = _load(paths, final_png, FRAME_SIDE)
    try:
        fitted = fit_video(images, FPS, limit)
    except VideoError as exc:
        log.warning("could not make the MP4 timelapse: %s", exc)
        return None
    if fitted.data is None:
        return None
    return Timelapse(fitted.data, "mp4", len(images), (fitted.width, fitted.height))
