"""Timelapses: frames kept small, the animation fits the byte limit and holds the right frames."""

import io

import numpy as np
import pytest
from PIL import Image

from bot.timelapse import FRAME_SIDE, frame_paths, make_timelapse, save_frame


def _png(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """30 previews of a 512x512 run (noisy pictures: a worst case for compression)."""
    directory = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    target = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    for k in range(30):
        picture = (target * (k / 30) + rng.integers(0, 40, (512, 512, 3))).clip(0, 255).astype(np.uint8)
        save_frame(directory, (k + 1) * 10, _png(picture))
    return frame_paths(directory), _png(target)


def test_frames_are_small_and_in_step_order(frames):
    paths, _ = frames
    assert [p.stem for p in paths] == [f"{(k + 1) * 10:06d}" for k in range(30)]
    assert all(max(Image.open(p).size) == FRAME_SIDE for p in paths)


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_timelapse_has_every_frame_when_it_fits(frames, fmt):
    paths, final = frames
    made = make_timelapse(paths, 25 * 2**20, final, fmt=fmt)
    image = Image.open(io.BytesIO(made.data))
    assert made.ext == fmt and image.format == fmt.upper()
    assert made.frames == 31 and image.n_frames == 31  # 30 previews and the final image
    assert image.size == (FRAME_SIDE, FRAME_SIDE)


@pytest.mark.parametrize("limit", [400_000, 60_000])
def test_timelapse_fits_the_upload_limit(frames, limit):
    paths, final = frames
    made = make_timelapse(paths, limit, final)
    assert made is not None and len(made.data) <= limit
    image = Image.open(io.BytesIO(made.data))
    assert image.n_frames == made.frames >= 3
    assert made.size[0] < FRAME_SIDE


def test_nothing_to_animate():
    assert make_timelapse([], 10**6, None) is None
