"""The tournaments part of the store: a seed tournament, its candidates admitted together, and its decision."""

from __future__ import annotations

import json
from typing import Any

from storage.base import StorePart
from storage.models import Job, JobState, Tournament, _job, _tournament
from storage.sql import (
    _DECIDE_TOURNAMENT,
    _DELETE_TOURNAMENT,
    _INSERT_CANDIDATES_CAPPED,
    _INSERT_EVENT,
    _INSERT_TOURNAMENT,
    _SELECT_CANDIDATES,
    _SELECT_TOURNAMENT,
    _SELECT_TOURNAMENTS_IN_STATE,
)

# The columns of `tournaments` that `update_tournament` may set.
_TOURNAMENT_UPDATABLE = {"state", "thread_id", "grid_message_id", "chosen", "decided_by", "decide_at"}


class TournamentStore(StorePart):
    """Seed tournaments: recorded with their candidates (or not at all), read, updated and decided once."""

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
        jobs = await self.tournament_jobs(tournament.id)
        self._job_entered(now, *jobs)
        return tournament, jobs

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
