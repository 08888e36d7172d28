"""From a finished run to a posted image: save it, record the output check's verdict, post it, then the copy by DM and
the timelapse. A job is `posting` until its message exists and `done` after, so a stop in between leaves it to be
posted again at the next start (never lost, never posted twice)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

from bot.jobs._files import JobFiles
from bot.jobs._moderation import current_level, verdict, verdict_line
from bot.presenter import Presenter
from bot.timelapse import frame_paths
from engine.events import Result
from engine.files import write_atomically
from storage import Job, JobKind, JobState, StorageError, Store

log = logging.getLogger(__name__)


class Posting:
    """Records and posts what jobs made, through the presenter (the chat side, set by the job service as the imagine
    cog loads); `community` (also set by the job service) says each server's level and who wants copies by DM."""

    def __init__(self, store: Store, files: JobFiles, *, timelapse: bool) -> None:
        self.store, self.files = store, files
        self.timelapse = timelapse  # the bot's default; a server's setting wins
        self.presenter: Presenter | None = None
        self.community = None  # a bot.community.Community

    async def finish(self, job: Job, result: Result, image_path: Path) -> None:
        """Save the image, then post it: the job is `posting` until its message exists, `done` after, so a stop in
        between leaves it for `repost` (never lost, never posted twice)."""
        await asyncio.to_thread(write_atomically, image_path, result.image)
        if result.video is not None:  # an animation: kept beside the image, so a repost after a stop has it too
            await asyncio.to_thread(write_atomically, self.files.video(job.id), result.video)
            if result.preview_animation is not None:
                await asyncio.to_thread(write_atomically, self.files.video(job.id, "webp"), result.preview_animation)
        fields = dict(
            image_path=str(image_path),
            steps_done=result.steps_done,
            width=result.width,
            height=result.height,
            score=result.score,
            scores_json=json.dumps(dict(result.scores)),
        )
        decided = verdict(await current_level(job, self.community), result)
        if decided is not None:
            fields.update(moderation=decided.action, unsafe=decided.unsafe)
        if result.cancelled:
            job = await self.store.set_state(job.id, JobState.CANCELLED, detail="cancelled while running", **fields)
            shutil.rmtree(self.files.frames(job.id), ignore_errors=True)
            await self.presenter.job_cancelled(job, result)
            return
        job = await self.store.set_state(job.id, JobState.POSTING, **fields)
        if decided is not None:
            await self.store.add_event(job.id, "moderation", verdict_line(decided))
        try:
            job = await self.post_result(job, result, result.image)
        except StorageError:
            raise
        except Exception:  # Discord refused or failed: the image is safe; post it again later, not "failed"
            log.exception("could not post job %d; it stays to be posted again", job.id)
            return
        job = await self.mark_done(job)
        await self.deliver_by_dm(job, result.image)
        await self.post_timelapse(job, result.image)
        shutil.rmtree(self.files.frames(job.id), ignore_errors=True)

    async def repost(self, job_id: int) -> Job | None:
        """Finish a job left in the posting state: record its post if one exists (its reply was lost), else post it
        from its saved image; the job once done, or None if there was nothing to finish (or its image was lost: the
        job then fails)."""
        job = await self.store.get_job(job_id)
        if job is None or job.state != JobState.POSTING:
            return None
        found = await self.presenter.find_result(job)
        if found is not None:
            log.info("job %d was already posted (message %d)", job.id, found)
            job = await self.store.update_job(job.id, result_message_id=found)
        else:
            image_path = Path(job.image_path or self.files.image(job.id))
            if not image_path.is_file():
                await self.fail(job, "The finished image was lost before it could be posted; try Reroll.")
                return None
            image = await asyncio.to_thread(image_path.read_bytes)
            result = await asyncio.to_thread(_stored_result, job, image, self.files)
            job = await self.post_result(job, result, image)
        job = await self.mark_done(job)
        if found is None:
            await self.post_timelapse(job, image)
        shutil.rmtree(self.files.frames(job.id), ignore_errors=True)
        return job

    async def fail(self, job: Job, message: str, detail: str = "internal") -> None:
        """Record the job as failed with `message` (a sentence for the member) and tell its thread, best effort."""
        job = await self.store.set_state(job.id, JobState.FAILED, detail=detail, error=message)
        try:
            await self.presenter.job_failed(job, message)
        except StorageError:
            raise
        except Exception:  # the failure is recorded; telling the thread is best effort
            log.exception("could not report the failure of job %d", job.id)

    async def post_result(self, job: Job, result: Result, image: bytes) -> Job:
        """Post the final image and record its message (a candidate has none: its tournament shows it)."""
        message_id = await self.presenter.job_finished(job, result, image)
        if message_id is None:
            return job
        return await self.store.update_job(job.id, result_message_id=message_id)

    async def mark_done(self, job: Job) -> Job:
        """posting -> done, keeping the time the image was finished (the board's periods count from it)."""
        kept = {"finished_at": job.finished_at} if job.finished_at else {}
        return await self.store.set_state(job.id, JobState.DONE, **kept)

    async def deliver_by_dm(self, job: Job, image: bytes) -> None:
        """A copy by DM for members who asked (`/settings me`), best effort: the image is posted already."""
        if job.guild_id is None or job.kind == JobKind.CANDIDATE or job.moderation not in (None, "post"):
            return
        if self.community is None or not await self.community.dm_results(job.author_id):
            return
        try:
            await self.presenter.job_by_dm(job, image)
        except StorageError:
            raise
        except Exception:
            log.exception("could not send job %d by DM", job.id)

    async def wants_timelapse(self, job: Job) -> bool:
        """The server's choice, else the bot's."""
        chosen = (await self.store.guild_settings(job.guild_id)).timelapse
        return self.timelapse if chosen is None else chosen

    async def post_timelapse(self, job: Job, final_png: bytes) -> None:
        """Post the run's animation and keep a copy of it (both best effort: the image itself is posted)."""
        frames = frame_paths(self.files.frames(job.id))
        if frames and job.moderation in (None, "post") and await self.wants_timelapse(job):
            try:
                shown = await self.presenter.job_timelapse(job, frames, final_png)
                if shown is not None:
                    message_id, made = shown
                    await self.store.update_job(job.id, timelapse_message_id=message_id)
                    if made.ext in ("webp", "gif"):
                        await asyncio.to_thread(write_atomically, self.files.timelapse(job.id, made.ext), made.data)
            except StorageError:
                raise
            except Exception:  # the image is posted; the timelapse is a bonus
                log.exception("could not post the timelapse of job %d", job.id)


def _stored_result(job: Job, image: bytes, files: JobFiles) -> Result:
    """The result of a finished job as recorded in the store and on disk (to post it again after a restart), an
    animation's video and preview included."""
    elapsed = max(0.0, (job.finished_at or 0.0) - (job.started_at or job.finished_at or 0.0))
    spec, scores = job.spec, tuple(job.scores.items())
    video, preview = files.video(job.id), files.video(job.id, "webp")
    return Result(
        spec,
        image,
        job.width or 0,
        job.height or 0,
        job.steps_done,
        scores,
        elapsed,
        video=video.read_bytes() if video.is_file() else None,
        preview_animation=preview.read_bytes() if preview.is_file() else None,
        frames_done=spec.animation.frames_done_at(job.steps_done, spec.steps) if spec.animation else 0,
    )
