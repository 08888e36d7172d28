"""The job service: the cogs' one door to the jobs. It owns the waiting line and the running jobs' tasks, and
composes the parts that do the work (the gate, the runs, the posting, /describe, the pace, the files).

No idle background task: a submit or a finished job "pumps" the queue, which starts the next jobs as tasks.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from bot.backends import Backend
from bot.jobs._admission import COOLDOWN, Admission
from bot.jobs._describing import Describing
from bot.jobs._execution import Execution
from bot.jobs._files import JobFiles
from bot.jobs._models import Announce, Limits, Origin, RunningInfo, Ticket
from bot.jobs._moderation import from_flagged, shows_states
from bot.jobs._pace import Pace
from bot.jobs._posting import Posting
from bot.logs import job_scope
from bot.presenter import Presenter
from bot.queue import Entry, FairQueue, QueueFull
from engine import quality
from engine.spec import JobSpec
from storage import GuildSettings, Job, JobKind, JobState, StorageError, Store, TopEntry

log = logging.getLogger(__name__)


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
        self.store, self.backend = store, backend
        self.data_dir = Path(data_dir)
        self.files = JobFiles(self.data_dir)
        self.queue = FairQueue(max_queued_per_user, max_queue)
        self._max_concurrent = max_concurrent  # None: as many as the backend has room for, asked each time
        backend.on_capacity = self.pump  # a worker joined: start what waits
        backend.owner = store.install  # a job's keys kept outside the database (Redis) are this database's
        self.pace = Pace()
        self.admission = Admission(store, backend, self.queue, cooldown)
        self.posting = Posting(store, self.files, timelapse=timelapse)
        self.execution = Execution(store, backend, self.files, self.pace, self.posting, snapshot_every, snapshot_budget)
        self.describing = Describing(backend, self.files.describe_cache)
        self.presenter = presenter
        self.community = None
        self.ended_hooks: list = []  # async callables(job), run after each job reaches a final state
        self._tasks: dict[int, asyncio.Task] = {}
        self._reposts: dict[int, asyncio.Task] = {}  # finished jobs whose result is being posted again
        self._guilds: dict[int, int | None] = {}  # waiting and running job id -> its server (for /queue)
        # jobs whose announcement (message, thread) is being posted: they start only after it, so that their status
        # goes into their thread (another job's end can pump them while the thread is still being made)
        self._announcing: dict[int, asyncio.Event] = {}
        self._closing = False
        # called with the StorageError when the database fails under a job; the bot stops on it
        self.on_storage_error = lambda exc: log.critical("%s", exc)

    # -- what is set after construction: the chat side and the servers' rules reach every part ------------------
    @property
    def presenter(self) -> Presenter | None:
        """The chat side (the imagine cog attaches its presenter as it loads): it posts what the jobs make."""
        return self._presenter

    @presenter.setter
    def presenter(self, presenter: Presenter | None) -> None:
        """Attach the chat side to the parts that post."""
        self._presenter = self.execution.presenter = self.posting.presenter = presenter

    @property
    def community(self):
        """A `bot.community.Community`: the blocked words and the output check of each server (None: no rules)."""
        return self._community

    @community.setter
    def community(self, community) -> None:
        """Give every part the servers' rules."""
        self._community = community
        self.admission.community = self.execution.community = community
        self.posting.community = self.describing.community = community

    @property
    def max_concurrent(self) -> int:
        """Jobs run at once: the setting, else the backend's capacity (a distributed backend's changes)."""
        return self._max_concurrent or self.backend.capacity

    @property
    def seconds_per_step(self) -> float:
        """The measured pace of a step (all ETAs are made from it)."""
        return self.pace.seconds_per_step

    @seconds_per_step.setter
    def seconds_per_step(self, value: float) -> None:
        """Set the pace (a test, or a bench, starting from a known one)."""
        self.pace.seconds_per_step = value

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
        """Record a job under the caps, not yet in the waiting line (see `Admission.admit`)."""
        return await self.admission.admit(
            origin, spec, kind=kind, parent_id=parent_id, thread_id=thread_id, check_limits=check_limits
        )

    def enter(self, origin: Origin) -> Origin:
        """Count a member's request against their cooldown; the origin, marked counted (see `Admission.enter`)."""
        return self.admission.enter(origin)

    async def prepare(self, origin: Origin, spec: JobSpec, *, limits: bool = True) -> JobSpec:
        """The gate: the spec as this server runs it, or a refusal in the member's words (see `Admission.prepare`)."""
        return await self.admission.prepare(origin, spec, limits=limits)

    async def limits(self, guild_id: int | None) -> Limits:
        """The waiting-line caps here: per member (the server's, else the bot's), in all, and the server's own."""
        return await self.admission.limits(guild_id)

    async def refusal(self, origin: Origin, limits: Limits, count: int = 1) -> QueueFull:
        """The error for `count` jobs the store refused: which cap they hit, in the member's words."""
        return await self.admission.refusal(origin, limits, count)

    async def announce(self, jobs: list[Job], announce: Announce | None) -> Ticket:
        """Let the chat side post the first of `jobs` (queued together) and record where; then start the queue
        (also when posting failed: the job is recorded and runs, its progress going to the channel). The ticket
        is of the last job (the one whose wait is the longest)."""
        last = jobs[-1]
        ticket = Ticket(last, self.queue.position(last.id), self.etas().get(last.id, 0.0))
        announced = asyncio.Event()
        self._announcing.update({job.id: announced for job in jobs})
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
            for job in jobs:
                self._announcing.pop(job.id, None)
            announced.set()
            self.pump()
        return ticket

    def enqueue(self, job: Job) -> None:
        """Put a recorded job in the waiting line (the store has already admitted it)."""
        self.queue.push(Entry(job.id, job.author_id), force=True)
        self._guilds[job.id] = job.guild_id
        spec = job.spec
        self.pace.waiting_steps[job.id] = max(0, spec.total_steps - job.steps_done) * quality.relative_cost(spec)

    # -- the waiting line and the running jobs ------------------------------------------------------------------
    def pump(self) -> None:
        """Start waiting jobs while there is room (none once closing); with a backend whose room changes, ask it
        to say when it grows."""
        while not self._closing and len(self._tasks) < self.max_concurrent:
            entry = self.queue.pop()
            if entry is None:
                return
            self.pace.waiting_steps.pop(entry.job_id, None)
            self._tasks[entry.job_id] = asyncio.create_task(self._run(entry.job_id), name=f"job-{entry.job_id}")
        if len(self.queue) and not self._closing:
            self.backend.need_capacity(lambda: bool(len(self.queue)) and len(self._tasks) >= self.max_concurrent)

    async def _run(self, job_id: int) -> None:
        job_scope(job_id)  # this task's log lines (and those of the tasks and threads it starts) name the job
        try:
            announcing = self._announcing.get(job_id)
            if announcing is not None:  # its message and thread first (then read: the thread id is recorded)
                await announcing.wait()
            job = await self.store.get_job(job_id)
            if job is None or job.state != JobState.QUEUED:
                return
            await self.execution.run(job)
            await self._ended(await self.store.get_job(job_id))
        except StorageError as exc:
            self._closing = True  # the next job would meet the same broken database
            self.on_storage_error(exc)
        finally:
            self._tasks.pop(job_id, None)
            self.execution.handles.pop(job_id, None)
            self.pace.progress.pop(job_id, None)
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
                await self.posting.mark_done(job)
            else:
                self._reposts[job.id] = asyncio.create_task(self._repost(job.id), name=f"repost-{job.id}")
        return count

    async def _repost(self, job_id: int) -> None:
        job_scope(job_id)
        try:
            job = await self.posting.repost(job_id)
            if job is not None:
                await self._ended(job)
        except StorageError as exc:
            self.on_storage_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not post job %d; it stays to be posted at the next start", job_id)
        finally:
            self._reposts.pop(job_id, None)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job at once, or ask a running one to stop after its current step."""
        if self.queue.remove(job_id):
            self._guilds.pop(job_id, None)
            self.pace.waiting_steps.pop(job_id, None)
            job = await self.store.set_state(job_id, JobState.CANCELLED, detail="cancelled while waiting")
            await self.presenter.job_cancelled(job, None)
            self.pump()
            return True
        handle = self.execution.handles.get(job_id)
        if handle is not None:
            handle.cancel()
            return True
        return False

    async def steer(self, job_id: int, text: str) -> JobSpec | None:
        """Aim a running job at `text` from its next step; the job's spec records the change (with its step), so
        Reroll, Continue and a restart replay it. None if the job is not running."""
        handle = self.execution.handles.get(job_id)
        if handle is None:
            return None
        if self.community is not None:
            job = await self.store.get_job(job_id)
            await self.community.screen(job.guild_id if job else None, text, "steer text")
        spec_json = await handle.steer(text)
        if spec_json is None:
            return None
        return (await self.store.update_job(job_id, spec_json=spec_json)).spec

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
        for path in (self.files.image(job.id), self.timelapse_file(job.id)):
            if path is not None:
                path.unlink(missing_ok=True)
        await asyncio.to_thread(
            shutil.rmtree, self.files.snapshot_dir(job.id), True
        )  # nothing can branch from it any more
        await self.store.update_job(job.id, snapshot_path=None)
        log.info("job %d deleted by %d", job.id, user_id)
        return f"Deleted #{job.id}."

    async def close(self) -> None:
        """Start nothing more, cancel the local runs (a remote backend's go on), and cancel and await the job and repost
        tasks."""
        self._closing = True
        if not self.backend.remote:  # remote jobs go on without us; a restart reads on
            for handle in self.execution.handles.values():
                handle.cancel()
        tasks = [*self._tasks.values(), *self._reposts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the cogs read and record (they never reach the store themselves) ---------------------------------
    @property
    def install(self) -> str:
        """The database's install token, carried by every button (see `accepts`)."""
        return self.store.install

    def accepts(self, install: str | None) -> bool:
        """Whether a button carrying `install` belongs to this database."""
        return self.store.accepts(install)

    async def keep_picture(self, data: bytes, what: str) -> str:
        """Check an uploaded picture and keep it under a name made from its content; the name a spec reads it by
        (see `JobFiles.keep_picture`)."""
        return await self.files.keep_picture(data, what)

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

    def snapshots(self, job_id: int) -> list[tuple[int, Path, Path | None]]:
        """The saved states of a job, oldest first: (step, snapshot file, thumbnail file or None)."""
        return self.files.snapshots(job_id)

    def shows_states(self, job: Job) -> bool:
        """Whether `job`'s saved states may be shown (Branch's thumbnails); see `bot.jobs._moderation`."""
        return shows_states(job)

    async def from_flagged(self, job: Job) -> bool:
        """Whether `job` goes on from a picture the output check spoilered or withheld: its previews are never shown."""
        return await from_flagged(self.store, job)

    def timelapse_file(self, job_id: int) -> Path | None:
        """The kept animation of a job's run (the gallery shows it), if one was made."""
        return self.files.timelapse_file(job_id)

    @property
    def can_describe(self) -> bool:
        """Whether /describe can run here: it needs the engine in this process (the embedded backend)."""
        return self.describing.available

    async def check_describe(self, origin: Origin) -> None:
        """Whether the member may describe a picture here and now (see `Describing.check`)."""
        await self.describing.check(origin)

    async def describe(self, origin: Origin, image: bytes, clip_model: str):
        """What CLIP sees in `image` (an `engine.describe.Description`), screened by the server's blocked words (see
        `Describing.describe`)."""
        return await self.describing.describe(origin, image, clip_model)

    # -- reports --------------------------------------------------------------------------------------------
    def shows_in(self, job_id: int, guild_id: int | None, user_id: int, author_id: int) -> bool:
        """Whether /queue asked in `guild_id` by `user_id` lists this waiting or running job: a server's own jobs
        there, a member's own DM jobs in DMs."""
        return self._guilds.get(job_id) == guild_id and (guild_id is not None or author_id == user_id)

    def running(self) -> list[RunningInfo]:
        """The running jobs with their authors and steps, for /queue."""
        return self.pace.running()

    def etas(self) -> dict[int, float]:
        """Seconds until each waiting job is likely to finish: the steps ahead of it (running jobs first, then the
        waiting line in order) at the measured pace. One pass, no database reads."""
        return self.pace.etas(self.queue.order(), self.max_concurrent)

    async def eta(self, job_id: int) -> float:
        """Seconds until `job_id` is likely to finish (a running job: its own remaining steps and those before)."""
        etas = self.etas()
        if job_id in etas:
            return etas[job_id]
        return self.pace.running_eta(self.max_concurrent)
