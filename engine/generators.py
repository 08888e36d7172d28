"""Generators: what the loop optimises (parameters) and how they become an image.

A generator implements the small interface below; the loop never asks what kind it has. VQGAN is the
community's favourite; the Fourier generator needs no weights at all besides CLIP's. The generators of the
2021 CLIP-art scene live beside it: BigGAN (`engine.biggan`, Big Sleep), DALL-E's discrete VAE (`engine.dvae`)
and SIREN (`engine.siren`, deep-daze).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.errors import InvalidSpec
from engine.generator_parts import Generator, check_size, clamp_with_grad, reencode_upscaled


def quantize_straight_through(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest codebook vectors forward, identity backward. (B, D, h, w) -> (B, D, h, w)."""
    from engine.models.vqgan import quantize_nearest

    with torch.no_grad():
        z_q = quantize_nearest(z, codebook)
    return z + (z_q - z).detach()


class VQGANGenerator:
    """Optimise a latent grid z of a taming VQGAN; straight-through quantised before decoding."""

    name = "vqgan"

    def __init__(self, vqgan, decode=None) -> None:
        self.vqgan = vqgan
        self._decode = decode or vqgan.decode  # z_q -> image in about [-1, 1] (the engine passes a faster form)
        self.factor = vqgan.factor
        codebook = vqgan.codebook
        self.z_min = codebook.min(0).values.view(1, -1, 1, 1)
        self.z_max = codebook.max(0).values.view(1, -1, 1, 1)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size rounded down to multiples of the VQGAN's factor (InvalidSpec below one token)."""
        return check_size(width, height, self.factor, self.name)

    def init_params(self, batch: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """A random codebook vector per latent token: (B, D, H/f, W/f)."""
        codebook = self.vqgan.codebook
        toks_x, toks_y = width // self.factor, height // self.factor
        idx = torch.randint(codebook.shape[0], (batch, toks_y, toks_x), generator=gen, device=gen.device)
        return codebook[idx.to(codebook.device)].permute(0, 3, 1, 2).contiguous()  # (B, D, toks_y, toks_x)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """The VQGAN's quantised latent of an image in [0, 1]."""
        return self.vqgan.encode(image * 2 - 1)

    def decode(self, params: torch.Tensor) -> torch.Tensor:
        """Quantise (straight-through), decode, and map to [0, 1] with a clamp that keeps gradients."""
        z_q = quantize_straight_through(params, self.vqgan.codebook)
        out = self._decode(z_q)  # (B, 3, H, W) in about [-1, 1]
        return clamp_with_grad(out.add(1).div(2), 0.0, 1.0)

    @torch.no_grad()
    def project_(self, params: torch.Tensor) -> None:
        """Clamp each latent channel to the codebook's range, in place."""
        params.copy_(torch.maximum(torch.minimum(params, self.z_max), self.z_min))

    def upscale(self, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Decode, resize to twice the size, encode again."""
        return reencode_upscaled(self, params, width, height)


class FourierGenerator:
    """Optimise the image's 2-D spectrum, scaled so low frequencies dominate; no weights needed.

    decode = sigmoid(irfft2(spectrum * scale) * gain). The 1/f scale makes Adam's steps act like natural-image
    statistics, which plain pixels lack; encode is the exact inverse, so init images work.
    """

    name = "fourier"
    factor = 2  # the real FFT's inverse needs an even width

    def __init__(self, decay: float = 1.0, gain: float = 0.25, std: float = 0.01) -> None:
        self.decay, self.gain, self.std = decay, gain, std

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size rounded down to even numbers (InvalidSpec below 2x2)."""
        return check_size(width, height, self.factor, self.name)

    def _scale(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.rfftfreq(width, device=device)[None, :]
        freq = (fx**2 + fy**2).sqrt()
        return 1.0 / freq.clamp(min=1.0 / max(width, height)) ** self.decay  # (H, W//2+1)

    def init_params(self, batch: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """Small random spectra with no DC term (a mid-grey start): (B, 3, H, W/2+1, 2)."""
        shape = (batch, 3, height, width // 2 + 1, 2)
        params = torch.randn(shape, generator=gen, device=gen.device) * self.std
        params[..., 0, 0, :] = 0  # start from mid grey: no DC offset
        return params

    def _spatial(self, params: torch.Tensor) -> torch.Tensor:
        b, c, h, wf, _ = params.shape
        width = (wf - 1) * 2
        spectrum = torch.view_as_complex(params.contiguous()) * self._scale(h, width, params.device)
        return torch.fft.irfft2(spectrum, s=(h, width), norm="ortho")

    def decode(self, params: torch.Tensor) -> torch.Tensor:
        """The image, sigmoid(irfft2(params * scale) * gain): (B, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self._spatial(params) * self.gain)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """decode's exact inverse: the spectrum of the image's logits over the 1/f scale (pixels kept off 0 and 1)."""
        b, c, h, w = image.shape
        logits = torch.logit(image.clamp(1e-3, 1 - 1e-3)) / self.gain
        spectrum = torch.fft.rfft2(logits, norm="ortho") / self._scale(h, w, image.device)
        return torch.view_as_real(spectrum).contiguous()

    def project_(self, params: torch.Tensor) -> None:
        """Nothing to do: every spectrum is valid."""
        pass

    @torch.no_grad()
    def upscale(self, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Resample the image's logits (before the sigmoid) to twice the size and take their spectrum."""
        logits = F.interpolate(self._spatial(params), size=(height * 2, width * 2), mode="bicubic", align_corners=False)
        spectrum = torch.fft.rfft2(logits, norm="ortho") / self._scale(height * 2, width * 2, params.device)
        return torch.view_as_real(spectrum).contiguous()


def generator_key(spec, width: int, height: int) -> tuple:
    """What tells generators apart: runs with equal keys share one generator object (SIREN's renders one size)."""
    if spec.generator == "vqgan":
        return ("vqgan",)
    if spec.generator == "biggan":
        return ("biggan", spec.truncation)
    if spec.generator == "dalle":
        return ("dalle", spec.temperature)
    if spec.generator == "siren":
        return ("siren", spec.siren_layers, spec.siren_hidden, width, height)
    return (spec.generator,)


def make_generator(spec, width: int, height: int, vqgan=None, decode=None, biggan=None, dvae=None) -> Generator:
    """The generator a spec asks for at a size, given the loaded models it needs (and optionally a faster VQGAN
    decode)."""
    name = spec.generator
    if name == "vqgan":
        if vqgan is None:
            raise InvalidSpec("The vqgan generator needs a VQGAN model; none is loaded.")
        return VQGANGenerator(vqgan, decode)
    if name == "fourier":
        return FourierGenerator()
    if name == "siren":
        from engine.siren import SirenGenerator

        return SirenGenerator(spec.siren_layers, spec.siren_hidden, width, height)
    if name == "biggan":
        from engine.biggan import BigGANGenerator

        if biggan is None:
            raise InvalidSpec("The biggan generator needs a BigGAN model; none is loaded.")
        return BigGANGenerator(biggan, spec.truncation)
    if name == "dalle":
        from engine.dvae import DVAEGenerator

        if dvae is None:
            raise InvalidSpec("The dalle generator needs the DALL-E dVAE; it is not loaded.")
        return DVAEGenerator(dvae, spec.temperature)
    raise InvalidSpec(f"Unknown generator {name!r}.")
