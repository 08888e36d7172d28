"""Cutouts: random square crops, resized to CLIP's input and augmented, for a whole batch in one sampling op.

Each cutout is a projective map from the output square to the image: crop position and size, a flip, a small
rotation, shear and perspective. All of them are applied at once by one `grid_sample` over an image pyramid
stacked as a volume, whose depth coordinate picks the blur level that fits each cutout's downscale factor
(trilinear "mipmapping"): antialiased like a resize, without a loop over cutouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CutoutBatch:
    """Cutouts of B images: pixels and where each cutout sits (for position-dependent losses)."""

    images: torch.Tensor  # (B*cutn, 3, s, s)
    centers: torch.Tensor  # (B, cutn, 2) centre in [0, 1] image coordinates (x, y)
    sizes: torch.Tensor  # (B, cutn) side in pixels


@dataclass(frozen=True)
class Augment:
    """Strength of each augmentation; zeros turn it off."""

    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    shear: float = 0.05
    perspective: float = 0.05
    noise: float = 0.1  # per-cutout Gaussian noise std, uniform in [0, noise]


NO_AUGMENT = Augment(flip=0.0, rotate=0.0, shear=0.0, perspective=0.0, noise=0.0)


def _pyramid_volume(images: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, L, H, W): level k is the image box-filtered by 2**k and upsampled back."""
    b, c, h, w = images.shape
    stack = [images]
    for k in range(1, levels):
        small = F.avg_pool2d(images, 2**k, ceil_mode=True)
        stack.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
    return torch.stack(stack, dim=2)


