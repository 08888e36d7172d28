"""VQGAN (taming-transformers): optimise a grid of latent vectors, quantised straight-through to the codebook and
decoded. The community's favourite, and the default."""

from __future__ import annotations

from pathlib import Path

from engine.generators.base import Declaration, LazyModule, check_size
from engine.models import registry

torch = LazyModule("torch")
parts = LazyModule("engine.generators.parts")


def quantize_straight_through(z, codebook):
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

    def init_params(self, batch: int, width: int, height: int, gen):
        """A random codebook vector per latent token: (B, D, H/f, W/f)."""
        codebook = self.vqgan.codebook
        toks_x, toks_y = width // self.factor, height // self.factor
        idx = torch.randint(codebook.shape[0], (batch, toks_y, toks_x), generator=gen, device=gen.device)
        return codebook[idx.to(codebook.device)].permute(0, 3, 1, 2).contiguous()  # (B, D, toks_y, toks_x)

    def encode(self, image):
        """The VQGAN's quantised latent of an image in [0, 1]."""
        with torch.no_grad():
            return self.vqgan.encode(image * 2 - 1)

    def decode(self, params):
        """Quantise (straight-through), decode, and map to [0, 1] with a clamp that keeps gradients."""
        z_q = quantize_straight_through(params, self.vqgan.codebook)
        out = self._decode(z_q)  # (B, 3, H, W) in about [-1, 1]
        return parts.clamp_with_grad(out.add(1).div(2), 0.0, 1.0)

    def decode_raw(self, params):
        """`decode` before the clamp: the decoder's output mapped to about [0, 1] (range losses see its overshoot)."""
        z_q = quantize_straight_through(params, self.vqgan.codebook)
        return self._decode(z_q).add(1).div(2)

    def project_(self, params) -> None:
        """Clamp each latent channel to the codebook's range, in place."""
        with torch.no_grad():
            params.copy_(torch.maximum(torch.minimum(params, self.z_max), self.z_min))

    def upscale(self, params, width: int, height: int):
        """Decode, resize to twice the size, encode again."""
        return parts.reencode_upscaled(self, params, width, height)


def _build(options, weights, engine, width: int, height: int) -> VQGANGenerator:
    return VQGANGenerator(weights, engine.fast.decode if engine is not None else None)


def _missing(settings, model: str) -> Path | None:
    return next((path for path in settings.vqgan_files(model) if not path.is_file()), None)


def _load(settings, model: str, device):
    from engine.models.vqgan import load_vqgan

    config, checkpoint = settings.vqgan_files(model)
    return load_vqgan(config, checkpoint, device)


DECLARATION = Declaration(
    name="vqgan",
    summary="VQGAN (taming-transformers): a latent grid decoded by a VQGAN; the default",
    weights="vqgan",
    default_model=registry.DEFAULT_VQGAN,
    build=_build,
    installed=registry.installed_vqgans,
    missing=_missing,
    load=_load,
)
