"""The torch side of animations (engine.keyframes holds the rest): moving a frame by its 2D transform.

The warp is an affine resampling (`affine_grid` + bicubic `grid_sample`) with reflection padding: what a zoom-out
or a translation uncovers at the edges is the picture mirrored, which the next frame's steps then repaint (Disco
wraps around instead; a mirror keeps the edges continuous). Pixels are clamped to [0, 1] after the bicubic filter.
"""

from __future__ import annotations

import io
import logging
import math

import torch
import torch.nn.functional as F
from PIL import Image

from engine.images import from_pil
from engine.keyframes import Transform

log = logging.getLogger(__name__)

PADDING = "reflection"


def affine(transform: Transform, width: int, height: int) -> torch.Tensor:
    """The (1, 2, 3) matrix for `affine_grid` that samples, for each output pixel, where `transform` moved it from:
    the picture is scaled by `zoom` about its centre, turned `angle` degrees counterclockwise (as seen), then moved
    `translation_x` pixels right and `translation_y` down."""
    s, a = transform.zoom, math.radians(transform.angle)
    cos, sin = math.cos(a), math.sin(a)
    # In centred pixel coordinates (y down) the picture moves by out = s * R @ in + t, with R = [[cos, sin],
    # [-sin, cos]] (counterclockwise on screen); the grid needs in = R^T @ (out - t) / s, in coordinates where
    # the image spans [-1, 1] in each axis (x_n = 2 x / W, y_n = 2 y / H).
    a11, a12 = cos / s, -sin * height / width / s
    a21, a22 = sin * width / height / s, cos / s
    tx, ty = 2 * transform.translation_x / width, 2 * transform.translation_y / height
    theta = [[a11, a12, -(a11 * tx + a12 * ty)], [a21, a22, -(a21 * tx + a22 * ty)]]
    return torch.tensor([theta], dtype=torch.float64)


def warp(image: torch.Tensor, transform: Transform) -> torch.Tensor:
    """`image` (B, 3, H, W) in [0, 1] moved by `transform` (itself, untouched, for the identity)."""
    if transform.identity:
        return image
    b, _, h, w = image.shape
    theta = affine(transform, w, h).to(image.device, image.dtype).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)  # (B, H, W, 2)
    moved = F.grid_sample(image, grid, mode="bicubic", padding_mode=PADDING, align_corners=False)
    return moved.clamp(0, 1)


def from_png(data: bytes, device: torch.device | str = "cpu") -> torch.Tensor:
    """A PNG frame as (1, 3, H, W) in [0, 1]."""
    with Image.open(io.BytesIO(data)) as picture:
        return from_pil(picture, device)


# The finished animation as it leaves the engine: an MP4 at most what the workers' wire carries (the poster fits it
# to its upload limit with engine.video.fit_mp4) and a looping WebP preview.
MAX_VIDEO_BYTES = 64 * 2**20
PREVIEW_BYTES = 8 * 2**20
PREVIEW_SIDE = 384


def outputs(frames: list[bytes], current: Image.Image, fps: int) -> tuple[bytes | None, bytes | None]:
    """The MP4 and the animated WebP of `frames` (or of `current` alone, for a run stopped in its first frame);
    None for either that cannot be made (logged: the PNG of the last frame still goes out)."""
    from engine.images import encode_png
    from engine.video import VideoError, animated_preview, fit_video

    shown = frames or [encode_png(current, compress_level=1)]
    video = None
    try:
        fitted = fit_video(shown, fps, MAX_VIDEO_BYTES)
        video = fitted.data
        if fitted.note:
            log.info("animation of %d frames: %s", len(shown), fitted.note)
    except VideoError:
        log.exception("the MP4 of an animation of %d frames could not be made", len(shown))
    preview = animated_preview(shown, fps, PREVIEW_BYTES, max_side=PREVIEW_SIDE)
    return video, preview