class Cutouts:
    """Make `cutn` cutouts of side `cut_size` per image; sizes follow `rand**cut_pow`, so cut_pow > 1 favours
    small (detail) cutouts and < 1 large (composition) ones."""

    def __init__(
        self,
        cut_size: int,
        cutn: int,
        cut_pow: float = 1.0,
        augment: Augment = Augment(),
        levels: int = 4,
        stratify: int | None = None,
        mirror: bool = False,
    ):
        """`stratify` = 0 (x) or 1 (y) spreads the cutout centres evenly along that axis (one per equal slice)
        instead of uniformly at random. `mirror` makes the second half of the cutouts the mirror images of the
        first half, whose centres lie in the left half of the image (`pairs()` says which is which)."""
        self.cut_size, self.cutn, self.cut_pow, self.augment, self.max_levels = cut_size, cutn, cut_pow, augment, levels
        self.stratify, self.mirror = stratify, mirror

    def pairs(self) -> int:
        """With `mirror`: cutout i < pairs() is on the left and cutout i + pairs() is its mirror image."""
        return self.cutn // 2 if self.mirror else 0

    def _levels(self, width: int, height: int) -> int:
        max_lod = math.log2(max(min(width, height) / self.cut_size, 1.0))
        return max(1, min(self.max_levels, math.ceil(max_lod) + 1))

    def sample(self, width: int, height: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's cutout maps: (cutn, 3, 3) homographies from output [-1, 1]^2 to image pixels, centres in
        pixels (cutn, 2) and sizes (cutn,). Draws from `gen` only, in a fixed order."""
        n, a, dev = self.cutn, self.augment, gen.device
        rand = lambda *shape: torch.rand(*shape, generator=gen, device=dev)  # noqa: E731
        max_size = min(width, height)
        min_size = min(width, height, self.cut_size)
        size = (rand(n) ** self.cut_pow * (max_size - min_size) + min_size).floor()
        ux, uy = rand(n), rand(n)
        if self.stratify is not None:  # one centre in each of n equal slices along the axis
            slices = (torch.arange(n, device=dev) + (ux if self.stratify == 0 else uy)) / n
            ux, uy = (slices, uy) if self.stratify == 0 else (ux, slices)
        cx = ux * (width - size) + size / 2
        cy = uy * (height - size) + size / 2
        pairs = self.pairs()
        if pairs:  # originals in the left half (their centres), copies mirrored below
            cx[:pairs] = ux[:pairs] * (torch.clamp(width / 2 - size[:pairs] / 2, min=0)) + size[:pairs] / 2
        flip = torch.where(rand(n) < a.flip, -1.0, 1.0)
        angle = (rand(n) * 2 - 1) * math.radians(a.rotate)
        shear = (rand(n) * 2 - 1) * a.shear
        persp = (rand(n, 2) * 2 - 1) * a.perspective

        half = size / 2
        cos, sin = angle.cos(), angle.sin()
        m = torch.zeros(n, 3, 3, device=dev)
        # pixel = R(angle) @ [[1, shear], [0, 1]] @ diag(flip * half, half) @ (u, v) + centre
        m[:, 0, 0] = cos * flip * half
        m[:, 0, 1] = (cos * shear - sin) * half
        m[:, 1, 0] = sin * flip * half
        m[:, 1, 1] = (sin * shear + cos) * half
        m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = cx, cy, 1.0
        p = torch.eye(3, device=dev).repeat(n, 1, 1)
        p[:, 2, 0], p[:, 2, 1] = persp[:, 0], persp[:, 1]
        maps, centers = m @ p, torch.stack([cx, cy], dim=1)
        if pairs:
            # x -> width - x: the copy sees exactly the mirror image of what its original sees
            flip_x = torch.eye(3, device=dev)
            flip_x[0, 0], flip_x[0, 2] = -1.0, width
            maps = maps.clone()
            maps[pairs : 2 * pairs] = flip_x @ maps[:pairs]
            centers = centers.clone()
            centers[pairs : 2 * pairs, 0] = width - centers[:pairs, 0]
            centers[pairs : 2 * pairs, 1] = centers[:pairs, 1]
            size = size.clone()
            size[pairs : 2 * pairs] = size[:pairs]
        return maps, centers, size

    def __call__(self, images: torch.Tensor, gens: list[torch.Generator]) -> CutoutBatch:
        """Cutouts of each image in `images` (B, 3, H, W), image i drawing its randomness from gens[i]."""
        b, _, height, width = images.shape
        s, n = self.cut_size, self.cutn
        dev, dtype = images.device, images.dtype
        levels = self._levels(width, height)
        ticks = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s * 2 - 1
        v, u = torch.meshgrid(ticks, ticks, indexing="ij")
        base = torch.stack([u, v, torch.ones_like(u)], dim=-1).view(1, s * s, 3)  # (1, s*s, 3)

        grids, centers, sizes, noise_std = [], [], [], []
        for gen in gens:
            m, c, size = self.sample(width, height, gen)
            m, c, size = m.to(dev), c.to(dev), size.to(dev)
            xyw = base @ m.transpose(1, 2)  # (n, s*s, 3) homogeneous pixel coordinates
            px = xyw[..., :2] / xyw[..., 2:].clamp(min=1e-3)
            # to grid_sample's [-1, 1] (scalars only: a small tensor built from a list would be a host-to-device
            # copy, which waits for the GPU)
            xy = torch.stack([px[..., 0] * (2 / width) - 1, px[..., 1] * (2 / height) - 1], dim=-1)
            if levels > 1:
                lod = torch.log2(size / s).clamp(0, levels - 1)
                depth = ((2 * lod + 1) / levels - 1).view(n, 1, 1).expand(n, s * s, 1)
                xy = torch.cat([xy, depth], dim=-1)
            grids.append(xy.reshape(1, n * s, s, xy.shape[-1]))
            centers.append(torch.stack([c[:, 0] / width, c[:, 1] / height], dim=1))
            sizes.append(size)
            noise_std.append(torch.rand(n, 1, 1, 1, generator=gen, device=gen.device).to(dev) * self.augment.noise)
        grid = torch.cat(grids).to(dtype)  # (B, n*s, s, 2|3)

        if levels > 1:
            volume = _pyramid_volume(images, levels)  # (B, 3, L, H, W)
            out = F.grid_sample(
                volume, grid.unsqueeze(1), mode="bilinear", padding_mode="reflection", align_corners=False
            )
            out = out.squeeze(2)  # (B, 3, n*s, s)
        else:
            out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = out.view(b, 3, n, s, s).transpose(1, 2).reshape(b * n, 3, s, s)
        if self.augment.noise > 0:
            noise = torch.cat(
                [torch.randn(n, 3, s, s, generator=g, device=g.device).to(dev) for g in gens]
            ) * torch.cat(noise_std)
            out = out + noise.to(dtype)
        return CutoutBatch(out, torch.stack(centers), torch.stack(sizes))
