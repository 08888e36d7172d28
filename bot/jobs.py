"""The job service: submit, queue fairly, run through a backend, record every transition, recover after a crash.

No idle background task: a submit or a finished job "pumps" the queue, which starts the next jobs as tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from bot.backends import Backend
from bot.presenter import Presenter
from bot.queue import Cooldown, Entry, FairQueue, QueueFull, RateLimiter, member_full, queue_full
from bot.timelapse import frame_paths, save_frame
from engine.errors import EngineError, InvalidSpec, public_message
from engine.files import write_atomically
from engine.moderation import LEVELS, checks_images, checks_previews, decide, valid_score
from engine.snapshots import SnapshotHistory
from engine.spec import MAX_STEPS, Finished, JobSpec, Progress, Result, Snapshotted
from engine.uploads import check_image, stored_name
from storage import GuildSettings, Job, JobKind, JobState, StorageError, Store, TopEntry

log = logging.getLogger(__name__)

# what the cogs need of the store's types, they take from here (cogs never import storage)
__all__ = ["Job", "JobKind", "JobState", "Origin", "Posted", "StorageError", "Ticket", "JobService"]

DEFAULT_SECONDS_PER_STEP = 0.5
COOLDOWN = (2, 10.0)  # at most 2 requests for pictures per 10 s per member, whichever door they come through
DESCRIBE_COOLDOWN = (1, 30.0)  # /describe: once per 30 s per member


@dataclass(frozen=True)
class RunningInfo:
    """A running job as /queue shows it."""

    job_id: int
    author_id: int
    step: int
    steps: int


@dataclass(frozen=True)
class Origin:
    """Who asked for a job, and where: the channel the job lives in and, for a thread, that thread's parent."""

    guild_id: int | None
    channel_id: int
    author_id: int
    parent_id: int | None = None
    counted: bool = False  # the request was counted against the member's cooldown already (`JobService.enter`)

    @property
    def places(self) -> tuple[int, ...]:
        """The channels the server's channel rule is checked against."""
        return (self.channel_id,) if self.parent_id is None else (self.channel_id, self.parent_id)


@dataclass(frozen=True)
class Ticket:
    """A queued job, its place in the waiting line (1-based; None once it runs) and its likely wait in seconds."""

    job: Job
    position: int | None
    eta: float


@dataclass(frozen=True)
class Posted:
    """What the chat side posted to announce a job: its message and the thread opened for it (if any)."""

    message_id: int | None
    thread_id: int | None = None


Announce = Callable[[Ticket], Awaitable[Posted | None]]


class Limits(NamedTuple):
    """The caps of a waiting line: per member, in all, and per server (None: no cap)."""

    per_member: int | None
    total: int | None
    server: int | None


