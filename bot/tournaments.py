"""Seed tournaments: several seeds of one prompt run a short first stage (the composition is settled early), one
grid shows them numbered with their CLIP scores, and one of them goes on to the full step count.

A candidate the server's output check withheld is neither shown nor chosen; a spoilered one makes the whole grid
a spoiler. The author picks with the number buttons; otherwise, after `wait` seconds, the candidate with the most number
reactions goes on (ties and no votes: the best CLIP score). Everything is in the database, so a restart in
the middle loses nothing: candidates resume like any job, and a pending decision is timed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.jobs import JobService, Origin, Posted, Ticket
from engine import quality
from engine.spec import JobSpec, random_seed
from storage import Job, JobKind, JobState, Store, Tournament, TournamentState

log = logging.getLogger(__name__)

__all__ = ["Tournaments", "Tournament", "TournamentState", "is_choosable", "is_withheld", "pick_winner"]

MIN_CANDIDATES, MAX_CANDIDATES = 2, 9


def quality_fields(spec: JobSpec) -> dict:
    """The fields of `spec` that a quality preset sets (its CLIP models, cutouts and losses), steps aside."""
    return {name: getattr(spec, name) for name in quality.expand("draft") if name != "steps"}


def draft(spec: JobSpec) -> JobSpec:
    """A tournament's candidate of `spec`: its first CLIP model alone with plain cutouts and no image losses (the
    draft quality), so that seeds are compared quickly; the chosen one goes on at the quality asked for."""
    if not spec.perceptors and spec.cut_overview is None and spec.cut_inner is None:
        return spec
    fields = {k: v for k, v in quality.expand("draft").items() if k not in ("steps", "clip_model", "perceptors")}
    return spec.replace(**fields, clip_model=quality.score_model(spec), perceptors=())


class TournamentPresenter(Protocol):
    """What the tournaments need from the chat side."""

    async def tournament_ready(self, tournament: Tournament, candidates: list[Job]) -> int:
        """Post the numbered grid with its buttons; returns its message id."""

    async def tournament_votes(self, tournament: Tournament) -> dict[int, int]:
        """Votes per candidate number (number reactions on the grid; no bot's reaction counts, this one's included)."""

    async def tournament_decided(self, tournament: Tournament, winner: Job, job: Job) -> None:
        """Say which candidate goes on (and why), and take the buttons off the grid."""

    async def tournament_failed(self, tournament: Tournament, withheld: int = 0) -> None:
        """No candidate finished, or the output check withheld every one that did (`withheld` of them)."""


class Tournaments:
    """Seed tournaments: start them, show the candidates when they have all ended, continue the chosen one."""

    def __init__(self, store: Store, jobs: JobService, presenter: TournamentPresenter, *, wait: float) -> None:
        self.store, self.jobs, self.presenter, self.wait = store, jobs, presenter, wait
        self._timers: dict[int, asyncio.Task] = {}
        jobs.ended_hooks.append(self.job_ended)

    async def start(
        self,
        origin: Origin,
        spec: JobSpec,
        *,
        candidates: int,
        first_steps: int,
        announce: Callable[[Tournament, Ticket], Awaitable[Posted | None]] | None = None,
    ) -> tuple[Tournament, Ticket]:
        """Record a tournament and queue its candidates (new seeds, `first_steps` steps each), or raise QueueFull.
        Every candidate is a waiting job under its author's cap; they are admitted together, in one store
        statement, or not at all. `announce` posts the tournament (the ticket is of its first candidate, with the
        wait until the last one is done); the thread it opens is the tournament's."""
        if not MIN_CANDIDATES <= candidates <= MAX_CANDIDATES:
            raise ValueError(f"a tournament has {MIN_CANDIDATES} to {MAX_CANDIDATES} candidates")
        first = min(first_steps, spec.steps)
        spec = await self.jobs.prepare(origin, spec)
        limits = await self.jobs.limits(origin.guild_id)
        admitted = await self.store.admit_tournament(
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            author_id=origin.author_id,
            spec_json=spec.to_json(),
            candidate_specs=[draft(spec).replace(seed=random_seed(), steps=first).to_json() for _ in range(candidates)],
            max_waiting=limits.per_member,
            max_total=limits.total,
            max_server=limits.server,
        )
        if admitted is None:
            raise await self.jobs.refusal(origin, limits, candidates)
        tournament, jobs = admitted
        for job in jobs:
            self.jobs.enqueue(job)
        posted: list[Posted | None] = []

        async def post(ticket: Ticket) -> Posted | None:
            posted.append(await announce(tournament, ticket) if announce is not None else None)
            if posted[0] is not None and posted[0].thread_id is not None:
                await self.store.update_tournament(tournament.id, thread_id=posted[0].thread_id)
            return posted[0]

        ticket = await self.jobs.announce(jobs, post)
        return (await self.store.get_tournament(tournament.id)) or tournament, ticket

    async def get(self, tournament_id: int) -> Tournament | None:
        """The tournament with this id, or None."""
        return await self.store.get_tournament(tournament_id)

    async def candidates(self, tournament_id: int) -> list[Job]:
        """The candidates of a tournament, by number."""
        return await self.store.tournament_jobs(tournament_id)

    async def job_ended(self, job: Job) -> None:
        """When the last candidate of a tournament ends, show the grid and start the clock."""
        if job.tournament_id is None or job.kind != JobKind.CANDIDATE:
            return
        tournament = await self.store.get_tournament(job.tournament_id)
        if tournament is None or tournament.state != TournamentState.RUNNING:
            return
        candidates = await self.store.tournament_jobs(tournament.id)
        if any(c.state.active for c in candidates):
            return
        if not any(is_choosable(c) for c in candidates):
            tournament = await self.store.update_tournament(tournament.id, state=TournamentState.FAILED)
            await self.presenter.tournament_failed(tournament, withheld=sum(is_withheld(c) for c in candidates))
            return
        tournament = await self.store.update_tournament(
            tournament.id, state=TournamentState.VOTING, decide_at=time.time() + self.wait
        )
        grid = await self.presenter.tournament_ready(tournament, candidates)
        tournament = await self.store.update_tournament(tournament.id, grid_message_id=grid)
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
        count. None if the tournament is not waiting for a decision, or another decision of it won."""
        tournament = await self.store.get_tournament(tournament_id)
        if tournament is None or tournament.state != TournamentState.VOTING:
            return None
        finished = {c.candidate: c for c in await self.store.tournament_jobs(tournament_id) if is_choosable(c)}
        if number is None:
            votes = await self.presenter.tournament_votes(tournament)
            number, by = pick_winner(finished, votes)
        if number not in finished:
            raise ValueError(f"candidate {number} did not finish")
        winner = finished[number]
        full = tournament.spec
        spec = winner.spec.replace(steps=full.steps, **quality_fields(full))  # at the quality asked for
        # The check above is only a first answer: another pick or the timer may have passed it during the awaits
        # since. The store moves the tournament from voting to decided once; the decision that loses makes nothing.
        tournament = await self.store.decide_tournament(tournament_id, number, by)
        if tournament is None:
            return None
        timer = self._timers.pop(tournament_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        job = await self.jobs.admit(
            Origin(winner.guild_id, winner.channel_id, tournament.author_id),
            spec,
            kind=JobKind.CONTINUE,
            parent_id=winner.id,
            thread_id=winner.thread_id,
            check_limits=False,
        )
        self.jobs.enqueue(job)
        try:
            await self.presenter.tournament_decided(tournament, winner, job)
        finally:
            self.jobs.pump()
        return job

    async def recover(self) -> None:
        """After a restart: time the pending decisions again; finish tournaments whose candidates all ended."""
        for tournament in await self.store.tournaments_in_state(TournamentState.VOTING):
            self._schedule(tournament)
        for tournament in await self.store.tournaments_in_state(TournamentState.RUNNING):
            candidates = await self.store.tournament_jobs(tournament.id)
            if candidates and not any(c.state.active for c in candidates):
                await self.job_ended(candidates[-1])

    async def close(self) -> None:
        """Cancel the pending decision timers and wait for them."""
        for task in self._timers.values():
            task.cancel()
        await asyncio.gather(*self._timers.values(), return_exceptions=True)
        self._timers.clear()


def is_withheld(job: Job) -> bool:
    """A candidate that finished and that the output check withheld: never shown, never chosen."""
    return job.state == JobState.DONE and job.moderation == "withhold"


def is_choosable(job: Job) -> bool:
    """A candidate that finished and that the output check did not withhold: only these are shown and can go on."""
    return job.state == JobState.DONE and not is_withheld(job)


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
