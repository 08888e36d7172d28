"""The jobs part of the store: admitting jobs under the waiting-line caps, their states and events, their retention."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storage.base import StorePart
from storage.models import Job, JobState, _job
from storage.sql import (
    _DELETE_JOB,
    _INSERT_EVENT,
    _INSERT_JOB,
    _INSERT_JOB_CAPPED,
    _SELECT_BY_RESULT_MESSAGE,
    _SELECT_BY_STATE,
    _SELECT_ENDED_AMONG,
    _SELECT_ENDED_IMAGES,
    _SELECT_EVENTS,
    _SELECT_HISTORY,
    _SELECT_IN_USE,
    _SELECT_JOB,
    _SELECT_SERVER_WAITING,
    _SELECT_SPECS_IN_USE,
    _SELECT_WAITING,
    _UPDATE_ROW,
)

# The columns of `jobs` that `update_job` and `set_state` may set; the others are written when a job is queued,
# or by their own method (`state`, `deleted_at`).
_UPDATABLE = {
    "error",
    "thread_id",
    "queued_message_id",
    "status_message_id",
    "result_message_id",
    "image_path",
    "snapshot_path",
    "steps_done",
    "width",
    "height",
    "score",
    "scores_json",
    "started_at",
    "finished_at",
    "spec_json",
    "timelapse_message_id",
    "moderation",
    "unsafe",
    "audience",
    "audience_channel_id",
}


class JobStore(StorePart):
    """Jobs: queued (capped or not), read, moved through their states, deleted, and found for retention."""

    # -- admitting ------------------------------------------------------------------------------------------
    async def create_job(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        author_id: int,
        spec_json: str,
        kind: str = "new",
        parent_id: int | None = None,
        tournament_id: int | None = None,
        candidate: int | None = None,
    ) -> Job:
        """Record a new queued job without any cap (tests and internal use; members' jobs go through
        `create_job_capped`)."""
        now = self._clock()
        async with self._db.execute(
            _INSERT_JOB, (guild_id, channel_id, author_id, spec_json, kind, parent_id, now, tournament_id, candidate)
        ) as cur:
            job_id = cur.lastrowid
        await self._db.execute(_INSERT_EVENT, (job_id, JobState.QUEUED, now, None))
        await self._db.commit()
        job = await self.get_job(job_id)
        self._job_entered(now, job)
        return job

    async def admit_job(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        author_id: int,
        spec_json: str,
        kind: str = "new",
        parent_id: int | None = None,
        max_waiting: int | None,
        max_total: int | None,
        max_server: int | None = None,
    ) -> Job | None:
        """Queue a job if its author has fewer than `max_waiting` jobs waiting and fewer than `max_total` jobs wait
        in all; None if not. The check and the insert are one statement."""
        now = self._clock()
        params = dict(
            guild=guild_id,
            channel=channel_id,
            author=author_id,
            spec=spec_json,
            kind=kind,
            parent=parent_id,
            now=now,
            cap=max_waiting,
            total=max_total,
            server=max_server,
            count=1,
        )
        async with self._db.execute(_INSERT_JOB_CAPPED, params) as cur:
            job_id = cur.lastrowid if cur.rowcount == 1 else None
        if job_id is None:
            return None
        await self._db.execute(_INSERT_EVENT, (job_id, JobState.QUEUED, now, None))
        await self._db.commit()
        job = await self.get_job(job_id)
        self._job_entered(now, job)
        return job

    async def waiting(self, author_id: int) -> tuple[int, int]:
        """(the member's waiting jobs, every waiting job), as the caps count them."""
        async with self._db.execute(_SELECT_WAITING, dict(author=author_id)) as cur:
            row = await cur.fetchone()
        return row[0], row[1]

    async def server_waiting(self, guild_id: int | None) -> int:
        """The waiting jobs of one server (the server-wide cap counts them)."""
        async with self._db.execute(_SELECT_SERVER_WAITING, dict(guild=guild_id)) as cur:
            return (await cur.fetchone())[0]

    # -- one job --------------------------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        """The job `job_id`, or None."""
        async with self._db.execute(_SELECT_JOB, (job_id,)) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def update_job(self, job_id: int, **fields: Any) -> Job:
        """Set some of a job's columns (only those in `_UPDATABLE`) and return the job as it is now."""
        await self._update_row("jobs", _UPDATABLE, job_id, fields)
        return await self.get_job(job_id)

    async def set_state(self, job_id: int, state: JobState, detail: str | None = None, **fields: Any) -> Job:
        """Move a job to `state`, recording the transition with its time (and any fields that change with it)."""
        now = self._clock()
        if state == JobState.RUNNING:
            fields.setdefault("started_at", now)
        elif not state.active:
            fields.setdefault("finished_at", now)
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        columns = ", ".join(["state = ?", *(f"{k} = ?" for k in fields)])
        await self._db.execute(_UPDATE_ROW.format(table="jobs", columns=columns), (state, *fields.values(), job_id))
        await self._db.execute(_INSERT_EVENT, (job_id, state, now, detail))
        await self._db.commit()
        job = await self.get_job(job_id)
        self._job_entered(now, job)
        return job

    async def jobs_in_state(self, state: JobState) -> list[Job]:
        """Every job in `state`, oldest first."""
        async with self._db.execute(_SELECT_BY_STATE, (state,)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def job_for_result_message(self, message_id: int) -> Job | None:
        """The job whose final image is the message `message_id` (votes arrive as reactions on it)."""
        async with self._db.execute(_SELECT_BY_RESULT_MESSAGE, (message_id,)) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def history(self, guild_id: int | None, author_id: int, limit: int = 10) -> list[Job]:
        """A member's latest jobs in a server (or in DMs with `guild_id` None), newest first."""
        async with self._db.execute(_SELECT_HISTORY, (guild_id, author_id, limit)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def events(self, job_id: int) -> list[tuple[str, float, str | None]]:
        """A job's recorded events in order: (what, when, detail): its states, moderation, deletion."""
        async with self._db.execute(_SELECT_EVENTS, (job_id,)) as cur:
            return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    # -- deleting -------------------------------------------------------------------------------------------
    async def mark_deleted(self, job_id: int, by: int) -> Job | None:
        """Hide a job's image from the board and the gallery, keeping its row (and an event saying who). None if
        it was already deleted."""
        now = self._clock()
        async with self._db.execute(_DELETE_JOB, (now, by, job_id)) as cur:
            changed = cur.rowcount == 1
        if changed:
            await self._db.execute(_INSERT_EVENT, (job_id, "deleted", now, f"by {by}"))
        await self._db.commit()
        return await self.get_job(job_id) if changed else None

    async def add_event(self, job_id: int, state: str, detail: str | None = None) -> None:
        """Record something that happened to a job without changing its state (a moderation verdict, ...)."""
        await self._db.execute(_INSERT_EVENT, (job_id, state, self._clock(), detail))
        await self._db.commit()

    # -- retention ------------------------------------------------------------------------------------------
    async def ended_among(self, ids: Iterable[int]) -> dict[int, float]:
        """Of the jobs `ids`, those that ended (done, failed, cancelled) and when: {id: finished_at (0 if unknown)}."""
        ids, ended = sorted(set(ids)), {}
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters is 999 in older builds
            chunk = ids[start : start + 500]
            query = _SELECT_ENDED_AMONG.format(marks=",".join("?" * len(chunk)))
            async with self._db.execute(query, chunk) as cur:
                ended.update({r[0]: r[1] or 0.0 for r in await cur.fetchall()})
        return ended

    async def ended_images(self) -> list[tuple[int, float, str]]:
        """(id, finished_at, image_path) of the ended jobs that still have a final image, the longest ago first."""
        async with self._db.execute(_SELECT_ENDED_IMAGES) as cur:
            return [(r[0], r[1] or 0.0, r[2]) for r in await cur.fetchall()]

    async def jobs_in_use(self) -> set[int]:
        """Ids of jobs whose files are still needed: unfinished jobs, their parents, undecided candidates."""
        async with self._db.execute(_SELECT_IN_USE) as cur:
            return {r[0] for r in await cur.fetchall()}

    async def specs_in_use(self) -> list[str]:
        """The specs (JSON) of unfinished jobs: the uploads they name must stay."""
        async with self._db.execute(_SELECT_SPECS_IN_USE) as cur:
            return [r[0] for r in await cur.fetchall()]
