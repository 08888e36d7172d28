"""What a member can ask for: the installed models (each with its generator), the sizes and styles by name, and the
job spec an /imagine's options describe. The cog translates Discord to these calls; the rules of a server are the
job service's gate's.

    catalog = Catalog(settings)
    catalog.models()                    # {"vqgan_imagenet_f16_16384": "vqgan", "biggan-deep-256": "biggan", ...}
    catalog.spec(rules, "a lighthouse", default_steps=300, size="wide", style="matte", model=None)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine import generators
from engine import quality as engine_quality
from engine.errors import InvalidSpec
from engine.keyframes import MOTIONS, Animation, frame_steps_for, preset
from engine.models import registry
from engine.prompts import split_regions
from engine.spec import JobSpec, random_seed

# The picture sizes members choose from, by name: /imagine offers them, /settings sizes restricts them.
SIZES = {
    "square": (512, 512),
    "square-small": (256, 256),
    "landscape": (512, 288),
    "portrait": (288, 512),
    "wide": (640, 320),
    "panorama": (768, 256),
    "tall": (320, 640),
}
# The style modifiers /imagine and /juxtapose offer, by name.
STYLES = {
    "artstation": "trending on artstation",
    "unreal": "unreal engine",
    "gurney": "oil painting by James Gurney",
    "matte": "matte painting",
    "watercolor": "watercolor painting",
    "pixel": "pixel art",
}
RESCAN_SECONDS = 30.0  # autocomplete asks on every keystroke: the models folder is read at most this often


class Catalog:
    """The models a member can choose here, read from the models directory at most every RESCAN_SECONDS (and again
    when a member names one the last reading did not have), and the spec of a request."""

    def __init__(self, settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._models: dict[str, str] = {}
        self._read_at: float | None = None

    def models(self, fresh: bool = False) -> dict[str, str]:
        """Each model a member can choose, by name, with its generator: every generator's installed weights (the
        configured VQGAN files included), and the weight-free generators by their own name."""
        now = self._clock()
        if fresh or self._read_at is None or now - self._read_at >= RESCAN_SECONDS:
            self._models, self._read_at = self._scan(), now
        return self._models

    def _scan(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for declaration in generators.REGISTRY.values():
            names = declaration.models(self.settings.models_dir)
            if declaration.name == "vqgan" and self.settings.vqgan_checkpoint and self.settings.vqgan_config:
                names = [*names, self.default_model()]
            found.update({name: declaration.name for name in sorted(set(names))})
        weighted = {name: g for name, g in found.items() if generators.declaration(g).weights}
        return {**weighted, **{name: g for name, g in found.items() if name not in weighted}}

    def default_model(self) -> str:
        """The VQGAN a member gets without choosing (see `Settings.default_model`)."""
        return self.settings.default_model()

    def generator_of(self, model: str) -> str:
        """The generator of an installed model; InvalidSpec (a sentence) when it is not installed here."""
        generator = self.models().get(model) or self.models(fresh=True).get(model)
        if generator is None:
            raise InvalidSpec(f"The model {model!r} is not installed here; choose one from the list.")
        return generator

    def spec(
        self,
        rules,
        prompt: str,
        *,
        default_steps: int,
        seed: int | None = None,
        steps: int | None = None,
        size: str | None = None,
        style: str | None = None,
        model: str | None = None,
        quality: str | None = None,
        **fields: Any,
    ) -> JobSpec:
        """A job spec from a request's options with this server's defaults (`rules`: its GuildSettings). A size or
        a style is a name of SIZES or STYLES; a generator with one size (BigGAN) gets its own unless the member
        asked for another, which is refused. A `quality` (engine.quality.PRESETS) sets its CLIP models, cutouts and
        losses, and its steps unless the member gave theirs."""
        model = model or self.default_model()
        generator = self.generator_of(model)
        declaration = generators.declaration(generator)
        if style:  # a style belongs to every part of a composition
            prompt = " / ".join(f"{part} | {STYLES[style]}" for part in split_regions(prompt))
        width, height = SIZES[size or (rules.sizes[0] if rules.sizes and "square" not in rules.sizes else "square")]
        native = declaration.fixed_size(self.settings.models_dir, model) if declaration.fixed_size else None
        if native is not None:
            if size is not None and (width, height) != (native, native):
                raise InvalidSpec(
                    f"{model} makes {native}x{native} images only, not {width}x{height}: leave the size empty, "
                    f"or pick another {generator} model for another size."
                )
            width = height = native
        if quality is not None:
            preset = engine_quality.expand(quality)
            self.check_clips(quality, [name for name, _ in preset["perceptors"]])
            steps = steps or preset.pop("steps")
            fields = {**preset, **fields, "steps": steps}
        else:
            fields = {"steps": steps or default_steps, "clip_model": self.settings.clip_model, **fields}
        return JobSpec(
            prompt,
            width=width,
            height=height,
            seed=random_seed() if seed is None else seed,
            generator=generator,
            model=model if declaration.weights else registry.DEFAULT_VQGAN,
            lr=None,  # the generator's own learning rate
            **fields,
        )

    def check_clips(self, quality: str, names: list[str]) -> None:
        """InvalidSpec (a sentence for the member, naming the operator's command) unless every CLIP model of a quality
        is installed here: the operator's configured checkpoint counts for the configured model."""
        configured = self.settings.clip_model if self.settings.clip_checkpoint else None
        folder = self.settings.models_dir
        missing = [n for n in names if n != configured and not registry.find_clip_checkpoint(n, folder)]
        if missing:
            raise InvalidSpec(
                f"The {quality} quality needs CLIP {', '.join(missing)}, which this bot has not installed; try "
                f"another quality, or ask its operator to run `python -m engine.models download --clip {missing[0]}`."
            )

    # -- animations -----------------------------------------------------------------------------------------
    @staticmethod
    def animation_steps(
        frames: int, steps: int | None, frame_steps: int | None, *, default: int, most: int
    ) -> tuple[int, int]:
        """The first frame's steps and each later frame's for `frames` frames: what the member asked for, else what
        fits the server's limit of `most` steps in all (the first frame at most half of it, each later frame a quarter
        of the first's or less). The gate still checks the total, so a member's own numbers may be refused."""
        if steps is None:
            steps = max(1, min(default, most // 2 if frame_steps is None else most - (frames - 1) * frame_steps))
        if frame_steps is None:
            frame_steps = max(1, min(frame_steps_for(steps), (most - steps) // max(1, frames - 1)))
        return steps, frame_steps

    @staticmethod
    def animation(motion: str, *, prompts: str | None = None, **fields: Any) -> Animation:
        """A named motion (engine.keyframes.PRESETS) with the member's frames, frame rate, steps per frame, prompts
        by frame and any keyframes they wrote (which replace the motion's own); InvalidSpec, a sentence, for bad
        keyframes."""
        changes = {k: v for k, v in fields.items() if v is not None and (k not in MOTIONS or str(v).strip())}
        if prompts:
            changes["prompts"] = prompts
        return preset(motion, **changes)
