"""MP4s and previews of animations: H.264 yuv420p with the frame count, rate and size asked for (confirmed by the
probe), fitted to a byte limit by lowering the bit rate, then the size, or refused with a sentence."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from engine import video
from engine.video import animated_preview, encode_mp4, fit_mp4, fit_video, probe


def _noise(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """PNG frames of noise: expensive to compress, so limits bite."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        picture = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    return frames


@pytest.mark.parametrize("reader", ["imageio", "ffprobe"])
def test_an_mp4_holds_the_frames_rate_and_size_asked_for(reader, monkeypatch):
    if reader == "ffprobe" and shutil.which("ffprobe") is None:
        pytest.skip("no ffprobe on this machine (the imageio reader is the other case)")
    if reader == "imageio":
        monkeypatch.setattr(video.shutil, "which", lambda name: None)  # imageio-ffmpeg's binary, its own reader
    data = encode_mp4(_noise(17, 48, 32), fps=15)
    info = probe(data)
    assert (info.frames, info.fps, info.width, info.height) == (17, 15.0, 48, 32)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert data[4:8] == b"ftyp"


def test_odd_sides_are_made_even_for_yuv420p():
    info = probe(encode_mp4(_noise(3, 33, 21), fps=24))
    assert (info.frames, info.width, info.height) == (3, 32, 20)


def test_fit_video_lowers_the_bit_rate_until_the_video_fits():
    frames = _noise(24, 96, 64)
    full = fit_video(frames, 12, 50 * 2**20)
    assert full.kbps is None and full.note == "" and full.data == encode_mp4(frames, 12)
    limit = len(full.data) // 3
    fitted = fit_video(frames, 12, limit)
    assert fitted.data is not None and len(fitted.data) <= limit
    assert fitted.kbps is not None and (fitted.width, fitted.height) == (96, 64)
    assert f"at {fitted.kbps} kbit/s to fit in" in fitted.note
    info = probe(fitted.data)
    assert (info.frames, info.fps, info.width, info.height) == (24, 12.0, 96, 64)


def test_fit_video_then_makes_the_picture_smaller(monkeypatch):
    monkeypatch.setattr(video, "MIN_BITS_PER_PIXEL", 1.0)  # 590 kbit/s at 256x192, more than the limit allows
    frames = _noise(12, 256, 192)
    limit = 12 * 300 * 1000 // 8 // 12  # 300 kbit/s for one second
    fitted = fit_video(frames, 12, limit)
    assert fitted.data is not None and len(fitted.data) <= limit and fitted.width < 256
    info = probe(fitted.data)
    assert (info.width, info.height) == (fitted.width, fitted.height) and info.frames == 12
    assert f"at {fitted.width}x{fitted.height} and" in fitted.note


def test_a_limit_too_small_is_answered_with_a_sentence():
    fitted = fit_video(_noise(48, 64, 64), 12, 1000)
    assert fitted.data is None
    assert fitted.note.startswith("The video of 48 frames cannot fit in 1000 bytes") and fitted.note.endswith(".")


def test_fit_mp4_keeps_a_video_that_fits_and_reencodes_one_that_does_not():
    data = encode_mp4(_noise(12, 64, 48), fps=6)
    assert fit_mp4(data, len(data)).data == data
    smaller = fit_mp4(data, len(data) // 2)
    assert smaller.data is not None and len(smaller.data) <= len(data) // 2
    info = probe(smaller.data)
    assert (info.frames, info.fps, info.width, info.height) == (12, 6.0, 64, 48)


def test_the_animated_preview_fits_its_limit_or_is_none():
    frames = _noise(16, 128, 96)
    whole = animated_preview(frames, 8, 50 * 2**20)
    picture = Image.open(io.BytesIO(whole))
    assert picture.format == "WEBP" and picture.n_frames == 16 and picture.size == (128, 96)
    small = animated_preview(frames, 8, len(whole) // 4)
    assert small is not None and len(small) <= len(whole) // 4
    assert Image.open(io.BytesIO(small)).size < (128, 96)
    assert animated_preview(frames, 8, 200) is None
    gif = animated_preview(frames, 8, 50 * 2**20, format="GIF")
    assert Image.open(io.BytesIO(gif)).format == "GIF"


def test_a_long_animations_preview_shows_fewer_frames_for_as_long():
    frames = _noise(250, 16, 16)
    picture = Image.open(io.BytesIO(animated_preview(frames, 25, 50 * 2**20)))
    total = 0
    for index in range(picture.n_frames):
        picture.seek(index)
        picture.load()
        total += picture.info["duration"]
    assert picture.n_frames <= video.MAX_PREVIEW_FRAMES and abs(total - 250 * 1000 / 25) <= 3 * 1000 / 25
