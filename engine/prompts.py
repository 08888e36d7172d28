"""Prompts as members write them: `text:weight:stop` parts separated by `|`, and the parts of a composition
separated by ` / `. Standard library only (the bot checks prompts without torch).

    parse_prompts("a castle | fog:0.5 | blurry:-1")   # three Prompts, the last one pushed away
    parse_regions("a heaven / a hell")                 # the two parts of a composition
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.errors import InvalidSpec

MAX_PROMPTS = 8
MAX_PROMPT_CHARS = 1000
MAX_REGIONS = 4
# A weight scales its prompt's loss (and an init weight the pull towards the init image): past 100 one prompt drowns
# every other, and numbers like 1e308 become inf in float32, which turns the whole run into NaN.
MAX_WEIGHT = 100.0
# A stop is a signed distance between a cutout and its prompt (theta^2 / 2, at most pi^2 / 2 ~ 4.93): a stop beyond
# +-5 would cut every gradient or none.
MAX_STOP = 5.0
# A slash with whitespace on both sides separates the parts of a composition ("AC/DC" and URLs stay whole).
_REGION_SPLIT = re.compile(r"\s+/\s+")

# A trailing ":<one token that starts like a number>" is a weight (or stop); anything else stays text, so
# "12 o'clock: noon", "http://x" and "16:9 poster" keep their colons. A part that ends in ":number" ("at 12:30")
# reads as a weight, as in the syntax the community uses; write "12.30" or put words after it.
_NUMBERISH = re.compile(r"^\s*[-+]?(\d|\.\d)\S*\s*$")


@dataclass(frozen=True)
class Prompt:
    """One weighted target: text (or an image path), a weight (negative pushes away) and an optional stop."""

    text: str
    weight: float = 1.0
    stop: float | None = None

    def __str__(self) -> str:
        s = self.text
        if self.weight != 1.0 or self.stop is not None:
            s += f":{self.weight:g}"
        if self.stop is not None:
            s += f":{self.stop:g}"
        return s


def check_text(text: str, what: str = "The prompt") -> str:
    """`text` if it can be stored and shown (valid Unicode); InvalidSpec otherwise (a lone surrogate, for one)."""
    if not isinstance(text, str):
        raise InvalidSpec(f"{what} must be text.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSpec(f"{what} holds a character that is not valid text; type it again.") from None
    return text


def _number(token: str, whole: str, what: str, bound: float) -> float:
    """The number `token` of the prompt part `whole` (its weight or its stop), within +-`bound`."""
    shown, part = token.strip(), whole.strip()
    if len(part) > 60:
        part = part[:59] + "…"
    try:
        value = float(token)
    except ValueError:
        raise InvalidSpec(f"The {what} {shown!r} in {part!r} is not a number.") from None
    if not math.isfinite(value):
        raise InvalidSpec(f"The {what} {shown!r} in {part!r} must be a finite number.")
    if abs(value) > bound:
        raise InvalidSpec(f"The {what} {shown!r} in {part!r} must be between {-bound:g} and {bound:g}.")
    return value


def parse_prompt(part: str) -> Prompt:
    """Parse one `text[:weight[:stop]]` part, reading numbers from the right and leaving the text alone."""
    check_text(part)
    numbers: list[str] = []
    text = part
    while len(numbers) < 2 and ":" in text:
        head, tail = text.rsplit(":", 1)
        if not _NUMBERISH.match(tail):
            break
        numbers.insert(0, tail)
        text = head
    text = text.strip()
    if not text:
        raise InvalidSpec(f"The prompt part {part.strip()!r} has a weight but no text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidSpec(f"A prompt part is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    weight = _number(numbers[0], part, "weight", MAX_WEIGHT) if numbers else 1.0
    stop = _number(numbers[1], part, "stop", MAX_STOP) if len(numbers) > 1 else None
    return Prompt(text=text, weight=weight, stop=stop)


def parse_prompts(text: str) -> tuple[Prompt, ...]:
    """Parse `a | b:0.5 | c:-1` into prompts; raises InvalidSpec with a sentence a member understands."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSpec("The prompt is empty: describe what you want to see.")
    parts = [p for p in text.split("|") if p.strip()]
    if not parts:
        raise InvalidSpec("The prompt is empty: describe what you want to see.")
    if len(parts) > MAX_PROMPTS:
        raise InvalidSpec(f"The prompt has {len(parts)} parts; at most {MAX_PROMPTS} are allowed.")
    prompts = tuple(parse_prompt(p) for p in parts)
    if all(p.weight == 0 for p in prompts):
        raise InvalidSpec("Every prompt part has weight 0, so there is nothing to aim for.")
    return prompts


def split_regions(text: str) -> tuple[str, ...]:
    """`A / B / C` -> ("A", "B", "C"): the parts of a composition, each a `|`-separated prompt of its own."""
    check_text(text)
    parts = tuple(p for p in _REGION_SPLIT.split(text.strip()) if p.strip())
    if len(parts) > MAX_REGIONS:
        raise InvalidSpec(f"The prompt has {len(parts)} parts separated by ' / '; at most {MAX_REGIONS} are allowed.")
    return parts or (text,)


def parse_regions(text: str) -> tuple[tuple[Prompt, ...], ...]:
    """The prompts of each part of a composition, in order (left to right, or top to bottom)."""
    regions = tuple(parse_prompts(part) for part in split_regions(text))
    total = sum(len(r) for r in regions)
    if total > MAX_PROMPTS:
        raise InvalidSpec(f"The prompt has {total} parts; at most {MAX_PROMPTS} are allowed.")
    return regions
