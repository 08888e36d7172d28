"""DALL-E's discrete VAE as a generator: optimise logits over its 8192 codes at (H/8, W/8).

decode = decoder(softmax(logits / temperature)): a straight softmax, not Gumbel-softmax, so the decode is a
pure function of the parameters (a preview is the image the run has, and a resumed run gives the same bytes).
A lower temperature sharpens the mix of codes at each position towards one code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine.generators.base import Declaration, Flag, LazyModule, Options, check_finite, check_range, check_size
from engine.models import registry

torch = LazyModule("torch")
parts = LazyModule("engine.generators.parts")

LOGIT_MAX = 30.0  # beyond this a softmax is one-hot in float32; clamping keeps gradients alive


@dataclass(frozen=True)
class DVAEOptions(Options):
    """temperature: the softmax temperature over the codes (lower: one code per position)."""

    generator: ClassVar[str] = "dalle"
    temperature: float = 1.0

    def check(self) -> None:
        """The temperature is a number from 0.01 to 100."""
        check_finite("temperature", self.temperature)
        check_range("temperature", self.temperature, 0.01, 100)


class DVAEGenerator:
    """Code logits (B, vocab, H/8, W/8) -> the dVAE decoder's image."""

    name = "dalle"

    def __init__(self, dvae, temperature: float = 1.0) -> None:
        self.dvae = dvae
        self.temperature = float(temperature)
        self.factor = dvae.factor
        self.vocab = dvae.vocab_size
        # a random code per position with about 3/4 of the mass: a mosaic of codes, like VQGAN's random start
        self.init_logit = math.log(self.vocab) + 1.0

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size rounded down to multiples of the dVAE's factor (InvalidSpec below one token)."""
        return check_size(width, height, self.factor, self.name)

    def init_params(self, batch: int, width: int, height: int, gen):
        """A random code per position as one-hot logits of `init_logit`: (B, vocab, H/f, W/f)."""
        toks_x, toks_y = width // self.factor, height // self.factor
        idx = torch.randint(self.vocab, (batch, toks_y, toks_x), generator=gen, device=gen.device)
        one_hot = torch.nn.functional.one_hot(idx, self.vocab)
        return one_hot.permute(0, 3, 1, 2).float() * self.init_logit  # (B, vocab, h, w)

    def decode(self, params):
        """The decoder's image of softmax(logits / temperature), mapped from [eps, 1 - eps] to [0, 1]."""
        from engine.models.dvae import LOGIT_LAPLACE_EPS

        z = torch.softmax(params.float() / self.temperature, dim=1)
        means = self.dvae.decode(z)  # (B, 3, H, W) in [eps, 1 - eps]
        return parts.clamp_with_grad((means - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS), 0.0, 1.0)

    def encode(self, image):
        """The encoder's logits, clamped to ±LOGIT_MAX and scaled by the temperature (decode divides by it)."""
        with torch.no_grad():
            return self.dvae.encode(image).clamp(-LOGIT_MAX, LOGIT_MAX) * self.temperature

    def project_(self, params) -> None:
        """Clamp the logits to ±LOGIT_MAX times the temperature, in place."""
        with torch.no_grad():
            params.clamp_(-LOGIT_MAX * self.temperature, LOGIT_MAX * self.temperature)

    def upscale(self, params, width: int, height: int):
        """Decode, resize to twice the size, encode again."""
        return parts.reencode_upscaled(self, params, width, height)


def _build(options: DVAEOptions, weights, engine, width: int, height: int) -> DVAEGenerator:
    return DVAEGenerator(weights, options.temperature)


def _missing(settings, model: str) -> Path | None:
    from engine.errors import CheckpointError

    try:
        folder = registry.generator_model_dir("dalle", model, settings.models_dir)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    for name in ("decoder", "encoder"):
        if not any((folder / candidate).is_file() for candidate in (name, f"{name}.pt", f"{name}.pkl")):
            return folder / name
    return None


def _load(settings, model: str, device):
    from engine.models.dvae import load_dvae

    return load_dvae(model, settings.models_dir, device)


DECLARATION = Declaration(
    name="dalle",
    summary="DALL-E's discrete VAE: logits over its 8192 codes at an eighth of the size",
    options=DVAEOptions,
    weights="dalle",
    default_model="dalle-dvae",
    flags=(Flag("--temperature", "temperature", float, "dalle: softmax temperature over the codes"),),
    legacy_fields={"temperature": "temperature"},
    build=_build,
    key=lambda options, width, height: (options.temperature,),
    installed=lambda models_dir: registry.installed_generator_models(models_dir, "dalle"),
    missing=_missing,
    load=_load,
)
