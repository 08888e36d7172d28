"""The job store: one aiosqlite connection in WAL mode, migrations by `PRAGMA user_version`, dataclasses out."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Job:
    """One row of `jobs`."""

    id: int
    guild_id: int | None
    channel_id: int
    author_id: int
    spec_json: str
    kind: str
    parent_id: int | None
    state: JobState
    error: str | None
    thread_id: int | None
    queued_message_id: int | None
    status_message_id: int | None
    result_message_id: int | None
    image_path: str | None
    snapshot_path: str | None
    steps_done: int
    width: int | None
    height: int | None
    score: float | None
    scores_json: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    tournament_id: int | None = None
    candidate: int | None = None

    @property
    def scores(self) -> dict[str, float]:
        return json.loads(self.scores_json) if self.scores_json else {}

    @property
    def post_channel_id(self) -> int:
        """Where the job's progress and result go: its thread, else its channel."""
        return self.thread_id or self.channel_id


@dataclass(frozen=True)
class Tournament:
    """One row of `tournaments`."""

    id: int
    guild_id: int | None
    channel_id: int
    author_id: int
    spec_json: str
    candidates: int
    state: str
    thread_id: int | None
    grid_message_id: int | None
    chosen: int | None
    decided_by: str | None
    decide_at: float | None
    created_at: float


_TOURNAMENT_UPDATABLE = {"state", "thread_id", "grid_message_id", "chosen", "decided_by", "decide_at"}


@dataclass(frozen=True)
class TopEntry:
    job: Job
    votes: int


# SQL kept as named constants.
_INSERT_JOB = """
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, parent_id, state, created_at, tournament_id,
                  candidate)
VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)
"""
# The waiting-line caps, checked in the same statement that inserts, so that no two submissions both see room:
# at most `:cap` waiting jobs per member and `:total` in all, counting the `:count` being added (every candidate
# of a tournament is a waiting job). NULL means no cap (a tournament's winner takes its candidates' place).
_MEMBER_WAITING = "(SELECT count(*) FROM jobs WHERE author_id = :author AND state = 'queued')"
_ALL_WAITING = "(SELECT count(*) FROM jobs WHERE state = 'queued')"
_ROOM = (
    f"(:cap IS NULL OR {_MEMBER_WAITING} + :count <= :cap) AND (:total IS NULL OR {_ALL_WAITING} + :count <= :total)"
)
_INSERT_JOB_CAPPED = f"""
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, parent_id, state, created_at)
SELECT :guild, :channel, :author, :spec, :kind, :parent, 'queued', :now
WHERE {_ROOM}
"""
_INSERT_CANDIDATES_CAPPED = f"""
WITH candidates AS (SELECT key + 1 AS number, value AS spec FROM json_each(:specs))
INSERT INTO jobs (guild_id, channel_id, author_id, spec_json, kind, state, created_at, tournament_id, candidate)
SELECT :guild, :channel, :author, candidates.spec, 'candidate', 'queued', :now, :tournament, candidates.number
FROM candidates
WHERE {_ROOM}
ORDER BY candidates.number
RETURNING id
"""
_SELECT_WAITING = f"SELECT {_MEMBER_WAITING}, {_ALL_WAITING}"
_INSERT_EVENT = "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)"
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
_SELECT_BY_STATE = "SELECT * FROM jobs WHERE state = ? ORDER BY id"
_SELECT_BY_RESULT_MESSAGE = "SELECT * FROM jobs WHERE result_message_id = ?"
_SELECT_HISTORY = "SELECT * FROM jobs WHERE guild_id IS ? AND author_id = ? ORDER BY id DESC LIMIT ?"
_SELECT_EVENTS = "SELECT state, at, detail FROM job_events WHERE job_id = ? ORDER BY id"
_INSERT_VOTE = "INSERT OR IGNORE INTO votes (job_id, user_id, value, at) VALUES (?, ?, ?, ?)"
_DELETE_VOTE = "DELETE FROM votes WHERE job_id = ? AND user_id = ? AND value = ?"
_SUM_VOTES = "SELECT COALESCE(SUM(value), 0) FROM votes WHERE job_id = ?"
_SELECT_TOP = """
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE jobs.guild_id IS :guild AND (jobs.guild_id IS NOT NULL OR jobs.author_id = :author)
  AND jobs.state = 'done' AND jobs.finished_at >= :since AND jobs.kind != 'candidate'
GROUP BY jobs.id
ORDER BY total DESC, jobs.score DESC, jobs.id
LIMIT :limit
"""
_SELECT_TOP_BY_SCORE = _SELECT_TOP.replace(
    "ORDER BY total DESC, jobs.score DESC", "ORDER BY jobs.score DESC, total DESC"
)
_SELECT_SETTINGS = "SELECT max_queued_per_user, use_threads FROM guild_settings WHERE guild_id = ?"
_UPSERT_SETTINGS = """
INSERT INTO guild_settings (guild_id, max_queued_per_user, use_threads) VALUES (?, ?, ?)
ON CONFLICT(guild_id) DO UPDATE SET max_queued_per_user = excluded.max_queued_per_user,
                                    use_threads = excluded.use_threads
"""

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
}


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text()))
    return sorted(found)


