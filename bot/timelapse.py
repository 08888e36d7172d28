"""Timelapses: the previews of a run, kept as small frames on disk while it runs, made into an animation at the
end (animated WebP, or GIF; MP4 too where ffmpeg is installed) that fits the channel's upload limit.

Frames are downscaled to FRAME_SIDE on arrival (a 300-step job with a preview every 10 steps keeps 30 of
them, a few hundred KB); they are deleted once the timelapse is posted.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
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
    """An H.264 MP4 of the frames through ffmpeg, where it is installed (None otherwise, or if it fails)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None or len(paths) < 2:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        images = _load(paths, final_png, FRAME_SIDE)
        for i, image in enumerate(images):
            image.save(Path(tmp) / f"{i:06d}.png")
        width, height = images[0].size
        out = Path(tmp) / "out.mp4"
        command = [ffmpeg, "-loglevel", "error", "-y", "-framerate", str(FPS), "-i", str(Path(tmp) / "%06d.png")]
        command += ["-vf", f"scale={width // 2 * 2}:{height // 2 * 2}", "-pix_fmt", "yuv420p", "-c:v", "libx264"]
        command += ["-crf", "28", str(out)]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("ffmpeg could not make the MP4 timelapse: %s", exc)
            return None
        data = out.read_bytes()
        return Timelapse(data, "mp4", len(images), (width, height)) if len(data) <= limit else None
