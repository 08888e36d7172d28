"""The job service: submit, queue fairly, run through a backend, record every transition, recover after a crash.

No idle background task: a submit or a finished job "pumps" the queue, which starts the next jobs as tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.backends import Backend, Finished, Snapshotted
from bot.presenter import Presenter
from bot.queue import Entry, FairQueue
from bot.timelapse import frame_paths, save_frame
from engine.errors import EngineError, InvalidSpec, public_message
from engine.spec import MAX_STEPS, JobSpec, Progress, Result
from storage import Job, JobState, Store

log = logging.getLogger(__name__)

DEFAULT_SECONDS_PER_STEP = 0.5


@dataclass(frozen=True)
class RunningInfo:
    job_id: int
    author_id: int
    step: int
    steps: int


class JobService:
    """Owns the waiting line and the running jobs; the cogs call it, the backend does the work."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        presenter: Presenter,
        data_dir: Path,
        *,
        max_queued_per_user: int = 3,
        max_queue: int = 50,
        max_concurrent: int = 1,
        timelapse: bool = True,
    ) -> None:
        self.store, self.backend, self.presenter = store, backend, presenter
        self.data_dir = Path(data_dir)
        self.queue = FairQueue(max_queued_per_user, max_queue)
        self.max_concurrent = max_concurrent
        self.timelapse = timelapse
        self.ended_hooks: list = []  # async callables(job), run after each job reaches a final state
        self._handles: dict[int, object] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._progress: dict[int, tuple[int, int, int]] = {}  # job id -> (author, step, steps)
        self.seconds_per_step = DEFAULT_SECONDS_PER_STEP

    # -- submitting -----------------------------------------------------------------------------------------
    async def submit(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        author_id: int,
        spec: JobSpec,
        kind: str = "new",
        parent_id: int | None = None,
        thread_id: int | None = None,
        resume_from: Path | None = None,
        tournament: tuple[int, int] | None = None,
        check_limits: bool = True,
    ) -> Job:
        """Record and queue a job (raises QueueFull). It starts on the next `pump()`; with `resume_from` (a
        snapshot of another job: a branch) it starts from that state. `tournament` = (tournament id, candidate
        number); `check_limits=False` skips the waiting-line caps (a tournament's later candidates, its winner).
        A job that cannot fit the backend's memory (`backend.budget`, an `engine.memory.Budget`) is an InvalidSpec."""
        budget = getattr(self.backend, "budget", None)
        if budget is not None:  # refused now, not out of memory later in the thread
            budget.check(spec.width, spec.height, spec.cutn)
        if check_limits:
            cap = None
            if guild_id is not None:
                cap = (await self.store.guild_settings(guild_id))["max_queued_per_user"]
            self.queue.check(author_id, cap)
        job = await self.store.create_job(
            guild_id=guild_id,
            channel_id=channel_id,
            author_id=author_id,
            spec_json=spec.to_json(),
            kind=kind,
            parent_id=parent_id,
            tournament_id=tournament[0] if tournament else None,
            candidate=tournament[1] if tournament else None,
        )
        if thread_id is not None:
            job = await self.store.update_job(job.id, thread_id=thread_id)
        if resume_from is not None:
            job = await self.store.update_job(job.id, snapshot_path=str(resume_from))
        self.queue.push(Entry(job.id, author_id), force=True)
        return job

    def pump(self) -> None:
        """Start waiting jobs while there is room."""
        while len(self._tasks) < self.max_concurrent:
            entry = self.queue.pop()
            if entry is None:
                return
            self._tasks[entry.job_id] = asyncio.create_task(self._run(entry.job_id), name=f"job-{entry.job_id}")

    async def recover(self) -> int:
        """After a restart: jobs that were running go first (resuming from their snapshot), then the queued ones."""
        count = 0
        for job in await self.store.jobs_in_state(JobState.RUNNING):
            await self.store.set_state(job.id, JobState.QUEUED, detail="requeued after restart")
            self.queue.push(Entry(job.id, job.author_id), force=True)
            count += 1
        for job in await self.store.jobs_in_state(JobState.QUEUED):
            if job.id not in self.queue:
                self.queue.push(Entry(job.id, job.author_id), force=True)
                count += 1
        if count:
            log.info("recovered %d jobs", count)
        return count

    # -- cancelling -----------------------------------------------------------------------------------------
    async def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job at once, or ask a running one to stop after its current step."""
        if self.queue.remove(job_id):
            job = await self.store.set_state(job_id, JobState.CANCELLED, detail="cancelled while waiting")
            await self.presenter.job_cancelled(job, None)
            return True
        handle = self._handles.get(job_id)
        if handle is not None:
            handle.cancel()
            return True
        return False

    # -- steering -----------------------------------------------------------------------------------------
    async def steer(self, job_id: int, text: str) -> JobSpec | None:
        """Aim a running job at `text` from its next step; the job's spec records the change (with its step), so
        Reroll, Continue and a restart replay it. None if the job is not running."""
        handle = self._handles.get(job_id)
        if handle is None:
            return None
        spec_json = await handle.steer(text)
        if spec_json is None:
            return None
        await self.store.update_job(job_id, spec_json=spec_json)
        return JobSpec.from_json(spec_json)

    # -- reports --------------------------------------------------------------------------------------------
    def running(self) -> list[RunningInfo]:
        return [RunningInfo(j, a, s, n) for j, (a, s, n) in self._progress.items()]

    async def eta(self, job_id: int) -> float:
        """Seconds until `job_id` is likely to finish, from the steps ahead of it and the measured pace."""
        steps = sum(n - s for _, s, n in self._progress.values())
        for entry in self.queue.order():
            job = await self.store.get_job(entry.job_id)
            if job is not None:
                spec = json.loads(job.spec_json)
                steps += spec["steps"] - job.steps_done
            if entry.job_id == job_id:
                break
        return steps * self.seconds_per_step / max(1, self.max_concurrent)

    async def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- running --------------------------------------------------------------------------------------------
    def _paths(self, job_id: int) -> tuple[Path, Path]:
        return self.data_dir / "images" / f"{job_id}.png", self.data_dir / "snapshots" / str(job_id)

    def snapshots(self, job_id: int) -> list[tuple[int, Path, Path | None]]:
        """The saved states of a job, oldest first: (step, snapshot file, thumbnail file or None). Files are named
        by step (see engine.snapshots)."""
        directory = self._paths(job_id)[1]
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.glob("*.pt")):
            if path.stem.isdigit():
                thumb = path.with_suffix(".webp")
                found.append((int(path.stem), path, thumb if thumb.is_file() else None))
        return found

    def _frames(self, job_id: int) -> Path:
        return self.data_dir / "frames" / str(job_id)

    async def _run(self, job_id: int) -> None:
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.state != JobState.QUEUED:
                return
            await self._execute(job)
            ended = await self.store.get_job(job_id)
            for hook in self.ended_hooks:
                try:
                    await hook(ended)
                except Exception:
                    log.exception("an end-of-job hook failed for job %d", job_id)
        finally:
            self._tasks.pop(job_id, None)
            self._handles.pop(job_id, None)
            self._progress.pop(job_id, None)
            self.pump()

    async def _execute(self, job: Job) -> None:
        image_path, snapshot_path = self._paths(job.id)
        resume = None
        if job.snapshot_path and Path(job.snapshot_path).is_file():
            resume = Path(job.snapshot_path)  # a restart: continue where it was
        elif job.kind == "continue" and job.parent_id is not None:
            parent = await self.store.get_job(job.parent_id)
            if parent is not None and parent.snapshot_path and Path(parent.snapshot_path).is_file():
                resume = Path(parent.snapshot_path)
        job = await self.store.set_state(job.id, JobState.RUNNING, detail=f"resume from {resume}" if resume else None)
        try:
            spec = JobSpec.from_json(job.spec_json)
            job = await self.presenter.job_started(job)
            handle = self.backend.submit(job.id, spec, snapshot_path, resume)
            self._handles[job.id] = handle
            self._progress[job.id] = (job.author_id, job.steps_done, spec.steps)
            async for event in handle.events():
                if isinstance(event, Progress):
                    self._record_pace(event, job.steps_done)
                    self._progress[job.id] = (job.author_id, event.step, event.steps)
                    job = await self.store.update_job(job.id, steps_done=event.step)
                    if self.timelapse and event.preview is not None:
                        await asyncio.to_thread(save_frame, self._frames(job.id), event.step, event.preview)
                    await self.presenter.job_progress(job, event)
                elif isinstance(event, Snapshotted):
                    job = await self.store.update_job(job.id, snapshot_path=str(event.path))
                elif isinstance(event, Finished):
                    await self._finish(job, event.result, image_path)
                    return
            raise RuntimeError("the backend ended a job without a result")
        except EngineError as exc:
            log.warning("job %d failed: %s", job.id, exc)
            await self._fail(job, public_message(exc), type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %d failed", job.id)
            await self._fail(job, "Something went wrong on our side while making this image; the error was logged.")
        shutil.rmtree(self._frames(job.id), ignore_errors=True)

    async def _fail(self, job: Job, message: str, detail: str = "internal") -> None:
        job = await self.store.set_state(job.id, JobState.FAILED, detail=detail, error=message)
        try:
            await self.presenter.job_failed(job, message)
        except Exception:  # the failure is recorded; telling the thread is best effort
            log.exception("could not report the failure of job %d", job.id)

    def _record_pace(self, progress: Progress, start_step: int) -> None:
        done = progress.step - start_step
        if done > 0 and progress.elapsed > 0:
            measured = progress.elapsed / done
            self.seconds_per_step = 0.8 * self.seconds_per_step + 0.2 * measured

    async def _finish(self, job: Job, result: Result, image_path: Path) -> None:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(result.image)
        fields = dict(
            image_path=str(image_path),
            steps_done=result.steps_done,
            width=result.width,
            height=result.height,
            score=result.score,
            scores_json=json.dumps(dict(result.scores)),
        )
        if result.cancelled:
            job = await self.store.set_state(job.id, JobState.CANCELLED, detail="cancelled while running", **fields)
            await self.presenter.job_cancelled(job, result)
            return
        job = await self.store.set_state(job.id, JobState.DONE, **fields)
        job = await self.presenter.job_finished(job, result, result.image)  # records the result message id
        frames = frame_paths(self._frames(job.id))
        if self.timelapse and frames:
            try:
                await self.presenter.job_timelapse(job, frames, result.image)
            except Exception:  # the image is posted; the timelapse is a bonus
                log.exception("could not post the timelapse of job %d", job.id)


def reroll_spec(spec: JobSpec, seed: int) -> JobSpec:
    """Same settings, new seed."""
    return spec.replace(seed=seed)


def continue_spec(spec: JobSpec, steps_done: int, more: int) -> JobSpec:
    """The same run, `more` steps further."""
    total = steps_done + more
    if total > MAX_STEPS:
        raise InvalidSpec(f"This image cannot be continued any further ({MAX_STEPS:,} steps at most).")
    return spec.replace(steps=total)
