"""Pixels: optimise the image's pixels directly, as logits, optionally in square cells for pixel art (pixray's
"pixel" look). No weights besides CLIP's; also the smallest complete generator, a template for new ones.

decode = sigmoid(logits), each logit filling a `cell` x `cell` square of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.generators.base import Declaration, Flag, LazyModule, Options, check_range, check_size, check_whole

torch = LazyModule("torch")

MAX_CELL = 64
EDGE = 1e-3  # init pixels are kept this far from 0 and 1, where the logit is infinite


@dataclass(frozen=True)
class PixelOptions(Options):
    """cell: the side of each square of one colour, in pixels (1: free pixels; 8: chunky pixel art)."""

    generator: ClassVar[str] = "pixels"
    cell: int = 1

    def check(self) -> None:
        """A whole number of pixels from 1 to MAX_CELL."""
        check_whole("pixel_cell", self.cell)
        check_range("pixel_cell", self.cell, 1, MAX_CELL)


class PixelGenerator:
    """Logits (B, 3, H/cell, W/cell) -> sigmoid, each repeated over a cell x cell square."""

    name = "pixels"

    def __init__(self, cell: int = 1) -> None:
        self.factor = cell

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size rounded down to whole cells (InvalidSpec below one cell)."""
        return check_size(width, height, self.factor, self.name)

    def init_params(self, batch: int, width: int, height: int, gen):
        """Small random logits around mid grey: (B, 3, H/cell, W/cell)."""
        shape = (batch, 3, height // self.factor, width // self.factor)
        return torch.randn(shape, generator=gen, device=gen.device) * 0.1

    def decode(self, params):
        """sigmoid(logits), each cell repeated to fill its square: (B, 3, H, W) in [0, 1]."""
        image = torch.sigmoid(params)
        if self.factor == 1:
            return image
        return image.repeat_interleave(self.factor, dim=2).repeat_interleave(self.factor, dim=3)

    def encode(self, image):
        """decode's inverse up to the cells: the logits of each cell's mean colour."""
        with torch.no_grad():
            cells = torch.nn.functional.avg_pool2d(image, self.factor) if self.factor > 1 else image
            return torch.logit(cells.clamp(EDGE, 1 - EDGE))

    def project_(self, params) -> None:
        """Nothing to do: every logit is a colour."""

    def upscale(self, params, width: int, height: int):
        """Twice the cells, each twice as fine: the logits resampled smoothly to a grid twice as dense."""
        with torch.no_grad():
            grid = (params.shape[-2] * 2, params.shape[-1] * 2)
            return torch.nn.functional.interpolate(params, size=grid, mode="bilinear", align_corners=False)


DECLARATION = Declaration(
    name="pixels",
    summary="Pixels: the pixels themselves, optionally in square cells for pixel art; no weights besides CLIP's",
    options=PixelOptions,
    lr=0.05,
    flags=(Flag("--pixel-cell", "cell", int, "pixels: side of each one-colour square in pixels (default 1)"),),
    build=lambda options, weights, engine, width, height: PixelGenerator(options.cell),
    key=lambda options, width, height: (options.cell,),
)
