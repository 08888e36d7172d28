"""The output check as the job service applies it: the level a job answers to now, whether its previews and saved
states may be shown, and the verdict on its result (failing closed), with the line the job's history records."""

from __future__ import annotations

from engine.events import Progress, Result
from engine.moderation import LEVELS, checks_images, checks_previews, decide, valid_score
from storage import Job, JobKind, JobState, Store


async def current_level(job: Job, community) -> str:
    """The output check a job answers to: its spec's level, or the server's level now if that is stricter (a server
    that raised its level while the job waited or ran). `community` is a `bot.community.Community`, or None."""
    found = job.spec.moderation
    if community is not None:
        now = community.moderation(await community.settings(job.guild_id))
        found = max(found, now, key=LEVELS.index)
    return found


async def from_flagged(store: Store, job: Job) -> bool:
    """Whether `job` goes on from a picture the output check spoilered or withheld (a Continue, Upscale or Branch of
    one, a tournament winner): its previews and frames are never shown, only its own checked result."""
    if job.parent_id is None or job.kind not in (JobKind.CONTINUE, JobKind.UPSCALE, JobKind.BRANCH):
        return False
    parent = await store.get_job(job.parent_id)
    return parent is not None and parent.moderation not in (None, "post")


def shows_states(job: Job) -> bool:
    """Whether `job`'s saved states may be shown (Branch's thumbnails): only where its finished picture was posted as
    it is; the output check never judged the states themselves."""
    return (
        job.state in (JobState.DONE, JobState.POSTING)
        and job.deleted_at is None
        and job.moderation in (None, "post")
        and not checks_previews(job.spec.moderation)  # at strict, states are shown only as checked previews
    )


def preview_passes(level: str, progress: Progress) -> bool:
    """Whether a preview may be shown and kept for the timelapse: always where the level does not check previews;
    where it does (strict), only one scored and not flagged (no score counts as flagged)."""
    if progress.preview is None or not checks_previews(level):
        return True
    return decide(level, valid_score(progress.unsafe)).action == "post"


def verdict(level: str, result: Result):
    """The output check's verdict on a result, failing closed: where the job's level checks images, a result that
    carries no usable score (a worker that skipped the check, a forged event, a NaN) counts as certainly unsafe.
    None where the level is "off" and no score came."""
    if not checks_images(level):
        return decide(level, result.unsafe, result.unsafe_label) if result.unsafe is not None else None
    unsafe = valid_score(result.unsafe)  # None, NaN or out of range: 1.0
    label = result.unsafe_label if unsafe == result.unsafe else "no usable score from the output check"
    return decide(level, unsafe, label)


def verdict_line(verdict) -> str:
    """The moderation event's detail: what was decided, on what score, under which level."""
    label = f" ({verdict.label})" if verdict.label else ""
    threshold = f" against {verdict.threshold:.2f}" if verdict.threshold is not None else ""
    return f"{verdict.action}: unsafe {verdict.unsafe:.3f}{threshold} at level {verdict.level}{label}"
