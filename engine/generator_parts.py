"""The interface every generator implements (`Generator`) and the pieces they share: a clamp that keeps useful
gradients, the size rule of grid generators and the generic upscale. A leaf module: the generators
(`engine.generators`, `engine.biggan`, `engine.dvae`, `engine.siren`) import it, it imports none of them.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from engine.errors import InvalidSpec


class Generator(Protocol):
    """Parameters -> image in [0, 1]; optionally image -> parameters (for init images)."""

    name: str
    factor: int  # output sizes are multiples of this

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size this generator really makes for a requested size."""
        ...

    def init_params(self, batch: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """Random starting parameters drawn from `gen`, (batch, ...)."""
        ...

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] at an output size -> parameters that decode to about that image."""
        ...

    def decode(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters -> (B, 3, H, W) in [0, 1], differentiable."""
        ...

    def project_(self, params: torch.Tensor) -> None:
        """Bring parameters back into their valid range after an optimiser step (in place, no grad)."""
        ...

    def upscale(self, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Parameters of this image at twice the size (width, height are the current size)."""
        ...


def reencode_upscaled(generator: Generator, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The generic upscale: decode, resize to twice the size, encode (VQGAN and the dVAE use their encoder)."""
    with torch.no_grad():
        image = generator.decode(params)  # (B, 3, H, W)
        bigger = F.interpolate(image, size=(height * 2, width * 2), mode="bicubic", align_corners=False)
        return generator.encode(bigger.clamp(0, 1))


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose backward still passes a gradient at an out-of-range value when descent moves it back in range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.low, ctx.high = low, high
        ctx.save_for_backward(x)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        outside = x - x.clamp(ctx.low, ctx.high)  # > 0 above, < 0 below, 0 inside
        return grad * (outside * grad >= 0), None, None


def clamp_with_grad(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`x` clamped to [low, high], with a gradient that can still move a clamped value back in range."""
    return _ClampWithGrad.apply(x, low, high)


def check_size(width: int, height: int, factor: int, name: str) -> tuple[int, int]:
    """The largest multiple of `factor` in each side; InvalidSpec (a sentence naming the generator) below one cell."""
    w, h = width // factor * factor, height // factor * factor
    if w < factor or h < factor:
        raise InvalidSpec(f"The {name} generator needs at least {factor}x{factor} pixels, not {width}x{height}.")
    return w, h
