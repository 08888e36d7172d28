"""The specs of the buttons that go on from a finished image: Reroll, Continue and Upscale."""

from __future__ import annotations

from engine.errors import InvalidSpec
from engine.spec import MAX_STEPS, JobSpec


def reroll_spec(spec: JobSpec, seed: int) -> JobSpec:
    """Same settings, new seed."""
    return spec.replace(seed=seed)


def continue_spec(spec: JobSpec, steps_done: int, more: int) -> JobSpec:
    """The same run, `more` steps beyond where it stopped. The last stage grows (`JobSpec.extended`), so an upscaled
    image keeps its upscale at the step it came; a run stopped before its end finishes what it planned first."""
    extra = steps_done + more - spec.total_steps
    if max(steps_done + more, spec.total_steps) > MAX_STEPS:
        raise InvalidSpec(f"This image cannot be continued any further ({MAX_STEPS:,} steps at most).")
    if extra > 0:
        return spec.extended(extra)
    if spec.upscales:  # stopped early: the rest of its stages are already more than `more`
        return spec
    return spec.replace(steps=steps_done + more)


def upscale_spec(spec: JobSpec, steps_done: int, steps: int) -> JobSpec:
    """The run as it ended (`steps_done`), then twice the size for `steps` more steps (InvalidSpec, a sentence, where
    it cannot: BigGAN, too many upscales, too large)."""
    if not spec.upscales and 0 < steps_done < spec.steps:  # stopped early: upscale what was shown
        spec = spec.replace(steps=steps_done)
    if spec.total_steps + steps > MAX_STEPS:
        raise InvalidSpec(f"This image has run too long to be upscaled ({MAX_STEPS:,} steps at most).")
    return spec.upscaled(steps)
