"""What a generator declares about itself, read without torch: its name, its options, its learning rate, its size
rule, where its weights live and how they load, its memory costs and its command-line flags.

Standard library only. The spec validates a generator's options with it, the bot offers its models and sizes with
it, the CLI builds its flags from it and the memory check reads its costs from it; only `build` (and the loader)
reach torch, when the engine makes the generator.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import InvalidSpec


class LazyModule:
    """A module imported on its first attribute access: a generator module names torch at its top
    (`torch = LazyModule("torch")`) yet stays importable where torch must not load (the bot reads its declaration).
    Nothing is put in `sys.modules` until then."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        return getattr(module, attr)


def check_range(name: str, value: Any, low: float, high: float) -> None:
    """InvalidSpec unless `value` lies in [low, high] (the message names the option)."""
    if not (low <= value <= high):
        shown = f"{value:g}" if abs(value) < 1e15 else "a number that large"  # a huge int cannot become a float
        raise InvalidSpec(f"{name} must be between {low:g} and {high:g}, not {shown}.")


def check_whole(name: str, value: Any) -> None:
    """InvalidSpec unless `value` is an int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{name} must be a whole number, not {value!r}.")


def check_finite(name: str, value: Any) -> None:
    """InvalidSpec unless `value` is a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpec(f"{name} must be a finite number, not {value!r}.")


@dataclass(frozen=True)
class Options:
    """A generator's own settings in a spec (each generator subclasses it; one without settings uses it as is).
    Frozen and JSON-ready; `check` raises InvalidSpec with a sentence for a bad value."""

    generator: ClassVar[str] = ""  # the generator's name, for messages

    def check(self) -> None:
        """Raise InvalidSpec for a bad value (subclasses check their fields)."""

    @classmethod
    def from_dict(cls, data: Any, generator: str = "") -> Options:
        """Options from a JSON object; InvalidSpec for an unknown field (naming the generator) or a bad value."""
        generator = generator or cls.generator
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidSpec(f"The {generator} generator's options must be a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            has = f"; it has {', '.join(sorted(known))}" if known else "; it has none"
            raise InvalidSpec(f"The {generator} generator has no option {', '.join(unknown)}{has}.")
        return cls(**data)


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one option: `--truncation 0.5` sets BigGAN's `truncation`."""

    flag: str
    option: str
    type: Callable[[str], Any]
    help: str


@dataclass(frozen=True)
class Memory:
    """What one run's step costs beyond the models, in bytes (fp32; halved activations under bf16/fp16).

    Measured for the VQGAN decoder with ViT-B/32 (`bench/memory.py`); a generator that measures its own declares
    it. `attention_stride` is the pixels per token of a decoder's self-attention (0: none)."""

    bytes_per_pixel: int = 21_500
    bytes_per_cutout: int = 18_000_000
    attention_matrices: int = 6
    attention_stride: int = 16


@dataclass(frozen=True)
class Declaration:
    """Everything the rest of the program knows about one generator. The torch half (`build`, `load`) is imported
    only when called."""

    name: str
    summary: str  # one line for `--generator`'s help and the README
    options: type[Options] = Options
    lr: float = 0.1  # Adam's step size for a single-layout run (compositions scale it)
    # Weights: the folder under the models directory, the default model, and whether it can start from an image
    # (an encoder) and be upscaled. None: the generator needs no weights besides CLIP's.
    weights: str | None = None
    default_model: str | None = None
    encodes: bool = True
    no_encoder: str = ""  # where `encodes` is False: the sentence for an init image
    no_upscale: str = ""  # and for an upscale
    no_animation: str = ""  # and for an animation (each frame starts from the last one, re-encoded)
    memory: Memory = Memory()
    flags: tuple[Flag, ...] = ()
    # Old recipes stored the options as flat spec fields: {old field name: option name}.
    legacy_fields: dict[str, str] = field(default_factory=dict)
    # The torch half: build(options, weights, engine, width, height) -> Generator; key(options, width, height)
    # tells apart generators that differ (runs with equal keys share one and are batched together).
    build: Callable[..., Any] | None = None
    key: Callable[[Options, int, int], tuple] = lambda options, width, height: ()
    # Optional: start(generator, params, options) -> params adjusts a fresh start (BigGAN's starting class).
    start: Callable[..., Any] | None = None
    # Weights on disk: installed(models_dir) -> names; missing(settings, model) -> a missing Path or None;
    # load(settings, model, device) -> the loaded weights.
    installed: Callable[[Path], list[str]] | None = None
    missing: Callable[[Any, str], Path | None] | None = None
    load: Callable[[Any, str, Any], Any] | None = None
    # size(models_dir, model) -> the one square side it makes, or None for any size (BigGAN: its native size).
    fixed_size: Callable[[Path, str], int | None] | None = None

    def models(self, models_dir: Path) -> list[str]:
        """The names a member can choose for this generator: its installed weights, or its own name."""
        if self.installed is None:
            return [self.name]
        return self.installed(Path(models_dir))


def check_size(width: int, height: int, factor: int, name: str) -> tuple[int, int]:
    """The largest multiple of `factor` in each side; InvalidSpec (a sentence naming the generator) below one cell."""
    w, h = width // factor * factor, height // factor * factor
    if w < factor or h < factor:
        raise InvalidSpec(f"The {name} generator needs at least {factor}x{factor} pixels, not {width}x{height}.")
    return w, h
