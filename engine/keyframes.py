"""Animations: keyframed 2D motion (zoom, angle, translation) and prompts that change over the frames, in the syntax
of Disco Diffusion's 2D animation mode. Standard library only (the bot builds and checks animations without torch).

    parse_keyframes("0: (1.0), 30: (1.04)", "zoom")   # ((0, 1.0), (30, 1.04)); a bare "1.02" is constant
    value_at(((0, 1.0), (30, 1.04)), 15)              # 1.02: linear between keyframes, constant outside them
    parse_frame_prompts("0: a forest | oil painting; 60: a city at night")   # ((0, ...), (60, ...))
    preset("zoom-in", frames=48)                        # an Animation without writing keyframes

Frame 0 is a normal run of `spec.steps` steps. Each later frame k starts from frame k-1's image moved by frame k's
transform (zoom about the centre, then rotation, then translation) and re-encoded into the generator's latent,
then runs `frame_steps` steps. So frame 0's own transform is never used, and the motion per frame is the keyframed
value at that frame: a zoom of 1.04 makes the picture 4% larger each frame, an angle of 2 turns it 2 degrees
counterclockwise each frame, translation_x 3 moves it 3 pixels right (translation_y: down) each frame.

Prompts by frame: a JSON object {frame: prompt} or the text form `FRAME: prompt; FRAME: prompt`. Each prompt keeps
the whole prompt syntax (`a | b:0.5`, `A / B`); an entry ends at a `;` that is followed by a frame number and a
colon, so a `;` elsewhere stays part of the prompt. A frame uses the latest keyed prompt at or before it, and the
spec's own prompt before the first key.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidSpec
from engine.prompts import check_text, parse_regions

MAX_FRAMES = 600
MAX_FPS = 60
MAX_FRAME_STEPS = 1000
MAX_KEYFRAMES = 100
MAX_KEYFRAME_CHARS = 4000
MAX_PROMPTS_CHARS = 10_000
DEFAULT_FRAMES, DEFAULT_FPS, DEFAULT_FRAME_STEPS = 48, 12, 30

# name -> (lowest, highest, what one unit means, an example). Per frame: these compound over the frames.
MOTIONS = {
    "zoom": (0.5, 2.0, "a zoom per frame, 1 = none, 1.04 = 4% closer each frame", "0: (1.0), 30: (1.04)"),
    "angle": (-45.0, 45.0, "degrees turned per frame, counterclockwise", "0: (0), 30: (2)"),
    "translation_x": (-256.0, 256.0, "pixels moved right per frame (negative: left)", "0: (0), 30: (4)"),
    "translation_y": (-256.0, 256.0, "pixels moved down per frame (negative: up)", "0: (0), 30: (-4)"),
}
NEUTRAL = {"zoom": 1.0, "angle": 0.0, "translation_x": 0.0, "translation_y": 0.0}

Keyframes = tuple[tuple[int, float], ...]
FramePrompts = tuple[tuple[int, str], ...]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BARE = re.compile(rf"\s*\(?\s*({_NUMBER})\s*\)?\s*")
_ENTRY = re.compile(rf"\s*(\d+)\s*:\s*(?:\(\s*({_NUMBER})\s*\)|({_NUMBER}))\s*")
_PROMPT_SPLIT = re.compile(r";\s*(?=\d+\s*:)")
_PROMPT_ENTRY = re.compile(r"\s*(\d+)\s*:(.*)", re.DOTALL)
PROMPTS_EXAMPLE = "0: a forest | oil painting; 60: a city at night"


def _shown(text: str, limit: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _check_frame(frame: int, what: str) -> int:
    if not 0 <= frame < MAX_FRAMES:
        raise InvalidSpec(f"{what} is at frame {frame}; frames are numbered from 0 to {MAX_FRAMES - 1}.")
    return frame


def _checked_pairs(pairs: list[tuple[int, float]], name: str) -> Keyframes:
    low, high, meaning, example = MOTIONS[name]
    if not pairs:
        raise InvalidSpec(f"The {name} keyframes are empty; write frame: (value) pairs, e.g. {example!r}.")
    if len(pairs) > MAX_KEYFRAMES:
        raise InvalidSpec(f"The {name} has {len(pairs)} keyframes; at most {MAX_KEYFRAMES} are allowed.")
    seen: set[int] = set()
    for frame, value in pairs:
        _check_frame(frame, f"A {name} keyframe")
        if frame in seen:
            raise InvalidSpec(f"Frame {frame} has two {name} keyframes; give each frame one value.")
        seen.add(frame)
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidSpec(
                f"The {name} at frame {frame} is {value:g}; it must be between {low:g} and {high:g} ({meaning})."
            )
    return tuple(sorted(pairs))


def parse_keyframes(value: Any, name: str = "zoom") -> Keyframes:
    """Keyframes from Disco's text `"0: (1.0), 30: (1.04)"` (parentheses optional), a bare number (constant), a
    {frame: value} mapping or (frame, value) pairs; sorted by frame. InvalidSpec, with an example, for anything else
    or a value out of `MOTIONS[name]`'s range."""
    low, high, meaning, example = MOTIONS[name]
    if isinstance(value, bool):
        raise InvalidSpec(f"The {name} must be keyframes such as {example!r} or one number, not {value!r}.")
    if isinstance(value, int | float):
        return _checked_pairs([(0, float(value))], name)
    if isinstance(value, dict):
        value = list(value.items())
    if isinstance(value, list | tuple):
        pairs = []
        for entry in value:
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise InvalidSpec(f"The {name} keyframes must be (frame, value) pairs, e.g. {example!r}.")
            frame, number = entry
            if isinstance(frame, str) and frame.strip().isdigit():
                frame = int(frame)
            if isinstance(frame, bool) or not isinstance(frame, int):
                raise InvalidSpec(f"A {name} keyframe's frame must be a whole number, not {frame!r}.")
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise InvalidSpec(f"The {name} at frame {frame} must be a number, not {number!r}.")
            pairs.append((frame, float(number)))
        return _checked_pairs(pairs, name)
    if not isinstance(value, str):
        raise InvalidSpec(f"The {name} must be keyframes such as {example!r} or one number, not {value!r}.")
    check_text(value, f"The {name} keyframes")
    if len(value) > MAX_KEYFRAME_CHARS:
        raise InvalidSpec(f"The {name} keyframes are {len(value)} characters long; the limit is {MAX_KEYFRAME_CHARS}.")
    if not value.strip():
        return _checked_pairs([], name)
    bare = _BARE.fullmatch(value)
    if bare:
        return _checked_pairs([(0, float(bare.group(1)))], name)
    pairs = []
    for piece in value.split(","):
        match = _ENTRY.fullmatch(piece)
        if match is None:
            raise InvalidSpec(
                f"The {name} keyframes {_shown(value)} are not understood at {_shown(piece)}: write frame: (value) "
                f"pairs separated by commas, with plain numbers (no expressions), e.g. {example!r}."
            )
        pairs.append((int(match.group(1)), float(match.group(2) or match.group(3))))
    return _checked_pairs(pairs, name)


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def format_keyframes(pairs: Keyframes) -> str:
    """Keyframes as Disco's text, `"0: (1), 30: (1.04)"`; `parse_keyframes` reads back exactly these numbers."""
    return ", ".join(f"{frame}: ({_number_text(value)})" for frame, value in pairs)


