"""A tournament is decided once: two picks (or a pick and the timer) arriving together make one winner job."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs import JobService
from bot.tournaments import Tournaments
from engine.spec import JobSpec
from storage import JobKind, JobState, Store
from tests.bot.conftest import GatedBackend
from tests.bot.test_concurrency import RecordingPresenter


class FakeTournamentPresenter:
    """The tournaments' chat side: no votes, and a record of each decision it was told of."""

    def __init__(self):
        self.decided: list[tuple[int, int, int]] = []  # (tournament, chosen, winner job)

    async def tournament_ready(self, tournament, candidates):
        return 1

    async def tournament_votes(self, tournament):
        return {}

    async def tournament_decided(self, tournament, winner, job):
        self.decided.append((tournament.id, tournament.chosen, job.id))

    async def tournament_failed(self, tournament, withheld=0):
        raise AssertionError("the tournament has finished candidates")


@pytest.fixture
async def voting(tmp_path):
    """A tournament of three finished candidates (candidate 3 has the best score), waiting for its decision."""
    store = await Store.open(tmp_path / "db.sqlite")
    service = JobService(store, GatedBackend(), RecordingPresenter(), tmp_path, max_concurrent=1)
    presenter = FakeTournamentPresenter()
    tournaments = Tournaments(store, service, presenter, wait=60.0)
    spec = JobSpec("a lighthouse", steps=10)
    tournament = await store.create_tournament(
        guild_id=None, channel_id=1, author_id=7, spec_json=spec.to_json(), candidates=3
    )
    for n, score in ((1, 0.1), (2, 0.2), (3, 0.9)):
        job = await store.create_job(
            guild_id=None,
            channel_id=1,
            author_id=7,
            spec_json=spec.replace(steps=4, seed=n).to_json(),
            kind=JobKind.CANDIDATE,
            tournament_id=tournament.id,
            candidate=n,
        )
        await store.set_state(job.id, JobState.DONE, score=score)
    await store.update_tournament(tournament.id, state="voting", decide_at=0.0)
    try:
        yield store, tournaments, presenter, tournament.id
    finally:
        await tournaments.close()
        await service.close()
        await store.close()


async def _winner_jobs(store):
    """The tournament's jobs that go on to the full step count, and the candidate number of each candidate's job."""
    everything = await store.history(None, 7, limit=100)
    parents = {j.id: j.candidate for j in everything if j.kind == JobKind.CANDIDATE}
    return [j for j in everything if j.kind == JobKind.CONTINUE], parents


@pytest.mark.parametrize(
    "numbers",
    [(1, 2), (2, 2), (None, 1)],
    ids=["two-different-picks", "the-same-pick-twice", "the-timer-and-a-pick"],
)
async def test_two_simultaneous_decisions_make_one_winner_job(voting, numbers):
    store, tournaments, presenter, tournament_id = voting
    results = await asyncio.gather(*(tournaments.decide(tournament_id, n, "author") for n in numbers))
    made = [job for job in results if job is not None]
    assert len(made) == 1  # the other decision lost the race and made nothing
    jobs, parents = await _winner_jobs(store)
    assert [j.id for j in jobs] == [made[0].id]
    tournament = await store.get_tournament(tournament_id)
    assert tournament.state == "decided" and tournament.chosen == parents[made[0].parent_id]
    assert presenter.decided == [(tournament_id, tournament.chosen, made[0].id)]
    assert await tournaments.decide(tournament_id, 1, "author") is None  # a late click changes nothing
