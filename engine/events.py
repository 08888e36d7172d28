"""The events of a run, from the loop to whoever runs it (the CLI, the embedded backend, the Celery workers): the
one vocabulary of progress and results. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.spec import JobSpec


@dataclass(frozen=True)
class Progress:
    """A report from a running job; `preview` is a PNG of the current image when one was made."""

    step: int
    steps: int
    loss: float
    losses: tuple[float, ...]
    elapsed: float
    preview: bytes | None = field(default=None, repr=False)
    width: int = 0
    height: int = 0
    similarities: tuple[float, ...] = ()  # mean cosine similarity of this step's cutouts to each text prompt
    prompt: str = ""  # the prompt aimed at now (differs from the spec's once the run was steered)
    unsafe: float | None = None  # the preview's unsafe probability, where the spec's moderation checks previews
    # An animation's frame being made, counted from 0 ("frame {frame + 1} of {frames}"), and its frame count; both 0
    # for a still image. `step` and `steps` count every frame's steps.
    frame: int = 0
    frames: int = 0


@dataclass(frozen=True)
class Result:
    """A finished (or stopped) job: the PNG with its recipe, the real size and the CLIP score per text prompt."""

    spec: JobSpec
    image: bytes = field(repr=False)
    width: int
    height: int
    steps_done: int
    scores: tuple[tuple[str, float], ...]
    elapsed: float
    cancelled: bool = False
    # The image's unsafe probability and the unsafe description it looked most like (engine.moderation_check),
    # where the spec's moderation checks images; None where it does not. `engine.moderation.decide` turns them into
    # an action.
    unsafe: float | None = None
    unsafe_label: str | None = None
    # An animation (spec.animation): its MP4 (H.264, yuv420p, at most engine.animation.MAX_VIDEO_BYTES; fit it to an
    # upload limit with engine.video.fit_mp4), a looping WebP preview (None where it would not fit in
    # engine.animation.PREVIEW_BYTES) and how many frames they hold (a stopped animation keeps those it finished, or
    # its first frame so far). `image` is the last frame's PNG with the recipe. None, None, 0 for a still image.
    video: bytes | None = field(default=None, repr=False)
    preview_animation: bytes | None = field(default=None, repr=False)
    frames_done: int = 0

    @property
    def score(self) -> float:
        """Mean cosine similarity over the positively weighted text prompts (the leaderboard's number)."""
        weights = {p.text: p.weight for p in self.spec.prompts}
        good = [s for text, s in self.scores if weights.get(text, 1.0) > 0]
        return sum(good) / len(good) if good else 0.0


# -- what a run tells its owner: the one event vocabulary of the loop, the backends and the bot ----------------
@dataclass(frozen=True)
class Snapshotted:
    """The run's state at `step` (torch.save bytes; `engine.run.load_snapshot` reads them) and a small WebP
    thumbnail: enough to continue exactly from there on any host."""

    step: int
    state: bytes = field(repr=False)
    thumbnail: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Finished:
    """The run ended; `result.cancelled` says whether it was stopped early."""

    result: Result


@dataclass(frozen=True)
class Failed:
    """The run could not go on; `error` is an `EngineError` (a sentence for the member) or another exception."""

    error: BaseException


Event = Progress | Snapshotted | Finished | Failed
