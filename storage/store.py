"""The job store: one aiosqlite connection in WAL mode, migrations by `PRAGMA user_version`, dataclasses out."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from engine.spec import JobSpec

log = logging.getLogger(__name__)


class StorageError(Exception):
    """The database cannot be used: it cannot be opened, is not a database, is read-only, or was deleted or
    replaced while the bot ran. The message is one sentence for the operator; the bot stops on it rather than
    fail every job."""


class JobState(StrEnum):
    """Where a job is: waiting, running, or ended in one of three ways (`active` tells the first two apart)."""

    QUEUED = "queued"
    RUNNING = "running"
    POSTING = "posting"  # finished and saved; its result message is not known to exist yet
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Waiting or running: it can still be cancelled or steered."""
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def final(self) -> bool:
        """Nothing more will happen to it (a posting job still has to be shown)."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobKind(StrEnum):
    """How a job came to be."""

    NEW = "new"
    REROLL = "reroll"
    CONTINUE = "continue"
    UPSCALE = "upscale"
    BRANCH = "branch"
    CANDIDATE = "candidate"  # one seed of a tournament
    WINNER = "winner"  # a tournament's chosen seed, run to the end


class TournamentState(StrEnum):
    """Where a seed tournament stands."""

    RUNNING = "running"
    VOTING = "voting"
    DECIDED = "decided"
    FAILED = "failed"


@dataclass(frozen=True)
class GuildSettings:
    """A server's settings (None and empty mean: the bot's own setting, or no limit)."""

    max_queued_per_user: int | None = None
    use_threads: bool = True
    channels: tuple[int, ...] = ()  # where /imagine may be used; empty: everywhere
    default_steps: int | None = None
    max_steps: int | None = None
    sizes: tuple[str, ...] = ()  # the size names members may pick; empty: all
    max_queued_total: int | None = None
    timelapse: bool | None = None
    moderation: str | None = None  # off | spoiler | withhold | strict; None: the bot's default
    builtin_words: bool = True
    gallery: bool = False
    gallery_excluded: tuple[int, ...] = ()  # channels (with their threads) whose images the gallery never shows


_SETTINGS_COLUMNS = tuple(GuildSettings.__dataclass_fields__)
_JSON_SETTINGS = {"channels", "sizes", "gallery_excluded"}
_BOOL_SETTINGS = {"use_threads", "timelapse", "builtin_words", "gallery"}


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
    timelapse_message_id: int | None = None
    moderation: str | None = None  # the output check's action (post, spoiler, withhold); None: not checked
    unsafe: float | None = None
    deleted_at: float | None = None
    deleted_by: int | None = None
    audience: str | None = None  # who could see the result when posted: everyone | restricted; None: not recorded
    audience_channel_id: int | None = None  # the channel that decided it: where it was posted, or a thread's parent

    @functools.cached_property
    def spec(self) -> JobSpec:
        """The job's recipe, parsed (the row holds it as JSON)."""
        return JobSpec.from_json(self.spec_json)

    @property
    def scores(self) -> dict[str, float]:
        """The final CLIP score of each prompt, by prompt text (empty before the job finished)."""
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

    @functools.cached_property
    def spec(self) -> JobSpec:
        """The full run the winner goes on to, parsed."""
        return JobSpec.from_json(self.spec_json)


_TOURNAMENT_UPDATABLE = {"state", "thread_id", "grid_message_id", "chosen", "decided_by", "decide_at"}


