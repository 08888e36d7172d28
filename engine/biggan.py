"""BigGAN (Big Sleep): optimise BigGAN-deep's noise vector and class vector together.

The parameters of a run are one row (B, z_dim + num_classes): the noise, drawn from a normal truncated to
±2·truncation, then the class logits; the generator sees `softmax(logits)` as its class vector. The image is the
model's native size (128, 256 or 512): other sizes are refused, not tiled, since a tiled BigGAN image is several
unrelated pictures side by side.
"""

from __future__ import annotations

import difflib

import torch

from engine.errors import InvalidSpec
from engine.generator_parts import clamp_with_grad

CLASS_LOGIT = 10.0  # a named starting class gets ~96% of the softmax over 1000 classes
CLASS_NOISE = 0.5  # the other logits start as small noise, so each seed mixes classes differently


def imagenet_class(name: str, num_classes: int) -> int:
    """The index of an ImageNet class given by (part of) its name: 'goldfish', 'tabby cat', 'volcano'."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if num_classes != len(IMAGENET_CLASSNAMES):
        raise InvalidSpec(f"This BigGAN has {num_classes} classes, not ImageNet's; it cannot start from a name.")
    wanted = name.strip().lower()
    names = [n.lower() for n in IMAGENET_CLASSNAMES]
    if wanted in names:
        return names.index(wanted)
    partial = [i for i, n in enumerate(names) if wanted in n]
    if len(partial) == 1:
        return partial[0]
    close = difflib.get_close_matches(wanted, names, n=3) or [names[i] for i in partial[:3]]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise InvalidSpec(f"{name!r} is not one ImageNet class.{hint}")


class BigGANGenerator:
    """Noise + class logits -> BigGAN-deep's image at its native size."""

    name = "biggan"

    def __init__(self, model, truncation: float = 1.0) -> None:
        self.model = model
        self.truncation = float(truncation)
        config = model.config
        self.z_dim, self.num_classes, self.native = config.z_dim, config.num_classes, config.output_dim
        self.factor = self.native

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The model's native square size; any other size is refused (InvalidSpec)."""
        if (width, height) != (self.native, self.native):
            raise InvalidSpec(
                f"This BigGAN makes {self.native}x{self.native} images only, not {width}x{height}: ask for "
                f"{self.native}x{self.native}, or pick biggan-deep-128, -256 or -512 for another size."
            )
        return self.native, self.native

    def init_params(self, batch: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
        """Truncated-normal noise (within ±2·truncation) and small random class logits: (B, z_dim + num_classes)."""
        bound = 2 * self.truncation
        noise = torch.empty(batch, self.z_dim, device=gen.device)
        torch.nn.init.trunc_normal_(noise, 0.0, self.truncation, -bound, bound, generator=gen)
        logits = torch.randn(batch, self.num_classes, generator=gen, device=gen.device) * CLASS_NOISE
        return torch.cat([noise, logits], dim=1)  # (B, z_dim + num_classes)

    def with_class(self, params: torch.Tensor, class_name: str) -> torch.Tensor:
        """The same parameters, starting from the ImageNet class `class_name`."""
        index = imagenet_class(class_name, self.num_classes)
        params = params.clone()
        params[:, self.z_dim + index] += CLASS_LOGIT
        return params

    def decode(self, params: torch.Tensor) -> torch.Tensor:
        """The model's image of the noise and softmax(logits), mapped from [-1, 1] to [0, 1]."""
        noise, logits = params[:, : self.z_dim], params[:, self.z_dim :]
        classes = torch.softmax(logits.float(), dim=1)  # (B, num_classes)
        out = self.model(noise, classes, self.truncation)  # (B, 3, S, S) in [-1, 1]
        return clamp_with_grad(out.float().add(1).div(2), 0.0, 1.0)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Refuses (InvalidSpec): BigGAN has no encoder, so no init image."""
        raise InvalidSpec("BigGAN has no encoder, so it cannot start from an image; use an image prompt instead.")

    @torch.no_grad()
    def project_(self, params: torch.Tensor) -> None:
        """Clamp the noise to ±2·truncation, in place (the class logits stay free)."""
        bound = 2 * self.truncation
        params[:, : self.z_dim].clamp_(-bound, bound)

    def upscale(self, params: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Refuses (InvalidSpec): BigGAN makes its native size only."""
        raise InvalidSpec("BigGAN makes only its model's native size, so its images cannot be upscaled.")
