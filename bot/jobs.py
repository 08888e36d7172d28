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

from bot.backends import Backend
from bot.presenter import Presenter
from bot.queue import Entry, FairQueue, QueueFull, member_full, queue_full
from bot.timelapse import frame_paths, save_frame
from engine.errors import EngineError, InvalidSpec, public_message
from engine.snapshots import SnapshotHistory
from engine.spec import MAX_STEPS, Finished, JobSpec, Progress, Result, Snapshotted
from storage import Job, JobState, StorageError, Store

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
        max_concurrent: int | None = None,
        timelapse: bool = True,
        snapshot_every: int = 25,
        snapshot_budget: int = 6,
    ) -> None:
        self.store, self.backend, self.presenter = store, backend, presenter
        self.data_dir = Path(data_dir)
        self.queue = FairQueue(max_queued_per_user, max_queue)
        self._max_concurrent = max_concurrent  # None: as many as the backend has room for, asked each time
        if hasattr(backend, "on_capacity"):
            backend.on_capacity = self.pump  # a worker joined: start what waits
        self.timelapse = timelapse
        self.snapshot_every, self.snapshot_budget = snapshot_every, snapshot_budget
        self.ended_hooks: list = []  # async callables(job), run after each job reaches a final state
        self._handles: dict[int, object] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._progress: dict[int, tuple[int, int, int]] = {}  # job id -> (author, step, steps)
        self._waiting_steps: dict[int, int] = {}  # queued job id -> steps it still has to run
        self._reposts: dict[int, asyncio.Task] = {}  # finished jobs whose result is being posted again
        self._closing = False
        self.seconds_per_step = DEFAULT_SECONDS_PER_STEP
        # called with the StorageError when the database fails under a job; the bot stops on it
        self.on_storage_error = lambda exc: log.critical("%s", exc)

    @property
    def max_concurrent(self) -> int:
        """Jobs run at once: the setting, else the backend's capacity (a distributed backend's changes)."""
        return self._max_concurrent or self.backend.capacity

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
        check_limits: bool = True,
    ) -> Job:
        """Record and queue a job (raises QueueFull). It starts on the next `pump()`; with `resume_from` (a
        snapshot of another job: a branch) it starts from that state. The caps are checked in the same store
        statement that records the job, so simultaneous submissions cannot overshoot them; `check_limits=False`
        skips them (a tournament's winner, which takes its tournament's place). A job that cannot fit the
        backend's memory (`backend.budget`, an `engine.memory.Budget`) is an InvalidSpec."""
        budget = getattr(self.backend, "budget", None)
        if budget is not None:  # refused now, not out of memory later in the thread
            scale = 2 ** len(spec.upscales)  # the last stage is the largest
            budget.check(spec.width * scale, spec.height * scale, spec.cutn)
        cap, total = await self.limits(guild_id) if check_limits else (None, None)
        job = await self.store.admit_job(
            guild_id=guild_id,
            channel_id=channel_id,
            author_id=author_id,
            spec_json=spec.to_json(),
            kind=kind,
            parent_id=parent_id,
            max_waiting=cap,
            max_total=total,
        )
        if job is None:
            raise await self.refusal(author_id, cap, total)
        if thread_id is not None:
            job = await self.store.update_job(job.id, thread_id=thread_id)
        if resume_from is not None:
            job = await self.store.update_job(job.id, snapshot_path=str(resume_from))
        self.enqueue(job)
        return job

    async def limits(self, guild_id: int | None) -> tuple[int, int]:
        """(waiting jobs allowed per member, here; waiting jobs allowed in all)."""
        cap = None
        if guild_id is not None:
            cap = (await self.store.guild_settings(guild_id)).max_queued_per_user
        return cap or self.queue.max_per_user, self.queue.max_total

    async def refusal(self, author_id: int, cap: int, total: int, count: int = 1) -> QueueFull:
        """The error for `count` jobs the store refused: which cap they hit, in the member's words."""
        mine, everyone = await self.store.waiting(author_id)
        if count > 1 and mine + count > cap:
            return QueueFull(
                f"A tournament of {count} seeds needs {count} places in your waiting line; you have "
                f"{max(0, cap - mine)} free (at most {cap} images waiting here). Pick fewer seeds, or wait until "
                "some of your images start."
            )
        return member_full(cap) if mine + count > cap or everyone + count <= total else queue_full(total)

    def enqueue(self, job: Job) -> None:
        """Put a recorded job in the waiting line (the store has already admitted it)."""
        self.queue.push(Entry(job.id, job.author_id), force=True)
        self._waiting_steps[job.id] = max(0, JobSpec.from_json(job.spec_json).total_steps - job.steps_done)

    def pump(self) -> None:
        """Start waiting jobs while there is room (none once closing); with a backend whose room changes, ask it
        to say when it grows."""
        while not self._closing and len(self._tasks) < self.max_concurrent:
            entry = self.queue.pop()
            if entry is None:
                return
            self._waiting_steps.pop(entry.job_id, None)
            self._tasks[entry.job_id] = asyncio.create_task(self._run(entry.job_id), name=f"job-{entry.job_id}")
        if len(self.queue) and not self._closing and hasattr(self.backend, "need_capacity"):
            self.backend.need_capacity(lambda: bool(len(self.queue)) and len(self._tasks) >= self.max_concurrent)

    async def recover(self) -> int:
        """After a restart: finished jobs whose result message may be missing are posted (once), jobs that were
        running go first (resuming from their snapshot), then the queued ones. Nothing new is created here: every
        row was admitted under the caps when it was recorded."""
        count = await self.repost_pending()
        for job in await self.store.jobs_in_state(JobState.RUNNING):
            await self.store.set_state(job.id, JobState.QUEUED, detail="requeued after restart")
            self.enqueue(job)
            count += 1
        for job in await self.store.jobs_in_state(JobState.QUEUED):
            if job.id not in self.queue:
                self.enqueue(job)
                count += 1
        if count:
            log.info("recovered %d jobs", count)
        return count

    async def repost_pending(self) -> int:
        """Finish every job left in the posting state: those with nothing to post at once, the others in tasks
        that first look for a post whose reply was lost (so nothing is posted twice)."""
        count = 0
        for job in await self.store.jobs_in_state(JobState.POSTING):
            if job.id in self._tasks or job.id in self._reposts:
                continue
            count += 1
            if job.kind == "candidate" or job.result_message_id is not None:
                await self._mark_done(job)
            else:
                self._reposts[job.id] = asyncio.create_task(self._repost(job.id), name=f"repost-{job.id}")
        return count

    async def _repost(self, job_id: int) -> None:
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.state != JobState.POSTING:
                return
            found = await self.presenter.find_result(job)
            if found is not None:
                log.info("job %d was already posted (message %d)", job.id, found)
                job = await self.store.update_job(job.id, result_message_id=found)
            else:
                image_path = Path(job.image_path or self._paths(job.id)[0])
                if not image_path.is_file():
                    await self._fail(job, "The finished image was lost before it could be posted; try Reroll.")
                    return
                image = await asyncio.to_thread(image_path.read_bytes)
                job = await self.presenter.job_finished(job, _stored_result(job, image), image)
            job = await self._mark_done(job)
            if found is None:
                await self._post_timelapse(job, image)
            shutil.rmtree(self._frames(job.id), ignore_errors=True)
            await self._ended(job)
        except StorageError as exc:
            self.on_storage_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not post job %d; it stays to be posted at the next start", job_id)
        finally:
            self._reposts.pop(job_id, None)

    async def _mark_done(self, job: Job) -> Job:
        """posting -> done, keeping the time the image was finished (the board's periods count from it)."""
        kept = {"finished_at": job.finished_at} if job.finished_at else {}
        return await self.store.set_state(job.id, JobState.DONE, **kept)

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

    def etas(self) -> dict[int, float]:
        """Seconds until each waiting job is likely to finish: the steps ahead of it (running jobs first, then the
        waiting line in order) at the measured pace. One pass, no database reads."""
        steps = sum(n - s for _, s, n in self._progress.values())
        rate = self.seconds_per_step / max(1, self.max_concurrent)
        found = {}
        for entry in self.queue.order():
            steps += self._waiting_steps.get(entry.job_id, 0)
            found[entry.job_id] = steps * rate
        return found

    async def eta(self, job_id: int) -> float:
        """Seconds until `job_id` is likely to finish (a running job: its own remaining steps and those before)."""
        etas = self.etas()
        if job_id in etas:
            return etas[job_id]
        steps = sum(n - s for _, s, n in self._progress.values())
        return steps * self.seconds_per_step / max(1, self.max_concurrent)

    async def close(self) -> None:
        self._closing = True
        if not getattr(self.backend, "remote", False):  # remote jobs go on without us; a restart reads on
            for handle in self._handles.values():
                handle.cancel()
        tasks = [*self._tasks.values(), *self._reposts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
            await self._ended(await self.store.get_job(job_id))
        except StorageError as exc:
            self._closing = True  # the next job would meet the same broken database
            self.on_storage_error(exc)
        finally:
            self._tasks.pop(job_id, None)
            self._handles.pop(job_id, None)
            self._progress.pop(job_id, None)
            self.pump()

    async def _ended(self, job: Job) -> None:
        for hook in self.ended_hooks:
            try:
                await hook(job)
            except StorageError:
                raise
            except Exception:
                log.exception("an end-of-job hook failed for job %d", job.id)

    async def _execute(self, job: Job) -> None:
        image_path, snapshot_path = self._paths(job.id)
        resume = None
        if job.snapshot_path and Path(job.snapshot_path).is_file():
            resume = Path(job.snapshot_path)  # a restart: continue where it was
        elif job.kind in ("continue", "upscale") and job.parent_id is not None:
            parent = await self.store.get_job(job.parent_id)
            if parent is not None and parent.snapshot_path and Path(parent.snapshot_path).is_file():
                resume = Path(parent.snapshot_path)
        job = await self.store.set_state(job.id, JobState.RUNNING, detail=f"resume from {resume}" if resume else None)
        history = (
            SnapshotHistory(snapshot_path, self.snapshot_every, self.snapshot_budget) if self.snapshot_every else None
        )
        try:
            spec = JobSpec.from_json(job.spec_json)
            job = await self.presenter.job_started(job)
            state = await asyncio.to_thread(resume.read_bytes) if resume is not None else None
            handle = self.backend.submit(job.id, spec, state, self.snapshot_every)
            if getattr(self.backend, "remote", False):  # its engine cannot read our disk: the pictures travel
                handle.files = await asyncio.to_thread(_read_pictures, spec)
            self._handles[job.id] = handle
            self._progress[job.id] = (job.author_id, job.steps_done, spec.total_steps)
            async for event in handle.events():
                if isinstance(event, Progress):
                    self._record_pace(event, job.steps_done)
                    self._progress[job.id] = (job.author_id, event.step, event.steps)
                    job = await self.store.update_job(job.id, steps_done=event.step)
                    if self.timelapse and event.preview is not None:
                        await asyncio.to_thread(save_frame, self._frames(job.id), event.step, event.preview)
                    await self.presenter.job_progress(job, event)
                elif isinstance(event, Snapshotted) and history is not None:
                    path = await asyncio.to_thread(history.save, event.step, event.state, event.thumbnail)
                    job = await self.store.update_job(job.id, snapshot_path=str(path))
                elif isinstance(event, Finished):
                    await self._finish(job, event.result, image_path)
                    return
            raise RuntimeError("the backend ended a job without a result")
        except EngineError as exc:
            log.warning("job %d failed: %s", job.id, exc)
            await self._fail(job, public_message(exc), type(exc).__name__)
        except (asyncio.CancelledError, StorageError):
            raise  # a stop keeps the frames: the job resumes (or is posted) at the next start
        except Exception:
            log.exception("job %d failed", job.id)
            await self._fail(job, "Something went wrong on our side while making this image; the error was logged.")
        shutil.rmtree(self._frames(job.id), ignore_errors=True)

    async def _fail(self, job: Job, message: str, detail: str = "internal") -> None:
        job = await self.store.set_state(job.id, JobState.FAILED, detail=detail, error=message)
        try:
            await self.presenter.job_failed(job, message)
        except StorageError:
            raise
        except Exception:  # the failure is recorded; telling the thread is best effort
            log.exception("could not report the failure of job %d", job.id)

    def _record_pace(self, progress: Progress, start_step: int) -> None:
        done = progress.step - start_step
        if done > 0 and progress.elapsed > 0:
            measured = progress.elapsed / done
            self.seconds_per_step = 0.8 * self.seconds_per_step + 0.2 * measured

    async def _finish(self, job: Job, result: Result, image_path: Path) -> None:
        """Save the image, then post it: the job is `posting` until its message exists, `done` after, so a stop in
        between leaves it for `recover` to post (never lost, never posted twice)."""
        await asyncio.to_thread(_write_atomically, image_path, result.image)
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
            shutil.rmtree(self._frames(job.id), ignore_errors=True)
            await self.presenter.job_cancelled(job, result)
            return
        job = await self.store.set_state(job.id, JobState.POSTING, **fields)
        try:
            job = await self.presenter.job_finished(job, result, result.image)  # records the result message id
        except StorageError:
            raise
        except Exception:  # Discord refused or failed: the image is safe; post it again later, not "failed"
            log.exception("could not post job %d; it stays to be posted again", job.id)
            return
        job = await self._mark_done(job)
        await self._post_timelapse(job, result.image)
        shutil.rmtree(self._frames(job.id), ignore_errors=True)

    async def _post_timelapse(self, job: Job, final_png: bytes) -> None:
        frames = frame_paths(self._frames(job.id))
        if self.timelapse and frames:
            try:
                await self.presenter.job_timelapse(job, frames, final_png)
            except StorageError:
                raise
            except Exception:  # the image is posted; the timelapse is a bonus
                log.exception("could not post the timelapse of job %d", job.id)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so a stop mid-write never leaves a truncated image under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _stored_result(job: Job, image: bytes) -> Result:
    """The result of a finished job as recorded in the store (to post it again after a restart)."""
    elapsed = max(0.0, (job.finished_at or 0.0) - (job.started_at or job.finished_at or 0.0))
    spec, scores = JobSpec.from_json(job.spec_json), tuple(job.scores.items())
    return Result(spec, image, job.width or 0, job.height or 0, job.steps_done, scores, elapsed)


def _read_pictures(spec: JobSpec) -> dict[str, bytes]:
    """The bytes of the pictures a spec reads (those still on disk; the engine says which are missing)."""
    found = {}
    for name in spec.pictures():
        path = Path(name)
        if path.is_file():
            found[name] = path.read_bytes()
    return found


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
