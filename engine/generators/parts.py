"""The torch side every generator shares: the interface they implement (`Generator`), a clamp that keeps useful
gradients and the generic upscale. The generator modules beside it use it; it imports none of them.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


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
