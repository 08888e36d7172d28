"""DALL-E's discrete VAE as a generator: optimise logits over its 8192 codes at (H/8, W/8).

decode = decoder(softmax(logits / temperature)): a straight softmax, not Gumbel-softmax, so the decode is a
pure function of the parameters (a preview is the image the run has, and a resumed run gives the same bytes).
A lower temperature sharpens the mix of codes at each position towards one code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.generator_parts import check_size, clamp_with_grad, reencode_upscaled
from engine.models.dvae import LOGIT_LAPLACE_EPS

LOGIT_MAX = 30.0  # beyond this a softmax is one-hot in float32; clamping keeps gradients alive


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

    def init_params(self, batch: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """A random code per position as one-hot logits of `init_logit`: (B, vocab, H/f, W/f)."""
        toks_x, toks_y = width // self.factor, height // self.factor
        idx = torch.randint(self.vocab, (batch, toks_y, toks_x), generator=gen, device=gen.device)
        return F.one_hot(idx, self.vocab).permute(0, 3, 1, 2).float() * self.init_logit  # (B, vocab, h, w)

    def decode(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's image of softmax(logits / temperature), mapped from [eps, 1 - eps] to [0, 1]."""
        z = torch.softmax(params.float() / self.temperature, dim=1)
        means = self.dvae.decode(z)  # (B, 3, H, W) in [eps, 1 - eps]
        return clamp_with_grad((means - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS), 0.0, 1.0)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """The encoder's logits, clamped to ±LOGIT_MAX and scaled by the temperature (decode divides by it)."""
        return self.dvae.encode(image).clamp(-LOGIT_MAX, LOGIT_MAX) * self.temperature

    @torch.no_grad()
    def project_(self, params: torch.Tensor) -> None:
        """Clamp the logits to ±LOGIT_MAX times the temperature, in place."""
        params.clamp_(-LOGIT_MAX * self.temperature, LOGIT_MAX * self.temperature)

    def upscale(self, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Decode, resize to twice the size, encode again."""
        return reencode_upscaled(self, params, width, height)
