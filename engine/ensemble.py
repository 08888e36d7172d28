"""Several CLIP models guiding one image: each member sees its own cutouts at its own input size, and the losses
are summed, each times its weight (engine.quality has the presets; `engine.engine.Engine._step` the loop).

Per member and step: inner cutouts (random crops, `engine.cutouts.Cutouts`, sizes by cut_pow, a fraction of them
in greyscale) then overview cutouts (the whole image, padded to a square and resized: plain, grey, flipped, grey
and flipped, again in that order for more than four). Inner cutouts come first so that the mirror layout's pairs
keep their places. The overview cutouts draw no random numbers, so a member's inner cutouts draw exactly what a
single CLIP's cutouts drew before ensembles existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.cutouts import CutoutBatch, Cutouts

GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's Grayscale


@dataclass
class Member:
    """One CLIP model of an ensemble: the perceptor, its fast forms (`engine.speed.fast.FastModels`), its weight."""

    name: str
    perceptor: object
    fast: object
    weight: float

    @property
    def input_size(self) -> int:
        """The side of the square images this CLIP takes."""
        return self.perceptor.input_size


def greyscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> the luma in all three channels."""
    weights = images.new_tensor(GREY).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True).expand_as(images)


def overview_cutouts(images: torch.Tensor, count: int, size: int) -> CutoutBatch:
    """`count` views of each whole image (B, 3, H, W), padded to a square with black and resized to `size`: plain,
    grey, flipped, grey flipped, repeating. No randomness."""
    b, _, h, w = images.shape
    side = max(h, w)
    pad_x, pad_y = side - w, side - h
    square = F.pad(images, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2))
    view = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    variants = [view, greyscale(view), view.flip(3), greyscale(view).flip(3)]
    out = torch.stack([variants[k % 4] for k in range(count)], dim=1)  # (B, count, 3, s, s)
    centers = images.new_full((b, count, 2), 0.5)
    sizes = images.new_full((b, count), float(side))
    return CutoutBatch(out.reshape(b * count, 3, size, size), centers, sizes)


def member_cutouts(
    images: torch.Tensor,
    gens: list[torch.Generator],
    inner: Cutouts | None,
    overview: int,
    size: int,
    gray: float,
) -> CutoutBatch:
    """One member's cutouts of each image: `inner`'s (their first round(gray * n) in greyscale), then `overview`
    whole views; (B * n, 3, size, size) with each image's cutouts together, inner first."""
    b = images.shape[0]
    parts = []
    if inner is not None and inner.cutn > 0:
        batch = inner(images, gens)
        grey = round(gray * inner.cutn)
        if grey:
            cut = batch.images.view(b, inner.cutn, 3, size, size)
            cut = torch.cat([greyscale(cut[:, :grey].flatten(0, 1)).view_as(cut[:, :grey]), cut[:, grey:]], dim=1)
            batch = CutoutBatch(cut.flatten(0, 1), batch.centers, batch.sizes)
        parts.append(batch)
    if overview > 0:
        parts.append(overview_cutouts(images, overview, size))
    if len(parts) == 1:
        return parts[0]
    counts = [p.centers.shape[1] for p in parts]
    pixels = torch.cat([p.images.view(b, n, 3, size, size) for p, n in zip(parts, counts, strict=True)], dim=1)
    return CutoutBatch(
        pixels.flatten(0, 1),
        torch.cat([p.centers for p in parts], dim=1),
        torch.cat([p.sizes for p in parts], dim=1),
    )
