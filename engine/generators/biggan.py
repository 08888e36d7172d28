"""BigGAN (Big Sleep): optimise BigGAN-deep's noise vector and class vector together.

The parameters of a run are one row (B, z_dim + num_classes): the noise, drawn from a normal truncated to
±2·truncation, then the class logits; the generator sees `softmax(logits)` as its class vector. The image is the
model's native size (128, 256 or 512): other sizes are refused, not tiled, since a tiled BigGAN image is several
unrelated pictures side by side.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from engine.errors import InvalidSpec
from engine.generators.base import Declaration, Flag, LazyModule, Options, check_finite
from engine.models import registry

torch = LazyModule("torch")
parts = LazyModule("engine.generators.parts")

CLASS_LOGIT = 10.0  # a named starting class gets ~96% of the softmax over 1000 classes
CLASS_NOISE = 0.5  # the other logits start as small noise, so each seed mixes classes differently
NO_ENCODER = "BigGAN has no encoder, so it cannot start from an init image; use an image prompt."
NO_UPSCALE = (
    "BigGAN makes only its model's native size, so its images cannot be upscaled; use biggan-deep-512 for a "
    "larger picture."
)
NO_ANIMATION = (
    "BigGAN has no encoder, so it cannot animate: each frame of an animation starts from the frame before, moved and "
    "re-encoded into the generator. Pick VQGAN, the dVAE, Fourier, pixels or SIREN for an animation."
)


@dataclass(frozen=True)
class BigGANOptions(Options):
    """truncation: the noise's truncation in (0, 1]; class_name: an ImageNet class to start from (optional)."""

    generator: ClassVar[str] = "biggan"
    truncation: float = 1.0
    class_name: str | None = None

    def check(self) -> None:
        """The truncation in (0, 1]; a class name, if any, is non-empty text."""
        check_finite("truncation", self.truncation)
        if not 0 < self.truncation <= 1:
            raise InvalidSpec(f"The truncation must be above 0 and at most 1, not {self.truncation:g}.")
        if self.class_name is not None and (not isinstance(self.class_name, str) or not self.class_name.strip()):
            raise InvalidSpec("The class name must be the name of an ImageNet class, e.g. 'goldfish'.")


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

    def init_params(self, batch: int, width: int, height: int, gen):
        """Truncated-normal noise (within ±2·truncation) and small random class logits: (B, z_dim + num_classes)."""
        bound = 2 * self.truncation
        noise = torch.empty(batch, self.z_dim, device=gen.device)
        torch.nn.init.trunc_normal_(noise, 0.0, self.truncation, -bound, bound, generator=gen)
        logits = torch.randn(batch, self.num_classes, generator=gen, device=gen.device) * CLASS_NOISE
        return torch.cat([noise, logits], dim=1)  # (B, z_dim + num_classes)

    def with_class(self, params, class_name: str):
        """The same parameters, starting from the ImageNet class `class_name`."""
        index = imagenet_class(class_name, self.num_classes)
        params = params.clone()
        params[:, self.z_dim + index] += CLASS_LOGIT
        return params

    def decode(self, params):
        """The model's image of the noise and softmax(logits), mapped from [-1, 1] to [0, 1]."""
        noise, logits = params[:, : self.z_dim], params[:, self.z_dim :]
        classes = torch.softmax(logits.float(), dim=1)  # (B, num_classes)
        out = self.model(noise, classes, self.truncation)  # (B, 3, S, S) in [-1, 1]
        return parts.clamp_with_grad(out.float().add(1).div(2), 0.0, 1.0)

    def encode(self, image):
        """Refuses (InvalidSpec): BigGAN has no encoder, so no init image."""
        raise InvalidSpec("BigGAN has no encoder, so it cannot start from an image; use an image prompt instead.")

    def project_(self, params) -> None:
        """Clamp the noise to ±2·truncation, in place (the class logits stay free)."""
        bound = 2 * self.truncation
        with torch.no_grad():
            params[:, : self.z_dim].clamp_(-bound, bound)

    def upscale(self, params, width: int, height: int):
        """Refuses (InvalidSpec): BigGAN makes its native size only."""
        raise InvalidSpec("BigGAN makes only its model's native size, so its images cannot be upscaled.")


def _build(options: BigGANOptions, weights, engine, width: int, height: int) -> BigGANGenerator:
    return BigGANGenerator(weights, options.truncation)


def _start(generator: BigGANGenerator, params, options: BigGANOptions):
    return generator.with_class(params, options.class_name) if options.class_name else params


def _folder(settings, model: str) -> Path:
    from engine.errors import CheckpointError

    try:
        return registry.generator_model_dir("biggan", model, settings.models_dir)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def _missing(settings, model: str) -> Path | None:
    folder = _folder(settings, model)
    for name in ("config.json", "pytorch_model.bin"):
        if not any((folder / candidate).is_file() for candidate in (name, f"{name}.pt", f"{name}.pkl")):
            return folder / name
    return None


def _load(settings, model: str, device):
    from engine.models.biggan import load_biggan

    return load_biggan(_folder(settings, model), device)


DECLARATION = Declaration(
    name="biggan",
    summary="BigGAN (Big Sleep): BigGAN-deep's noise and class vectors; its model's native size only",
    options=BigGANOptions,
    lr=0.07,  # Big Sleep's step size on the noise and class vectors
    weights="biggan",
    default_model="biggan-deep-256",
    encodes=False,
    no_encoder=NO_ENCODER,
    no_upscale=NO_UPSCALE,
    no_animation=NO_ANIMATION,
    flags=(
        Flag("--truncation", "truncation", float, "biggan: noise truncation in (0, 1] (default 1)"),
        Flag("--class", "class_name", str, "biggan: start from this ImageNet class, e.g. goldfish"),
    ),
    legacy_fields={"truncation": "truncation", "class_name": "class_name"},
    build=_build,
    key=lambda options, width, height: (options.truncation,),
    start=_start,
    installed=lambda models_dir: registry.installed_generator_models(models_dir, "biggan"),
    missing=_missing,
    load=_load,
    fixed_size=registry.biggan_native_size,
)
