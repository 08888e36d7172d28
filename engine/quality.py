"""Quality presets: CLIP ensembles, cutout schedules and image losses by name, and what a spec costs to run.

Standard library only: the bot expands, caps and prices presets without torch.

    spec = JobSpec("a lighthouse").with_quality("best")   # the preset's expanded values, recorded in the recipe
    cutout_schedule("[12]*100+[4]*300").at(150)           # 4: the count of that step
    relative_cost(spec)                                  # about 3.0: seconds per step over the default job's

A preset is a named set of values, nothing more: `expand(name)` gives the JobSpec fields, and the spec (so the
recipe) keeps those values, so an image replays as it was made even after a preset changes. `JobSpec.quality`
keeps the name, for display only.

Scores of an ensemble: the live similarity, the final CLIP scores and /top all use the first (primary) CLIP of the
ensemble (`SCORE_CONVENTION`); every preset's primary is ViT-B-32, so scores compare across presets and with
images made before presets existed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from engine.errors import InvalidSpec

MAX_PERCEPTORS = 4
MAX_SCHEDULE_STEPS = 100_000  # the longest list a schedule string may spell out
SCORE_CONVENTION = (
    "CLIP scores are the cosine similarity under the first (primary) CLIP model of the ensemble "
    "(ViT-B/32 in every preset), so they compare across qualities."
)


# -- cutout schedules -------------------------------------------------------------------------------------------
_TERM = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*,?\s*\]\s*(?:\*\s*(\d+))?")


@dataclass(frozen=True)
class Schedule:
    """Cutout counts per step: `runs` of (count, steps); past the end the last count goes on."""

    runs: tuple[tuple[int, int], ...]

    def at(self, step: int) -> int:
        """The count at the step with this index (0-based)."""
        for count, length in self.runs:
            if step < length:
                return count
            step -= length
        return self.runs[-1][0]

    @property
    def length(self) -> int:
        """How many steps the schedule spells out (the last count holds after them)."""
        return sum(length for _, length in self.runs)

    @property
    def most(self) -> int:
        """The largest count of any step."""
        return max(count for count, _ in self.runs)

    def mean(self, steps: int) -> float:
        """The mean count over the steps 0 .. steps-1."""
        total, left = 0, steps
        for count, length in self.runs:
            take = min(left, length)
            total, left = total + count * take, left - take
        return (total + left * self.runs[-1][0]) / max(steps, 1)


def cutout_schedule(text: str | int, what: str = "The cutout schedule") -> Schedule:
    """Parse Disco Diffusion's form (cached: the step asks for it every step); see `_parse`."""
    return _parse(text, what)


@functools.lru_cache(maxsize=256)
def _parse(text: str | int, what: str) -> Schedule:
    """Parse Disco Diffusion's form "[12]*400+[4]*600" (lists of counts, each repeated, joined by +), or a whole
    number for a constant count. InvalidSpec with a sentence for anything else."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise InvalidSpec(f"{what} must be a count or a schedule like [12]*400+[4]*600, not {text!r}.")
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return Schedule(((_count(int(text), what), 1),))
    if len(text) > 500:
        raise InvalidSpec(f"{what} is too long (at most 500 characters).")
    runs: list[tuple[int, int]] = []
    spelled = 0
    for part in text.split("+"):
        match = _TERM.fullmatch(part.strip())
        if not match:
            raise InvalidSpec(
                f"{what} {text!r} cannot be read: write lists of cutout counts, each repeated for some steps, joined "
                "by +, like [12]*400+[4]*600 (or a single number for the same count every step)."
            )
        repeat = int(match[2]) if match[2] is not None else 1
        if repeat < 1:
            raise InvalidSpec(f"{what} repeats a list {repeat} times; repeat it at least once.")
        counts = [_count(int(c), what) for c in match[1].split(",")]
        spelled += len(counts) * repeat
        if spelled > MAX_SCHEDULE_STEPS:
            raise InvalidSpec(f"{what} spells out more than {MAX_SCHEDULE_STEPS} steps.")
        if len(counts) == 1:
            runs.append((counts[0], repeat))
        else:  # [12, 8]*3 is the list repeated: 12, 8, 12, 8, 12, 8
            runs.extend((count, 1) for _ in range(repeat) for count in counts)
    merged: list[tuple[int, int]] = []
    for count, length in runs:  # [4]*2+[4]*3 is [4]*5
        if merged and merged[-1][0] == count:
            merged[-1] = (count, merged[-1][1] + length)
        else:
            merged.append((count, length))
    return Schedule(tuple(merged))


MAX_COUNT = 256  # as engine.spec.MAX_CUTN


def _count(count: int, what: str) -> int:
    if count > MAX_COUNT:
        raise InvalidSpec(f"{what} asks for {count} cutouts in a step; at most {MAX_COUNT} are allowed.")
    return count


def step_counts(overview: str | None, inner: str | None, cutn: int, step: int) -> tuple[int, int]:
    """(overview, inner) cutouts of one step: the schedules' counts, or (0, cutn) where neither is given."""
    if overview is None and inner is None:
        return 0, cutn
    return (
        cutout_schedule(overview).at(step) if overview is not None else 0,
        cutout_schedule(inner).at(step) if inner is not None else 0,
    )