def value_at(pairs: Keyframes, frame: float) -> float:
    """The keyframed value at `frame`: linear between keyframes, the first value before them, the last after."""
    if frame <= pairs[0][0]:
        return pairs[0][1]
    for (f0, v0), (f1, v1) in zip(pairs, pairs[1:], strict=False):
        if frame <= f1:
            return v0 + (v1 - v0) * (frame - f0) / (f1 - f0)
    return pairs[-1][1]


def parse_frame_prompts(value: Any) -> FramePrompts:
    """Prompts keyed by frame from the text form `"0: a forest; 60: a city"`, a {frame: prompt} mapping or (frame,
    prompt) pairs; sorted by frame, each prompt checked with the prompt syntax. InvalidSpec with an example
    otherwise."""
    if value is None:
        return ()
    if isinstance(value, str):
        check_text(value, "The prompts by frame")
        if len(value) > MAX_PROMPTS_CHARS:
            raise InvalidSpec(
                f"The prompts by frame are {len(value)} characters long; the limit is {MAX_PROMPTS_CHARS}."
            )
        if not value.strip():
            return ()
        pairs = []
        for piece in _PROMPT_SPLIT.split(value.strip()):
            match = _PROMPT_ENTRY.fullmatch(piece)
            if match is None:
                raise InvalidSpec(
                    f"The prompts by frame {_shown(value)} are not understood at {_shown(piece)}: start each with its "
                    f"frame number and a colon, and separate them with ';', e.g. {PROMPTS_EXAMPLE!r}."
                )
            pairs.append((int(match.group(1)), match.group(2).strip()))
    elif isinstance(value, dict | list | tuple):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        pairs = []
        for entry in items:
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise InvalidSpec(f"The prompts by frame must be (frame, prompt) pairs, e.g. {PROMPTS_EXAMPLE!r}.")
            frame, text = entry
            if isinstance(frame, str) and frame.strip().isdigit():  # JSON object keys are text
                frame = int(frame)
            if isinstance(frame, bool) or not isinstance(frame, int):
                raise InvalidSpec(f"A prompt's frame must be a whole number, not {frame!r}.")
            if not isinstance(text, str):
                raise InvalidSpec(f"The prompt at frame {frame} must be text.")
            pairs.append((frame, text.strip()))
    else:
        raise InvalidSpec(f"The prompts by frame must be text such as {PROMPTS_EXAMPLE!r}.")
    if len(pairs) > MAX_KEYFRAMES:
        raise InvalidSpec(f"There are {len(pairs)} prompts by frame; at most {MAX_KEYFRAMES} are allowed.")
    seen: set[int] = set()
    for frame, text in pairs:
        _check_frame(frame, "A prompt")
        if frame in seen:
            raise InvalidSpec(f"Frame {frame} has two prompts; give each frame one.")
        seen.add(frame)
        if not text:
            raise InvalidSpec(f"The prompt at frame {frame} is empty: describe what that frame should show.")
        parse_regions(text)  # the prompt syntax's own sentences
    return tuple(sorted(pairs))