class JobService:
    """Owns the waiting line and the running jobs; the cogs call it, the backend does the work."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        presenter: Presenter | None,
        data_dir: Path,
        *,
        max_queued_per_user: int = 3,
        max_queue: int = 50,
        max_concurrent: int | None = None,
        timelapse: bool = True,
        snapshot_every: int = 25,
        snapshot_budget: int = 6,
        cooldown: tuple[int, float] = COOLDOWN,
    ) -> None:
        self.store, self.backend, self.presenter = store, backend, presenter
        self.data_dir = Path(data_dir)
        self.queue = FairQueue(max_queued_per_user, max_queue)
        self._max_concurrent = max_concurrent  # None: as many as the backend has room for, asked each time
        backend.on_capacity = self.pump  # a worker joined: start what waits
        backend.owner = store.install  # a job's keys kept outside the database (Redis) are this database's
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
        self.community = None  # a bot.community.Community: blocked words and the output check of each server
        self.cooldown = RateLimiter(*cooldown)
        self._describe_cooldown = RateLimiter(*DESCRIBE_COOLDOWN)
        self._describing = asyncio.Lock()  # one /describe at a time: the engine's thread is the jobs' first
        self._guilds: dict[int, int | None] = {}  # waiting and running job id -> its server (for /queue)

    @property
    def max_concurrent(self) -> int:
        """Jobs run at once: the setting, else the backend's capacity (a distributed backend's changes)."""
        return self._max_concurrent or self.backend.capacity

    # -- submitting: the cogs' one door ------------------------------------------------------------------------
    async def submit(
        self,
        origin: Origin,
        spec: JobSpec,
        *,
        kind: JobKind = JobKind.NEW,
        parent_id: int | None = None,
        thread_id: int | None = None,
        resume_from: Path | None = None,
        announce: Announce | None = None,
    ) -> Ticket:
        """Record, check and queue a job, let `announce` post it (its message and thread ids are recorded), then
        start what can start. Raises QueueFull (a cap, in the member's words) or InvalidSpec (a job that cannot fit
        the backend's memory) before anything is recorded. With `resume_from` (a snapshot of another job: a branch)
        the job starts from that state. Every door that makes a picture comes here (or to `admit`), so every job
        passes the same gate (`prepare`)."""
        job = await self.admit(origin, spec, kind=kind, parent_id=parent_id, thread_id=thread_id)
        if resume_from is not None:
            job = await self.store.update_job(job.id, snapshot_path=str(resume_from))
        self.enqueue(job)
        return await self.announce([job], announce)

    async def admit(
        self,
        origin: Origin,
        spec: JobSpec,
        *,
        kind: JobKind = JobKind.NEW,
        parent_id: int | None = None,
        thread_id: int | None = None,
        check_limits: bool = True,
    ) -> Job:
        """Record a job under the caps (not yet in the waiting line). The caps are checked in the same store
        statement that records the job, so simultaneous submissions cannot overshoot them; `check_limits=False`
        skips them and the server's limits (a tournament's winner, which takes its tournament's place)."""
        if parent_id is not None:  # a job that goes on from another: only from a live image of the same server
            parent = await self.store.get_job(parent_id)
            if parent is None or parent.guild_id != origin.guild_id or parent.deleted_at is not None:
                raise InvalidSpec("That image was deleted or is not of this server; nothing can go on from it.")
        spec = await self.prepare(origin, spec, limits=check_limits)
        budget = self.backend.budget
        if budget is not None:  # refused now, not out of memory later in the thread
            budget.check(*spec.final_size, spec.cutn)  # the last stage is the largest
        limits = await self.limits(origin.guild_id) if check_limits else Limits(None, None, None)
        job = await self.store.admit_job(
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            author_id=origin.author_id,
            spec_json=spec.to_json(),
            kind=kind,
            parent_id=parent_id,
            max_waiting=limits.per_member,
            max_total=limits.total,
            max_server=limits.server,
        )
        if job is None:
            raise await self.refusal(origin, limits)
        if thread_id is not None:
            job = await self.store.update_job(job.id, thread_id=thread_id)
        return job

    def enter(self, origin: Origin) -> Origin:
        """Count a member's request for pictures against their cooldown (Cooldown, with the wait, when over it); the
        origin returned is marked counted, so the gate does not count it again. A door with work to do before the
        gate (downloading a picture) enters first; `prepare` enters for the others."""
        retry_after = self.cooldown.hit(origin.author_id, asyncio.get_running_loop().time())
        if retry_after:
            raise Cooldown(retry_after)
        return replace(origin, counted=True)

    async def prepare(self, origin: Origin, spec: JobSpec, *, limits: bool = True) -> JobSpec:
        """The gate: the spec as this server runs it, or a refusal in the member's words. The member's cooldown
        (Cooldown), then the server's channels, steps and sizes and the blocked words (InvalidSpec, see
        `Community.admit`); the output check is set to the server's level. `limits=False` (a tournament's winner,
        asked for by no one) skips the cooldown and the limits, never the words or the output check."""
        if limits and not origin.counted:
            self.enter(origin)
        if self.community is None:
            return spec
        return await self.community.admit(origin.guild_id, origin.places, spec, limits=limits)

    async def announce(self, jobs: list[Job], announce: Announce | None) -> Ticket:
        """Let the chat side post the first of `jobs` (queued together) and record where; then start the queue
        (also when posting failed: the job is recorded and runs, its progress going to the channel). The ticket
        is of the last job (the one whose wait is the longest)."""
        last = jobs[-1]
        ticket = Ticket(last, self.queue.position(last.id), self.etas().get(last.id, 0.0))
        try:
            posted = await announce(replace(ticket, job=jobs[0])) if announce is not None else None
            if posted is not None:
                for job in jobs:
                    fields = {"queued_message_id": posted.message_id}
                    if posted.thread_id is not None:
                        fields["thread_id"] = posted.thread_id
                    updated = await self.store.update_job(job.id, **fields)
                    if job.id == last.id:
                        ticket = replace(ticket, job=updated)
        finally:
            self.pump()
        return ticket

    async def limits(self, guild_id: int | None) -> Limits:
        """The waiting-line caps here: per member (the server's, else the bot's), in all, and the server's own."""
        settings = await self.store.guild_settings(guild_id)
        return Limits(
            settings.max_queued_per_user or self.queue.max_per_user, self.queue.max_total, settings.max_queued_total
        )

    async def refusal(self, origin: Origin, limits: Limits, count: int = 1) -> QueueFull:
        """The error for `count` jobs the store refused: which cap they hit, in the member's words."""
        (cap, total, server), author_id = limits, origin.author_id
        if server is not None and await self.store.server_waiting(origin.guild_id) + count > server:
            return QueueFull(
                f"This server allows {server} image{'s' if server != 1 else ''} waiting at once and that many "
                "are waiting; try again when some have started."
            )
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
        self._guilds[job.id] = job.guild_id
        self._waiting_steps[job.id] = max(0, job.spec.total_steps - job.steps_done)

    def pump(self) -> None:
        """Start waiting jobs while there is room (none once closing); with a backend whose room changes, ask it
        to say when it grows."""
        while not self._closing and len(self._tasks) < self.max_concurrent:
            entry = self.queue.pop()
            if entry is None:
                return
            self._waiting_steps.pop(entry.job_id, None)
            self._tasks[entry.job_id] = asyncio.create_task(self._run(entry.job_id), name=f"job-{entry.job_id}")
        if len(self.queue) and not self._closing:
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
            if job.kind == JobKind.CANDIDATE or job.result_message_id is not None:
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
                job = await self._post_result(job, _stored_result(job, image), image)
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
            self._guilds.pop(job_id, None)
            job = await self.store.set_state(job_id, JobState.CANCELLED, detail="cancelled while waiting")
            await self.presenter.job_cancelled(job, None)
            self.pump()
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
        if self.community is not None:
            job = await self.store.get_job(job_id)
            await self.community.screen(job.guild_id if job else None, text, "steer text")
        spec_json = await handle.steer(text)
        if spec_json is None:
            return None
        return (await self.store.update_job(job_id, spec_json=spec_json)).spec

    # -- what the cogs read and record (they never reach the store themselves) ---------------------------------
    @property
    def install(self) -> str:
        """The database's install token, carried by every button (see `accepts`)."""
        return self.store.install

    def accepts(self, install: str | None) -> bool:
        """Whether a button carrying `install` belongs to this database."""
        return self.store.accepts(install)

    async def keep_picture(self, data: bytes, what: str) -> str:
        """Check an uploaded picture completely (size, format, metadata, dimensions, frames, decoding; InvalidSpec
        naming `what`) before anything is queued, and keep it under a name made from its content (never the member's
        file name; the same picture is kept once). Returns the name a spec reads it by."""
        await asyncio.to_thread(check_image, data, f"the {what}")
        path = self.data_dir / "inputs" / stored_name(data)
        if not path.is_file():
            await asyncio.to_thread(write_atomically, path, data)
        return str(path)

    async def get(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        return await self.store.get_job(job_id)

    async def get_here(self, job_id: int, guild_id: int | None, user_id: int) -> Job | None:
        """The job with this id if it belongs where a member asks about it: a server's job in that server only, a DM
        job to its author only (a button's custom_id names any id; the job decides where it may be used)."""
        job = await self.store.get_job(job_id)
        if job is None or job.guild_id != guild_id or (guild_id is None and job.author_id != user_id):
            return None
        return job

    async def history(self, guild_id: int | None, author_id: int, limit: int = 10) -> list[Job]:
        """A member's latest jobs here."""
        return await self.store.history(guild_id, author_id, limit=limit)

    async def top(self, guild_id: int | None, *, since: float, limit: int, by: str, author_id: int) -> list[TopEntry]:
        """The board (in DMs, only the member's own images)."""
        return await self.store.top(guild_id, since=since, limit=limit, by=by, author_id=author_id)

    async def settings(self, guild_id: int | None) -> GuildSettings:
        """A server's settings (the defaults for DMs)."""
        return await self.store.guild_settings(guild_id)

    async def vote(self, message_id: int, user_id: int, value: int, present: bool) -> Job | None:
        """Record a member's vote reaction on a result message (authors do not vote for their own images); the job,
        or None if the message is not a result."""
        job = await self.store.job_for_result_message(message_id)
        if job is not None and job.author_id != user_id and job.deleted_at is None:
            await self.store.set_vote(job.id, user_id, value, present)
        return job

    async def record_status(self, job_id: int, message_id: int) -> Job:
        """The presenter replaced a job's status message."""
        return await self.store.update_job(job_id, status_message_id=message_id)

    async def record_audience(self, job_id: int, audience: str, channel_id: int | None = None) -> Job:
        """Who could see the job's result where it was posted ('everyone' or 'restricted'), and the channel that
        decided it (a thread's parent); the web gallery shows only what everyone could see."""
        return await self.store.update_job(job_id, audience=audience, audience_channel_id=channel_id)

    # -- reports --------------------------------------------------------------------------------------------
    def shows_in(self, job_id: int, guild_id: int | None, user_id: int, author_id: int) -> bool:
        """Whether /queue asked in `guild_id` by `user_id` lists this waiting or running job: a server's own jobs
        there, a member's own DM jobs in DMs."""
        return self._guilds.get(job_id) == guild_id and (guild_id is not None or author_id == user_id)

    def running(self) -> list[RunningInfo]:
        """The running jobs with their authors and steps, for /queue."""
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
        """Start nothing more, cancel the local runs (a remote backend's go on), and cancel and await the job and repost
        tasks."""
        self._closing = True
        if not self.backend.remote:  # remote jobs go on without us; a restart reads on
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

    async def _level(self, job: Job) -> str:
        """The output check a job answers to: its spec's level, or the server's level now if that is stricter (a
        server that raised its level while the job waited or ran)."""
        level = job.spec.moderation
        if self.community is not None:
            now = self.community.moderation(await self.community.settings(job.guild_id))
            level = max(level, now, key=LEVELS.index)
        return level

    async def _with_current_level(self, job: Job) -> Job:
        """The job about to start, its spec raised to the server's current level if that is stricter, so that the
        engine scores its images (and previews) as the server now asks."""
        level = await self._level(job)
        if level == job.spec.moderation:
            return job
        return await self.store.update_job(job.id, spec_json=job.spec.replace(moderation=level).to_json())

    async def from_flagged(self, job: Job) -> bool:
        """Whether `job` goes on from a picture the output check spoilered or withheld (a Continue, Upscale or
        Branch of one, a tournament winner): its previews and frames are never shown, only its own checked result."""
        if job.parent_id is None or job.kind not in (JobKind.CONTINUE, JobKind.UPSCALE, JobKind.BRANCH):
            return False
        parent = await self.store.get_job(job.parent_id)
        return parent is not None and parent.moderation not in (None, "post")

    def shows_states(self, job: Job) -> bool:
        """Whether `job`'s saved states may be shown (Branch's thumbnails): only where its finished picture was posted
        as it is; the output check never judged the states themselves."""
        return (
            job.state in (JobState.DONE, JobState.POSTING)
            and job.deleted_at is None
            and job.moderation in (None, "post")
            and not checks_previews(job.spec.moderation)  # at strict, states are shown only as checked previews
        )

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
            self._guilds.pop(job_id, None)
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
            job = await self._with_current_level(job)
            spec = job.spec
            status = await self.presenter.job_started(job)
            if status is not None and status != job.status_message_id:
                job = await self.store.update_job(job.id, status_message_id=status)
            state = await asyncio.to_thread(resume.read_bytes) if resume is not None else None
            handle = self.backend.submit(job.id, spec, state, self.snapshot_every)
            if self.backend.remote:  # its engine cannot read our disk: the pictures travel
                handle.files = await asyncio.to_thread(_read_pictures, spec)
            self._handles[job.id] = handle
            hidden = await self.from_flagged(job)
            keep_frames = not hidden and await self._wants_timelapse(job)
            self._progress[job.id] = (job.author_id, job.steps_done, spec.total_steps)
            async for event in handle.events():
                if isinstance(event, Progress):
                    if hidden or not _preview_passes(spec.moderation, event):  # no preview of it is shown or kept
                        event = replace(event, preview=None)
                    self._record_pace(event, job.steps_done)
                    self._progress[job.id] = (job.author_id, event.step, event.steps)
                    job = await self.store.update_job(job.id, steps_done=event.step)
                    if keep_frames and event.preview is not None:
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
        await asyncio.to_thread(write_atomically, image_path, result.image)
        fields = dict(
            image_path=str(image_path),
            steps_done=result.steps_done,
            width=result.width,
            height=result.height,
            score=result.score,
            scores_json=json.dumps(dict(result.scores)),
        )
        verdict = _verdict(await self._level(job), result)
        if verdict is not None:
            fields.update(moderation=verdict.action, unsafe=verdict.unsafe)
        if result.cancelled:
            job = await self.store.set_state(job.id, JobState.CANCELLED, detail="cancelled while running", **fields)
            shutil.rmtree(self._frames(job.id), ignore_errors=True)
            await self.presenter.job_cancelled(job, result)
            return
        job = await self.store.set_state(job.id, JobState.POSTING, **fields)
        if verdict is not None:
            await self.store.add_event(job.id, "moderation", _verdict_line(verdict))
        try:
            job = await self._post_result(job, result, result.image)
        except StorageError:
            raise
        except Exception:  # Discord refused or failed: the image is safe; post it again later, not "failed"
            log.exception("could not post job %d; it stays to be posted again", job.id)
            return
        job = await self._mark_done(job)
        await self._deliver_by_dm(job, result.image)
        await self._post_timelapse(job, result.image)
        shutil.rmtree(self._frames(job.id), ignore_errors=True)

    async def _deliver_by_dm(self, job: Job, image: bytes) -> None:
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

    # -- deleting -------------------------------------------------------------------------------------------
    async def delete(self, job_id: int, user_id: int, moderator: bool, guild_id: int | None) -> str:
        """Delete a finished image for its author or a moderator (of the image's own server): its post and timelapse
        go, its votes leave the board and the gallery, its files and saved states are removed; the row stays as a
        record. Returns the sentence to show."""
        job = await self.get_here(job_id, guild_id, user_id)
        if job is None or job.state not in (JobState.DONE, JobState.POSTING):
            return "That image cannot be deleted (it is not a finished image)."
        if user_id != job.author_id and not moderator:
            return "Only the image's author or a member who can manage messages can delete it."
        deleted = await self.store.mark_deleted(job.id, user_id)
        if deleted is None:
            return "That image was already deleted."
        try:
            await self.presenter.job_deleted(deleted)
        except StorageError:
            raise
        except Exception:
            log.exception("could not remove the messages of deleted job %d", job.id)
        for path in (self._paths(job.id)[0], self.timelapse_file(job.id)):
            if path is not None:
                path.unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, self._paths(job.id)[1], True)  # nothing can branch from it any more
        await self.store.update_job(job.id, snapshot_path=None)
        log.info("job %d deleted by %d", job.id, user_id)
        return f"Deleted #{job.id}."

    async def _post_result(self, job: Job, result: Result, image: bytes) -> Job:
        """Post the final image and record its message (a candidate has none: its tournament shows it)."""
        message_id = await self.presenter.job_finished(job, result, image)
        if message_id is None:
            return job
        return await self.store.update_job(job.id, result_message_id=message_id)

    async def _wants_timelapse(self, job: Job) -> bool:
        """The server's choice, else the bot's."""
        chosen = (await self.store.guild_settings(job.guild_id)).timelapse
        return self.timelapse if chosen is None else chosen

    @property
    def can_describe(self) -> bool:
        """Whether /describe can run here: it needs the engine in this process (the embedded backend)."""
        return self.backend.can_describe

    async def check_describe(self, origin: Origin) -> None:
        """Whether the member may describe a picture here and now: in the server's picture channels (InvalidSpec),
        once per DESCRIBE_COOLDOWN (Cooldown), and not while another picture is being described (QueueFull):
        /describe shares the engine's thread with the running jobs."""
        if self.community is not None:
            self.community.check_place(await self.community.settings(origin.guild_id), origin.places)
        retry_after = self._describe_cooldown.hit(origin.author_id, asyncio.get_running_loop().time())
        if retry_after:
            raise Cooldown(retry_after)
        if self._describing.locked():
            raise QueueFull("Another picture is being described right now; try again in a few seconds.")

    async def describe(self, origin: Origin, image: bytes, clip_model: str):
        """What CLIP sees in `image` (an `engine.describe.Description`), on the backend's engine; the vocabulary's
        embeddings are kept under the data directory. One picture is described at a time (see `check_describe`,
        which the caller asks first). Terms the server blocks are taken out of what is shown and of the prompt.
        InvalidSpec where the engine runs on workers."""
        if not self.can_describe:
            raise InvalidSpec("/describe needs the engine in the bot's own process; this bot runs it on workers.")
        async with self._describing:
            description = await self.backend.describe(image, clip_model, self.data_dir / "describe")
        if self.community is None:
            return description
        return await self.community.screen_description(origin.guild_id, description)

    def timelapse_file(self, job_id: int) -> Path | None:
        """The kept animation of a job's run (the gallery shows it), if one was made."""
        for ext in ("webp", "gif"):
            path = self.data_dir / "timelapses" / f"{job_id}.{ext}"
            if path.is_file():
                return path
        return None

    async def _post_timelapse(self, job: Job, final_png: bytes) -> None:
        """Post the run's animation and keep a copy of it (both best effort: the image itself is posted)."""
        frames = frame_paths(self._frames(job.id))
        if frames and job.moderation in (None, "post") and await self._wants_timelapse(job):
            try:
                shown = await self.presenter.job_timelapse(job, frames, final_png)
                if shown is not None:
                    message_id, made = shown
                    await self.store.update_job(job.id, timelapse_message_id=message_id)
                    if made.ext in ("webp", "gif"):
                        path = self.data_dir / "timelapses" / f"{job.id}.{made.ext}"
                        await asyncio.to_thread(write_atomically, path, made.data)
            except StorageError:
                raise
            except Exception:  # the image is posted; the timelapse is a bonus
                log.exception("could not post the timelapse of job %d", job.id)


def _preview_passes(level: str, progress: Progress) -> bool:
    """Whether a preview may be shown and kept for the timelapse: always where the level does not check previews;
    where it does (strict), only one scored and not flagged (no score counts as flagged)."""
    if progress.preview is None or not checks_previews(level):
        return True
    return decide(level, valid_score(progress.unsafe)).action == "post"


def _verdict(level: str, result: Result):
    """The output check's verdict on a result, failing closed: where the job's level checks images, a result that
    carries no usable score (a worker that skipped the check, a forged event, a NaN) counts as certainly unsafe.
    None where the level is "off" and no score came."""
    if not checks_images(level):
        return decide(level, result.unsafe, result.unsafe_label) if result.unsafe is not None else None
    unsafe = valid_score(result.unsafe)  # None, NaN or out of range: 1.0
    label = result.unsafe_label if unsafe == result.unsafe else "no usable score from the output check"
    return decide(level, unsafe, label)


def _verdict_line(verdict) -> str:
    """The moderation event's detail: what was decided, on what score, under which level."""
    label = f" ({verdict.label})" if verdict.label else ""
    threshold = f" against {verdict.threshold:.2f}" if verdict.threshold is not None else ""
    return f"{verdict.action}: unsafe {verdict.unsafe:.3f}{threshold} at level {verdict.level}{label}"


def _stored_result(job: Job, image: bytes) -> Result:
    """The result of a finished job as recorded in the store (to post it again after a restart)."""
    elapsed = max(0.0, (job.finished_at or 0.0) - (job.started_at or job.finished_at or 0.0))
    spec, scores = job.spec, tuple(job.scores.items())
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