def check_schedules(overview: str | None, inner: str | None) -> int:
    """Validate a pair of schedules (either may be None: no cutouts of that kind); return the most cutouts of any
    step (overview + inner). InvalidSpec where some step would have none."""
    first = cutout_schedule(overview, "The overview cutout schedule") if overview is not None else Schedule(((0, 1),))
    second = cutout_schedule(inner, "The inner cutout schedule") if inner is not None else Schedule(((0, 1),))
    most = 0
    for step in _boundaries(first, second):
        total = first.at(step) + second.at(step)
        if total < 1:
            raise InvalidSpec(
                f"The cutout schedules give no cutouts at all at step {step}; every step needs at least one."
            )
        most = max(most, total)
    if most > MAX_COUNT:
        raise InvalidSpec(f"The cutout schedules ask for {most} cutouts in a step; at most {MAX_COUNT} are allowed.")
    return most


def _boundaries(*schedules: Schedule) -> list[int]:
    """The steps where some schedule's count can change (every count of every schedule is seen at one of them)."""
    steps = {0}
    for schedule in schedules:
        at = 0
        for _, length in schedule.runs:
            at += length
            steps.add(at)
    return sorted(steps)


# -- what each CLIP costs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipCost:
    """One CLIP architecture: its input side, and per cutout its compute and activation memory relative to
    ViT-B/32's, and its weights (both towers, fp32)."""

    input_size: int
    compute: float
    activations: float
    weight_mb: int


# Measured on random-weight open_clip models (torch's FlopCounterMode over one image forward; bytes the autograd
# graph saves per cutout with the image requiring grad; parameters x 4 bytes). ViT-B/32: 8.7 GFLOP, 19 MB.
CLIP_COSTS: dict[str, ClipCost] = {
    "ViT-B-32": ClipCost(224, 1.0, 1.0, 605),
    "ViT-B-16": ClipCost(224, 3.86, 3.85, 598),
    "ViT-L-14": ClipCost(224, 17.8, 13.2, 1710),
    "ViT-L-14-336": ClipCost(336, 40.0, 29.6, 1712),
    "RN50": ClipCost(224, 1.40, 7.71, 408),
    "RN101": ClipCost(224, 2.24, 10.9, 479),
    "RN50x4": ClipCost(288, 4.87, 21.1, 713),
    "RN50x16": ClipCost(384, 17.1, 62.3, 1164),
}
UNKNOWN_CLIP = ClipCost(224, 1.0, 1.0, 605)  # a local architecture: priced as ViT-B/32, as before ensembles
DEFAULT_CUTN = 32
# The VQGAN decoder's forward and backward in units of one ViT-B/32 cutout (forward and backward): about 0.5 TFLOP
# at 256x256 against 17.5 GFLOP a cutout (engine/ENGINE.md's 1.06 TFLOP per step with 32 cutouts), per pixel.
DECODER_CUTOUTS_PER_PIXEL = 28.6 / (256 * 256)


def clip_cost(name: str) -> ClipCost:
    """The cost entry of a CLIP architecture (ViT-B/32's figures for one not in the table)."""
    return CLIP_COSTS.get(name, UNKNOWN_CLIP)


def members(spec) -> tuple[tuple[str, float], ...]:
    """The (CLIP name, weight) pairs guiding a spec: its perceptors, or its clip_model alone with weight 1."""
    return tuple(spec.perceptors) or ((spec.clip_model, 1.0),)


def mean_cutouts(spec) -> float:
    """Cutouts per step per CLIP model, averaged over the whole run (every stage)."""
    if spec.cut_overview is None and spec.cut_inner is None:
        return float(spec.cutn)
    steps = spec.total_steps
    overview = cutout_schedule(spec.cut_overview).mean(steps) if spec.cut_overview is not None else 0.0
    inner = cutout_schedule(spec.cut_inner).mean(steps) if spec.cut_inner is not None else 0.0
    return overview + inner


def cutout_cost(spec) -> float:
    """CLIP's work per step: cutout forwards weighted by each model's cost, over the default job's (ViT-B/32 x 32
    cutouts = 1.0)."""
    per_model = mean_cutouts(spec)
    return sum(per_model * clip_cost(name).compute for name, _ in members(spec)) / DEFAULT_CUTN


