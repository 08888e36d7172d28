"""What a moderation level does with an image's unsafe score: standard library only, so the bot decides
without torch.

    verdict = decide(spec.moderation, result.unsafe, result.unsafe_label)
    if verdict.action == "withhold": ...          # "post", "spoiler" or "withhold"

The levels, their thresholds and the descriptions CLIP compares an image with live in `engine/data/safety.json`
(`engine.moderation_check.SafetyCheck` computes the score). Levels, mildest first:

    off        no check
    spoiler    a finished image at or above the threshold is posted behind a spoiler
    withhold   a finished image at or above the threshold is withheld and its author told
    strict     like withhold, with a lower threshold, and previews are checked too
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from engine.errors import InvalidSpec

LEVELS = ("off", "spoiler", "withhold", "strict")
ACTIONS = ("post", "spoiler", "withhold")


@dataclass(frozen=True)
class Level:
    """One moderation level: what happens to an image at or above `threshold` (None: never checked)."""

    name: str
    description: str
    action: str
    threshold: float | None
    previews: bool


@dataclass(frozen=True)
class SafetyData:
    """The descriptions an image is compared with, the softmax's logit scale, and the levels."""

    unsafe: tuple[str, ...]
    safe: tuple[str, ...]
    logit_scale: float
    levels: dict[str, Level]

    @property
    def descriptions(self) -> tuple[str, ...]:
        """Every description, the unsafe ones first."""
        return self.unsafe + self.safe


@dataclass(frozen=True)
class Verdict:
    """What to do with one image: `action` is "post", "spoiler" or "withhold"; `label` is the unsafe description
    the image looked most like, given only when it is not simply posted."""

    action: str
    unsafe: float | None
    label: str | None
    level: str
    threshold: float | None


def check_level(level: object) -> str:
    """`level` if it names a moderation level; InvalidSpec with a sentence otherwise."""
    if not isinstance(level, str) or level not in LEVELS:
        shown = repr(level) if len(repr(level)) <= 40 else "that value"
        raise InvalidSpec(f"Unknown moderation level {shown}; choose one of {', '.join(LEVELS)}.")
    return level


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s.strip() for s in value):
        raise ValueError(f"the safety data's {key!r} must be a non-empty list of descriptions")
    return tuple(value)


def parse_data(data: dict[str, Any]) -> SafetyData:
    """Safety data from its JSON object; ValueError saying what is wrong with it."""
    unsafe, safe = _strings(data, "unsafe"), _strings(data, "safe")
    scale = data.get("logit_scale")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (0 < scale < math.inf):
        raise ValueError("the safety data's 'logit_scale' must be a positive number")
    raw = data.get("levels")
    if not isinstance(raw, dict) or sorted(raw) != sorted(LEVELS):
        raise ValueError(f"the safety data's 'levels' must describe exactly {', '.join(LEVELS)}")
    levels = {}
    for name in LEVELS:
        entry = raw[name]
        threshold = entry.get("threshold")
        if entry.get("action") not in ACTIONS:
            raise ValueError(f"level {name!r}: the action must be one of {', '.join(ACTIONS)}")
        if (threshold is None) != (entry["action"] == "post"):
            raise ValueError(f"level {name!r}: a threshold goes with an action other than 'post', and only there")
        if threshold is not None and (isinstance(threshold, bool) or not 0 <= threshold <= 1):
            raise ValueError(f"level {name!r}: the threshold must be a probability between 0 and 1")
        if not isinstance(entry.get("description"), str) or not isinstance(entry.get("previews", False), bool):
            raise ValueError(f"level {name!r} needs a description (text) and previews (true or false)")
        levels[name] = Level(name, entry["description"], entry["action"], threshold, entry.get("previews", False))
    return SafetyData(unsafe, safe, float(scale), levels)


def load_data(path: str | Path | None = None) -> SafetyData:
    """The safety data in `path`, or the built-in `engine/data/safety.json` when None."""
    if path is None:
        return _builtin()
    return parse_data(json.loads(Path(path).read_text(encoding="utf-8")))


@functools.cache
def _builtin() -> SafetyData:
    return parse_data(json.loads(resources.files("engine").joinpath("data/safety.json").read_text(encoding="utf-8")))


def checks_previews(level: str, data: SafetyData | None = None) -> bool:
    """Whether `level` checks previews as well as the finished image."""
    return (data or load_data()).levels[check_level(level)].previews


def checks_images(level: str, data: SafetyData | None = None) -> bool:
    """Whether `level` checks images at all (every level but "off")."""
    return (data or load_data()).levels[check_level(level)].threshold is not None


def valid_score(unsafe_score: object) -> float:
    """`unsafe_score` if it is a probability, else 1.0: a check that broke down (NaN, inf, out of [0, 1], not a
    number) counts as unsafe, so the image is spoilered or withheld rather than posted."""
    if isinstance(unsafe_score, bool) or not isinstance(unsafe_score, int | float) or not 0 <= unsafe_score <= 1:
        return 1.0  # NaN fails the range check too: it compares False with everything
    return float(unsafe_score)


def decide(level: str, unsafe_score: float | None, label: str | None = None, data: SafetyData | None = None) -> Verdict:
    """What `level` does with an image whose unsafe probability is `unsafe_score` (None: not checked, posted; a
    score that is not a probability counts as 1.0, see `valid_score`)."""
    entry = (data or load_data()).levels[check_level(level)]
    if entry.threshold is not None and unsafe_score is not None:
        unsafe_score = valid_score(unsafe_score)
    action = "post"
    if entry.threshold is not None and unsafe_score is not None and unsafe_score >= entry.threshold:
        action = entry.action
    return Verdict(action, unsafe_score, label if action != "post" else None, level, entry.threshold)


def levels_table(data: SafetyData | None = None) -> str:
    """The levels as a Markdown table (for the README and the bot's help)."""
    data = data or load_data()
    rows = ["| level | what happens | threshold | previews checked |", "| --- | --- | --- | --- |"]
    for name in LEVELS:
        entry = data.levels[name]
        threshold = "-" if entry.threshold is None else f"{entry.threshold:g}"
        rows.append(f"| `{name}` | {entry.description} | {threshold} | {'yes' if entry.previews else 'no'} |")
    return "\n".join(rows)
