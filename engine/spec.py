"""Job specs, progress reports and results: frozen, self-validating, JSON-serialisable.

Standard library only, so the bot (and a queue broker) can build and check specs without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from engine import quality
from engine.errors import InvalidSpec
from engine.generators import NAMES, declaration
from engine.generators.base import Options, check_range
from engine.keyframes import Animation
from engine.moderation import check_level
from engine.prompts import MAX_PROMPTS, MAX_WEIGHT, Prompt, check_text, parse_prompt, parse_regions

ENGINE_VERSION = "0.2.0"

MIN_SIDE, MAX_SIDE = 16, 4096
MAX_STEPS = 10_000
MAX_CUTN = 256
MAX_SEED = 2**32 - 1
# The VQGAN default also stands for "no model given": a generator with weights of its own gets its declared default
# then, so specs written before the other generators existed stay valid.
DEFAULT_VQGAN_MODEL = "vqgan_imagenet_f16_16384"
MAX_UPSCALES = 3  # each doubles both sides
MAX_LOSS_SCALE = 1000.0
# The quality fields at their defaults (engine.quality): left out of the JSON, which then means what it meant before.
QUALITY_DEFAULTS = {
    "quality": None,
    "perceptors": [],
    "cut_overview": None,
    "cut_inner": None,
    "cut_gray": 0.0,
    "tv_scale": 0.0,
    "range_scale": 0.0,
    "sat_scale": 0.0,
}
MAX_TOTAL_STEPS = MAX_STEPS * (1 + MAX_UPSCALES)  # every stage or frame of a job together

# Compositions. "single": one prompt everywhere. "panorama": `A / B / ...` from left to right, "vertical": from
# top to bottom; each cutout's loss against each part is weighted by where its centre lies. "mirror": cutouts
# come in mirrored pairs; `A / B` puts A on the left and B on the right (a juxtaposition).
LAYOUTS = ("single", "panorama", "vertical", "mirror")
DEFAULT_LR = 0.1  # each generator declares its own (engine.generators); this is VQGAN's and Fourier's
COMPOSITION_LR = 0.05  # the extra constraints make the optimisation harder: smaller steps
MIRROR_TONE_WEIGHT = 0.5
MIRROR_SEMANTIC_WEIGHT = 0.1
# A model is named, never pointed at: the name is looked up inside the models directory, so a spec (a shared
# recipe) cannot make anyone load a file of its choosing. Letters, digits, "_", "-", "." and no "..".
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def random_seed() -> int:
    """A fresh seed in the range that every backend accepts."""
    return random.SystemRandom().randint(0, MAX_SEED)


def check_model_name(field_name: str, value: object) -> None:
    """Raise InvalidSpec unless `value` is a plain model name (no path: the models directory decides where)."""
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value) or ".." in value:
        raise InvalidSpec(
            f"{field_name} must be the name of an installed model (letters, digits, '_', '-', '.'), "
            f"not a path: {value!r}."
        )


# The generators' settings as flat fields, as specs kept them before each generator declared its options, with
# their defaults then: an old recipe holds them all, whatever its generator.
LEGACY_FIELDS = {"truncation", "class_name", "temperature", "siren_layers", "siren_hidden"}
_LEGACY_DEFAULTS = {"truncation": 1.0, "class_name": None, "temperature": 1.0, "siren_layers": 8, "siren_hidden": 256}


def _options_from_flat_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A spec dict with an older recipe's flat generator fields moved into `options` (those of its generator; the
    others dropped where they hold their old default, refused otherwise, as they were then)."""
    data = dict(data)
    flat = {name: data.pop(name) for name in LEGACY_FIELDS & set(data)}
    if not flat:
        return data
    found = declaration(data.get("generator", "vqgan"))
    options = dict(data.get("options") or {}) if isinstance(data.get("options") or {}, dict) else data["options"]
    for name, value in flat.items():
        if name in found.legacy_fields and isinstance(options, dict):
            options.setdefault(found.legacy_fields[name], value)
        elif value != _LEGACY_DEFAULTS[name]:
            owner = next(d.name for d in map(declaration, NAMES) if name in d.legacy_fields)
            raise InvalidSpec(f"{name} only means something to the {owner} generator.")
    data["options"] = options
    return data


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides a generation: the same spec gives the same image on the same device and models."""

    prompt: str
    width: int = 256
    height: int = 256
    steps: int = 300
    seed: int = 0
    lr: float | None = None  # None: DEFAULT_LR, or COMPOSITION_LR for the composition layouts
    cutn: int = 32
    cut_pow: float = 1.0
    generator: str = "vqgan"
    model: str = DEFAULT_VQGAN_MODEL
    clip_model: str = "ViT-B-32"
    init_image: str | None = None
    init_weight: float = 0.0
    image_prompts: tuple[str, ...] = ()
    progress_every: int = 10
    # Compositions (see LAYOUTS). None means the layout's default; the spec stores the resolved numbers, so the
    # recipe records every weight.
    layout: str = "auto"  # auto: panorama when the prompt has ` / ` parts, else single
    tone_weight: float | None = None  # L1 between the blurred grey image and its mirror image
    semantic_weight: float | None = None  # mirrored cutouts differ from their prompts in the same way
    size_weight: float = 0.0  # > 0 favours large cutouts (composition), < 0 small ones (detail)
    # Steering: (step, prompt) pairs; from `step` on (the step that step_index `step` computes) the run aims at
    # `prompt` instead, keeping its latent and optimiser state ("story mode").
    prompt_schedule: tuple[tuple[int, str], ...] = ()
    # The generator's own settings: its declared Options (engine.generators), given as that dataclass or a dict of
    # its fields; None is its defaults. Older recipes kept them as flat fields, which `from_dict` still reads.
    options: Options | dict | None = None
    # Upscaling: after `steps`, each entry doubles the image (re-encoded into the generator's latent) and runs that
    # many more steps with the same prompts. The recipe of an upscaled image replays every stage.
    upscales: tuple[int, ...] = ()
    # Moderation of the images (engine.moderation.LEVELS): "off" checks nothing; the other levels have CLIP score
    # the finished image (and, at "strict", the previews) for unsafe content and report it in the Result.
    moderation: str = "off"
    # Quality (engine.quality): several CLIP models guiding at once, cutout schedules and image losses. A preset
    # (`with_quality`) fills them in and the spec keeps its values, so a recipe replays even if the preset changes;
    # `quality` is the preset's name, for display only.
    quality: str | None = None
    # (CLIP name, weight) pairs whose losses are summed, each with cutouts at its own input size; empty: clip_model
    # alone, weight 1. The first is the primary: clip_model becomes its name, and it gives the scores.
    perceptors: tuple[tuple[str, float], ...] = ()
    # Cutouts per step as schedules ("[12]*100+[4]*300" or a count): overview cutouts (the whole image) and inner
    # ones (random crops, sizes by cut_pow). None for both: `cutn` inner cutouts every step, as before; with a
    # schedule, cutn becomes the most cutouts of any step (what memory is planned for).
    cut_overview: str | None = None
    cut_inner: str | None = None
    cut_gray: float = 0.0  # the fraction of the inner cutouts CLIP sees in greyscale
    tv_scale: float = 0.0  # total variation: smooths the image
    range_scale: float = 0.0  # squared overshoot of the decoder's output past [0, 1]
    sat_scale: float = 0.0  # absolute overshoot past [0, 1] (Disco's saturation loss)
    # Animation (engine.keyframes): frame 0 is this run; each later frame starts from the one before, moved by the
    # keyframed zoom, angle and translation and re-encoded, and runs `frame_steps` more steps, with the prompts keyed
    # by frame. Given as that dataclass or a dict of its fields; None is a still image.
    animation: Animation | dict | None = None

    def __post_init__(self) -> None:
        self._check_generator_name()  # first: the layout's defaults depend on it
        self._resolve_layout()
        self._check_quality()  # before the checks of clip_model and cutn, which it may set
        for name in ("width", "height", "steps", "seed", "cutn", "progress_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidSpec(f"{name} must be a whole number, not {value!r}.")
        for name in ("lr", "cut_pow", "init_weight", "tone_weight", "semantic_weight", "size_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidSpec(f"{name} must be a finite number, not {value!r}.")
        check_range("tone_weight", self.tone_weight, 0, 100)
        check_range("semantic_weight", self.semantic_weight, 0, 100)
        check_range("size_weight", self.size_weight, -4, 4)
        check_range("width", self.width, MIN_SIDE, MAX_SIDE)
        check_range("height", self.height, MIN_SIDE, MAX_SIDE)
        check_range("steps", self.steps, 1, MAX_STEPS)
        check_range("seed", self.seed, 0, MAX_SEED)
        check_range("cutn", self.cutn, 1, MAX_CUTN)
        check_range("progress_every", self.progress_every, 1, MAX_STEPS)
        if not (0 < self.lr <= 10):
            raise InvalidSpec(f"The learning rate must be above 0 and at most 10, not {self.lr:g}.")
        if self.cut_pow <= 0:
            raise InvalidSpec(f"cut_pow must be above 0, not {self.cut_pow:g}.")
        if self.init_weight < 0:
            raise InvalidSpec(f"init_weight cannot be negative ({self.init_weight:g}).")
        check_range("init_weight", self.init_weight, 0, MAX_WEIGHT)
        for name in ("model", "clip_model"):
            value = getattr(self, name)
            check_model_name(name, value)
            if len(value) > 200:
                raise InvalidSpec(f"{name} must be a model name, not {value!r}.")
            check_text(value, f"The {name} name")
        if self.init_image is not None:
            check_text(self.init_image, "The init image's name")
        if not isinstance(self.image_prompts, tuple | list):
            raise InvalidSpec("image_prompts must be a list of image names.")
        if len(self.image_prompts) > MAX_PROMPTS:
            raise InvalidSpec(f"At most {MAX_PROMPTS} image prompts are allowed, not {len(self.image_prompts)}.")
        for item in self.image_prompts:
            if not isinstance(item, str):
                raise InvalidSpec("Each image prompt is the name of an image.")
            parse_prompt(item)
        if not isinstance(self.image_prompts, tuple):
            object.__setattr__(self, "image_prompts", tuple(self.image_prompts))
        self._check_generator()
        check_level(self.moderation)
        self._check_animation()

    def _check_generator_name(self) -> None:
        declaration(self.generator)

    def _check_quality(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        if self.quality is not None:
            quality.preset(self.quality)
        perceptors = self.perceptors
        if not isinstance(perceptors, tuple | list) or not all(
            isinstance(entry, tuple | list) and len(entry) == 2 for entry in perceptors
        ):
            raise InvalidSpec("perceptors is a list of (CLIP model name, weight) pairs.")
        if len(perceptors) > quality.MAX_PERCEPTORS:
            raise InvalidSpec(
                f"At most {quality.MAX_PERCEPTORS} CLIP models can guide one image, not {len(perceptors)}."
            )
        for name, weight in perceptors:
            check_model_name("Each CLIP model of the ensemble", name)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise InvalidSpec(f"The weight of the CLIP model {name} must be a number, not {weight!r}.")
            if not 0 < weight <= MAX_WEIGHT:
                raise InvalidSpec(f"The weight of the CLIP model {name} must be above 0 and at most {MAX_WEIGHT:g}.")
        names = [name for name, _ in perceptors]
        if len(set(names)) != len(names):
            raise InvalidSpec("Each CLIP model can be in the ensemble once.")
        set_("perceptors", tuple((name, float(weight)) for name, weight in perceptors))
        if perceptors:
            set_("clip_model", names[0])  # the primary
        for name in ("cut_overview", "cut_inner"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                set_(name, str(value))
            elif value is not None and not isinstance(value, str):
                raise InvalidSpec(f"{name} must be a cutout schedule like [12]*400+[4]*600, or a count.")
        if self.cut_overview is not None or self.cut_inner is not None:
            set_("cutn", quality.check_schedules(self.cut_overview, self.cut_inner))
        for name in ("cut_gray", "tv_scale", "range_scale", "sat_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidSpec(f"{name} must be a finite number, not {value!r}.")
        check_range("cut_gray", self.cut_gray, 0, 1)
        for name in ("tv_scale", "range_scale", "sat_scale"):
            check_range(name, getattr(self, name), 0, MAX_LOSS_SCALE)

    def with_quality(self, name: str) -> JobSpec:
        """The same job at quality `name` (engine.quality.PRESETS): its CLIP models, cutouts, losses and steps."""
        return self.replace(**quality.expand(name))

    @classmethod
    def from_quality(cls, prompt: str, name: str, **fields: Any) -> JobSpec:
        """A spec at quality `name`, the `fields` given overriding the preset's (steps, say)."""
        return cls(prompt, **{**quality.expand(name), **fields})

    def _resolve_layout(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        if not isinstance(self.prompt, str):
            raise InvalidSpec("The prompt must be text.")
        regions = parse_regions(self.prompt)
        if self.layout == "auto":
            set_("layout", "panorama" if len(regions) > 1 else "single")
        if not isinstance(self.layout, str) or self.layout not in LAYOUTS:
            raise InvalidSpec(f"Unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}.")
        if self.layout == "single" and len(regions) > 1:
            raise InvalidSpec(
                "The prompt has parts separated by ' / ', which need the panorama, vertical or mirror layout."
            )
        if self.layout == "mirror" and len(regions) > 2:
            raise InvalidSpec("The mirror layout takes one prompt or two (left / right), not more.")
        if self.lr is None:
            base = declaration(self.generator).lr
            composition = COMPOSITION_LR if base == DEFAULT_LR else base * COMPOSITION_LR / DEFAULT_LR
            set_("lr", base if self.layout == "single" else composition)
        if self.tone_weight is None:
            set_("tone_weight", MIRROR_TONE_WEIGHT if self.layout == "mirror" else 0.0)
        if self.semantic_weight is None:
            set_("semantic_weight", MIRROR_SEMANTIC_WEIGHT if self.layout == "mirror" else 0.0)
        if self.semantic_weight and self.layout != "mirror":
            raise InvalidSpec("Semantic symmetry compares mirrored cutouts, so it needs the mirror layout.")
        if not isinstance(self.prompt_schedule, tuple | list) or not all(
            isinstance(entry, tuple | list) and len(entry) == 2 for entry in self.prompt_schedule
        ):
            raise InvalidSpec("The prompt schedule is a list of (step, prompt) pairs.")
        schedule = tuple((entry[0], entry[1]) for entry in self.prompt_schedule)
        set_("prompt_schedule", schedule)
        previous = -1
        for step, text in schedule:
            if isinstance(step, bool) or not isinstance(step, int) or not isinstance(text, str):
                raise InvalidSpec("A prompt schedule entry is a step number and a prompt.")
            if not 0 <= step <= MAX_TOTAL_STEPS:
                raise InvalidSpec(f"A prompt change at step {step} is out of range (0 to {MAX_TOTAL_STEPS}).")
            if step <= previous:
                raise InvalidSpec("Prompt changes must come at increasing steps.")
            later = parse_regions(text)
            if len(later) != len(regions) and self.layout in ("single", "mirror"):
                raise InvalidSpec(
                    f"The prompt at step {step} has {len(later)} parts; this {self.layout} image has {len(regions)}."
                )
            previous = step

    def _check_generator(self) -> None:
        found = declaration(self.generator)
        if found.weights and found.default_model and self.model == DEFAULT_VQGAN_MODEL:
            object.__setattr__(self, "model", found.default_model)
        options = self.options
        if options is None or isinstance(options, dict):
            options = found.options.from_dict(options, found.name)
        elif not isinstance(options, Options):
            raise InvalidSpec(f"The {found.name} generator's options must be a JSON object, not {options!r}.")
        elif type(options) is not found.options and options == type(options)():
            options = found.options()  # another generator's defaults set nothing (a spec replaced to this one)
        elif type(options) is not found.options:
            raise InvalidSpec(f"Those are the {options.generator} generator's options, not the {found.name}'s.")
        options.check()
        object.__setattr__(self, "options", options)
        if not isinstance(self.upscales, tuple | list):
            raise InvalidSpec("upscales must be a list of step counts, one per doubling.")
        upscales = tuple(self.upscales)
        object.__setattr__(self, "upscales", upscales)
        if len(upscales) > MAX_UPSCALES:
            raise InvalidSpec(f"An image can be upscaled at most {MAX_UPSCALES} times, not {len(upscales)}.")
        for steps in upscales:
            if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
                raise InvalidSpec(f"An upscale runs between 1 and {MAX_STEPS} steps, not {steps!r}.")
        if not found.encodes and self.init_image:
            raise InvalidSpec(found.no_encoder)
        if not found.encodes and upscales:
            raise InvalidSpec(found.no_upscale)
        width, height = self.final_size
        if max(width, height) > MAX_SIDE:
            raise InvalidSpec(
                f"Upscaling {self.width}x{self.height} {len(upscales)} time(s) would make "
                f"{width}x{height}; the largest side allowed is {MAX_SIDE}."
            )

    def _check_animation(self) -> None:
        animation = self.animation
        if animation is None:
            return
        if isinstance(animation, dict):
            animation = Animation.from_dict(animation)
        elif not isinstance(animation, Animation):
            raise InvalidSpec("The animation must be a JSON object of frames, fps, frame_steps, keyframes and prompts.")
        object.__setattr__(self, "animation", animation)
        found = declaration(self.generator)
        if not found.encodes:
            raise InvalidSpec(
                found.no_animation or f"The {found.name} generator cannot re-encode a picture, so it cannot animate."
            )
        if self.upscales:
            raise InvalidSpec("An animation cannot be upscaled: ask for the size you want its frames to have.")
        if self.total_steps > MAX_TOTAL_STEPS:
            raise InvalidSpec(
                f"A first frame of {self.steps} steps and {animation.frames - 1} more of {animation.frame_steps} make "
                f"{self.total_steps:,} steps; at most {MAX_TOTAL_STEPS:,} are allowed: use fewer frames or fewer "
                "steps per frame."
            )
        parts = len(parse_regions(self.prompt))
        for frame, text in animation.prompts:
            later = len(parse_regions(text))
            if later != parts and self.layout in ("single", "mirror"):
                raise InvalidSpec(
                    f"The prompt at frame {frame} has {later} parts; this {self.layout} image has {parts}."
                )

    @property
    def final_size(self) -> tuple[int, int]:
        """The size of the picture the run ends with: the requested size doubled by each upscale."""
        scale = 2 ** len(self.upscales)
        return self.width * scale, self.height * scale

    @property
    def total_steps(self) -> int:
        """The steps of every stage: the first `steps` and those of each upscale, or of each frame after the first."""
        if self.animation is not None:
            return self.animation.total_steps(self.steps)
        return self.steps + sum(self.upscales)

    def extended(self, steps: int) -> JobSpec:
        """The same job run `steps` further: the last stage grows, so an upscaled image stays upscaled where it was
        (raising `steps` instead would move its upscale later) and its recipe replays the continued run. An
        animation grows by the frames those steps make (at least one)."""
        if self.animation is not None:
            more = -(-steps // self.animation.frame_steps)
            return self.replace(animation=self.animation.replace(frames=self.animation.frames + more))
        if self.upscales:
            return self.replace(upscales=(*self.upscales[:-1], self.upscales[-1] + steps))
        return self.replace(steps=self.steps + steps)

    def upscaled(self, steps: int) -> JobSpec:
        """The same job, then twice the size for `steps` more steps (the Upscale of a finished image)."""
        return self.replace(upscales=(*self.upscales, steps))

    def stage_at(self, step: int) -> int:
        """How many upscales come before the step with this index (0 before the first upscale)."""
        boundary, stage = self.steps, 0
        for extra in self.upscales:
            if step < boundary:
                break
            stage += 1
            boundary += extra
        return stage

    def prompt_at(self, step: int) -> str:
        """The prompt that the step with this index aims at: the latest change at or before it, of the schedule
        (steering) and, in an animation, of the prompts keyed by frame, which start at their frame's first step (a
        steer at the same step wins; a keyed frame after a steer takes over again)."""
        changes = [(at, 1, later) for at, later in self.prompt_schedule]
        if self.animation is not None:
            first = self.steps
            changes += [(self.animation.first_step(frame, first), 0, text) for frame, text in self.animation.prompts]
        text = self.prompt
        for at, _, later in sorted(changes):
            if at <= step:
                text = later
        return text

    @property
    def regions(self) -> tuple[tuple[Prompt, ...], ...]:
        """The prompts of each part of the composition (one part for the single layout)."""
        return parse_regions(self.prompt)

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        """Every text prompt, parsed, parts in order."""
        return tuple(p for region in self.regions for p in region)

    @property
    def image_targets(self) -> tuple[Prompt, ...]:
        """The image prompts, parsed (text holds the path)."""
        return tuple(parse_prompt(p) for p in self.image_prompts)

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["image_prompts"] = list(self.image_prompts)
        d["prompt_schedule"] = [list(entry) for entry in self.prompt_schedule]
        d["upscales"] = list(self.upscales)
        d["perceptors"] = [list(entry) for entry in self.perceptors]
        for name, default in QUALITY_DEFAULTS.items():  # a spec without them writes the JSON it wrote before them
            if d[name] == default:
                del d[name]
        if self.animation is None:
            del d["animation"]  # a still image's JSON stays as it was before animations
        else:
            d["animation"] = self.animation.to_dict()
        return d

    def pictures(self) -> tuple[str, ...]:
        """The picture files this spec reads (init image, image prompts), as named in it."""
        return ((self.init_image,) if self.init_image else ()) + tuple(p.text for p in self.image_targets)

    def with_pictures(self, rename: dict[str, str]) -> JobSpec:
        """The same spec reading each picture from `rename[name]` (weights and stops kept)."""
        prompts = tuple(str(dataclasses.replace(p, text=rename.get(p.text, p.text))) for p in self.image_targets)
        init = rename.get(self.init_image, self.init_image) if self.init_image else None
        return self.replace(init_image=init, image_prompts=prompts)

    def to_public_dict(self) -> dict[str, Any]:
        """The spec as people see it (recipes, the Recipe button): images by file name only, never a folder of
        the machine that ran it."""
        d = self.to_dict()
        if self.init_image:
            d["init_image"] = PurePath(self.init_image).name
        d["image_prompts"] = [str(dataclasses.replace(p, text=PurePath(p.text).name)) for p in self.image_targets]
        return d

    def to_json(self) -> str:
        """The spec as JSON with sorted keys (`from_json` reads it back)."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """A spec from a dict such as `to_dict` makes (lists back to tuples); InvalidSpec for unknown fields, no prompt
        or a bad value."""
        if not isinstance(data, dict):
            raise InvalidSpec("The spec must be a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)} | LEGACY_FIELDS
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpec(f"Unknown spec fields: {', '.join(unknown)}.")
        if "prompt" not in data:
            raise InvalidSpec("The spec has no prompt.")
        data = _options_from_flat_fields(data)
        if isinstance(data.get("image_prompts", ()), list | type(None)):
            data["image_prompts"] = tuple(data["image_prompts"] or ())
        schedule = data.get("prompt_schedule", ())
        if isinstance(schedule, list | type(None)):
            data["prompt_schedule"] = tuple(tuple(e) if isinstance(e, list) else e for e in schedule or ())
        upscales = data.get("upscales", ())
        if isinstance(upscales, list | type(None)):
            data["upscales"] = tuple(upscales or ())
        perceptors = data.get("perceptors", ())
        if isinstance(perceptors, list | type(None)):
            data["perceptors"] = tuple(tuple(e) if isinstance(e, list) else e for e in perceptors or ())
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """A spec from JSON text; InvalidSpec for text that is not a JSON object of a valid spec."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSpec(f"The spec is not valid JSON: {exc}.") from None
        except (ValueError, RecursionError):  # a number of thousands of digits, nesting too deep
            raise InvalidSpec("The spec is not JSON that can be read.") from None
        if not isinstance(data, dict):
            raise InvalidSpec("The spec must be a JSON object.")
        return cls.from_dict(data)