def relative_cost(spec) -> float:
    """Seconds per step of `spec` over those of the default job at the same size (VQGAN, ViT-B/32 x 32 cutouts):
    the decoder's share stays, CLIP's share scales with `cutout_cost`. Multiply a measured s/step by it for an
    ETA; multiply by the steps for a per-member cap."""
    decoder = DECODER_CUTOUTS_PER_PIXEL * spec.width * spec.height
    return (decoder + DEFAULT_CUTN * cutout_cost(spec)) / (decoder + DEFAULT_CUTN)


def memory_cutouts(spec) -> float:
    """The most cutouts of any step, counted in ViT-B/32 cutouts of activation memory over every model."""
    return spec.cutn * sum(clip_cost(name).activations for name, _ in members(spec))


def extra_weight_bytes(spec) -> int:
    """The CLIP weights a spec needs beyond the one ViT-B/32 that `engine.memory.MODELS_BYTES` counts."""
    total = sum(clip_cost(name).weight_mb for name, _ in members(spec))
    return max(0, total - CLIP_COSTS["ViT-B-32"].weight_mb) * 1_000_000


def score_model(spec) -> str:
    """The CLIP whose similarity is the score of a spec's images (`SCORE_CONVENTION`): its first."""
    return members(spec)[0][0]


# -- presets ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named quality: the CLIP models with their weights, the cutout schedules, the image losses, the steps."""

    name: str
    summary: str
    perceptors: tuple[tuple[str, float], ...]
    steps: int
    cutn: int = DEFAULT_CUTN  # where no schedule is given
    cut_overview: str | None = None
    cut_inner: str | None = None
    cut_pow: float = 1.0  # the size power of the inner (random) cutouts
    cut_gray: float = 0.0
    tv_scale: float = 0.0
    range_scale: float = 0.0
    sat_scale: float = 0.0

    def fields(self) -> dict:
        """The JobSpec fields this preset sets (the name included)."""
        return {
            "quality": self.name,
            "perceptors": self.perceptors,
            "clip_model": self.perceptors[0][0],
            "steps": self.steps,
            "cutn": self.cutn,
            "cut_overview": self.cut_overview,
            "cut_inner": self.cut_inner,
            "cut_pow": self.cut_pow,
            "cut_gray": self.cut_gray,
            "tv_scale": self.tv_scale,
            "range_scale": self.range_scale,
            "sat_scale": self.sat_scale,
        }


# draft is today's default job. normal and best follow Disco Diffusion (overview cutouts first for the composition,
# then inner cutouts for detail; a grey fraction; a range loss) and pixray's best ensemble (ViT-B/32, ViT-B/16,
# RN50x4). The loss scales are small on purpose: Disco's are relative to a CLIP scale of 5000 (range 150: 0.03).
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("draft", "ViT-B/32 alone, 32 cutouts: fast (today's default)", (("ViT-B-32", 1.0),), steps=300),
        Preset(
            "normal",
            "ViT-B/32 + ViT-B/16, overview then inner cutouts: about 2x draft per step",
            (("ViT-B-32", 1.0), ("ViT-B-16", 1.0)),
            steps=350,
            cut_overview="[12]*100+[4]*250",
            cut_inner="[4]*100+[12]*250",
            cut_pow=1.0,
            cut_gray=0.1,
            range_scale=0.03,
        ),
        Preset(
            "best",
            "ViT-B/32 + ViT-B/16 + RN50x4, scheduled cutouts, smoothing: about 3x draft per step",
            (("ViT-B-32", 1.0), ("ViT-B-16", 1.0), ("RN50x4", 1.0)),
            steps=400,
            cut_overview="[12]*100+[6]*100+[4]*200",
            cut_inner="[4]*100+[10]*100+[12]*200",
            cut_pow=1.2,
            cut_gray=0.15,
            tv_scale=0.05,
            range_scale=0.03,
            sat_scale=0.01,
        ),
    )
}
PRESET_ORDER = tuple(PRESETS)  # cheapest first


def preset(name: str) -> Preset:
    """The preset `name`; InvalidSpec naming the choices otherwise."""
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidSpec(f"Unknown quality {name!r}; choose one of {', '.join(PRESET_ORDER)}.")
    return PRESETS[name]


def rank(name: str) -> int:
    """A preset's place, cheapest first (draft 0): a server capped at "normal" allows rank <= rank("normal")."""
    preset(name)
    return PRESET_ORDER.index(name)


def capped(name: str, cap: str | None) -> str:
    """`name`, or `cap` where `name` costs more than a server allows."""
    return name if cap is None or rank(name) <= rank(cap) else preset(cap).name


def expand(name: str) -> dict:
    """The JobSpec fields of a preset (`JobSpec.with_quality` applies them)."""
    return preset(name).fields()


def required_clips() -> tuple[str, ...]:
    """Every CLIP some preset uses, in order of first use (what `python -m engine.models download --clip` needs)."""
    return tuple(dict.fromkeys(name for p in PRESETS.values() for name, _ in p.perceptors))