@dataclass(frozen=True)
class TopEntry:
    """One line of a leaderboard: the job and the sum of its votes."""

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
_SERVER_WAITING = "(SELECT count(*) FROM jobs WHERE guild_id = :guild AND state = 'queued')"
_ROOM = (
    f"(:cap IS NULL OR {_MEMBER_WAITING} + :count <= :cap) AND (:total IS NULL OR {_ALL_WAITING} + :count <= :total)"
    f" AND (:server IS NULL OR {_SERVER_WAITING} + :count <= :server)"
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
_SELECT_SERVER_WAITING = f"SELECT {_SERVER_WAITING}"
_INSERT_EVENT = "INSERT INTO job_events (job_id, state, at, detail) VALUES (?, ?, ?, ?)"
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
_SELECT_BY_STATE = "SELECT * FROM jobs WHERE state = ? ORDER BY id"
_SELECT_BY_RESULT_MESSAGE = "SELECT * FROM jobs WHERE result_message_id = ?"
_SELECT_HISTORY = "SELECT * FROM jobs WHERE guild_id IS ? AND author_id = ? ORDER BY id DESC LIMIT ?"
_SELECT_EVENTS = "SELECT state, at, detail FROM job_events WHERE job_id = ? ORDER BY id"
_INSERT_VOTE = "INSERT OR IGNORE INTO votes (job_id, user_id, value, at) VALUES (?, ?, ?, ?)"
_DELETE_VOTE = "DELETE FROM votes WHERE job_id = ? AND user_id = ? AND value = ?"
_SUM_VOTES = "SELECT COALESCE(SUM(value), 0) FROM votes WHERE job_id = ?"
# A server's /top answers in public: nothing posted where not everyone in it could see it (see migration 005).
_SELECT_TOP = """
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE jobs.guild_id IS :guild AND (jobs.guild_id IS NOT NULL OR jobs.author_id = :author)
  AND jobs.state = 'done' AND jobs.finished_at >= :since AND jobs.kind != 'candidate'
  AND jobs.deleted_at IS NULL AND jobs.moderation IS NOT 'withhold'
  AND (jobs.guild_id IS NULL OR jobs.audience IS NOT 'restricted')
GROUP BY jobs.id
ORDER BY total DESC, jobs.score DESC, jobs.id
LIMIT :limit
"""
_SELECT_TOP_BY_SCORE = _SELECT_TOP.replace(
    "ORDER BY total DESC, jobs.score DESC", "ORDER BY jobs.score DESC, total DESC"
)
_SELECT_FINISHED = "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY finished_at, id"
_SELECT_GUILDS = "SELECT DISTINCT guild_id FROM jobs WHERE state = 'done'"
# Jobs whose files a later step still needs: the unfinished ones (including those still to be posted), the
# parents they continue or branch from, and the candidates of a tournament not yet decided.
_SELECT_IN_USE = """
SELECT id FROM jobs WHERE state IN ('queued', 'running', 'posting')
UNION SELECT parent_id FROM jobs WHERE state IN ('queued', 'running', 'posting') AND parent_id IS NOT NULL
UNION SELECT jobs.id FROM jobs JOIN tournaments ON tournaments.id = jobs.tournament_id
      WHERE tournaments.state IN ('running', 'voting')
"""
_SELECT_VOTED = "SELECT job_id FROM votes GROUP BY job_id HAVING SUM(value) > 0"
_SELECT_SPECS_IN_USE = "SELECT spec_json FROM jobs WHERE state IN ('queued', 'running', 'posting')"
_SELECT_SETTINGS = f"SELECT {', '.join(_SETTINGS_COLUMNS)} FROM guild_settings WHERE guild_id = ?"
_UPSERT_SETTINGS = f"""
INSERT INTO guild_settings (guild_id, {", ".join(_SETTINGS_COLUMNS)}) VALUES (?{", ?" * len(_SETTINGS_COLUMNS)})
ON CONFLICT(guild_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _SETTINGS_COLUMNS)}
"""
_SELECT_WORDS = "SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word"
_INSERT_WORD = "INSERT OR IGNORE INTO blocked_words (guild_id, word, added_by, added_at) VALUES (?, ?, ?, ?)"
_DELETE_WORD = "DELETE FROM blocked_words WHERE guild_id = ? AND word = ?"
_SELECT_DM = "SELECT dm_results FROM member_settings WHERE user_id = ?"
_UPSERT_DM = """
INSERT INTO member_settings (user_id, dm_results) VALUES (?, ?)
ON CONFLICT(user_id) DO UPDATE SET dm_results = excluded.dm_results
"""
_DELETE_JOB = "UPDATE jobs SET deleted_at = ?, deleted_by = ? WHERE id = ? AND deleted_at IS NULL"
# The web gallery shows a job only when it is public and meant to be seen: posted on a server that turned the
# gallery on, where everyone in that server could see it (recorded when it was posted; a row from before that
# was recorded is not shown), not in a channel or thread the server's staff left out of the gallery, not a
# tournament's candidate, not deleted, and not spoilered or withheld by the output check.
_GALLERY_EXCLUDED = """
EXISTS (SELECT 1 FROM guild_settings AS s, json_each(s.gallery_excluded) AS excluded
        WHERE s.guild_id = jobs.guild_id
          AND excluded.value IN (jobs.channel_id, jobs.thread_id, jobs.audience_channel_id))
"""
_GALLERY_VISIBLE = f"""
jobs.state = 'done' AND jobs.guild_id IS NOT NULL AND jobs.image_path IS NOT NULL
  AND jobs.kind != 'candidate' AND jobs.deleted_at IS NULL
  AND (jobs.moderation IS NULL OR jobs.moderation = 'post')
  AND jobs.audience = 'everyone' AND NOT {_GALLERY_EXCLUDED}
  AND jobs.guild_id IN (SELECT guild_id FROM guild_settings WHERE gallery = 1)
"""
_SELECT_GALLERY_GUILDS = f"SELECT DISTINCT jobs.guild_id FROM jobs WHERE {_GALLERY_VISIBLE} ORDER BY jobs.guild_id"
_SELECT_GALLERY_PAGE = f"""
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE {_GALLERY_VISIBLE} AND jobs.guild_id = :guild AND jobs.finished_at >= :since
GROUP BY jobs.id
ORDER BY total DESC, jobs.score DESC, jobs.id
LIMIT :limit OFFSET :offset
"""
_COUNT_GALLERY = (
    f"SELECT count(*) FROM jobs WHERE {_GALLERY_VISIBLE} AND jobs.guild_id = :guild AND jobs.finished_at >= :since"
)
_SELECT_GALLERY_IMAGE = f"""
SELECT jobs.*, COALESCE(SUM(votes.value), 0) AS total
FROM jobs LEFT JOIN votes ON votes.job_id = jobs.id
WHERE {_GALLERY_VISIBLE} AND jobs.id = :id
GROUP BY jobs.id
"""

_SELECT_META = "SELECT key, value FROM meta"
_SCHEMA_VERSION = "PRAGMA user_version"
_UPDATE_ROW = "UPDATE {table} SET {columns} WHERE id = ?"  # table and columns only from the allow-lists below
_INSERT_TOURNAMENT = """
INSERT INTO tournaments (guild_id, channel_id, author_id, spec_json, candidates, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
_SELECT_TOURNAMENT = "SELECT * FROM tournaments WHERE id = ?"
_SELECT_TOURNAMENTS_IN_STATE = "SELECT * FROM tournaments WHERE state = ? ORDER BY id"
_DELETE_TOURNAMENT = "DELETE FROM tournaments WHERE id = ?"
_DECIDE_TOURNAMENT = """
UPDATE tournaments SET state = 'decided', chosen = ?, decided_by = ? WHERE id = ? AND state = 'voting'
"""
_SELECT_CANDIDATES = "SELECT * FROM jobs WHERE tournament_id = ? AND kind = 'candidate' ORDER BY candidate"

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


_TOUCH = "INSERT INTO meta (key, value) VALUES ('checked_at', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, or None when it is missing: a changed value means the file was
    deleted or replaced under the open connection (which would go on writing to the unlinked file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text()))
    return sorted(found)


def _why(path: Path, exc: BaseException) -> str:
    """One sentence for the operator about a database that cannot be used."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or not path.exists():
        return (
            f"The database {path} was deleted or moved while the bot was running; restore it (or accept a fresh "
            "one) and start the bot again."
        )
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return f"The database {path} is read-only; give the bot write access to the file and its folder."
    if "not a database" in text or "malformed" in text:
        return f"The database {path} is damaged or is not a database ({text}); restore a backup or move it away."
    return f"The database {path} cannot be used: {text}."


def _loud(method):
    """Turn SQLite's operational failures (read-only, I/O, damaged file, no such table) into a StorageError.
    Integrity errors are program errors and stay as they are."""

    @functools.wraps(method)
    async def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(_why(self.path, exc)) from exc

    return wrapper


def _loud_methods(cls: type) -> type:
    """Apply `_loud` to every public coroutine method of the store."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _loud(member))
    return cls


@_loud_methods
class Store:
    """Async access to the bot's database. Open with `await Store.open(path)`; close with `await store.close()`.

    Failures of the database itself raise StorageError (see `check`)."""

    def __init__(self, db: aiosqlite.Connection, clock=time.time, path: Path | None = None) -> None:
        self._db = db
        self._clock = clock
        self.path = Path(path) if path is not None else Path("?")
        self._identity = _identity(self.path)
        self.install = ""
        self.legacy_buttons = False
        # Servers' settings as last read or written: this store is their only writer, and every submission reads them.
        self._settings: dict[int, GuildSettings] = {}

    @classmethod
    async def open(cls, path: str | Path, clock=time.time) -> Store:
        """Open (creating if needed) and migrate the database, and prove it is writable. Raises StorageError with
        one sentence when it cannot be used; no connection (and no thread) is left behind then."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(_why(path, exc)) from exc
        try:
            db.row_factory = aiosqlite.Row
            for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"):
                async with db.execute(pragma):  # close each cursor: an open one blocks the migrations' COMMIT
                    pass
            store = cls(db, clock, path)
            await store.migrate()
            await store._load_meta()
            await store.check()
        except BaseException as exc:
            await db.close()  # aiosqlite's thread would otherwise keep the process alive
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(_why(path, exc)) from exc
            raise
        return store

    async def close(self) -> None:
        """Close the connection (its worker thread ends with it)."""
        await self._db.close()

    async def check(self) -> None:
        """Raise StorageError unless the database file is still the one opened and takes a write."""
        if _identity(self.path) != self._identity:
            raise StorageError(_why(self.path, FileNotFoundError(self.path)))
        await self._db.execute(_TOUCH, (str(self._clock()),))
        await self._db.commit()

    def accepts(self, install: str | None) -> bool:
        """Whether a button carrying `install` (None: a button from before tokens) belongs to this database."""
        return install == self.install if install else self.legacy_buttons

    async def _load_meta(self) -> None:
        async with self._db.execute(_SELECT_META) as cur:
            meta = {r[0]: r[1] for r in await cur.fetchall()}
        self.install = meta["install"]
        self.legacy_buttons = meta.get("legacy_buttons") == "1"

    async def schema_version(self) -> int:
        """The number of the last migration applied."""
        async with self._db.execute(_SCHEMA_VERSION) as cur:
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
        """Record a new queued job without any cap (tests and internal use; members' jobs go through
        `create_job_capped`)."""
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
        max_server: int | None = None,
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
            server=max_server,
            count=len(candidate_specs),
        )
        async with self._db.execute(_INSERT_CANDIDATES_CAPPED, params) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        if not ids:
            await self._db.execute(_DELETE_TOURNAMENT, (tournament.id,))
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

    async def server_waiting(self, guild_id: int | None) -> int:
        """The waiting jobs of one server (the server-wide cap counts them)."""
        async with self._db.execute(_SELECT_SERVER_WAITING, dict(guild=guild_id)) as cur:
            return (await cur.fetchone())[0]

    async def get_job(self, job_id: int) -> Job | None:
        """The job `job_id`, or None."""
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
            await self._db.execute(_UPDATE_ROW.format(table=table, columns=columns), (*fields.values(), row_id))
            await self._db.commit()

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
        return await self.get_job(job_id)

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

    # -- retention ------------------------------------------------------------------------------------------
    async def finished_jobs(self) -> list[Job]:
        """Jobs that ended (done, failed, cancelled), the longest ago first."""
        async with self._db.execute(_SELECT_FINISHED) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def jobs_in_use(self) -> set[int]:
        """Ids of jobs whose files are still needed: unfinished jobs, their parents, undecided candidates."""
        async with self._db.execute(_SELECT_IN_USE) as cur:
            return {r[0] for r in await cur.fetchall()}

    async def specs_in_use(self) -> list[str]:
        """The specs (JSON) of unfinished jobs: the uploads they name must stay."""
        async with self._db.execute(_SELECT_SPECS_IN_USE) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def jobs_on_the_board(self, limit: int = 10, week: float | None = None) -> set[int]:
        """Ids of every job /top can show (each guild's top `limit` by votes and by score, all time and this
        week) and of every job with a positive vote total."""
        week = self._clock() - 7 * 86400 if week is None else week
        async with self._db.execute(_SELECT_VOTED) as cur:
            kept = {r[0] for r in await cur.fetchall()}
        async with self._db.execute(_SELECT_GUILDS) as cur:
            guilds = [r[0] for r in await cur.fetchall()]
        for guild_id in guilds:
            for since in (0.0, week):
                for by in ("votes", "score"):
                    kept.update(e.job.id for e in await self.top(guild_id, since=since, limit=limit, by=by))
        return kept

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
        """The sum of a job's votes."""
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
        """Record a new seed tournament (its candidates are added by `create_candidates_capped`)."""
        async with self._db.execute(
            _INSERT_TOURNAMENT, (guild_id, channel_id, author_id, spec_json, candidates, self._clock())
        ) as cur:
            tournament_id = cur.lastrowid
        await self._db.commit()
        return await self.get_tournament(tournament_id)

    async def get_tournament(self, tournament_id: int) -> Tournament | None:
        """The tournament `tournament_id`, or None."""
        async with self._db.execute(_SELECT_TOURNAMENT, (tournament_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _tournament(row)

    async def update_tournament(self, tournament_id: int, **fields: Any) -> Tournament:
        """Set some of a tournament's columns (only those in `_TOURNAMENT_UPDATABLE`) and return it as it is now."""
        await self._update_row("tournaments", _TOURNAMENT_UPDATABLE, tournament_id, fields)
        return await self.get_tournament(tournament_id)

    async def decide_tournament(self, tournament_id: int, chosen: int, decided_by: str) -> Tournament | None:
        """Move a voting tournament to decided with its choice, in one statement, and return it as it is now; None
        (and nothing changed) when it was not voting, e.g. another decision got there first."""
        async with self._db.execute(_DECIDE_TOURNAMENT, (chosen, decided_by, tournament_id)) as cur:
            changed = cur.rowcount == 1
        await self._db.commit()
        return await self.get_tournament(tournament_id) if changed else None

    async def tournaments_in_state(self, state: str) -> list[Tournament]:
        """Every tournament in `state`, oldest first."""
        async with self._db.execute(_SELECT_TOURNAMENTS_IN_STATE, (state,)) as cur:
            return [_tournament(r) for r in await cur.fetchall()]

    async def tournament_jobs(self, tournament_id: int) -> list[Job]:
        """The candidates of a tournament, by number."""
        async with self._db.execute(_SELECT_CANDIDATES, (tournament_id,)) as cur:
            return [_job(r) for r in await cur.fetchall()]

    # -- guild settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int | None) -> GuildSettings:
        """A server's settings (the defaults for a server that changed none, and for DMs); read from the database once,
        then kept (`update_guild_settings` keeps the new ones)."""
        if guild_id is None:
            return GuildSettings()
        if guild_id in self._settings:
            return self._settings[guild_id]
        async with self._db.execute(_SELECT_SETTINGS, (guild_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            self._settings[guild_id] = GuildSettings()
            return self._settings[guild_id]
        values = {}
        for name, value in zip(_SETTINGS_COLUMNS, row, strict=True):
            if name in _JSON_SETTINGS:
                value = tuple(json.loads(value)) if value else ()
            elif name in _BOOL_SETTINGS and value is not None:
                value = bool(value)
            values[name] = value
        self._settings[guild_id] = GuildSettings(**values)
        return self._settings[guild_id]

    async def update_guild_settings(self, guild_id: int, **changes: Any) -> GuildSettings:
        """Change some of a server's settings (the others stay); returns them all."""
        unknown = set(changes) - set(_SETTINGS_COLUMNS)
        if unknown:
            raise ValueError(f"unknown guild settings {sorted(unknown)}")
        current = dataclasses.replace(await self.guild_settings(guild_id), **changes)
        row = []
        for name in _SETTINGS_COLUMNS:
            value = getattr(current, name)
            if name in _JSON_SETTINGS:
                value = json.dumps(list(value)) if value else None
            elif name in _BOOL_SETTINGS and value is not None:
                value = int(value)
            row.append(value)
        await self._db.execute(_UPSERT_SETTINGS, (guild_id, *row))
        await self._db.commit()
        self._settings[guild_id] = current
        return current

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The words a server added to its blocked list (the built-in list is not stored)."""
        async with self._db.execute(_SELECT_WORDS, (guild_id,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def add_blocked_word(self, guild_id: int, word: str, added_by: int) -> bool:
        """Block a word on a server; False if it was already blocked."""
        async with self._db.execute(_INSERT_WORD, (guild_id, word, added_by, self._clock())) as cur:
            added = cur.rowcount == 1
        await self._db.commit()
        return added

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Unblock a word; False if it was not blocked."""
        async with self._db.execute(_DELETE_WORD, (guild_id, word)) as cur:
            removed = cur.rowcount == 1
        await self._db.commit()
        return removed

    # -- members' preferences -------------------------------------------------------------------------------
    async def dm_results(self, user_id: int) -> bool:
        """Whether the member asked for their finished images by DM as well."""
        async with self._db.execute(_SELECT_DM, (user_id,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    async def set_dm_results(self, user_id: int, wanted: bool) -> None:
        """Record a member's choice of DM delivery."""
        await self._db.execute(_UPSERT_DM, (user_id, int(wanted)))
        await self._db.commit()

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

    # -- gallery --------------------------------------------------------------------------------------------
    async def gallery_guilds(self) -> list[int]:
        """The servers that turned the web gallery on and have at least one image it may show."""
        async with self._db.execute(_SELECT_GALLERY_GUILDS) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def gallery_page(
        self, guild_id: int, *, since: float = 0.0, limit: int = 24, offset: int = 0
    ) -> tuple[list[TopEntry], int]:
        """One page of a server's public images finished since `since`, by votes, then CLIP score, then id; and
        how many there are in all. Empty for a server without the gallery."""
        params = dict(guild=guild_id, since=since, limit=limit, offset=offset)
        async with self._db.execute(_SELECT_GALLERY_PAGE, params) as cur:
            rows = await cur.fetchall()
        async with self._db.execute(_COUNT_GALLERY, params) as cur:
            total = (await cur.fetchone())[0]
        return [TopEntry(_job(r), r["total"]) for r in rows], total

    async def gallery_image(self, job_id: int) -> TopEntry | None:
        """One image with its votes, if the gallery may show it (None otherwise, as for a job that does not
        exist)."""
        async with self._db.execute(_SELECT_GALLERY_IMAGE, dict(id=job_id)) as cur:
            row = await cur.fetchone()
        return TopEntry(_job(row), row["total"]) if row else None


def _job(row: aiosqlite.Row) -> Job:
    data = {k: row[k] for k in Job.__dataclass_fields__}
    data["state"] = JobState(data["state"])
    return Job(**data)


def _tournament(row: aiosqlite.Row) -> Tournament:
    return Tournament(**{k: row[k] for k in Tournament.__dataclass_fields__})