class Store:
    """Async access to the bot's database. Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(self, db: aiosqlite.Connection, clock=time.time) -> None:
        self._db = db
        self._clock = clock

    @classmethod
    async def open(cls, path: str | Path, clock=time.time) -> Store:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            db.row_factory = aiosqlite.Row
            for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"):
                async with db.execute(pragma):  # close each cursor: an open one blocks the migrations' COMMIT
                    pass
            store = cls(db, clock)
            await store.migrate()
        except BaseException:
            await db.close()  # the connection's thread would otherwise keep the process alive
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            return (await cur.fetchone())[0]

    async def migrate(self) -> int:
        """Apply the numbered migrations above the current `user_version`, each in its own transaction."""
        current = await self.schema_version()
        for number, sql in _migrations():
            if number <= current:
                continue
            log.info("applying migration %03d", number)
            await self._db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
            current = number
        return current

    # -- jobs -----------------------------------------------------------------------------------------------
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
        now = self._clock()
        async with self._db.execute(
            _INSERT_JOB, (guild_id, channel_id, author_id, spec_json, kind, parent_id, now, tournament_id, candidate)
        ) as cur:
            job_id = cur.lastrowid
        await self._db.execute(_INSERT_EVENT, (job_id, JobState.QUEUED, now, None))
        await self._db.commit()
        return await self.get_job(job_id)

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
            count=1,
        )
        async with self._db.execute(_INSERT_JOB_CAPPED, params) as cur:
            job_id = cur.lastrowid if cur.rowcount == 1 else None
        if job_id is None:
            return None
        await self._db.execute(_INSERT_EVENT, (job_id, JobState.QUEUED, now, None))
        await self._db.commit()
        return await self.get_job(job_id)

    async def admit_tournament(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        author_id: int,
        spec_json: str,
        candidate_specs: list[str],
        max_waiting: int | None,
        max_total: int | None,
    ) -> tuple[Tournament, list[Job]] | None:
        """Record a tournament and queue its candidates (numbered from 1) if there is room for all of them, as
        `admit_job` decides for one job; None if not. The candidates go in together, in one statement, or not at
        all."""
        now = self._clock()
        tournament = await self.create_tournament(
            guild_id=guild_id,
            channel_id=channel_id,
            author_id=author_id,
            spec_json=spec_json,
            candidates=len(candidate_specs),
        )
        params = dict(
            guild=guild_id,
            channel=channel_id,
            author=author_id,
            now=now,
            tournament=tournament.id,
            specs=json.dumps(candidate_specs),
            cap=max_waiting,
            total=max_total,
            count=len(candidate_specs),
        )
        async with self._db.execute(_INSERT_CANDIDATES_CAPPED, params) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        if not ids:
            await self._db.execute("DELETE FROM tournaments WHERE id = ?", (tournament.id,))
            await self._db.commit()
            return None
        await self._db.executemany(_INSERT_EVENT, [(job_id, JobState.QUEUED, now, None) for job_id in ids])
        await self._db.commit()
        return tournament, await self.tournament_jobs(tournament.id)

    async def waiting(self, author_id: int) -> tuple[int, int]:
        """(the member's waiting jobs, every waiting job), as the caps count them."""
        async with self._db.execute(_SELECT_WAITING, dict(author=author_id)) as cur:
            row = await cur.fetchone()
        return row[0], row[1]

    async def get_job(self, job_id: int) -> Job | None:
        async with self._db.execute(_SELECT_JOB, (job_id,)) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def _update_row(self, table: str, allowed: set[str], row_id: int, fields: dict[str, Any]) -> None:
        """Set `fields` (only column names from `allowed`) of one row of `table` and commit."""
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        if fields:
            columns = ", ".join(f"{k} = ?" for k in fields)
            await self._db.execute(f"UPDATE {table} SET {columns} WHERE id = ?", (*fields.values(), row_id))
            await self._db.commit()

    async def update_job(self, job_id: int, **fields: Any) -> Job:
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
        await self._db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (state, *fields.values(), job_id))
        await self._db.execute(_INSERT_EVENT, (job_id, state, now, detail))
        await self._db.commit()
        return await self.get_job(job_id)

    async def jobs_in_state(self, state: JobState) -> list[Job]:
        async with self._db.execute(_SELECT_BY_STATE, (state,)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def job_for_result_message(self, message_id: int) -> Job | None:
        async with self._db.execute(_SELECT_BY_RESULT_MESSAGE, (message_id,)) as cur:
            row = await cur.fetchone()
        return _job(row) if row else None

    async def history(self, guild_id: int | None, author_id: int, limit: int = 10) -> list[Job]:
        async with self._db.execute(_SELECT_HISTORY, (guild_id, author_id, limit)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def events(self, job_id: int) -> list[tuple[str, float, str | None]]:
        async with self._db.execute(_SELECT_EVENTS, (job_id,)) as cur:
            return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    # -- votes ----------------------------------------------------------------------------------------------
    async def set_vote(self, job_id: int, user_id: int, value: int, present: bool) -> int:
        """Add or remove one vote (+1 or -1) and return the job's vote total."""
        if present:
            await self._db.execute(_INSERT_VOTE, (job_id, user_id, value, self._clock()))
        else:
            await self._db.execute(_DELETE_VOTE, (job_id, user_id, value))
        await self._db.commit()
        return await self.vote_total(job_id)

    async def vote_total(self, job_id: int) -> int:
        async with self._db.execute(_SUM_VOTES, (job_id,)) as cur:
            return (await cur.fetchone())[0]

    async def top(
        self,
        guild_id: int | None,
        since: float = 0.0,
        limit: int = 10,
        by: str = "votes",
        *,
        author_id: int | None = None,
    ) -> list[TopEntry]:
        """A server's finished images ranked by votes (ties by CLIP score) or by CLIP score (ties by votes). DMs are
        private: with `guild_id` None only `author_id`'s own DM images count (none without an author)."""
        query = {"votes": _SELECT_TOP, "score": _SELECT_TOP_BY_SCORE}[by]
        params = dict(guild=guild_id, author=author_id, since=since, limit=limit)
        async with self._db.execute(query, params) as cur:
            rows = await cur.fetchall()
        return [TopEntry(_job(r), r["total"]) for r in rows]

    # -- tournaments ----------------------------------------------------------------------------------------
    async def create_tournament(
        self, *, guild_id: int | None, channel_id: int, author_id: int, spec_json: str, candidates: int
    ) -> Tournament:
        async with self._db.execute(
            "INSERT INTO tournaments (guild_id, channel_id, author_id, spec_json, candidates, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, channel_id, author_id, spec_json, candidates, self._clock()),
        ) as cur:
            tournament_id = cur.lastrowid
        await self._db.commit()
        return await self.get_tournament(tournament_id)

    async def get_tournament(self, tournament_id: int) -> Tournament | None:
        async with self._db.execute("SELECT * FROM tournaments WHERE id = ?", (tournament_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _tournament(row)

    async def update_tournament(self, tournament_id: int, **fields: Any) -> Tournament:
        await self._update_row("tournaments", _TOURNAMENT_UPDATABLE, tournament_id, fields)
        return await self.get_tournament(tournament_id)

    async def tournaments_in_state(self, state: str) -> list[Tournament]:
        async with self._db.execute("SELECT * FROM tournaments WHERE state = ? ORDER BY id", (state,)) as cur:
            return [_tournament(r) for r in await cur.fetchall()]

    async def tournament_jobs(self, tournament_id: int) -> list[Job]:
        """The candidates of a tournament, by number."""
        query = "SELECT * FROM jobs WHERE tournament_id = ? AND kind = 'candidate' ORDER BY candidate"
        async with self._db.execute(query, (tournament_id,)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    # -- guild settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        async with self._db.execute(_SELECT_SETTINGS, (guild_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return {"max_queued_per_user": None, "use_threads": True}
        return {"max_queued_per_user": row[0], "use_threads": bool(row[1])}

    async def set_guild_settings(self, guild_id: int, *, max_queued_per_user: int | None, use_threads: bool) -> None:
        await self._db.execute(_UPSERT_SETTINGS, (guild_id, max_queued_per_user, int(use_threads)))
        await self._db.commit()


def _job(row: aiosqlite.Row) -> Job:
    data = {k: row[k] for k in Job.__dataclass_fields__}
    data["state"] = JobState(data["state"])
    return Job(**data)


def _tournament(row: aiosqlite.Row) -> Tournament:
    return Tournament(**{k: row[k] for k in Tournament.__dataclass_fields__})
