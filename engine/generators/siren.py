"""SIREN (deep-daze): a small sine-activated MLP over (x, y) coordinates whose weights are the latents.

Weight-free and resolution-free: the image is the network evaluated on a pixel grid over [-1, 1]², so an upscale
is the same weights on a grid twice as dense. Initialised as in Sitzmann et al. (2020): the first layer's weights
uniform in ±1/fan_in, the others in ±sqrt(6/fan_in)/w0, with w0 = 30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from engine.generators.base import Declaration, Flag, LazyModule, Options, check_range, check_whole

torch = LazyModule("torch")
parts = LazyModule("engine.generators.parts")

W0 = 30.0
FIT_STEPS = 100  # Adam steps that fit the network to an init image
FIT_LR = 1e-4
MAX_LAYERS, MAX_HIDDEN = 32, 1024


@dataclass(frozen=True)
class SirenOptions(Options):
    """layers: sine layers; hidden: the width of each."""

    generator: ClassVar[str] = "siren"
    layers: int = 8
    hidden: int = 256

    def check(self) -> None:
        """Whole numbers: 2 to 32 layers, 4 to 1024 wide."""
        check_whole("siren_layers", self.layers)
        check_whole("siren_hidden", self.hidden)
        check_range("siren_layers", self.layers, 2, MAX_LAYERS)
        check_range("siren_hidden", self.hidden, 4, MAX_HIDDEN)


class SirenGenerator:
    """Optimise the weights of a SIREN, flattened into one vector per run: (B, P).

    The weights do not say how large the image is, so a generator renders one size (the engine makes one per
    size; an upscaled run moves to the generator of twice its size)."""

    name = "siren"
    factor = 1

    def __init__(self, layers: int = 8, hidden: int = 256, width: int = 256, height: int = 256) -> None:
        self.layers, self.hidden = layers, hidden
        self.width, self.height = width, height
        dims = [2] + [hidden] * layers + [3]
        self.shapes = [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]  # (out, in) per linear layer
        self.size = sum(o * i + o for o, i in self.shapes)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Any size as asked: the network is sampled where the pixels are."""
        return width, height

    def _bounds(self) -> list[float]:
        return [1 / i if k == 0 else math.sqrt(6 / i) / W0 for k, (_, i) in enumerate(self.shapes)]

    def init_params(self, batch: int, width: int, height: int, gen):
        """Each layer's weights and biases uniform within its SIREN bound, flattened: (B, P)."""
        chunks = []
        for (o, i), bound in zip(self.shapes, self._bounds(), strict=True):
            u = torch.rand((batch, o * i + o), generator=gen, device=gen.device)
            chunks.append((u * 2 - 1) * bound)
        return torch.cat(chunks, dim=1)  # (B, P)

    def _layers(self, params):
        offset = 0
        for o, i in self.shapes:
            w = params[:, offset : offset + o * i].view(-1, o, i)
            b = params[:, offset + o * i : offset + o * i + o].view(-1, 1, o)
            offset += o * i + o
            yield w, b

    def render(self, params, width: int, height: int):
        """The network on a width x height grid: (B, 3, H, W) in [0, 1]. Always in float32: sin(30x) in bf16 would
        lose the phase (bf16 keeps about three digits)."""
        with torch.autocast(params.device.type, enabled=False):
            return self._render(params.float(), width, height)

    def _render(self, params, width: int, height: int):
        ys = torch.linspace(-1, 1, height, device=params.device, dtype=params.dtype)
        xs = torch.linspace(-1, 1, width, device=params.device, dtype=params.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).view(1, -1, 2)  # (1, H*W, 2)
        x = grid.expand(params.shape[0], -1, -1)
        layers = list(self._layers(params))
        for w, b in layers[:-1]:
            x = torch.sin(W0 * (torch.baddbmm(b, x, w.transpose(1, 2))))  # (B, H*W, hidden)
        w, b = layers[-1]
        rgb = torch.baddbmm(b, x, w.transpose(1, 2))  # (B, H*W, 3)
        image = rgb.transpose(1, 2).reshape(-1, 3, height, width)
        return parts.clamp_with_grad(image.add(1).div(2), 0.0, 1.0)

    def decode(self, params):
        """The network rendered at this generator's size."""
        return self.render(params, self.width, self.height)

    def encode(self, image):
        """Fit the network to `image` (B, 3, H, W): a short Adam run on the pixel MSE from a fixed start."""
        with torch.enable_grad():
            b, _, h, w = image.shape
            gen = torch.Generator(device=image.device).manual_seed(0)
            params = self.init_params(b, w, h, gen).requires_grad_(True)
            opt = torch.optim.Adam([params], lr=FIT_LR)
            for _ in range(FIT_STEPS):
                opt.zero_grad(set_to_none=True)
                loss = (self.render(params, w, h) - image).pow(2).mean()
                loss.backward()
                opt.step()
            return params.detach()

    def project_(self, params) -> None:
        """Nothing to do: any weights are valid."""
        pass

    def upscale(self, params, width: int, height: int):
        """The same weights: the network is sampled on a grid twice as dense."""
        return params.detach().clone()


DECLARATION = Declaration(
    name="siren",
    summary="SIREN (deep-daze): the weights of a sine network over pixel coordinates; no weights to download",
    options=SirenOptions,
    lr=1e-4,  # its weights feed sines at 30x frequency (deep-daze uses 1e-5 on 16 layers)
    flags=(
        Flag("--siren-layers", "layers", int, "siren: sine layers (default 8)"),
        Flag("--siren-hidden", "hidden", int, "siren: width of each layer (default 256)"),
    ),
    legacy_fields={"siren_layers": "layers", "siren_hidden": "hidden"},
    build=lambda options, weights, engine, width, height: SirenGenerator(options.layers, options.hidden, width, height),
    key=lambda options, width, height: (options.layers, options.hidden, width, height),
)
