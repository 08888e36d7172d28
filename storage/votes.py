"""The votes part of the store: members' votes, the /top board, and which jobs the board can show."""

from __future__ import annotations

from storage.base import StorePart
from storage.models import TopEntry, _job
from storage.sql import (
    _DELETE_VOTE,
    _INSERT_VOTE,
    _SELECT_GUILDS,
    _SELECT_TOP,
    _SELECT_TOP_BY_SCORE,
    _SELECT_VOTED,
    _SUM_VOTES,
)


class VoteStore(StorePart):
    """Votes on finished images and the leaderboards they make."""

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

    # -- retention ------------------------------------------------------------------------------------------
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
