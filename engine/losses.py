"""Guidance losses, composed from small functions (each one testable on constructed inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance / 2 between unit vectors: x (N, D), y (P, D) -> (N, P).

    2 * arcsin(|x - y| / 2)^2 equals theta^2 / 2 for the angle theta between them.
    """
    chord = (x[:, None, :] - y[None, :, :]).norm(dim=-1)
    return chord.div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def replace_grad(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """The value of `forward` with the gradient of `backward`."""
    return backward + (forward - backward).detach()


def prompt_losses(
    embeds: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    stops: torch.Tensor,
    cutout_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-prompt loss (P,) for cutout embeddings (N, D) against targets (P, D).

    Negative weights push away. Once a prompt's distance is below its stop, its gradient is cut. `cutout_weights`
    (N, P) weighs each cutout's distance to each prompt (compositions: by position and size).
    """
    dists = spherical_distance(embeds, targets) * weights.sign()  # (N, P)
    dists = replace_grad(dists, torch.maximum(dists, stops))
    if cutout_weights is not None:
        dists = dists * cutout_weights
    return weights.abs() * dists.mean(0)


def cosine_scores(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (P,) of one image (mean of its unit embeddings (N, D)) to each text (P, D)."""
    image = F.normalize(image_embeds.mean(0, keepdim=True), dim=-1)
    return (image @ F.normalize(text_embeds, dim=-1).T).squeeze(0)


# -- image losses (Disco Diffusion's), on images in [-1, 1] -----------------------------------------------------


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Total variation (B,) of images (B, 3, H, W): the mean squared difference of neighbouring pixels (the last
    row and column compared with themselves)."""
    padded = F.pad(images, (0, 1, 0, 1), mode="replicate")
    dx = padded[..., :-1, 1:] - padded[..., :-1, :-1]
    dy = padded[..., 1:, :-1] - padded[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).mean(dim=(1, 2, 3))


def range_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean squared overshoot (B,) of images (B, 3, H, W) past [-1, 1]; zero inside."""
    return (images - images.clamp(-1, 1)).pow(2).mean(dim=(1, 2, 3))


def saturation_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute overshoot (B,) of images (B, 3, H, W) past [-1, 1] (Disco's `sat_loss`); zero inside."""
    return (images - images.clamp(-1, 1)).abs().mean(dim=(1, 2, 3))


# -- compositions ---------------------------------------------------------------------------------------------


def region_weights(position: torch.Tensor, regions: int) -> torch.Tensor:
    """How much each cutout answers to each part of a composition: positions (N,) in [0, 1] along the split axis
    -> weights (N, K) that sum to 1 per cutout.

    Part k owns the neighbourhood of its centre (k + 0.5) / K (and part 0 everything left of its centre, the last
    part everything right of its own); between two neighbouring centres the weight moves from one to the next
    along a smoothstep, so the image blends from one concept into the next.
    """
    n = position.shape[0]
    if regions == 1:
        return position.new_ones(n, 1)
    t = (position * regions - 0.5).clamp(0, regions - 1)  # continuous part index
    low = t.floor().clamp(max=regions - 2)
    f = t - low
    s = f * f * (3 - 2 * f)
    weights = position.new_zeros(n, regions)
    index = low.long().unsqueeze(1)
    weights.scatter_(1, index, (1 - s).unsqueeze(1))
    weights.scatter_add_(1, index + 1, s.unsqueeze(1))
    return weights


def size_weights(sizes: torch.Tensor, max_size: float, power: float) -> torch.Tensor:
    """Per-cutout weights (N,) with mean 1: (size / max_size) ** power. power > 0 favours large cutouts (the
    composition), < 0 small ones (detail); 0 weighs them all alike."""
    weights = (sizes / max_size).clamp(min=1e-3) ** power
    return weights / weights.mean()


def tone_asymmetry(images: torch.Tensor, blur: int = 32) -> torch.Tensor:
    """L1 distance (B,) between a blurred greyscale copy of each image (B, 3, H, W) and its horizontal mirror
    image. Zero for a left-right symmetric image; the blur (to about `blur` cells across) leaves detail free."""
    grey = images.mean(1, keepdim=True)
    h, w = images.shape[-2:]
    scale = max(1.0, max(h, w) / blur)
    small = F.adaptive_avg_pool2d(grey, (max(1, round(h / scale)), max(1, round(w / scale))))
    return (small - small.flip(-1)).abs().mean(dim=(1, 2, 3))


def semantic_symmetry(left: torch.Tensor, right: torch.Tensor, text_left: torch.Tensor, text_right: torch.Tensor):
    """1 - mean cosine between (left cutout - its prompt) and (mirrored right cutout - its prompt), embeddings
    (N, D) and prompts (D,): low when what the left half adds to its prompt is what the right half adds to its
    own, i.e. objects in one context are translated into the other."""
    a = left - text_left
    b = right - text_right
    return 1 - F.cosine_similarity(a, b, dim=-1).mean()
