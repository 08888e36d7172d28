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
    embeds: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, stops: torch.Tensor
) -> torch.Tensor:
    """Per-prompt loss (P,) for cutout embeddings (N, D) against targets (P, D).

    Negative weights push away. Once a prompt's distance is below its stop, its gradient is cut.
    """
    dists = spherical_distance(embeds, targets) * weights.sign()  # (N, P)
    dists = replace_grad(dists, torch.maximum(dists, stops))
    return weights.abs() * dists.mean(0)


def cosine_scores(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (P,) of one image (mean of its unit embeddings (N, D)) to each text (P, D)."""
    image = F.normalize(image_embeds.mean(0, keepdim=True), dim=-1)
    return (image @ F.normalize(text_embeds, dim=-1).T).squeeze(0)