def format_frame_prompts(pairs: FramePrompts) -> str:
    """Prompts by frame in the text form, `"0: a forest; 60: a city"`."""
    return "; ".join(f"{frame}: {text}" for frame, text in pairs)


@dataclass(frozen=True)
class Transform:
    """One frame's motion: zoom about the centre, counterclockwise degrees, pixels right and down."""

    zoom: float = 1.0
    angle: float = 0.0
    translation_x: float = 0.0
    translation_y: float = 0.0

    @property
    def identity(self) -> bool:
        """Whether it moves nothing."""
        return self == Transform()


@dataclass(frozen=True)
class Animation:
    """An animation's frames, frame rate, steps per later frame, keyframed motion and prompts by frame.

    The motions are kept as Disco's keyframe text (`"0: (1), 30: (1.04)"`, normalised), so a recipe reads as
    written; they may be given as text, one number, a {frame: value} mapping or pairs. `prompts` is given as text,
    a {frame: prompt} mapping or pairs, and kept as sorted (frame, prompt) pairs."""

    frames: int = DEFAULT_FRAMES
    fps: int = DEFAULT_FPS
    frame_steps: int = DEFAULT_FRAME_STEPS  # steps of each frame after the first (which runs the spec's steps)
    zoom: str = "0: (1)"
    angle: str = "0: (0)"
    translation_x: str = "0: (0)"
    translation_y: str = "0: (0)"
    prompts: FramePrompts = ()

    def __post_init__(self) -> None:
        for name, low, high in (("frames", 1, MAX_FRAMES), ("fps", 1, MAX_FPS), ("frame_steps", 1, MAX_FRAME_STEPS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidSpec(f"The animation's {name} must be a whole number, not {value!r}.")
            if not low <= value <= high:
                raise InvalidSpec(f"The animation's {name} must be from {low} to {high}, not {value}.")
        for name in MOTIONS:
            object.__setattr__(self, name, format_keyframes(parse_keyframes(getattr(self, name), name)))
        object.__setattr__(self, "prompts", parse_frame_prompts(self.prompts))

    def keyframes(self, name: str) -> Keyframes:
        """The parsed keyframes of one motion ("zoom", "angle", "translation_x", "translation_y")."""
        return parse_keyframes(getattr(self, name), name)

    def transform(self, frame: int) -> Transform:
        """The motion that starts `frame` from the frame before it."""
        return Transform(**{name: value_at(self.keyframes(name), frame) for name in MOTIONS})

    def prompt_for(self, frame: int) -> str | None:
        """The latest keyed prompt at or before `frame`, or None before the first key (the spec's prompt then)."""
        found = None
        for at, text in self.prompts:
            if at <= frame:
                found = text
        return found

    # -- where the frames lie among the run's steps ---------------------------------------------------------
    def total_steps(self, first: int) -> int:
        """Every step of the animation: `first` for frame 0, then `frame_steps` for each other frame."""
        return first + (self.frames - 1) * self.frame_steps

    def first_step(self, frame: int, first: int) -> int:
        """The index of the first step of `frame`."""
        return 0 if frame <= 0 else first + (frame - 1) * self.frame_steps

    def frames_done_at(self, step: int, first: int) -> int:
        """How many frames are finished before the step with index `step` (all of them once every step ran)."""
        return 0 if step < first else min(self.frames, 1 + (step - first) // self.frame_steps)

    def frame_at(self, step: int, first: int) -> int:
        """The frame the step with index `step` works on (the last frame once every step ran)."""
        return min(self.frames - 1, self.frames_done_at(step, first))

    def seconds(self) -> float:
        """The video's length."""
        return self.frames / self.fps

    def replace(self, **changes: Any) -> Animation:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (prompts as [frame, prompt] lists)."""
        d = dataclasses.asdict(self)
        d["prompts"] = [list(pair) for pair in self.prompts]
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Animation:
        """An animation from a dict such as `to_dict` makes; InvalidSpec for unknown fields or bad values."""
        if not isinstance(data, dict):
            raise InvalidSpec("The animation must be a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpec(f"The animation has no field {', '.join(unknown)}; it has {', '.join(sorted(known))}.")
        return cls(**data)


# Motions a member can pick by name (the keyframes stay open to an advanced field).
PRESETS: dict[str, Animation] = {
    "zoom-in": Animation(zoom="0: (1.03)"),
    "zoom-out": Animation(zoom="0: (0.97)"),
    "drift": Animation(zoom="0: (1.01)", translation_x="0: (3)", translation_y="0: (-1)"),
    "spin": Animation(zoom="0: (1.01)", angle="0: (2)"),
}
PRESET_SUMMARIES = {
    "zoom-in": "flies into the picture, 3% closer each frame",
    "zoom-out": "pulls back from the picture, 3% further each frame",
    "drift": "floats sideways (3 pixels a frame) while slowly closing in",
    "spin": "turns 2 degrees a frame while slowly closing in",
}


def preset(name: str, **changes: Any) -> Animation:
    """The named preset's motion with some fields changed (frames, fps, frame_steps, prompts...); InvalidSpec
    naming the presets for an unknown name."""
    if name not in PRESETS:
        raise InvalidSpec(f"There is no animation preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def frame_steps_for(steps: int, fraction: float = 0.25) -> int:
    """Steps for each later frame as a fraction of the first frame's `steps` (Disco's frames_skip_steps of 75%
    leaves 25%); at least 1."""
    return max(1, min(MAX_FRAME_STEPS, round(steps * fraction)))
