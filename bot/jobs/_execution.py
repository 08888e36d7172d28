"""One job's run through the backend: resume it from the right saved state, submit it, and record every event it
sends (progress to the presenter and the timelapse frames, snapshots to disk), until its result goes to posting or
its error becomes a sentence for the member."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from bot.backends import Backend, JobHandle
from bot.jobs._files import JobFiles, read_pictures
from bot.jobs._moderation import current_level, from_flagged, preview_passes
from bot.jobs._pace import Pace
from bot.jobs._posting import Posting
from bot.presenter import Presenter
from bot.timelapse import save_frame
from engine import quality
from engine.errors import EngineError, public_message
from engine.events import Finished, Progress, Snapshotted
from engine.snapshots import SnapshotHistory
from storage import Job, JobState, StorageError, Store

log = logging.getLogger(__name__)


class Execution:
    """Runs jobs through the backend and keeps the handle of each running one (`handles`: what cancel and steer reach);
    the presenter (the chat side) and `community` are set by the job service."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        files: JobFiles,
        pace: Pace,
        posting: Posting,
        snapshot_every: int,
        snapshot_budget: int,
    ) -> None:
        self.store, self.backend, self.files, self.pace, self.posting = store, backend, files, pace, posting
        self.snapshot_every, self.snapshot_budget = snapshot_every, snapshot_budget
        self.handles: dict[int, JobHandle] = {}  # running job id -> its handle
        self.presenter: Presenter | None = None
        self.community = None  # a bot.community.Community
        self.on_event = None  # told of each event of a run: (job, the step it started at, event); the bot's metrics

    async def run(self, job: Job) -> None:
        """Run a queued job to its end: its result posted (see `Posting.finish`), or its failure recorded and told.
        A stop (cancellation) or a broken database propagates and keeps the frames: the job resumes (or is posted)
        at the next start."""
        image_path = self.files.image(job.id)
        resume = await self._resume_from(job)
        start = int(resume.stem) if resume is not None and resume.stem.isdigit() else 0  # snapshots: `000150.pt`
        job = await self.store.set_state(job.id, JobState.RUNNING, detail=f"resume from {resume}" if resume else None)
        history = (
            SnapshotHistory(self.files.snapshot_dir(job.id), self.snapshot_every, self.snapshot_budget)
            if self.snapshot_every
            else None
        )
        try:
            job = await self._with_current_level(job)
            spec = job.spec
            status = await self.presenter.job_started(job)
            if status is not None and status != job.status_message_id:
                job = await self.store.update_job(job.id, status_message_id=status)
            state = await asyncio.to_thread(resume.read_bytes) if resume is not None else None
            handle = self.backend.submit(job.id, spec, state, self.snapshot_every)
            if self.backend.remote:  # its engine cannot read our disk: the pictures travel
                handle.files = await asyncio.to_thread(read_pictures, spec)
            self.handles[job.id] = handle
            hidden = await from_flagged(self.store, job)
            keep_frames = not hidden and await self.posting.wants_timelapse(job)
            cost = quality.relative_cost(spec)
            self.pace.progress[job.id] = (job.author_id, job.steps_done, spec.total_steps, cost)
            async for event in handle.events():
                if self.on_event is not None:
                    self.on_event(job, start, event)
                if isinstance(event, Progress):
                    if hidden or not preview_passes(spec.moderation, event):  # no preview of it is shown or kept
                        event = replace(event, preview=None)
                    self.pace.record(event, job.steps_done, cost)
                    self.pace.progress[job.id] = (job.author_id, event.step, event.steps, cost)
                    job = await self.store.update_job(job.id, steps_done=event.step)
                    if keep_frames and event.preview is not None:
                        await asyncio.to_thread(save_frame, self.files.frames(job.id), event.step, event.preview)
                    await self.presenter.job_progress(job, event)
                elif isinstance(event, Snapshotted) and history is not None:
                    path = await asyncio.to_thread(history.save, event.step, event.state, event.thumbnail)
                    job = await self.store.update_job(job.id, snapshot_path=str(path))
                elif isinstance(event, Finished):
                    await self.posting.finish(job, event.result, image_path)
                    return
            raise RuntimeError("the backend ended a job without a result")
        except EngineError as exc:
            log.warning("job %d failed: %s", job.id, exc)
            await self.posting.fail(job, public_message(exc), type(exc).__name__)
        except (asyncio.CancelledError, StorageError):
            raise  # a stop keeps the frames: the job resumes (or is posted) at the next start
        except Exception:
            log.exception("job %d failed", job.id)
            await self.posting.fail(
                job, "Something went wrong on our side while making this image; the error was logged."
            )
        shutil.rmtree(self.files.frames(job.id), ignore_errors=True)

    async def _resume_from(self, job: Job) -> Path | None:
        """The saved state a job starts from: its own newest (a restart: continue where it was), else for a Continue
        or an Upscale its parent's; None to start afresh."""
        if job.snapshot_path and Path(job.snapshot_path).is_file():
            return Path(job.snapshot_path)
        if job.kind in ("continue", "upscale") and job.parent_id is not None:
            parent = await self.store.get_job(job.parent_id)
            if parent is not None and parent.snapshot_path and Path(parent.snapshot_path).is_file():
                return Path(parent.snapshot_path)
        return None

    async def _with_current_level(self, job: Job) -> Job:
        """The job about to start, its spec raised to the server's current level if that is stricter, so that the
        engine scores its images (and previews) as the server now asks."""
        level = await current_level(job, self.community)
        if level == job.spec.moderation:
            return job
        return await self.store.update_job(job.id, spec_json=job.spec.replace(moderation=level).to_json())
