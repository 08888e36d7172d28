"""The statistics part of the store: what /stats and /stats me read (counts, running time, waits); nothing is written
here."""

from __future__ import annotations

from dataclasses import dataclass

from storage.base import StorePart
from storage.sql import (
    _SELECT_ACTIVITY,
    _SELECT_AVERAGE_WAIT,
    _SELECT_MEMBER_USAGE,
    _SELECT_STATE_COUNTS,
    _SELECT_USAGE,
)


@dataclass(frozen=True)
class Usage:
    """A member's running time: the seconds their runs took (on the GPU or a worker) and how many runs."""

    author_id: int
    seconds: float
    jobs: int
    rank: int | None = None  # their place among the members (1: the most), where asked for


@dataclass(frozen=True)
class Wait:
    """How long jobs waited before they started: the mean in seconds (None: none started) over `jobs` jobs."""

    mean: float | None
    jobs: int


@dataclass(frozen=True)
class Activity:
    """What the engine did in a window, every server together: running time within it (runs batched together each
    count), images finished, runs failed and cancelled, runs begun."""

    busy_seconds: float
    images: int
    failed: int
    cancelled: int
    started: int


class StatsStore(StorePart):
    """The reads behind /stats: per server (or per member), per period; DMs are `guild_id` None."""

    async def state_counts(self, guild_id: int | None, since: float, author_id: int | None = None) -> dict[str, int]:
        """How many jobs asked for since `since` (of one member, with `author_id`) are in each state now."""
        params = dict(guild=guild_id, since=since, author=author_id)
        async with self._db.execute(_SELECT_STATE_COUNTS, params) as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def usage(self, guild_id: int | None, since: float, limit: int = 5) -> list[Usage]:
        """The members whose runs that ended since `since` took the longest, the longest first."""
        params = dict(guild=guild_id, since=since, limit=limit)
        async with self._db.execute(_SELECT_USAGE, params) as cur:
            rows = await cur.fetchall()
        return [Usage(r[0], float(r[1]), r[2], rank) for rank, r in enumerate(rows, start=1)]

    async def member_usage(self, guild_id: int | None, author_id: int, since: float) -> Usage:
        """One member's running time since `since`, with their place among the members (None: no run of theirs)."""
        params = dict(guild=guild_id, since=since, author=author_id)
        async with self._db.execute(_SELECT_MEMBER_USAGE, params) as cur:
            row = await cur.fetchone()
        return Usage(author_id, float(row[0]), row[1], row[2]) if row else Usage(author_id, 0.0, 0, None)

    async def average_wait(self, guild_id: int | None, since: float, author_id: int | None = None) -> Wait:
        """How long the jobs that started since `since` had waited, on average."""
        params = dict(guild=guild_id, since=since, author=author_id)
        async with self._db.execute(_SELECT_AVERAGE_WAIT, params) as cur:
            mean, count = await cur.fetchone()
        return Wait(None if mean is None else float(mean), count)

    async def activity(self, since: float, now: float) -> Activity:
        """What the engine did from `since` to `now`, every server together."""
        async with self._db.execute(_SELECT_ACTIVITY, dict(since=since, now=now)) as cur:
            busy, images, failed, cancelled, started = await cur.fetchone()
        return Activity(float(busy), images, failed, cancelled, started)
