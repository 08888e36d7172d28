"""Seed tournaments: several seeds of one prompt run a short first stage (the composition is settled early), one
grid shows them numbered with their CLIP scores, and one of them goes on to the full step count.

The author picks with the number buttons; otherwise, after `wait` seconds, the candidate with the most number
reactions goes on (ties and no votes: the best CLIP score). Everything is in the database, so a restart in
the middle loses nothing: candidates resume like any job, and a pending decision is timed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from bot.jobs import JobService
from engine.spec import JobSpec, random_seed
from storage import Job, JobState, Store, Tournament

log = logging.getLogger(__name__)

MIN_CANDIDATES, MAX_CANDIDATES = 2, 9


class TournamentPresenter(Protocol):
    async def tournament_ready(self, tournament: Tournament, candidates: list[Job]) -> Tournament:
        """Post the numbered grid with its buttons; returns the tournament with grid_message_id set."""

    async def tournament_votes(self, tournament: Tournament) -> dict[int, int]:
        """Votes per candidate number (number reactions on the grid; no bot's reaction counts, this one's included)."""

    async def tournament_decided(self, tournament: Tournament, winner: Job, job: Job) -> None:
        """Say which candidate goes on (and why), and take the buttons off the grid."""

    async def tournament_failed(self, tournament: Tournament) -> None:
        """No candidate finished."""


class Tournaments:
    def __init__(self, store: Store, jobs: JobService, presenter: TournamentPresenter, *, wait: float) -> None:
        self.store, self.jobs, self.presenter, self.wait = store, jobs, presenter, wait
        self._timers: dict[int, asyncio.Task] = {}
        jobs.ended_hooks.append(self.job_ended)

    async def start(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        author_id: int,
        spec: JobSpec,
        candidates: int,
        first_steps: int,
        thread_id: int | None = None,
    ) -> tuple[Tournament, list[Job]]:
        """Record a tournament and queue its candidates (new seeds, `first_steps` steps each), or raise QueueFull.
        Every candidate is a waiting job under its author's cap; they are admitted together, in one store
        statement, or not at all."""
        if not MIN_CANDIDATES <= candidates <= MAX_CANDIDATES:
            raise ValueError(f"a tournament has {MIN_CANDIDATES} to {MAX_CANDIDATES} candidates")
        first = min(first_steps, spec.steps)
        cap, total = await self.jobs.limits(guild_id)
        admitted = await self.store.admit_tournament(
            guild_id=guild_id,
            channel_id=channel_id,
            author_id=author_id,
            spec_json=spec.to_json(),
            candidate_specs=[spec.replace(seed=random_seed(), steps=first).to_json() for _ in range(candidates)],
            max_waiting=cap,
            max_total=total,
        )
        if admitted is None:
            raise await self.jobs.refusal(author_id, cap, total, candidates)
        tournament, jobs = admitted
        for i, job in enumerate(jobs):
            if thread_id is not None:
                jobs[i] = job = await self.store.update_job(job.id, thread_id=thread_id)
            self.jobs.enqueue(job)
        return tournament, jobs

    async def set_thread(self, tournament: Tournament, thread_id: int | None) -> None:
        await self.store.update_tournament(tournament.id, thread_id=thread_id)
        for job in await self.store.tournament_jobs(tournament.id):
            await self.store.update_job(job.id, thread_id=thread_id)

    async def job_ended(self, job: Job) -> None:
        """When the last candidate of a tournament ends, show the grid and start the clock."""
        if job.tournament_id is None or job.kind != "candidate":
            return
        tournament = await self.store.get_tournament(job.tournament_id)
        if tournament is None or tournament.state != "running":
            return
        candidates = await self.store.tournament_jobs(tournament.id)
        if any(c.state.active for c in candidates):
            return
        if not any(c.state == JobState.DONE for c in candidates):
            tournament = await self.store.update_tournament(tournament.id, state="failed")
            await self.presenter.tournament_failed(tournament)
            return
        tournament = await self.store.update_tournament(
            tournament.id, state="voting", decide_at=time.time() + self.wait
        )
        tournament = await self.presenter.tournament_ready(tournament, candidates)
        self._schedule(tournament)

    def _schedule(self, tournament: Tournament) -> None:
        delay = max(0.0, (tournament.decide_at or 0.0) - time.time())
        old = self._timers.pop(tournament.id, None)
        if old is not None:
            old.cancel()
        self._timers[tournament.id] = asyncio.create_task(
            self._decide_later(tournament.id, delay), name=f"tournament-{tournament.id}"
        )

    async def _decide_later(self, tournament_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timers.pop(tournament_id, None)
        try:
            await self.decide(tournament_id, None)
        except Exception:
            log.exception("could not decide tournament %d", tournament_id)

    async def decide(self, tournament_id: int, number: int | None, by: str = "author") -> Job | None:
        """Continue candidate `number` (or, with None, the most voted, then the best scoring) to the full step
        count. None if the tournament is not waiting for a decision."""
        tournament = await self.store.get_tournament(tournament_id)
        if tournament is None or tournament.state != "voting":
            return None
        finished = {c.candidate: c for c in await self.store.tournament_jobs(tournament_id) if c.state == JobState.DONE}
        if number is None:
            votes = await self.presenter.tournament_votes(tournament)
            number, by = pick_winner(finished, votes)
        if number not in finished:
            raise ValueError(f"candidate {number} did not finish")
        winner = finished[number]
        full = JobSpec.from_json(tournament.spec_json)
        spec = JobSpec.from_json(winner.spec_json).replace(steps=full.steps)
        tournament = await self.store.update_tournament(tournament_id, state="decided", chosen=number, decided_by=by)
        timer = self._timers.pop(tournament_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        job = await self.jobs.submit(
            guild_id=winner.guild_id,
            channel_id=winner.channel_id,
            author_id=tournament.author_id,
            spec=spec,
            kind="continue",
            parent_id=winner.id,
            thread_id=winner.thread_id,
            check_limits=False,
        )
        await self.presenter.tournament_decided(tournament, winner, job)
        self.jobs.pump()
        return job

    async def recover(self) -> None:
        """After a restart: time the pending decisions again; finish tournaments whose candidates all ended."""
        for tournament in await self.store.tournaments_in_state("voting"):
            self._schedule(tournament)
        for tournament in await self.store.tournaments_in_state("running"):
            candidates = await self.store.tournament_jobs(tournament.id)
            if candidates and not any(c.state.active for c in candidates):
                await self.job_ended(candidates[-1])

    async def close(self) -> None:
        for task in self._timers.values():
            task.cancel()
        await asyncio.gather(*self._timers.values(), return_exceptions=True)
        self._timers.clear()


def pick_winner(finished: dict[int, Job], votes: dict[int, int]) -> tuple[int, str]:
    """The most voted finished candidate; with no votes (or a tie), the best CLIP score; then the lowest number."""
    counted = {n: votes.get(n, 0) for n in finished}
    top = max(counted.values(), default=0)
    leaders = [n for n, v in counted.items() if v == top]
    if top > 0 and len(leaders) == 1:
        return leaders[0], "votes"
    pool = leaders if top > 0 else list(finished)
    best = max(pool, key=lambda n: (finished[n].score or 0.0, -n))
    return best, "score"
